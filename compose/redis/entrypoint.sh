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
# Arguments go to redis-server after the cluster options.
set -eu
. "${0%/*}/common.sh"

find_discover
tries=${DISCOVER_TRIES:-60}
me=$(cat /proc/sys/kernel/hostname)

n=0
answer=
while :; do
  # Until Docker has published the ports, or while rediscover starts, the answer is an error: ask again.
  # An IPv4 ip:port@bus-port and nothing else; messages from redis-cli are shown when giving up.
  if answer=$(ask_discover 5 DISCOVER "$me" 2>&1); then
    case $answer in
      *[!0-9.:@]*) ;;
      ?*:?*@?*) break ;;
    esac
  fi
  n=$((n + 1))
  if [ "$n" -ge "$tries" ]; then
    say "rediscover at $DISCOVER_HOST:$DISCOVER_PORT gave no address for $me (${answer:-no answer}): start the discover service, publish 6379 and 16379 and give this container its --require-label"
    exit 1
  fi
  sleep 1
done

ip=${answer%%:*}
rest=${answer#*:}
port=${rest%%@*}
bus_port=${rest#*@}
say "announcing $ip:$port@$bus_port"

if [ -n "${REDIS_PASSWORD:-}" ]; then
  # redis-server replaces its command line with its title at once: the password does not stay in ps.
  set -- --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" "$@"
fi

# Protected mode refuses clients from other addresses when there is no password, and through Docker's port
# publishing every client and peer comes from another address: it is off (README, Security).
# nodes.conf, the append-only file and the data stay in /data, a volume: a restarted node keeps its identity
# and tells its peers its new address itself.
exec redis-server \
  --port 6379 \
  --cluster-enabled yes \
  --cluster-config-file nodes.conf \
  --cluster-node-timeout "${CLUSTER_NODE_TIMEOUT:-5000}" \
  --cluster-announce-ip "$ip" \
  --cluster-announce-port "$port" \
  --cluster-announce-bus-port "$bus_port" \
  --dir /data \
  --appendonly yes \
  --protected-mode no \
  "$@"
