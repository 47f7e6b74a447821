#!/bin/bash
# The lab cluster in one command: PostgreSQL, two Asterisk nodes (one chroot, own configs and ports),
# a controller per node (ivr serve, one shared IVR_DB_URL) and Kamailio in front (dispatcher, OPTIONS
# probing), and Prometheus on 127.0.0.1:9290 scraping every controller and Asterisk (when the
# prometheus package is installed). Callers send their INVITEs to 127.0.0.1:5090.
#   scripts/cluster.sh up|down|status
#   IVR_CLUSTER_DIR  run files, logs, PostgreSQL data (default /var/lib/ivr14-cluster); down keeps the data
# Ports: see NODES in ivr_lab/cluster.py (none collides with the default Asterisk's 5060/5038/8088).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
[ -x "$PY" ] || PY=$(command -v python3)
cd "$REPO"
exec env PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m ivr_lab.cluster "$@"
