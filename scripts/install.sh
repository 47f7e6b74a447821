#!/bin/bash
# Install everything the service and the tests need (idempotent, fast when nothing changed):
# the project in .venv (re-installed only when pyproject.toml changes) and the Asterisk chroot.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.ivr14-installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,speech,postgres]'
  rm -f .venv/.ivr14-installed-*; touch "$stamp"
fi
bash scripts/asterisk-install.sh
.venv/bin/python -m ivr.cli references  # template engine: espeak-ng references into the disk cache (~2 min once)
