#!/bin/bash
# Render the project's Kamailio config (dialplan/kamailio/kamailio.cfg, the lab cluster's) for the
# containers, check it, then run Kamailio in the foreground (or the command given).
#   IVR_KAM_LISTEN    ip:port to listen on; also the address the nodes send in-dialog requests to
#                     (Record-Route), so an address they reach (default: this container's first, port 5090)
#   IVR_KAM_NODES     the Asterisk nodes, "host:port host:port ..." (default: the compose services
#                     asterisk:5060 asterisk-n2:5060), named n1, n2, ... in that order
#   IVR_KAM_TEMPLATE  the config template (default /usr/local/share/ivr14/kamailio.cfg)
#   IVR_KAM_RUN       folder of the rendered config, the node list and the control socket (default /run/kamailio)
set -euo pipefail
template=${IVR_KAM_TEMPLATE:-/usr/local/share/ivr14/kamailio.cfg}
run=${IVR_KAM_RUN:-/run/kamailio}
listen=${IVR_KAM_LISTEN:-$(hostname -i | awk '{print $1}'):5090}
nodes=${IVR_KAM_NODES:-asterisk:5060 asterisk-n2:5060}
mkdir -p "$run"
sed -e "s|@LISTEN@|${listen}|g" -e "s|@RUN@|${run}|g" "$template" >"$run/kamailio.cfg"
{
  echo "# setid destination flags priority attributes"
  n=0
  for node in $nodes; do
    n=$((n + 1))
    echo "1 sip:${node} 0 0 duid=n${n}"
  done
} >"$run/dispatcher.list"
# a config Kamailio refuses stops the container here, with Kamailio's reason in its log
kamailio -c -f "$run/kamailio.cfg" >/dev/null
if [ "$#" -eq 0 ]; then
  set -- kamailio -f "$run/kamailio.cfg" -DD -E
fi
exec "$@"
