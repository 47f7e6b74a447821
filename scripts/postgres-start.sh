#!/bin/bash
# Start a throwaway PostgreSQL cluster (Debian's postgresql package) for tests and benchmarks:
#   scripts/postgres-start.sh DIR [PORT]      (PORT default 55432)
# Creates DIR/data with initdb on first use (trust auth, user and database "ivr"), listens on
# 127.0.0.1:PORT and a unix socket in DIR, and prints the URL to use as IVR_DB_URL.
# As root the server runs as the "postgres" user (initdb refuses root). Idempotent: a cluster
# already running in DIR is left as it is. Stop it with scripts/postgres-stop.sh DIR.
set -euo pipefail
dir=${1:?usage: postgres-start.sh DIR [PORT]}
port=${2:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): apt-get install postgresql" >&2
  exit 3
fi
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir" && chmod 700 "$dir"
if [ ! -s "$dir/data/PG_VERSION" ]; then
  # no fsync: a test cluster that the machine's crash may take with it (a server crash does not)
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U ivr -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
full_page_writes = off
max_connections = 100
shared_buffers = 32MB
CONF
fi
if ! "${as[@]}" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null \
    || { tail -n 20 "$dir/server.log" >&2; exit 1; }
fi
port=$(sed -n 's/^port = //p' "$dir/data/postgresql.conf" | tail -n1)
if ! "${as[@]}" "$bin/psql" -h "$dir" -p "$port" -U ivr -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'ivr'" | grep -q 1; then
  "${as[@]}" "$bin/createdb" -h "$dir" -p "$port" -U ivr ivr
fi
echo "postgresql://ivr@127.0.0.1:$port/ivr"
