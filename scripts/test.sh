#!/bin/bash
# Run the test suite:  scripts/test.sh [pytest args...]
# Creates .venv if missing, installs the project (quietly, only when pyproject.toml changed),
# installs/refreshes the Asterisk chroot (idempotent), PostgreSQL and Kamailio, and runs pytest. Asterisk is started by the
# test fixture; if it was not running before, it is stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# what only the tests need: a PostgreSQL server (the records store's tests), Kamailio and Prometheus
# (the cluster tests); their own services stay off (Kamailio's would take Asterisk's port 5060,
# Prometheus's 9090: the lab cluster starts its own on 9290)
need=()
for p in postgresql kamailio; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
need_prometheus=$(dpkg -s prometheus >/dev/null 2>&1 || echo yes)
if ((${#need[@]})) || [ -n "$need_prometheus" ]; then
  apt-get update -qq
  if ((${#need[@]})); then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
  if [ -n "$need_prometheus" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  for service in kamailio postgresql prometheus; do systemctl disable --now "$service" >/dev/null 2>&1 || true; done
fi
ROOT=${IVR_ASTERISK_ROOT:-/var/lib/ivr14/asterisk-root}
pid=$(cat "$ROOT/run/asterisk/asterisk.pid" 2>/dev/null || true)
if [ -z "$pid" ] || [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != asterisk ]; then
  trap 'bash scripts/asterisk-stop.sh >/dev/null' EXIT
fi
.venv/bin/python -m pytest -q "$@"
