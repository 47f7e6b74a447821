#!/bin/bash
# Stop the chroot Asterisk by the pid in its own pid file (never by process name). Idempotent.
set -uo pipefail
ROOT=${IVR_ASTERISK_ROOT:-/var/lib/ivr14/asterisk-root}
PIDFILE=$ROOT/run/asterisk/asterisk.pid
pid=$(cat "$PIDFILE" 2>/dev/null || true)
if [ -z "$pid" ] || [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != asterisk ]; then
  echo "asterisk-stop: not running"; exit 0
fi
chroot "$ROOT" /usr/sbin/asterisk -rx "core stop now" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; echo "asterisk-stop: stopped (pid $pid)"; exit 0; }
  sleep 0.1
done
kill -TERM "$pid" 2>/dev/null; sleep 1
kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
rm -f "$PIDFILE"; echo "asterisk-stop: killed (pid $pid)"
