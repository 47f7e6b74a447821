#!/bin/bash
# Install a real Asterisk (Debian sid) into a chroot and render the project's configuration into it.
#
#   scripts/asterisk-install.sh
#
# Asterisk is packaged only for Debian sid, whose libraries need a newer libc than the host, so it
# lives in a debootstrap'ed sid root run with plain `chroot` (no mounts, no systemd).
# Idempotent. The first run builds the root (1-3 minutes) and packs it into the cache; later runs
# unpack the cache when the root is missing and otherwise only re-render configs and prompts.
#
# Environment:
#   IVR_ASTERISK_ROOT  chroot folder            (default /var/lib/ivr14/asterisk-root)
#   IVR_CACHE_DIR      .deb cache + packed root (default /var/cache/ivr14)
#   IVR_STATE_DIR      secrets.env, prompts     (default /var/lib/ivr14)
#   IVR_AMI_SECRET     AMI secret of user `ivr`  (default: generated once, kept in secrets.env)
#   IVR_ARI_PASSWORD   ARI password of user `ivr` (default: generated once, kept in secrets.env)
#   IVR_PROMPTS_DIR    optional folder of recorded WAVs overriding the generated prompts
set -euo pipefail
# the whole body is one function so that editing this file while it runs cannot break the run
main() {
ROOT=${IVR_ASTERISK_ROOT:-/var/lib/ivr14/asterisk-root}
CACHE=${IVR_CACHE_DIR:-/var/cache/ivr14}
STATE=${IVR_STATE_DIR:-/var/lib/ivr14}
REPO=$(cd "$(dirname "$0")/.." && pwd)
# bump when the package set below changes, so an old packed root is not reused
ROOT_FLAVOUR=sid-asterisk-v1
PACKED=$CACHE/asterisk-root-$ROOT_FLAVOUR.tar.zst
INCLUDE=asterisk,asterisk-moh-opsound-gsm
export DEBIAN_FRONTEND=noninteractive
log() { echo "asterisk-install: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"

# ---- host tools (from the host's own release) ----
need=()
for p in debootstrap sip-tester sox espeak-ng zstd; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})); then
  log "installing host packages: ${need[*]}"
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi

# python used for the generators: the project's venv if there is one
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || PY=$(command -v python3) || die "no python3 found (run scripts/test.sh or create .venv)"

