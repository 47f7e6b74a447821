#!/bin/bash
# Render the project's Asterisk configs with the secrets, then run Asterisk in the foreground.
# Secrets: IVR_AMI_SECRET / IVR_ARI_PASSWORD from the environment, else from (or generated once
# into) $IVR_STATE_DIR/secrets.env - a volume the controller container mounts too.
# IVR_SIP_BIND (default 127.0.0.1:5060) lets SIP listen beyond the container's loopback.
# A cluster node (compose profile "cluster") also sets IVR_SYSTEM_NAME (n1, n2: Asterisk's systemname,
# the prefix of every call id, so ids never collide in the shared database), IVR_SIP_MATCH (Kamailio's
# address, identified as a caller like 127.0.0.1) and IVR_HTTP_BIND (HTTP /metrics for a Prometheus
# outside the node's namespace).
set -euo pipefail
# shellcheck source=scripts/secrets.sh
. /usr/local/share/ivr14/secrets.sh
ivr_secrets "${IVR_STATE_DIR:-/var/lib/ivr14}"
rm -rf /etc/asterisk/*
for f in /usr/local/share/ivr14/dialplan/*.conf; do
  # only our two placeholders; Asterisk's own ${VARIABLES} stay as they are
  # shellcheck disable=SC2016,SC2094
  envsubst '${IVR_AMI_SECRET} ${IVR_ARI_PASSWORD}' <"$f" >"/etc/asterisk/$(basename "$f")"
done
if [ -n "${IVR_SIP_BIND:-}" ]; then
  sed -i "s/^bind = 127.0.0.1:5060\$/bind = ${IVR_SIP_BIND}/" /etc/asterisk/pjsip.conf
fi
if [ -n "${IVR_SYSTEM_NAME:-}" ]; then
  sed -i "s/^\[options\]\$/[options]\nsystemname = ${IVR_SYSTEM_NAME}/" /etc/asterisk/asterisk.conf
fi
if [ -n "${IVR_SIP_MATCH:-}" ]; then
  sed -i "/^\[sipp-identify\]\$/,/^\$/s/^match = 127.0.0.1\$/match = 127.0.0.1,${IVR_SIP_MATCH}/" /etc/asterisk/pjsip.conf
fi
if [ -n "${IVR_HTTP_BIND:-}" ]; then
  sed -i "s/^bindaddr = 127.0.0.1\$/bindaddr = ${IVR_HTTP_BIND}/" /etc/asterisk/http.conf
fi
chmod 640 /etc/asterisk/*.conf
mkdir -p /run/asterisk /var/log/asterisk /var/spool/asterisk
exec "$@"
