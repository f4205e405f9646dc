#!/usr/bin/env bash
# Scores the messages owner-access writes with SpamAssassin, local rules only
# (`spamassassin -t -L`: no network tests), on the bytes as the crate hands them to
# its transport (no Received header): the default invitation, one with a 200 KB
# attachment, an HTML-only one and the Summary recap. Fails when any total is above
# 0.0, and when the deliberately bad message (.ci/spam/bad.eml) does not score at
# least 5.0, so the check itself can fail.
#
# Needs Debian's `spamassassin` (apt-get install spamassassin).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --quiet --example spam_samples -- "$work" >/dev/null
cp .ci/spam/bad.eml "$work/bad.eml"

score() { # file -> the printed total
  spamassassin -t -L -p /dev/null < "$1" 2>/dev/null \
    | sed -n 's/^X-Spam-Status: [A-Za-z]*, score=\(-\{0,1\}[0-9.]*\).*/\1/p' | head -1
}
rules() { # file -> the rules that fired, with their points
  spamassassin -t -L -p /dev/null < "$1" 2>/dev/null \
    | awk '/^---- ---/ { on = 1; next } on && NF == 0 { exit } on && $2 ~ /^[A-Z0-9_]+$/ { printf "%s %s, ", $2, $1 }'
}

failed=0
for name in invitation attachment html_only recap; do
  total=$(score "$work/$name.eml")
  [ -n "$total" ] || { echo "spamassassin printed no score for $name" >&2; exit 1; }
  echo "$name: $total  ($(rules "$work/$name.eml"))"
  if awk -v t="$total" 'BEGIN { exit !(t > 0.0) }'; then
    echo "FAIL: $name scores $total, above 0.0" >&2
    failed=1
  fi
done
bad=$(score "$work/bad.eml")
echo "bad (deliberately spammy): $bad  ($(rules "$work/bad.eml"))"
if ! awk -v t="$bad" 'BEGIN { exit !(t >= 5.0) }'; then
  echo "FAIL: the deliberately bad message scores only '$bad': the check cannot tell" >&2
  failed=1
fi
exit "$failed"
