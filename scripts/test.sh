#!/bin/bash
# Run the test suite:  scripts/test.sh [pytest args...]
# Creates .venv if missing, installs the project (quietly, only when pyproject.toml changed),
# installs/refreshes the Asterisk chroot (idempotent) and runs pytest. Asterisk is started by the
# test fixture; if it was not running before, it is stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ROOT=${IVR_ASTERISK_ROOT:-/var/lib/ivr14/asterisk-root}
pid=$(cat "$ROOT/run/asterisk/asterisk.pid" 2>/dev/null || true)
if [ -z "$pid" ] || [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != asterisk ]; then
  trap 'bash scripts/asterisk-stop.sh >/dev/null' EXIT
fi
.venv/bin/python -m pytest -q "$@"
