#!/bin/sh
# Forms a Redis Cluster from the nodes rediscover lists, then keeps adding every node that appears later:
# as a replica of a master that has none, else as a master that gets its share of the slots. Every cluster
# operation is redis-cli's own (--cluster create, add-node, rebalance; CLUSTER MEET). POSIX sh.
#
# Environment:
#   CLUSTER_LABEL     the label (key=value) the Redis nodes carry; required
#   CLUSTER_SIZE      how many nodes the first cluster has (6)
#   CLUSTER_REPLICAS  replicas per master in the first cluster (1; 0 when CLUSTER_SIZE is too small for them)
#   WATCH_INTERVAL    seconds between looks for new nodes (1)
#   DISCOVER_HOST, DISCOVER_PORT  where rediscover listens (see entrypoint.sh)
set -eu
. "${0%/*}/common.sh"

label=${CLUSTER_LABEL:-}
[ -n "$label" ] || { say "CLUSTER_LABEL is not set: set it to the label of the Redis nodes (key=value)"; exit 1; }
size=${CLUSTER_SIZE:-6}
replicas=${CLUSTER_REPLICAS:-1}
interval=${WATCH_INTERVAL:-1}
[ "$size" -ge 3 ] || { say "CLUSTER_SIZE=$size: a Redis Cluster needs at least 3 nodes, set CLUSTER_SIZE to 3 or more"; exit 1; }
[ "$size" -ge $((3 * (replicas + 1))) ] || replicas=0
find_discover

# Member announce strings (ip:port@bus-port), one a line; MIN/TIMEOUT options may follow.
members() { ask_discover MEMBERS LABEL "$label" "$@"; }

# node ip:port@bus ARGS...: a command to one node.
node() {
  addr=${1%@*}
  shift
  redis-cli -e -h "${addr%:*}" -p "${addr##*:}" "$@"
}

