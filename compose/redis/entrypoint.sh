#!/bin/sh
# Starts a Redis Cluster node that announces the host address and the host ports Docker published for it,
# as rediscover tells them. POSIX sh: busybox (alpine) and dash (Debian, the official images) both run it.
#
# Environment:
#   DISCOVER_HOST         rediscover's address (default: the default gateway, the host for host networking)
#   DISCOVER_PORT         its port (7379)
#   DISCOVER_TRIES        how many times to ask, one second apart, before giving up (60)
#   CLUSTER_NODE_TIMEOUT  cluster-node-timeout in milliseconds (5000)
#   REDIS_PASSWORD        when set, clients and replicas must authenticate with it (requirepass, masterauth)
#   DISCOVER_PASSWORD     rediscover's password (its --requirepass), if it has one
#   DISCOVER_HOSTNAME     not empty: ask for rediscover's host name too (DISCOVER ... HOSTNAME) and announce it
#                         (cluster-announce-hostname), the endpoint clients are sent to unless
#                         CLUSTER_PREFERRED_ENDPOINT_TYPE says otherwise (hostname; ip, unknown-endpoint)
#   TLS                   1: clients, replicas and the cluster bus speak TLS only, with /tls/node.crt,
#                         /tls/node.key and /tls/ca.crt (docker-compose.tls.yml mounts them)
#   TLS_AUTH_CLIENTS      with TLS=1, whether clients must show a certificate of the CA: optional (default),
#                         yes or no; the cluster bus always asks its peers for one
#   DISCOVER_TLS          1: rediscover speaks TLS (the same files; it asks for the node certificate)
# Arguments go to redis-server after the cluster options.
set -eu
. "${0%/*}/common.sh"

find_discover
tries=${DISCOVER_TRIES:-60}
me=$(cat /proc/sys/kernel/hostname)
with_hostname=
[ -z "${DISCOVER_HOSTNAME:-}" ] || with_hostname=HOSTNAME

if [ "${TLS:-0}" = 1 ] || [ "${DISCOVER_TLS:-0}" = 1 ]; then
  for f in ca.crt node.crt node.key; do
    [ -r "/tls/$f" ] || { say "TLS=1 or DISCOVER_TLS=1 but /tls/$f is not readable: mount TLS_DIR (with ca.crt, node.crt, node.key) at /tls"; exit 1; }
  done
fi

n=0
answer=
while :; do
  # Until Docker has published the ports, or while rediscover starts, the answer is an error: ask again.
  # An IPv4 ip:port@bus-port (with HOSTNAME: then a comma and the host name) and nothing else; messages
  # from redis-cli are shown when giving up.
  # shellcheck disable=SC2086 # HOSTNAME or nothing
  if answer=$(ask_discover 5 DISCOVER "$me" $with_hostname 2>&1); then
    case ${answer%%,*} in
      *[!0-9.:@]*) ;;
      ?*:?*@?*) break ;;
    esac
  fi
  # Asking again does not mend these. redis-cli may say them on two lines: one line here.
  answer=$(printf '%s' "$answer" | tr '\n' ' ')
  case $answer in
    *NOHOSTNAME*)
      say "rediscover has no host name to announce ($answer): give it --announce-hostname (cluster.sh: ANNOUNCE_HOSTNAME), or unset DISCOVER_HOSTNAME"
      exit 1
      ;;
    *NOAUTH* | *WRONGPASS*)
      say "rediscover did not take DISCOVER_PASSWORD ($answer): set it to rediscover's --requirepass (cluster.sh: DISCOVER_PASSWORD)"
      exit 1
      ;;
  esac
  n=$((n + 1))
  if [ "$n" -ge "$tries" ]; then
    say "rediscover at $DISCOVER_HOST:$DISCOVER_PORT gave no address for $me (${answer:-no answer}): start the discover service, publish 6379 and 16379 and give this container its --require-label"
    exit 1
  fi
  sleep 1
done

address=${answer%%,*}
ip=${address%%:*}
rest=${address#*:}
port=${rest%%@*}
bus_port=${rest#*@}
if [ -n "$with_hostname" ]; then
  hostname=${answer#"$address"}
  hostname=${hostname#,}
  [ -n "$hostname" ] || { say "rediscover answered $answer, without a host name: give it --announce-hostname (cluster.sh: ANNOUNCE_HOSTNAME), or unset DISCOVER_HOSTNAME"; exit 1; }
  set -- --cluster-announce-hostname "$hostname" \
    --cluster-preferred-endpoint-type "${CLUSTER_PREFERRED_ENDPOINT_TYPE:-hostname}" "$@"
  say "announcing $ip:$port@$bus_port, host name $hostname"
else
  say "announcing $ip:$port@$bus_port"
fi

if [ "${TLS:-0}" = 1 ]; then
  # TLS only: clients, replicas and the cluster bus. With tls-cluster and port 0, Redis 7 announces the TLS
  # port as the node's port through cluster-announce-tls-port (cluster-announce-port would be the plain-text
  # port, and there is none). The cluster bus asks every peer for a certificate whatever tls-auth-clients says.
  set -- --port 0 --tls-port 6379 --tls-cluster yes --tls-replication yes \
    --tls-cert-file /tls/node.crt --tls-key-file /tls/node.key --tls-ca-cert-file /tls/ca.crt \
    --tls-auth-clients "${TLS_AUTH_CLIENTS:-optional}" --cluster-announce-tls-port "$port" "$@"
else
  set -- --port 6379 --cluster-announce-port "$port" "$@"
fi

if [ -n "${REDIS_PASSWORD:-}" ]; then
  # redis-server replaces its command line with its title at once: the password does not stay in ps.
  set -- --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" "$@"
fi

# Protected mode refuses clients from other addresses when there is no password, and through Docker's port
# publishing every client and peer comes from another address: it is off (README, Security).
# nodes.conf, the append-only file and the data stay in /data, a volume: a restarted node keeps its identity
# and tells its peers its new address itself.
# The server runs as a child, not by exec: a node stopped by a signal (docker stop, its engine shutting down)
# exits 143, a failure, which a swarm's on-failure restart policy starts again; only a SHUTDOWN command ends it
# with redis-server's 0, for good (swarm.sh scale removes a node so).
signalled=0
pid=
trap 'signalled=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true' TERM INT
redis-server \
  --cluster-enabled yes \
  --cluster-config-file nodes.conf \
  --cluster-node-timeout "${CLUSTER_NODE_TIMEOUT:-5000}" \
  --cluster-announce-ip "$ip" \
  --cluster-announce-bus-port "$bus_port" \
  --dir /data \
  --appendonly yes \
  --protected-mode no \
  "$@" &
pid=$!
[ "$signalled" = 0 ] || kill -TERM "$pid" 2>/dev/null || true
status=0
wait "$pid" || status=$?
# A trapped signal ends wait early: wait again for the server itself (a zombie still answers kill -0).
while kill -0 "$pid" 2>/dev/null; do
  status=0
  wait "$pid" || status=$?
done
[ "$signalled" = 0 ] || exit 143
exit "$status"
