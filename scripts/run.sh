#!/bin/bash
# Run the IVR:  scripts/run.sh [ivr serve args...]
# Same install steps as scripts/test.sh, starts Asterisk (idempotent), then runs the controller.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/asterisk-start.sh
# the controller reads the AMI/ARI secrets from the same file the install wrote
export IVR_STATE_DIR=${IVR_STATE_DIR:-/var/lib/ivr14}
exec .venv/bin/ivr serve "$@"
