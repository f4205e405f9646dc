#!/usr/bin/env bash
# Renders the default invitation in headless Chromium at 800 px (a desktop mail
# client) and 375 px (a phone) and writes the screenshots into docs/:
#   docs/letter-800.png, docs/letter-375.png
# Needs Debian's `chromium` (apt-get install chromium). The letter is the one
# `cargo run --example letter_preview` writes: one owner's message as sent, with a
# placeholder instead of the personal link.
set -euo pipefail
cd "$(dirname "$0")/.."
chromium="${CHROMIUM:-/usr/bin/chromium}"
out="${1:-docs}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --quiet --example letter_preview -- "$work" >/dev/null
shoot() { # width height file
  "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run \
    --user-data-dir="$(mktemp -d -p "$work")" --hide-scrollbars \
    --window-size="$1,$2" --screenshot="$3" "file://$work/letter.html" 2>/dev/null
  [ -s "$3" ] || { echo "chromium wrote no $3" >&2; exit 1; }
}
# The letter must fit a phone: no element may reach past the page's width (it would
# scroll sideways). Headless Chromium keeps a window at least 500 px wide, so the
# page is laid out at each width by the width of <html>, and the rightmost edge of
# any element is reported in the title. (Without the wrapping rules on the links,
# 375 px gives 409.)
for width in 320 375 800; do
  sed "s|</head>|<style>html { width: ${width}px; }</style></head>|; s|</body>|<script>document.title = 'right=' + Math.ceil(Math.max(...Array.from(document.querySelectorAll('body *')).map(e => e.getBoundingClientRect().right)));</script></body>|" \
    "$work/letter.html" > "$work/check.html"
  seen=$("$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run \
    --user-data-dir="$(mktemp -d -p "$work")" --window-size=800,900 \
    --dump-dom "file://$work/check.html" 2>/dev/null | sed -n 's|.*<title>right=\([0-9]*\)</title>.*|\1|p')
  [ -n "$seen" ] || { echo "chromium reported no width at $width px" >&2; exit 1; }
  if [ "$seen" -gt "$width" ]; then
    echo "at $width px the letter reaches $seen px: it scrolls sideways" >&2
    exit 1
  fi
  echo "at $width px the letter fits ($seen px)"
done
mkdir -p "$out"
shoot 800 740 "$out/letter-800.png"
shoot 375 960 "$out/letter-375.png"
echo "wrote $out/letter-800.png and $out/letter-375.png"
