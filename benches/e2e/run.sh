#!/usr/bin/env bash
# End-to-end throughput: owner-access (the owner_access example over SQLite and SMTP)
# against Postfix's smtp-sink, beside smtp-source's own rate into the same sink and a
# Python mail-merge doing the same job, all measured in one run on this machine.
#
#   benches/e2e/run.sh N [--attach-kb K] [--runs R] [--debug] [--no-python]
#
# --debug uses a debug build (the smoke run in .ci/run, which checks the counts, not
# the speed). --no-python leaves the Python mail-merge out (for the 100,000-owner
# runs, which measure our memory and growth).
#
# Prints a table: messages/s, peak RSS, and the ratios ours / smtp-source and
# ours / Python (median of R runs, default 3), then the ratios of each run and their
# median. Exits non-zero when a count is wrong:
# every eligible owner must be accepted by the sink exactly once.
set -euo pipefail

N=${1:?usage: run.sh N [--attach-kb K] [--runs R]}
shift
ATTACH_KB=0
RUNS=3
PROFILE=release
PYTHON=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --attach-kb) ATTACH_KB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --debug) PROFILE=debug; shift ;;
    --no-python) PYTHON=no; shift ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
for tool in "$SINK" "$SOURCE" /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install postfix time)" >&2; exit 1; }
done

WORK=$(mktemp -d)
SINK_PID=
cleanup() {
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building the example ($PROFILE)..." >&2
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build --quiet --release --all-features --example owner_access)
else
  (cd "$ROOT" && cargo build --quiet --all-features --example owner_access)
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/examples/owner_access

VENV=${CARGO_TARGET_DIR:-$ROOT/target}/e2e-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import jinja2' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet jinja2
fi

EXPECTED=$(python3 "$HERE/gen_owners.py" "$N" "$WORK/data")
# A welcome letter of about 5 KB as a message, the same template files for both senders.
TEMPLATE_ARGS=(--text "$HERE/invitation.txt" --html "$HERE/invitation.html")
ATTACH_ARGS=()
PY_ATTACH=()
if [ "$ATTACH_KB" -gt 0 ]; then
  python3 -c "import sys; sys.stdout.buffer.write(bytes((i * 7) % 251 for i in range($ATTACH_KB * 1024)))" > "$WORK/Welcome Package.pdf"
  ATTACH_ARGS=(--attach "$WORK/Welcome Package.pdf")
  PY_ATTACH=(--attach "$WORK/Welcome Package.pdf")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_sink() {
  PORT=$(free_port)
  "$SINK" -u nobody -c "127.0.0.1:$PORT" 1000 > "$WORK/sink.log" 2>&1 &
  SINK_PID=$!
  for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1).close()" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "smtp-sink did not start" >&2; exit 1
}

stop_sink() {
  sleep 0.2
  kill "$SINK_PID" 2>/dev/null || true
  wait "$SINK_PID" 2>/dev/null || true
  SINK_PID=
  # The counter line is rewritten with carriage returns; the last one is the total.
  tr '\r' '\n' < "$WORK/sink.log" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1
}

# Bash's own clock: starting an interpreter for it would add its start-up to every figure.
now() { echo "$EPOCHREALTIME"; }

