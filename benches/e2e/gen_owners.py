#!/usr/bin/env python3
"""Writes communities.csv and owners.csv for one community of N owners with the mix real
data has: 5% without an email, 3% with an invalid one, 2% sharing an address in pairs,
10% already registered. Deterministic for a given N."""
import csv
import random
import sys
from pathlib import Path

FIRST = ["Ann", "Bruno", "Chiara", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivo", "Jose", "Kemal", "Lena"]
LAST = ["Lee", "Okafor", "Rossi", "Ivanov", "Martin", "Nguyen", "Schmidt", "Kowalski", "Haddad", "Silva"]


def main() -> None:
    n = int(sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261126)
    with open(out / "communities.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["community_id", "name", "reply_to"])
        w.writerow(["bench", "Bench Towers HOA", "board@benchtowers.example.org"])
    with open(out / "owners.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["community_id", "owner_id", "property_id", "first_name", "last_name",
                    "property_address", "primary_email", "registered"])
        i = 0
        while i < n:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            roll = rng.random()
            email = f"{first.lower()}.{last.lower()}.{i}@example.org"
            registered = "false"
            rows = 1
            if roll < 0.05:
                email = ""
            elif roll < 0.08:
                email = f"{first.lower()}.{i}.at.example.org"
            elif roll < 0.10 and i + 1 < n:
                rows = 2
            elif roll < 0.20:
                registered = "true"
            for k in range(rows):
                w.writerow(["bench", f"o{i + k}", f"unit-{i + k}", first, last,
                            f"{100 + (i + k) // 40} Long Street, Unit {i + k}",
                            f"shared.{i}@example.org" if rows == 2 else email, registered])
            i += rows
    # What every eligible-count check compares against.
    with open(out / "owners.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    uses = {}
    for r in rows:
        key = r["primary_email"].strip().lower()
        if key:
            uses[key] = uses.get(key, 0) + 1
    eligible = sum(
        1 for r in rows
        if r["registered"] == "false" and r["primary_email"] and "@" in r["primary_email"]
        and uses[r["primary_email"].strip().lower()] == 1
    )
    print(eligible)


if __name__ == "__main__":
    main()
