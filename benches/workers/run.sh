#!/usr/bin/env bash
# Many workers on one batch: a PostgreSQL server of the bench's own (its own data
# directory, pg_stat_statements preloaded, a free port on 127.0.0.1), the owner_access
# CLI as workers (`send`, then `resume --batch ID` in the others, --concurrency 4 each)
# and an SMTP sink that waits 20 ms before answering each message
# (benches/workers/sink.rs). Cases (benches/workers/drive.py):
#   speedup  20,000 recipients with 1, 2 and 4 workers: messages/s, the speed-up, the
#            counts, and SQL statements per message for the 4 workers
#   kills    20,000 recipients, 4 workers, one SIGKILLed every 10 s and replaced: counts,
#            second copies per kill, time from a kill until its claims are sent
#   rate     2,000 recipients, 4 workers with --rate 50: messages per 1-second bucket
#
#   bash benches/workers/run.sh [CASE ...]      # all three by default
#
# WORKERS_N and WORKERS_RATE_N change the batch sizes. Needs Debian's postgresql
# (initdb, pg_ctl, pg_stat_statements). Exit 1 when a count or a target is missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 777 "$work"
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$bin/initdb" -D "$work/data" -U postgres -A trust >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w -o \
  "-p $port -k $work -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c max_connections=200" \
  start >/dev/null
# The workers' logs are kept in target/workers-bench/ (the sink logs and the database go).
keep=target/workers-bench
cleanup() {
  "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$keep" && mkdir -p "$keep" && cp "$work"/*.log "$keep"/ 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d template1 -c "CREATE EXTENSION pg_stat_statements"

cargo build --quiet --release --example owner_access --features smtp,sqlite,postgres
sink=$(cargo bench --no-run --bench workers_sink --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "workers_sink" and m.get("executable"):
        print(m["executable"])')
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on port $port; $(nproc) cores"
python3 benches/workers/drive.py target/release/examples/owner_access "$sink" "$bin/psql" "$port" "$work" "$@"
