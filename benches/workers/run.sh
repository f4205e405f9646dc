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
source benches/workers/pg_server.sh -c max_connections=200
# The workers' logs are kept in target/workers-bench/ (the sink logs and the database go).
keep=target/workers-bench
cleanup() {
  pg_stop
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
