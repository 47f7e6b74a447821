#!/bin/bash
# Stop a cluster started by scripts/postgres-start.sh DIR and remove DIR (it is throwaway):
#   scripts/postgres-stop.sh DIR [--keep]
set -euo pipefail
dir=${1:?usage: postgres-stop.sh DIR [--keep]}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
if [ -n "$bin" ] && [ -s "$dir/data/postmaster.pid" ]; then
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
fi
if [ "${2:-}" != --keep ]; then
  case "$dir" in /|"") exit 1 ;; esac
  rm -rf "$dir"
fi