# The size of one of our messages, for smtp-source.
"$BIN" --db "$WORK/size.db" import --communities "$WORK/data/communities.csv" --owners "$WORK/data/owners.csv" >/dev/null
eligible_one=$("$BIN" --db "$WORK/size.db" review --community bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["recipients"][0]["owner_id"])')
"$BIN" --db "$WORK/size.db" send --community bench --select "$eligible_one" --outbox "$WORK/size" "${TEMPLATE_ARGS[@]}" "${ATTACH_ARGS[@]}" >/dev/null 2>&1
SIZE=$(for f in "$WORK"/size/*.eml; do tail -n +3 "$f" | wc -c; done | head -1)

ours=(); source_rates=(); python=(); rss=(); by_source=(); by_python=()
for run in $(seq "$RUNS"); do
  # owner-access
  rm -f "$WORK/state.db"*
  "$BIN" --db "$WORK/state.db" import --communities "$WORK/data/communities.csv" --owners "$WORK/data/owners.csv" >/dev/null
  start_sink
  t0=$(now)
  /usr/bin/time -v -o "$WORK/time.log" "$BIN" --db "$WORK/state.db" send --community bench \
    --smtp "smtp://127.0.0.1:$PORT" --concurrency 8 "${TEMPLATE_ARGS[@]}" "${ATTACH_ARGS[@]}" --json > "$WORK/report.json" 2> "$WORK/send.err" \
    || { cat "$WORK/send.err" >&2; exit 1; }
  t1=$(now)
  got=$(stop_sink)
  sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$WORK/report.json")
  if [ "$got" != "$EXPECTED" ] || [ "$sent" != "$EXPECTED" ]; then
    echo "owner-access: the sink accepted $got and the report says $sent, expected $EXPECTED" >&2; exit 1
  fi
  ours+=("$(python3 -c "print($EXPECTED / ($t1 - $t0))")")
  rss+=("$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.log")")

  # smtp-source: the sink's own ceiling for this size and session count
  start_sink
  t0=$(now)
  "$SOURCE" -l "$SIZE" -m "$EXPECTED" -s 8 -d "127.0.0.1:$PORT" >/dev/null
  t1=$(now)
  got=$(stop_sink)
  [ "$got" = "$EXPECTED" ] || { echo "smtp-source: the sink accepted $got of $EXPECTED" >&2; exit 1; }
  source_rates+=("$(python3 -c "print($EXPECTED / ($t1 - $t0))")")
  by_source+=("$(python3 -c "print(${ours[-1]} / ${source_rates[-1]})")")

  # the Python mail-merge
  if [ "$PYTHON" = no ]; then
    python+=(0)
    echo "run $run: ours ${ours[-1]}/s, smtp-source ${source_rates[-1]}/s" >&2
    continue
  fi
  start_sink
  t0=$(now)
  read -r py_sent _ < <("$VENV/bin/python" "$HERE/mail_merge.py" --owners "$WORK/data/owners.csv" --port "$PORT" "${TEMPLATE_ARGS[@]}" "${PY_ATTACH[@]}")
  t1=$(now)
  got=$(stop_sink)
  if [ "$got" != "$EXPECTED" ] || [ "$py_sent" != "$EXPECTED" ]; then
    echo "python: the sink accepted $got and the script says $py_sent, expected $EXPECTED" >&2; exit 1
  fi
  python+=("$(python3 -c "print($EXPECTED / ($t1 - $t0))")")
  by_python+=("$(python3 -c "print(${ours[-1]} / ${python[-1]})")")
  echo "run $run: ours ${ours[-1]}/s, smtp-source ${source_rates[-1]}/s, python ${python[-1]}/s" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
O=$(median "${ours[@]}"); S=$(median "${source_rates[@]}"); P=$(median "${python[@]}"); R=$(median "${rss[@]}")
# The ratios of each run too: the machine's speed drifts between runs, and a ratio
# taken within one run cancels most of that drift.
BY_S=$(IFS=,; echo "${by_source[*]}"); BY_P=$(IFS=,; echo "${by_python[*]:-}")
python3 - "$N" "$EXPECTED" "$SIZE" "$ATTACH_KB" "$O" "$S" "$P" "$R" "$RUNS" "$PROFILE" "$BY_S" "$BY_P" <<'PY'
import statistics
import sys
n, sent, size, kb, o, s, p, rss, runs, _profile, by_s, by_p = sys.argv[1:]
o, s, p = float(o), float(s), float(p)
print(f"owners {n}, eligible {sent}, message {int(size):,} bytes, attachment {kb} KB, median of {runs} runs, {sys.argv[10]} build")
print("| sender | messages/s | peak RSS |")
print("|---|---|---|")
print(f"| owner-access (8 connections) | {o:,.0f} | {int(rss) / 1024:,.1f} MB |")
print(f"| smtp-source (8 sessions) | {s:,.0f} | |")
if p > 0:
    print(f"| Python mail-merge (1 connection) | {p:,.0f} | |")
print(f"owner-access took {int(sent) / o:.2f} s (import not counted)")
print(f"ours / smtp-source: {o / s:.2f}" + (f"; ours / Python: {o / p:.1f}x" if p > 0 else ""))
by_s = [float(x) for x in by_s.split(",") if x]
print("per run, ours / smtp-source: " + ", ".join(f"{x:.2f}" for x in by_s)
      + f" (median {statistics.median(by_s):.2f})")
by_p = [float(x) for x in by_p.split(",") if x]
if by_p:
    print("per run, ours / Python: " + ", ".join(f"{x:.1f}x" for x in by_p)
          + f" (median {statistics.median(by_p):.1f}x)")
PY
