#!/usr/bin/env bash
# SQL statements per message sent: a PostgreSQL server of the bench's own (its own
# data directory, pg_stat_statements preloaded, a free port on 127.0.0.1), the
# owner_access CLI sending a batch of N owners into an outbox over it, then the
# statements' calls from pg_stat_statements (utility statements such as BEGIN and
# COMMIT left out) divided by the messages sent.
#
#   bash benches/workers/statements.sh [N]      # default 5000; run as root or a normal user
#
# Needs Debian's postgresql (initdb, pg_ctl, the pg_stat_statements extension).
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-5000}"
source benches/workers/pg_server.sh -c fsync=off
cleanup() { pg_stop; rm -rf "$work"; }
trap cleanup EXIT
url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
psql() { "$bin/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
psql -c "CREATE EXTENSION pg_stat_statements"

cargo build --quiet --release --example owner_access --features smtp,sqlite,postgres
oa=target/release/examples/owner_access
{
  echo "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered"
  for i in $(seq 1 "$n"); do echo "maple,a$i,u$i,Ann,Lee$i,$i Elm St,a$i@example.org,false"; done
} >"$work/owners.csv"
printf 'community_id,name,reply_to\nmaple,Maple Grove HOA,board@maple.example.org\n' >"$work/communities.csv"
"$oa" --db "$url" import --communities "$work/communities.csv" --owners "$work/owners.csv" >/dev/null

# Count the send alone: reset after the import.
psql -c "SELECT pg_stat_statements_reset()" >/dev/null
"$oa" --db "$url" send --community maple --outbox "$work/outbox" --json >"$work/report.json"
sent=$(python3 -c "import json,sys; print(json.load(open('$work/report.json'))['sent'])")
# Counted: every top-level statement of the send (compose and review included), less
# the utility ones (BEGIN / START TRANSACTION, COMMIT, ROLLBACK, SET, SHOW) and the
# reset above.
calls=$(psql -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                 WHERE toplevel AND query !~* '^\s*(begin|start transaction|commit|rollback|set|show|select pg_stat_statements_reset)'")
echo "messages sent: $sent"
echo "SQL statements: $calls"
python3 -c "print(f'statements per message: {$calls / $sent:.3f}')"
echo "by statement (calls, first 60 characters):"
psql -c "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 60) FROM pg_stat_statements
         WHERE toplevel AND query !~* '^\s*(begin|start transaction|commit|rollback|set|show|select pg_stat_statements_reset)'
         ORDER BY calls DESC LIMIT 15"
