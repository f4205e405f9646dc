# The setup shared by the end-to-end benches (run.sh, compare.sh): sourced, never run.
#
# The caller sets HERE (this folder), N (owners to generate) and ATTACH_KB (0 for none),
# then calls `e2e_setup`. After it: WORK (a temporary folder removed on exit), EXPECTED
# (eligible owners, each of whom the sink must accept once), TEMPLATE_ARGS, ATTACH_ARGS
# and PY_ATTACH (the same template and attachment files for every sender). Then
# `e2e_message_size BIN` sets SIZE (the bytes of one of our messages, for smtp-source),
# and each measurement is one call:
#
#   e2e_run_ours BIN    sets OURS_RATE (messages/s), OURS_RSS (peak, KB) and OURS_CPU
#                       (user + system seconds of the process)
#   e2e_run_source      sets SOURCE_RATE (smtp-source's messages/s, same size and sessions)
#
# Every measurement starts a fresh smtp-sink (the same program and settings each time)
# and fails the script when the sink's count is not EXPECTED.

SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SINK_PID=

e2e_setup() {
  local tool
  for tool in "$SINK" "$SOURCE" /usr/bin/time python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install postfix time)" >&2; exit 1; }
  done
  WORK=$(mktemp -d)
  trap e2e_cleanup EXIT
  EXPECTED=$(python3 "$HERE/gen_owners.py" "$N" "$WORK/data")
  # A welcome letter of about 5 KB as a message, the same template files for all senders.
  TEMPLATE_ARGS=(--text "$HERE/invitation.txt" --html "$HERE/invitation.html")
  ATTACH_ARGS=()
  PY_ATTACH=()
  if [ "$ATTACH_KB" -gt 0 ]; then
    python3 -c "import sys; sys.stdout.buffer.write(bytes((i * 7) % 251 for i in range($ATTACH_KB * 1024)))" > "$WORK/Welcome Package.pdf"
    ATTACH_ARGS=(--attach "$WORK/Welcome Package.pdf")
    PY_ATTACH=(--attach "$WORK/Welcome Package.pdf")
  fi
}

e2e_cleanup() {
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  rm -rf "$WORK"
}

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

# Prints the number of messages the sink accepted.
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

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The size of one of BIN's messages (headers from the outbox's envelope lines left out).
e2e_message_size() {
  local bin=$1 db="$WORK/size.db" eligible_one
  rm -rf "$db"* "$WORK/size"
  "$bin" --db "$db" import --communities "$WORK/data/communities.csv" --owners "$WORK/data/owners.csv" >/dev/null
  eligible_one=$("$bin" --db "$db" review --community bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["recipients"][0]["owner_id"])')
  "$bin" --db "$db" send --community bench --select "$eligible_one" --outbox "$WORK/size" "${TEMPLATE_ARGS[@]}" "${ATTACH_ARGS[@]}" >/dev/null 2>&1
  SIZE=$(for f in "$WORK"/size/*.eml; do tail -n +3 "$f" | wc -c; done | head -1)
}

# One send of the whole community by BIN over SQLite and 8 SMTP connections; the import
# into a fresh file is not timed, the process start, review and batch are.
e2e_run_ours() {
  local bin=$1 t0 t1 got sent
  rm -f "$WORK/state.db"*
  "$bin" --db "$WORK/state.db" import --communities "$WORK/data/communities.csv" --owners "$WORK/data/owners.csv" >/dev/null
  start_sink
  t0=$(now)
  /usr/bin/time -v -o "$WORK/time.log" "$bin" --db "$WORK/state.db" send --community bench \
    --smtp "smtp://127.0.0.1:$PORT" --concurrency 8 "${TEMPLATE_ARGS[@]}" "${ATTACH_ARGS[@]}" --json > "$WORK/report.json" 2> "$WORK/send.err" \
    || { cat "$WORK/send.err" >&2; exit 1; }
  t1=$(now)
  got=$(stop_sink)
  sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$WORK/report.json")
  if [ "$got" != "$EXPECTED" ] || [ "$sent" != "$EXPECTED" ]; then
    echo "owner-access ($bin): the sink accepted $got and the report says $sent, expected $EXPECTED" >&2; exit 1
  fi
  OURS_RATE=$(python3 -c "print($EXPECTED / ($t1 - $t0))")
  OURS_RSS=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.log")
  OURS_CPU=$(awk -F': ' '/User time|System time/ {s += $2} END {print s}' "$WORK/time.log")
}

# smtp-source: the sink's own ceiling for this size and session count.
e2e_run_source() {
  local t0 t1 got
  start_sink
  t0=$(now)
  "$SOURCE" -l "$SIZE" -m "$EXPECTED" -s 8 -d "127.0.0.1:$PORT" >/dev/null
  t1=$(now)
  got=$(stop_sink)
  [ "$got" = "$EXPECTED" ] || { echo "smtp-source: the sink accepted $got of $EXPECTED" >&2; exit 1; }
  SOURCE_RATE=$(python3 -c "print($EXPECTED / ($t1 - $t0))")
}
