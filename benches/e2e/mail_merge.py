#!/usr/bin/env python3
"""The same job done the way a competent developer would without owner-access: read the
owners, keep the eligible ones (not registered, a valid address nobody else uses), give
each a personal link (a random token, its hash kept), render jinja2 templates compiled
once, build each message with email.message (the attachment read once) and send them
all over one reused smtplib connection. Prints the count sent and the elapsed seconds."""
import argparse
import collections
import csv
import datetime
import hashlib
import re
import secrets
import smtplib
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import jinja2

SUBJECT = "Your invitation to the {{ community }} owner portal"
TEXT = """Hello {{ first_name }},

{{ community }} now has an owner portal, where you can see your account, documents and
community news for {{ address }}.

Register with your personal link:
{{ link }}

The link is yours alone and works until {{ expires_on }}. After you register, sign in at
{{ portal }}.

The {{ community }} board
"""
HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ community }}</title></head>
<body>
<p>Hello {{ first_name }},</p>
<p>{{ community }} now has an owner portal, where you can see your account, documents and
community news for {{ address }}.</p>
<p><a href="{{ link }}">Register with your personal link</a></p>
<p>The link is yours alone and works until {{ expires_on }}. After you register, sign in at
<a href="{{ portal }}">{{ portal }}</a>.</p>
<p>The {{ community }} board</p>
</body></html>
"""
VALID = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--owners", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--attach")
    ap.add_argument("--portal", default="http://localhost:8080/register")
    args = ap.parse_args()

    started = time.perf_counter()
    env = jinja2.Environment(autoescape=False)
    subject_t, text_t = env.from_string(SUBJECT), env.from_string(TEXT)
    html_t = jinja2.Environment(autoescape=True).from_string(HTML)
    attachment = Path(args.attach).read_bytes() if args.attach else None

    with open(args.owners, newline="", encoding="utf-8-sig") as f:
        owners = list(csv.DictReader(f))
    uses = collections.Counter(o["primary_email"].strip().lower() for o in owners if o["primary_email"].strip())
    eligible = [
        o for o in owners
        if o["registered"].lower() not in ("true", "1", "yes")
        and o["primary_email"].strip()
        and VALID.match(o["primary_email"].strip())
        and uses[o["primary_email"].strip().lower()] == 1
    ]
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=14)
    token_hashes = {}
    sent = 0
    with smtplib.SMTP(args.host, args.port) as smtp:
        for o in eligible:
            token = secrets.token_urlsafe(32)
            token_hashes[o["owner_id"]] = hashlib.sha256(token.encode()).hexdigest()
            values = {
                "first_name": o["first_name"], "community": "Bench Towers HOA",
                "address": o["property_address"], "link": f"{args.portal}?token={token}",
                "expires_on": expires.date().isoformat(), "portal": args.portal,
            }
            msg = EmailMessage()
            msg["From"] = "Owner Portal <no-reply@example.com>"
            msg["To"] = f'{o["first_name"]} {o["last_name"]} <{o["primary_email"].strip()}>'
            msg["Reply-To"] = "board@benchtowers.example.org"
            msg["Subject"] = subject_t.render(values)
            msg["Date"] = format_datetime(datetime.datetime.now(datetime.timezone.utc))
            msg["Message-ID"] = make_msgid(domain="example.com")
            msg.set_content(text_t.render(values))
            msg.add_alternative(html_t.render(values), subtype="html")
            if attachment is not None:
                msg.add_attachment(attachment, maintype="application", subtype="pdf",
                                   filename="Welcome Package.pdf")
            smtp.send_message(msg, from_addr="no-reply@example.com", to_addrs=[o["primary_email"].strip()])
            sent += 1
    elapsed = time.perf_counter() - started
    print(f"{sent} {elapsed:.3f}")


if __name__ == "__main__":
    main()
