#!/bin/bash
# Run the test suite:  scripts/test.sh [pytest args...]
# Creates .venv if missing, installs the project (quietly, only when pyproject.toml changed),
# installs/refreshes the Asterisk chroot (idempotent), PostgreSQL and Kamailio, and runs pytest. Asterisk is started by the
# test fixture; if it was not running before, it is stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# what only the tests need: a PostgreSQL server (the records store's tests) and Kamailio (the
# cluster tests); their own services stay off (Kamailio's would take Asterisk's port 5060)
need=()
for p in postgresql kamailio; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  for service in kamailio postgresql; do systemctl disable --now "$service" >/dev/null 2>&1 || true; done
fi
ROOT=${IVR_ASTERISK_ROOT:-/var/lib/ivr14/asterisk-root}
pid=$(cat "$ROOT/run/asterisk/asterisk.pid" 2>/dev/null || true)
if [ -z "$pid" ] || [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != asterisk ]; then
  trap 'bash scripts/asterisk-stop.sh >/dev/null' EXIT
fi
.venv/bin/python -m pytest -q "$@"
