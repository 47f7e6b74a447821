#!/bin/bash
# Run the IVR:  scripts/run.sh [ivr serve args...]
# Same install steps as scripts/test.sh, starts Asterisk (idempotent), then runs the controller.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.ivr14-installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,speech]'
  rm -f .venv/.ivr14-installed-*; touch "$stamp"
fi
bash scripts/asterisk-install.sh
bash scripts/asterisk-start.sh
# the controller reads the AMI/ARI secrets from the same file the install wrote
export IVR_STATE_DIR=${IVR_STATE_DIR:-/var/lib/ivr14}
exec .venv/bin/ivr serve "$@"
