#!/usr/bin/env python3
"""The same job done the way a competent developer would without owner-access: read the
owners, keep the eligible ones (not registered, a valid address nobody else uses), give
each a personal link (a random token, its hash kept), render jinja2 templates compiled
once (the same template files owner-access is given), build each message with email.message (the attachment read once) and send them
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

SUBJECT = "Your invitation to the {{community.name}} owner portal"
VALID = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--owners", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--text", required=True, help="the plain-text template (the one given to owner-access)")
    ap.add_argument("--html", required=True, help="the HTML template")
    ap.add_argument("--attach")
    ap.add_argument("--portal", default="http://localhost:8080/register")
    args = ap.parse_args()

    started = time.perf_counter()
    env = jinja2.Environment(autoescape=False)
    # The templates use only `{{a.b}}` fields, which jinja2 reads the same way.
    subject_t = env.from_string(SUBJECT)
    text_t = env.from_string(Path(args.text).read_text(encoding="utf-8"))
    html_t = jinja2.Environment(autoescape=True).from_string(Path(args.html).read_text(encoding="utf-8"))
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
                "owner": {
                    "first_name": o["first_name"], "last_name": o["last_name"],
                    "full_name": f'{o["first_name"]} {o["last_name"]}'.strip(),
                },
                "property": {"address": o["property_address"]},
                "community": {"name": "Bench Towers HOA"},
                "registration_url": f"{args.portal}?token={token}",
                "expires_on": expires.date().isoformat(), "portal_url": args.portal,
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
