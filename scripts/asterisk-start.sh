#!/bin/bash
# Start the chroot Asterisk (installed by scripts/asterisk-install.sh) in the background and wait
# until it is fully booted. Idempotent: a running Asterisk is left alone.
#   IVR_ASTERISK_ROOT  chroot folder (default /var/lib/ivr14/asterisk-root)
#   IVR_ASTERISK_BOOT_TIMEOUT  seconds to wait for FullyBooted (default 30)
set -euo pipefail
ROOT=${IVR_ASTERISK_ROOT:-/var/lib/ivr14/asterisk-root}
RUN=$ROOT/run/asterisk            # $ROOT/var/run is an absolute symlink to /run: never use it from the host
LOGDIR=$ROOT/var/log/asterisk
CONSOLE=$LOGDIR/console.log
PORTS='( sport = :5060 or sport = :5038 or sport = :8088 )'
BIND_ERRORS='Address already in use|Unable to bind|could not be started|Failed to bind'
log() { echo "asterisk-start: $*" >&2; }
ast() { chroot "$ROOT" /usr/sbin/asterisk "$@"; }

[ -x "$ROOT/usr/sbin/asterisk" ] || { log "no Asterisk in $ROOT; run scripts/asterisk-install.sh first"; exit 1; }

pid=$(cat "$RUN/asterisk.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = asterisk ] && ast -rx "core show version" >/dev/null 2>&1; then
  log "already running (pid $pid)"; exit 0
fi

# a second Asterisk would still reach FullyBooted with its ports taken, so check first
if ss -Hlntu "$PORTS" | grep -q .; then
  log "ERROR: port 5060/5038/8088 already in use:"; ss -Hlntup "$PORTS" >&2; exit 1
fi

mkdir -p "$RUN" "$ROOT/var/spool/asterisk/recording" "$LOGDIR"
rm -f "$RUN/asterisk.ctl" "$RUN/asterisk.pid"
: >"$CONSOLE"
# -f: no fork (we background it with setsid), -n: no colours. No -U/-G: it stays root *inside the
# chroot* (-U root makes ASTdb init fail).
setsid chroot "$ROOT" /usr/sbin/asterisk -f -n </dev/null >"$CONSOLE" 2>&1 &
child=$!
for _ in $(seq 1 100); do
  [ -S "$RUN/asterisk.ctl" ] && break
  kill -0 "$child" 2>/dev/null || { log "ERROR: Asterisk exited during start; tail of $CONSOLE:"; tail -n 20 "$CONSOLE" >&2; exit 1; }
  sleep 0.1
done
if ! timeout "${IVR_ASTERISK_BOOT_TIMEOUT:-30}" chroot "$ROOT" /usr/sbin/asterisk -rx "core waitfullybooted" >/dev/null 2>&1; then
  log "ERROR: Asterisk did not reach FullyBooted; tail of $CONSOLE:"; tail -n 20 "$CONSOLE" >&2
  "$(dirname "$0")/asterisk-stop.sh" >/dev/null 2>&1 || true
  exit 1
fi
if grep -qE "$BIND_ERRORS" "$CONSOLE"; then
  log "ERROR: Asterisk booted but could not bind or load something:"; grep -E "$BIND_ERRORS" "$CONSOLE" >&2
  "$(dirname "$0")/asterisk-stop.sh" >/dev/null 2>&1 || true
  exit 1
fi
warnings=$(grep -cE 'WARNING|ERROR' "$CONSOLE" || true)
[ "$warnings" = 0 ] || log "note: $warnings WARNING/ERROR lines in $CONSOLE"
log "up, pid $(cat "$RUN/asterisk.pid"), log $CONSOLE"