# node FIELD: a field of CLUSTER INFO (its lines end in CRLF).
info_field() { node "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

# True when the node already belongs to a cluster: it serves slots or knows other nodes.
in_cluster() {
  known=$(info_field "$1" cluster_known_nodes)
  slots=$(info_field "$1" cluster_slots_assigned)
  [ "${known:-1}" -gt 1 ] || [ "${slots:-0}" -gt 0 ]
}

# The first node that sees the cluster whole; the entry point for redis-cli --cluster.
entry_node() {
  for e in $1; do
    if [ "$(info_field "$e" cluster_state)" = ok ]; then
      echo "$e"
      return 0
    fi
  done
  return 1
}

# The id of a master that is up and has no replica, from CLUSTER NODES on stdin.
lonely_master() {
  awk '
    $3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ { master[$1] = 1 }
    $3 ~ /slave/ && $3 !~ /fail/ { served[$4] = 1 }
    END { for (id in master) if (!(id in served)) { print id; exit } }'
}

# Forms the cluster from the first $size members unless one of them is in a cluster already.
form() {
  until all=$(members MIN "$size" TIMEOUT 60000 2>&1); do
    say "waiting for $size nodes labelled $label: $all"
    sleep 1
  done
  first=$(echo "$all" | head -n "$size")
  for f in $all; do
    if in_cluster "$f"; then
      say "$f is in a cluster already: not creating one"
      return 0
    fi
  done
  addrs=
  for f in $first; do
    until node "$f" PING >/dev/null 2>&1; do sleep 1; done
    addrs="$addrs ${f%@*}"
  done
  say "creating a cluster of$addrs with $replicas replica(s) per master"
  # shellcheck disable=SC2086 # one argument per address
  redis-cli --cluster create $addrs --cluster-replicas "$replicas" --cluster-yes
}

# entry id [master-id]: waits until the entry node knows the node with this id as a master, or as a
# replica of master-id: the next decision must not count a fresh replica as a master.
await_member() {
  w=0
  while [ "$w" -lt 30 ]; do
    node "$1" CLUSTER NODES 2>/dev/null | awk -v id="$2" -v of="${3:-}" '
      $1 == id && $3 !~ /handshake/ && (of == "" ? $3 ~ /master/ : $3 ~ /slave/ && $4 == of) { found = 1 }
      END { exit !found }' && return 0
    w=$((w + 1))
    sleep 1
  done
  say "the cluster does not show $2 in its new role after 30 s"
  return 1
}

# Waits until every node knows as many nodes as the entry node: a slot moves only between nodes that know
# each other ("Unknown node" otherwise).
await_agreement() {
  want=$(info_field "$1" cluster_known_nodes)
  w=0
  for a in $(node "$1" CLUSTER NODES | awk '$3 !~ /fail|handshake|noaddr/ { split($2, a, ","); print a[1] }'); do
    until [ "$(info_field "$a" cluster_known_nodes)" = "$want" ]; do
      w=$((w + 1))
      [ "$w" -lt 30 ] || { say "$a does not know all $want nodes after 30 s"; return 1; }
      sleep 1
    done
  done
}

# True when a master that is up serves no slot (slots are the fields after the eighth).
has_empty_master() {
  node "$1" CLUSTER NODES | awk '$3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ && NF == 8 { found = 1 } END { exit !found }'
}

# Brings every member into the cluster; fails when something is left for the next round.
reconcile() {
  if ! entry=$(entry_node "$1"); then
    # After many nodes restarted at once under new host ports, none may find the others: introduce every
    # node to the first again. Each kept its id in nodes.conf, so the cluster takes the new addresses.
    say "no node reports cluster_state:ok: introducing the nodes to each other again"
    set -- $1
    for m in "$@"; do
      ip=${m%%:*}
      rest=${m#*:}
      node "$1" CLUSTER MEET "$ip" "${rest%@*}" "${rest#*@}" >/dev/null 2>&1 || true
    done
    return 1
  fi
  pending=0
  for m in $1; do
    nodes=$(node "$entry" CLUSTER NODES) || return 1
    # Known at this address: nothing to do.
    if echo "$nodes" | awk -v m="$m" '{ split($2, a, ","); if (a[1] == m) found = 1 } END { exit !found }'; then
      continue
    fi
    id=$(node "$m" CLUSTER MYID 2>/dev/null) || { pending=1; continue; }
    if echo "$nodes" | awk -v id="$id" '$1 == id { found = 1 } END { exit !found }'; then
      # A restarted node under new host ports. It tells its peers itself; a MEET makes sure.
      ip=${m%%:*}
      rest=${m#*:}
      say "$id is back at $m"
      node "$entry" CLUSTER MEET "$ip" "${rest%@*}" "${rest#*@}" >/dev/null || pending=1
      continue
    fi
    if in_cluster "$m"; then
      say "$m ($id) is in another cluster or still joining: leaving it alone"
      pending=1
      continue
    fi
    master=$(echo "$nodes" | lonely_master)
    if [ -n "$master" ]; then
      say "adding $m as a replica of $master"
      if ! redis-cli --cluster add-node "${m%@*}" "${entry%@*}" --cluster-slave --cluster-master-id "$master"; then
        # It may have joined before gossip told it of its master ("Unknown node"): ask it again a few times.
        w=0
        until node "$m" CLUSTER REPLICATE "$master" >/dev/null 2>&1; do
          w=$((w + 1))
          [ "$w" -lt 30 ] || { say "$m does not replicate $master: next round"; pending=1; break; }
          sleep 1
        done
      fi
    else
      say "adding $m as a master"
      redis-cli --cluster add-node "${m%@*}" "${entry%@*}" || { pending=1; continue; }
    fi
    await_member "$entry" "$id" "$master" || pending=1
  done
  if has_empty_master "$entry"; then
    # The new masters get their share of the slots once every node knows them.
    await_agreement "$entry" || return 1
    n=0
    until redis-cli --cluster rebalance "${entry%@*}" --cluster-use-empty-masters --cluster-yes; do
      n=$((n + 1))
      [ "$n" -lt 30 ] || { say "rebalance keeps failing: see the messages above"; return 1; }
      sleep 1
      # A move cut short leaves its slot open (migrating/importing): redis-cli closes it.
      redis-cli --cluster fix "${entry%@*}" --cluster-yes || true
    done
  fi
  [ "$pending" = 0 ]
}

form
seen=
while :; do
  if now=$(members 2>&1); then
    if [ "$now" != "$seen" ] && reconcile "$now"; then
      seen=$now
    fi
  else
    say "rediscover did not list the nodes: $now"
  fi
  sleep "$interval"
done
