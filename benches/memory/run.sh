#!/usr/bin/env bash
# Peak resident memory of the CLI (the owner_access example over SQLite, release build)
# on one generated community of N owners (default 1,000,000), each command measured by
# /usr/bin/time -v against its target:
#
#   import (the CSV, one transaction)      <= 300 MB
#   review --json (every recipient listed) <= 400 MB
#   send --outbox (every message a file)   <= 400 MB
#
#   benches/memory/run.sh [N] [--send-for S] [--keep-going]
#
# --send-for S stops the send with SIGTERM after S seconds (it then ends as a stopped
# batch, exit 3, which is expected here): the whole batch is reviewed and stored before
# the first message, so the peak of that part is measured however long the rest would
# take; the report says how many messages went out. Without it, every message is
# written (on this 2-core machine about 1,000 a second, see README).
#
# The owners come from benches/e2e/gen_owners.py (5% without an email, 3% invalid,
# 2% shared, 10% registered). Everything is written to a temporary folder (the
# outbox of a million messages takes about 6 GB), removed at the end.
#
# Prints a table of peak RSS per command against its target; exits non-zero when a
# command fails, a count is wrong or a peak is over its target.
set -euo pipefail

N=1000000
SEND_FOR=
if [ $# -gt 0 ] && [[ $1 != --* ]]; then N=$1; shift; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --send-for) SEND_FOR=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

IMPORT_TARGET_MB=300
REVIEW_TARGET_MB=400
SEND_TARGET_MB=400

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
for tool in /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install time python3)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/owner-access-memory.XXXXXX")
SEND_PID=
cleanup() {
  [ -n "$SEND_PID" ] && kill "$SEND_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# About 6.5 KB per message file and 1 KB per owner in the database and its WAL.
need_kb=$(( N * 8 ))
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
  echo "$WORK has $((free_kb / 1024)) MB free, the run needs about $((need_kb / 1024)) MB" >&2
  exit 1
fi

echo "building the example (release)..." >&2
(cd "$ROOT" && cargo build --quiet --release --all-features --example owner_access)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/owner_access

echo "generating $N owners..." >&2
EXPECTED=$(python3 "$ROOT/benches/e2e/gen_owners.py" "$N" "$WORK/data")
DB=$WORK/state.db

# The peak RSS in KB and the wall time of the last command measured.
peak_kb() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/$1.time"; }
wall() { sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/$1.time"; }

echo "import..." >&2
/usr/bin/time -v -o "$WORK/import.time" "$BIN" --db "$DB" import \
  --communities "$WORK/data/communities.csv" --owners "$WORK/data/owners.csv" > "$WORK/import.out"
grep -q " $N owners" "$WORK/import.out" || { cat "$WORK/import.out" >&2; exit 1; }

echo "review --json..." >&2
/usr/bin/time -v -o "$WORK/review.time" "$BIN" --db "$DB" review --community bench --json > "$WORK/review.json"
listed=$(python3 - "$WORK/review.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(len(doc["recipients"]), len(doc["excluded"]))
PY
)
rm -f "$WORK/review.json"
read -r recipients excluded <<< "$listed"
if [ "$recipients" != "$EXPECTED" ] || [ $((recipients + excluded)) != "$N" ]; then
  echo "review listed $recipients recipients and $excluded excluded; expected $EXPECTED of $N" >&2
  exit 1
fi

echo "send --outbox..." >&2
set +e
/usr/bin/time -v -o "$WORK/send.time" "$BIN" --db "$DB" send --community bench \
  --outbox "$WORK/outbox" --json > "$WORK/report.json" 2> "$WORK/send.err" &
SEND_PID=$!
if [ -n "$SEND_FOR" ]; then
  sleep "$SEND_FOR"
  # /usr/bin/time's child is the CLI; it stops at SIGTERM like at Ctrl-C.
  pkill -TERM -P "$SEND_PID" 2>/dev/null
fi
wait "$SEND_PID"
status=$?
SEND_PID=
set -e
read -r sent pending < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["sent"], r["pending"])' "$WORK/report.json")
files=$(find "$WORK/outbox" -maxdepth 1 -name '*.eml' | wc -l)
rm -rf "$WORK/outbox"
if [ -n "$SEND_FOR" ]; then
  if [ "$status" != 3 ] && [ "$status" != 0 ]; then cat "$WORK/send.err" >&2; exit 1; fi
  [ $((sent + pending)) = "$EXPECTED" ] || { echo "send: $sent sent + $pending pending, expected $EXPECTED" >&2; exit 1; }
else
  [ "$status" = 0 ] || { cat "$WORK/send.err" >&2; exit 1; }
  [ "$sent" = "$EXPECTED" ] || { echo "send: $sent sent, expected $EXPECTED" >&2; exit 1; }
fi
[ "$files" = "$sent" ] || { echo "send: $files files in the outbox, $sent reported sent" >&2; exit 1; }

over=0
row() {
  local name=$1 target=$2 note=$3 kb mb verdict
  kb=$(peak_kb "$name")
  mb=$(( (kb + 512) / 1024 ))
  verdict=ok
  if [ "$mb" -gt "$target" ]; then verdict=OVER; over=1; fi
  printf '| %s | %s MB | %s MB | %s | %s | %s |\n' "$name" "$mb" "$target" "$verdict" "$(wall "$name")" "$note"
}
echo "owners $N, eligible $EXPECTED, release build, $(nproc) cores"
echo "| command | peak RSS | target | | wall time | |"
echo "|---|---|---|---|---|---|"
row import "$IMPORT_TARGET_MB" "$N owners"
row review "$REVIEW_TARGET_MB" "$recipients recipients, $excluded excluded"
if [ -n "$SEND_FOR" ]; then
  row send "$SEND_TARGET_MB" "stopped after ${SEND_FOR}s: $sent sent, $pending pending"
else
  row send "$SEND_TARGET_MB" "$sent sent"
fi
exit "$over"
