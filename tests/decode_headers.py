"""Reads the To and Subject of each message file given, as Python's email package does
(email.policy.default), and lists the encoded-words of each raw header decoded one by
one (email.header.decode_header). Prints one JSON object per file, one per line.

Used by tests/headers_python.rs: an independent decoder of what the crate writes.
"""
import json
import re
import sys
from email import message_from_bytes, policy
from email.header import decode_header

ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def raw_value(raw, name):
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n[ \t]", " ", head)
    for line in unfolded.split("\r\n"):
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value
    return None


def tokens(value):
    """The header's white-space-separated tokens: each encoded-word decoded on its
    own, marked so, the others as they are."""
    out = []
    for token in value.split():
        if ENCODED_WORD.fullmatch(token):
            (data, charset), = decode_header(token)
            out.append({"encoded": True, "text": data.decode(charset)})
        else:
            out.append({"encoded": False, "text": token})
    return out


for path in sys.argv[1:]:
    with open(path, "rb") as f:
        raw = f.read()
    message = message_from_bytes(raw, policy=policy.default)
    to = message["To"]
    print(json.dumps({
        "path": path,
        "to_display_name": to.addresses[0].display_name,
        "to_address": to.addresses[0].addr_spec,
        "subject": str(message["Subject"]),
        "to_tokens": tokens(raw_value(raw, "To")),
        "subject_tokens": tokens(raw_value(raw, "Subject")),
    }, ensure_ascii=False))