# never rm -rf a folder that still has something mounted below it (debootstrap can leave /proc)
unmount_below() {
  findmnt -rno TARGET | { grep -E "^$1(/|$)" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
}
root_ok() { [ -x "$1/usr/sbin/asterisk" ] && chroot "$1" /usr/sbin/asterisk -V >/dev/null 2>&1; }

# ---- the chroot ----
if ! root_ok "$ROOT"; then
  mkdir -p "$CACHE/debs" "$(dirname "$ROOT")"
  [ -e "$ROOT" ] && { log "removing incomplete root $ROOT"; unmount_below "$ROOT"; rm -rf "$ROOT"; }
  unmount_below "$ROOT.partial"; rm -rf "$ROOT.partial"
  if [ -s "$PACKED" ]; then
    log "unpacking cached root $PACKED"
    t0=$SECONDS
    mkdir -p "$ROOT.partial"
    if zstd -dc -T0 "$PACKED" | tar -C "$ROOT.partial" -xf - && root_ok "$ROOT.partial"; then
      mv "$ROOT.partial" "$ROOT"; log "unpacked in $((SECONDS - t0)) s"
    else
      log "cached root is unusable; deleting it and building a fresh one"
      rm -rf "$ROOT.partial" "$PACKED"
    fi
  fi
fi
if ! root_ok "$ROOT"; then
  dlog=$CACHE/debootstrap.log
  ok=0
  for attempt in 1 2 3; do
    unmount_below "$ROOT.partial"; rm -rf "$ROOT.partial"
    log "debootstrap sid into $ROOT.partial (attempt $attempt, log $dlog)"
    t0=$SECONDS
    if debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$INCLUDE" sid "$ROOT.partial" >"$dlog" 2>&1 \
       && root_ok "$ROOT.partial"; then
      ok=1; log "debootstrap done in $((SECONDS - t0)) s"; break
    fi
    log "debootstrap attempt $attempt failed (Debian sid moves; a mirror sync or a broken dependency is usual). Tail of $dlog:"
    tail -n 8 "$dlog" | sed 's/^/    /' >&2
    grep -E '^(E|W): ' "$dlog" | tail -n 5 | sed 's/^/    /' >&2 || true
    sleep $((attempt * 10))
  done
  unmount_below "$ROOT.partial"
  [ "$ok" = 1 ] || die "could not build the Asterisk chroot after 3 debootstrap attempts; see $dlog"
  # slim it down; keep the Debian configs for reference only
  rm -f "$ROOT.partial/var/cache/apt/archives/"*.deb
  rm -rf "$ROOT.partial/var/lib/apt/lists/"* "$ROOT.partial/usr/share/doc/"* "$ROOT.partial/usr/share/man/"*
  [ -d "$ROOT.partial/etc/asterisk.dist" ] || mv "$ROOT.partial/etc/asterisk" "$ROOT.partial/etc/asterisk.dist"
  mkdir -p "$ROOT.partial/etc/asterisk"
  log "packing the root into $PACKED"
  if tar -C "$ROOT.partial" -cf - . | zstd -q -T0 -3 -o "$PACKED.tmp" -f; then
    mv "$PACKED.tmp" "$PACKED"
  else
    rm -f "$PACKED.tmp"; log "warning: could not pack the root (the next install from scratch will be slow)"
  fi
  mv "$ROOT.partial" "$ROOT"
fi

# ---- secrets: environment first, else generated once and kept in $STATE/secrets.env (0600) ----
mkdir -p "$STATE"; chmod 700 "$STATE"
# shellcheck source=scripts/secrets.sh
. "$REPO/scripts/secrets.sh"
ivr_secrets "$STATE"

# ---- configs: replace the whole /etc/asterisk every time (cheap, keeps it in step with the repo) ----
ETC=$ROOT/etc/asterisk
rm -rf "${ETC:?}/"*
# only the two placeholders are substituted; Asterisk's own ${VARS} stay untouched
"$PY" - "$REPO/dialplan" "$ETC" <<'PYEOF'
import os, pathlib, sys
src, dst = map(pathlib.Path, sys.argv[1:3])
names = ("IVR_AMI_SECRET", "IVR_ARI_PASSWORD")
for f in sorted(src.glob("*.conf")):
    text = f.read_text()
    for n in names:
        text = text.replace("${%s}" % n, os.environ[n])
    out = dst / f.name
    out.write_text(text)
    os.chmod(out, 0o640)
PYEOF
(cd "$REPO" && "$PY" -m ivr_lab.lab_dialplan "$ETC/municipalities.conf") || die "lab dialplan generation failed"
# outgoing calls from municipalities' lines present their 14+ number: from the plan (+ IVR_PLAN_FILE if set)
(cd "$REPO" && "$PY" -m ivr.adapters.asterisk.outgoing_dialplan "$ETC/outgoing.conf") \
  || die "outgoing dialplan generation failed"

# ---- prompts: espeak-ng -> 8 kHz mono WAV, cached in $STATE/prompts, copied into the chroot ----
(cd "$REPO" && "$PY" -m ivr_lab.prompts_build "$STATE/prompts") || die "prompt generation failed"
SOUNDS=$ROOT/usr/share/asterisk/sounds/ivr14
rm -rf "$SOUNDS"; mkdir -p "$SOUNDS"
cp -a "$STATE/prompts/." "$SOUNDS/"
rm -f "$SOUNDS/.manifest.json"

mkdir -p "$ROOT/run/asterisk" "$ROOT/var/spool/asterisk/recording" "$ROOT/var/log/asterisk"
log "ready: $(chroot "$ROOT" /usr/sbin/asterisk -V), configs from dialplan/, $(find "$SOUNDS" -name '*.wav' | wc -l) prompts"
}
main "$@"
