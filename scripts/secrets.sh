# shellcheck shell=bash
# Sourced, not run: ivr_secrets STATE_DIR exports IVR_AMI_SECRET and IVR_ARI_PASSWORD, each
# from the environment, else from STATE_DIR/secrets.env, else generated once and appended
# there (mode 0600). The chroot install and the Asterisk container share this.
ivr_secrets() {
  local state=$1 secrets name val
  secrets=$state/secrets.env
  mkdir -p "$state"; touch "$secrets"; chmod 600 "$secrets"
  for name in IVR_AMI_SECRET IVR_ARI_PASSWORD; do
    val=${!name:-}
    [ -n "$val" ] || val=$(sed -n "s/^$name=//p" "$secrets" | tail -n 1)
    if [ -z "$val" ]; then
      val=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
      echo "$name=$val" >>"$secrets"
      echo "generated $name into $secrets" >&2
    fi
    export "$name=$val"
  done
}
