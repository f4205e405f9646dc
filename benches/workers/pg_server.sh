# Sourced by the benches in this folder: a PostgreSQL server of the bench's own (its
# own data directory in $work, pg_stat_statements preloaded, a free port on 127.0.0.1,
# trust auth), started with the extra server options in "$@". Sets bin, work, as_pg and
# port, and defines pg_stop; the caller sets its own EXIT trap.
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 777 "$work"
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$bin/initdb" -D "$work/data" -U postgres -A trust >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w -o \
  "-p $port -k $work -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements $*" \
  start >/dev/null
pg_stop() { "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; }
