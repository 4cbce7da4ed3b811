# Shared by entrypoint.sh and manage.sh (sourced, POSIX sh): messages and the way to reach rediscover.

say() { echo "${0##*/}: $*" >&2; }

# The default gateway from /proc/net/route, whose Gateway column is hex with the first octet last;
# no iproute2 needed. With rediscover on the host network, the gateway is the host.
gateway() {
  while read -r _iface dest gw _rest; do
    [ "$dest" = 00000000 ] || continue
    case $gw in
      [0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f]) ;;
      *) continue ;;
    esac
    o4=${gw%??????}
    rest=${gw#??}
    o3=${rest%????}
    rest=${rest#??}
    o2=${rest%??}
    o1=${rest#??}
    echo "$((0x$o1)).$((0x$o2)).$((0x$o3)).$((0x$o4))"
    return 0
  done </proc/net/route
  return 1
}

# Sets DISCOVER_HOST (default: the gateway) and DISCOVER_PORT (default: 7379).
find_discover() {
  if [ -z "${DISCOVER_HOST:-}" ]; then
    DISCOVER_HOST=$(gateway) \
      || { say "no default route in /proc/net/route: set DISCOVER_HOST to rediscover's address"; exit 1; }
  fi
  DISCOVER_PORT=${DISCOVER_PORT:-7379}
}

# redis-cli's TLS options, written here only: the CA, and the node certificate that every node also shows as
# a client (cluster bus, replication, the manager). docker-compose.tls.yml mounts them at /tls.
tls_options="--tls --cacert /tls/ca.crt --cert /tls/node.crt --key /tls/node.key"
# Options for redis-cli towards the nodes (TLS=1) and towards rediscover (DISCOVER_TLS=1); used unquoted,
# one option a word.
node_tls=
[ "${TLS:-0}" != 1 ] || node_tls=$tls_options
discover_tls=
[ "${DISCOVER_TLS:-0}" != 1 ] || discover_tls=$tls_options

# ask_discover SECONDS ARGS...: asks rediscover, giving up after SECONDS (coreutils or busybox timeout: a
# server that accepts and never answers must not hold the caller); redis-cli -e makes an error reply a failure.
# The nodes' password (REDISCLI_AUTH in the manager) is not rediscover's: its own, DISCOVER_PASSWORD, goes
# through the environment of this one call, never on a command line.
ask_discover() {
  limit=$1
  shift
  # shellcheck disable=SC2086 # one option a word
  if [ -n "${DISCOVER_PASSWORD:-}" ]; then
    REDISCLI_AUTH=$DISCOVER_PASSWORD timeout "$limit" redis-cli -e $discover_tls -h "$DISCOVER_HOST" -p "$DISCOVER_PORT" "$@"
  else
    env -u REDISCLI_AUTH timeout "$limit" redis-cli -e $discover_tls -h "$DISCOVER_HOST" -p "$DISCOVER_PORT" "$@"
  fi
}
