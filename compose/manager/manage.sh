#!/bin/sh
# Forms a Redis Cluster from the nodes rediscover lists, then keeps adding every node that appears later:
# as a replica of a master that has none, else as a master that gets its share of the slots; promotes the
# replica of a master whose container is gone when no election does; and forgets every node whose container
# is gone. Every cluster operation is redis-cli's own (--cluster create, add-node, rebalance, fix; CLUSTER
# MEET, REPLICATE, RESET, FORGET, FAILOVER TAKEOVER). POSIX sh.
#
# It may be killed at any moment and started again: each round looks at the cluster as it is and finishes
# what an interrupted round left. A create cut short is started over (its nodes never served, as none of
# them saw every slot assigned); a node that joined but serves no slot is placed as a new node would be;
# a slot left open by a cut-short move is closed; the slots are rebalanced.
#
# Environment:
#   CLUSTER_LABEL     the label (key=value) the Redis nodes carry; required
#   CLUSTER_SIZE      how many nodes the first cluster has (6)
#   CLUSTER_REPLICAS  replicas per master in the first cluster (1; 0 when CLUSTER_SIZE is too small for them)
#   WATCH_INTERVAL    seconds between looks for new nodes (1)
#   CALL_TIMEOUT      seconds one redis-cli command to one node may take (5)
#   FORGOTTEN_AFTER   seconds a member unknown to the cluster may know it before it counts as a forgotten node
#                     back with old state, and is emptied and added again (20)
#   CLUSTER_OP_TIMEOUT  seconds one redis-cli --cluster operation may take (600); a slower one is cut short
#                     and finished by the next round
#   REDIS_PASSWORD    the nodes' password, if they have one
#   NAMES_FILE        where the container name of every node id seen is kept ($TMPDIR or /tmp, then
#                     rediscover-node-names); it outlives a restart of the manager's container
#   DISCOVER_HOST, DISCOVER_PORT  where rediscover listens (see entrypoint.sh)
set -eu
. "${0%/*}/common.sh"

# redis-cli, --cluster included, authenticates with REDISCLI_AUTH: not on the command line.
[ -z "${REDIS_PASSWORD:-}" ] || export REDISCLI_AUTH="$REDIS_PASSWORD"

label=${CLUSTER_LABEL:-}
[ -n "$label" ] || { say "CLUSTER_LABEL is not set: set it to the label of the Redis nodes (key=value)"; exit 1; }
size=${CLUSTER_SIZE:-6}
replicas=${CLUSTER_REPLICAS:-1}
interval=${WATCH_INTERVAL:-1}
call_timeout=${CALL_TIMEOUT:-5}
op_timeout=${CLUSTER_OP_TIMEOUT:-600}
[ "$size" -ge 3 ] || { say "CLUSTER_SIZE=$size: a Redis Cluster needs at least 3 nodes, set CLUSTER_SIZE to 3 or more"; exit 1; }
[ "$size" -ge $((3 * (replicas + 1))) ] || replicas=0
find_discover

# Member announce strings (ip:port@bus-port), one a line, sorted; MIN/TIMEOUT/WITHNAMES options may follow.
members() { ask_discover 70 MEMBERS LABEL "$label" "$@"; }

# node ip:port@bus ARGS...: a command to one node (over TLS with TLS=1: common.sh's node_tls).
node() {
  addr=${1%@*}
  shift
  # shellcheck disable=SC2086 # one option a word
  timeout "$call_timeout" redis-cli $node_tls -e -h "${addr%:*}" -p "${addr##*:}" "$@"
}

# cluster_op SUBCOMMAND ARGS...: redis-cli --cluster, cut short after CLUSTER_OP_TIMEOUT.
cluster_op() {
  op=$1
  shift
  # shellcheck disable=SC2086 # one option a word
  timeout "$op_timeout" redis-cli $node_tls --cluster "$op" "$@"
}

# Says a message once, not every round while the condition lasts.
said=
say_once() {
  [ "$said" = "$*" ] || say "$*"
  said=$*
}

# node FIELD: a field of CLUSTER INFO (its lines end in CRLF).
info_field() { node "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

# True when redis-cli --cluster del-node removed the node: its CLUSTER RESET SOFT left it alone, without
# slots, but kept its epoch, which a node that never was in a cluster (or was reset HARD) has at 0.
removed() {
  epoch=$(info_field "$1" cluster_current_epoch)
  ! in_cluster "$1" && [ "${epoch:-0}" -gt 0 ]
}

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

# The id of a master that is up and has no replica, from CLUSTER NODES on stdin. With "served", only a
# master that serves slots; the ids in `also` (space-separated) count as such too. With `host` (the new
# replica's IP), only a master on another host, unless every node is on that one: a replica must not go down
# with its master.
lonely_master() {
  awk -v served="${1:-}" -v also=" ${2:-} " -v host="${3:-}" '
    { split($2, a, ":"); ip[$1] = a[1]; if (a[1] != host) elsewhere = 1 }
    $3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ && (served == "" || NF > 8 || index(also, " " $1 " ")) {
      master[$1] = 1
    }
    $3 ~ /slave/ && $3 !~ /fail/ { replicated[$4] = 1 }
    END { for (id in master) if (!(id in replicated) && (host == "" || !elsewhere || ip[id] != host)) { print id; exit } }'
}

# Forms the cluster from the first $size members, unless a node already sees every slot assigned: then the
# cluster exists and the rounds below look after it.
form() {
  # A cluster scaled in below CLUSTER_SIZE exists all the same: a restarted manager must not wait for more.
  for f in $(members 2>/dev/null || true); do
    if [ "$(info_field "$f" cluster_slots_assigned)" = 16384 ]; then
      say "$f sees all 16384 slots assigned: the cluster exists"
      return 0
    fi
  done
  until all=$(members MIN "$size" TIMEOUT 60000 2>&1); do
    say "waiting for $size nodes labelled $label: $all"
    sleep 1
  done
  first=$(echo "$all" | head -n "$size")
  for f in $all; do
    # A node runs redis-server once rediscover has told it its address; one that went away is not waited for.
    node "$f" PING >/dev/null 2>&1 || { say_once "$f does not answer PING yet: asking again"; return 1; }
  done
  for f in $all; do
    if [ "$(info_field "$f" cluster_slots_assigned)" = 16384 ]; then
      say "$f sees all 16384 slots assigned: the cluster exists"
      return 0
    fi
  done
  # Slots or peers without full coverage are what a cut-short create left. Such a cluster never served a
  # command (a node refuses them until it sees every slot), and CLUSTER RESET refuses a master with keys.
  for f in $all; do
    if in_cluster "$f"; then
      say "$f holds what an unfinished create left: resetting it"
      node "$f" CLUSTER RESET HARD >/dev/null || { say_once "cannot reset $f (see its reply above): asking again"; return 1; }
    fi
  done
  addrs=
  for f in $first; do
    addrs="$addrs ${f%@*}"
  done
  say "creating a cluster of$addrs with $replicas replica(s) per master"
  # shellcheck disable=SC2086 # one argument per address
  cluster_op create $addrs --cluster-replicas "$replicas" --cluster-yes
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

# The addresses of the nodes that NODE deems up (neither failed nor joining), one a line.
up_nodes() {
  node "$1" CLUSTER NODES | awk '$3 !~ /fail|handshake|noaddr/ { split($2, a, ","); print a[1] }'
}

# Waits until every node knows as many nodes as the entry node: a slot moves only between nodes that know
# each other ("Unknown node" otherwise). A node that does not answer is not waited for: it is down, not yet
# flagged so, and waiting on it would hold up forgetting it if its container is gone.
await_agreement() {
  want=$(info_field "$1" cluster_known_nodes)
  w=0
  for a in $(up_nodes "$1"); do
    until known=$(info_field "$a" cluster_known_nodes) && { [ -z "$known" ] || [ "$known" = "$want" ]; }; do
      w=$((w + 1))
      if [ "$w" -ge 30 ]; then
        say "$a knows $known nodes, not $want, after 30 s; it sees:"
        describe "$a"
        return 1
      fi
      sleep 1
    done
  done
}

# The masters of a self_view that report another cluster_state than ok, each after a space. A master refuses
# the keys of a move (CLUSTERDOWN) while it does, as a new one does until up to 5 s after it learnt where every
# slot is (Redis's rejoin delay: the node timeout, at most 5 s). One that does not answer is left out, as
# await_agreement leaves it.
masters_not_ok() {
  for a in $(echo "$1" | awk '$3 ~ /master/ { split($2, a, ","); print a[1] }'); do
    state=$(info_field "$a" cluster_state)
    [ -z "$state" ] || [ "$state" = ok ] || printf ' %s' "$a"
  done
}

# CLUSTER NODES as every node that is up says of itself (its "myself" line), from the entry node's list:
# gossip may not yet have told the entry node of a new replica, and a decision on that would undo it.
self_view() {
  for a in $(up_nodes "$1"); do
    node "$a" CLUSTER NODES | awk '$3 ~ /myself/' || return 1
  done
}

# Masters that are up, serve no slot and have no replica, as "id address" lines, from CLUSTER NODES on
# stdin: a node whose create or add-node was cut short, or a new master waiting for its slots.
idle_masters() {
  awk '
    $3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ && NF == 8 { split($2, a, ","); idle[$1] = a[1] }
    $3 ~ /slave/ && $3 !~ /fail/ { replicated[$4] = 1 }
    END { for (id in idle) if (!(id in replicated)) print id, idle[id] }' | sort -k 2
}

# Places every idle master as a new node is placed: a replica of a master that has none, else a master.
# A master that serves slots comes first; an idle one only once it stays a master in this pass.
place_idle_masters() {
  kept=
  view=$(self_view "$1") || return 1
  for pair in $(echo "$view" | idle_masters | tr ' ' '='); do
    id=${pair%%=*}
    addr=${pair#*=}
    view=$(self_view "$1") || return 1
    target=$(echo "$view" | awk -v me="$id" '$1 != me' | lonely_master served "$kept" "${addr%%:*}")
    if [ -z "$target" ]; then
      kept="$kept $id"
      continue
    fi
    say "$addr ($id) serves no slot: making it a replica of $target"
    node "$addr" CLUSTER REPLICATE "$target" >/dev/null || return 1
    await_member "$1" "$id" "$target" || return 1
  done
}

# Closes slots a cut-short move left open and gives every master its share (the idle masters only if
# place_idle_masters kept them as masters), unless a master that serves
# slots is down or a node is still joining: redis-cli must not move or "fix" the slots of a node that is
# merely down. (redis-cli itself leaves out nodes flagged fail: a replica down, a master failed over.)
settle_slots() {
  if node "$1" CLUSTER NODES | awk '
    $3 ~ /handshake|noaddr/ || ($3 ~ /master/ && $3 ~ /fail/ && NF > 8) { bad = 1 } END { exit !bad }'; then
    say_once "a master that serves slots is down, or a node is joining: the slots stay where they are for now"
    return 1
  fi
  await_agreement "$1" || return 1
  # A node that finished joining after place_idle_masters looked would get slots as an empty master: it
  # must be placed first, by the next round.
  view=$(self_view "$1") || return 1
  for id in $(echo "$view" | idle_masters | awk '{ print $1 }'); do
    case " $kept " in
      *" $id "*) ;;
      *) say "$id joined while the others were placed: placing it next round"; return 1 ;;
    esac
  done
  check=$(cluster_op check "${1%@*}" 2>&1) || true
  open=
  if echo "$check" | grep -q 'slots in migrating state\|slots in importing state\|slots are open'; then
    open=1
  fi
  # Keys move when a slot is open or a master serves none (a new one, to be filled): only once every master
  # takes them. (A rebalance among masters that all serve slots moves nothing as long as they are even.)
  if [ -n "$open" ] || echo "$view" | awk '$3 ~ /master/ && NF == 8 { e = 1 } END { exit !e }'; then
    not_ok=$(masters_not_ok "$view")
    if [ -n "$not_ok" ]; then
      say_once "the slots stay where they are until every master reports cluster_state:ok; not yet:$not_ok"
      return 1
    fi
  fi
  if [ -n "$open" ]; then
    say "a move was cut short: closing its open slot with redis-cli --cluster fix"
    cluster_op fix "${1%@*}" --cluster-yes || { say_down "$1"; return 1; }
  fi
  cluster_op rebalance "${1%@*}" --cluster-use-empty-masters --cluster-yes || { say_down "$1"; return 1; }
}

# After a move failed: says which node that is up reports the cluster down, and how it sees the cluster (a
# master refuses the keys of a move, CLUSTERDOWN, while it does).
say_down() {
  for a in $(up_nodes "$1"); do
    info=$(node "$a" CLUSTER INFO 2>/dev/null | tr -d '\r')
    echo "$info" | grep -qx 'cluster_state:fail' || continue
    counts=$(echo "$info" | grep '^cluster_\(slots\|known\|size\)' | tr '\n' ' ')
    say "$a reports cluster_state:fail (${counts% }); it sees:"
    describe "$a"
  done
}

# describe NODE: its CLUSTER NODES without the slots (their count instead), for the log.
describe() {
  node "$1" CLUSTER NODES 2>/dev/null | awk '{ print $1, $2, $3, $4, $7, $8, (NF > 8 ? NF - 8 " slot range(s)" : "") }' >&2
}

# forgotten ADDRESS ID NODES: true when the member, unknown to the cluster (NODES: CLUSTER NODES of the entry
# node), has known some of the cluster's nodes for FORGOTTEN_AFTER seconds (20) of rounds: the cluster forgot it
# (failed, serving no slot, its container gone) and it came back with its old nodes.conf and data, as a swarm
# task does when the swarm starts its slot again on a host where an earlier task of that slot left its volume.
# Nobody answers it, and its slots are served by others: what it holds is out of date. A node that joins knows
# the cluster too, but only for the moment of its handshake. The time counts only while every round finds it so
# (see reconcile and the main loop).
suspects=
asked=
forgotten() {
  asked="$asked $2"
  ids=$(echo "$3" | awk '{ printf " %s", $1 }')
  if ! node "$1" CLUSTER NODES 2>/dev/null | awk -v ids="$ids " '
    $3 !~ /myself/ && index(ids, " " $1 " ") { found = 1 } END { exit !found }'; then
    suspects=$(echo "$suspects" | tr ' ' '\n' | grep -v "^$2=" | tr '\n' ' ')
    return 1
  fi
  now_s=$(date +%s)
  since=$(echo "$suspects" | tr ' ' '\n' | sed -n "s/^$2=//p")
  [ -n "$since" ] || { suspects="$suspects $2=$now_s"; since=$now_s; }
  [ $((now_s - since)) -ge "${FORGOTTEN_AFTER:-20}" ]
}

# unknown_to NODE MEMBERS [handshake]: the members that NODE's CLUSTER NODES does not list at their address,
# each after a space; with "handshake", a node it is still shaking hands with counts as listed.
unknown_to() {
  listed_at=$(node "$1" CLUSTER NODES 2>/dev/null | awk -v hs="${3:-}" '
    hs != "" || $3 !~ /handshake/ { split($2, a, ","); print a[1] }')
  for m in $2; do
    echo "$listed_at" | grep -qxF "$m" || printf ' %s' "$m"
  done
}

# Brings every member into the cluster; fails when something is left for the next round.
reconcile() {
  if ! entry=$(entry_node "$1"); then
    # After many nodes restarted at once under new host ports, none may find the others: introduce to the
    # first every node it does not know at its address. Each kept its id in nodes.conf, so the cluster takes
    # the new addresses. A node it knows where it is gets no MEET, as while a master fails over: a MEET opens
    # a new link, for which the receiver drops the link it had from the first node, and a vote sent on that
    # link meanwhile is lost (the election is tried again only two node timeouts later).
    set -- $1
    [ $# -gt 0 ] || return 1
    unknown=$(unknown_to "$1" "$*" handshake)
    if [ -z "$unknown" ]; then
      say_once "no node reports cluster_state:ok, and $1 knows every node where it is: waiting"
      return 1
    fi
    say "no node reports cluster_state:ok: introducing$unknown to $1"
    for m in $unknown; do
      ip=${m%%:*}
      rest=${m#*:}
      node "$1" CLUSTER MEET "$ip" "${rest%@*}" "${rest#*@}" >/dev/null 2>&1 || true
    done
    return 1
  fi
  pending=0
  asked=
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
    if removed "$m"; then
      # cluster.sh scale N removes a node this way before its container goes: it must not come back.
      say_once "$m ($id) was removed with redis-cli --cluster del-node: leaving it alone (CLUSTER RESET HARD on it makes it join again)"
      pending=1
      continue
    fi
    if forgotten "$m" "$id" "$nodes"; then
      say "$m ($id) knows this cluster, which forgot it long ago: it is a lost node back with its old state (its slots went to others); emptying it (FLUSHALL, CLUSTER RESET HARD) to add it as a new node"
      node "$m" FLUSHALL >/dev/null 2>&1 || true
      node "$m" CLUSTER RESET HARD >/dev/null || { pending=1; continue; }
      # Its new id is learnt with its name next round.
      { grep -v " $m " "$names" || true; } >"$names.new" && mv "$names.new" "$names"
    fi
    if in_cluster "$m"; then
      say_once "$m ($id) is in another cluster or still joining: leaving it alone"
      pending=1
      continue
    fi
    view=$(self_view "$entry") || return 1
    master=$(echo "$view" | lonely_master "" "" "${m%%:*}")
    if [ -n "$master" ]; then
      say "adding $m as a replica of $master"
      if ! cluster_op add-node "${m%@*}" "${entry%@*}" --cluster-slave --cluster-master-id "$master"; then
        if ! in_cluster "$m"; then
          # Refused before its MEET, as add-node refuses while a slot is open (a move cut short, which
          # settle_slots closes at the end of this round): waiting for it to join would be in vain.
          say "redis-cli --cluster add-node did not add $m (it refuses while a slot is open): next round"
          pending=1
          continue
        fi
        # It joined before gossip told it of its master ("Unknown node"): ask it again a few times.
        w=0
        until node "$m" CLUSTER REPLICATE "$master" >/dev/null 2>&1; do
          w=$((w + 1))
          if [ "$w" -ge 30 ]; then
            say "$m does not replicate $master: next round"
            pending=1
            continue 2
          fi
          sleep 1
        done
      fi
    else
      say "adding $m as a master"
      cluster_op add-node "${m%@*}" "${entry%@*}" || { pending=1; continue; }
    fi
    await_member "$entry" "$id" "$master" || pending=1
  done
  # A suspect that this round did not find unknown and knowing the cluster (it joined, or left the members)
  # starts again from nothing if it is ever found so again.
  kept_suspects=
  for s in $suspects; do
    case " $asked " in
      *" ${s%%=*} "*) kept_suspects="$kept_suspects $s" ;;
    esac
  done
  suspects=$kept_suspects
  place_idle_masters "$entry" || return 1
  settle_slots "$entry" || return 1
  [ "$pending" = 0 ]
}

names=${NAMES_FILE:-${TMPDIR:-/tmp}/rediscover-node-names}
touch "$names" || { say "cannot write $names: set NAMES_FILE to a writable file"; exit 1; }

# Notes "id address container-name" for every member it has not seen at its address under that name, from
# MEMBERS ... WITHNAMES (announce and container name on alternate lines; the name is the one DISCOVER takes:
# the container's on one engine, the task's container `service.slot.task-id` on a swarm). A node that does
# not answer CLUSTER MYID yet is asked again next round.
learn_names() {
  for pair in $(echo "$1" | awk 'NR % 2 { m = $0; next } { print m "=" $0 }'); do
    m=${pair%%=*}
    name=${pair#*=}
    awk -v m="$m" -v name="$name" '$2 == m && $3 == name { found = 1 } END { exit !found }' "$names" && continue
    id=$(node "$m" CLUSTER MYID 2>/dev/null) || continue
    { grep -v "^$id " "$names" || true; echo "$id $m $name"; } >"$names.new" && mv "$names.new" "$names"
  done
}

# True when the container of node id is gone: rediscover answers NOCONTAINER for its name, or the container
# of that name now runs another node (compose gives a new container the number of a removed one). A container
# that exists but is stopped (NOTRUNNING), or a Docker that does not answer, keeps the node.
container_gone() {
  name=$(awk -v id="$1" '$1 == id { print $3 }' "$names")
  [ -n "$name" ] || { say_once "$1 is failed and its container was never seen: it stays known"; return 1; }
  if answer=$(ask_discover 5 DISCOVER "$name" 2>&1); then
    case $answer in
      "" | *[!0-9.:@]*) return 1 ;;
    esac
    now_id=$(node "$answer" CLUSTER MYID 2>/dev/null) || return 1
    [ "$now_id" != "$1" ] && return 0
    return 1
  fi
  case $answer in
    *NOCONTAINER*) return 0 ;;
  esac
  return 1
}

# members views: forgets, on every running node, each node that some node flags as failed, that serves no
# slot (a master's slots went to its replica) and whose container no longer exists. Every node must forget it
# within a minute, before gossip would bring it back (CLUSTER FORGET bans the id for 60 s); a node that comes
# back later still knowing it is seen failed there and told to forget in a later round.
forget_gone() {
  failed=$(echo "$2" | awk '
    $3 ~ /(^|,)fail(,|$)/ && $3 !~ /myself/ && NF == 8 { split($2, a, ","); print $1, a[1] }' | sort -u)
  [ -n "$failed" ] || return 0
  # shellcheck disable=SC2086 # the members, one word each
  running=" $(echo $1) "
  for pair in $(echo "$failed" | tr ' ' '='); do
    gone=${pair%%=*}
    case $running in
      *" ${pair#*=} "*) continue ;;
    esac
    container_gone "$gone" || continue
    say "$gone (${pair#*=}) is failed and its container is gone: forgetting it on every node"
    for m in $1; do
      # "Unknown node" from a node that forgot it already; another error is left for the next round.
      node "$m" CLUSTER FORGET "$gone" >/dev/null 2>&1 || true
    done
  done
}

# What every member says in CLUSTER NODES and INFO replication (one redis-cli each), after a line "view ADDRESS".
views_of() {
  for m in $1; do
    echo "view $m"
    printf 'CLUSTER NODES\nINFO replication\n' | node "$m" 2>/dev/null | tr -d '\r' || true
  done
}

# views: a line per replica: its address, its master's id, that master's flags and address as the replica
# sees them, the host:port it replicates from, its slave_repl_offset and its master_link_down_since_seconds
# (Redis gives the last only while the link is down; -1 when it never came up). "-" stands for what it
# does not say.
replicas_in() {
  echo "$1" | awk '
    function dash(s) { return s == "" ? "-" : s }
    function flush() {
      if (me != "" && master != "")
        print me, master, dash(flags[master]), dash(addr[master]),
          (host == "" ? "-" : host ":" port), dash(offset), dash(down)
      me = ""; master = ""; host = ""; port = ""; offset = ""; down = ""
    }
    $1 == "view" { flush(); me = $2; split("", flags); split("", addr); next }
    NF >= 8 { split($2, a, ","); addr[$1] = a[1]; flags[$1] = $3 }
    $3 ~ /myself/ && $3 ~ /slave/ { master = $4 }
    /^master_host:/ { host = substr($0, 13) }
    /^master_port:/ { port = substr($0, 13) }
    /^slave_repl_offset:/ { offset = substr($0, 19) }
    /^master_link_down_since_seconds:/ { down = substr($0, 32) }
    END { flush() }'
}

# views: tells a replica that replicates from another address than the one it knows its master at to replicate
# that master again. Redis moves a replica's replication to its master's new address when the master's own PING
# brings it, not when another node's gossip does: after every node came back under new host ports at once (a
# reboot), a replica could go on asking the old address for good, or whichever node Docker gave it to next.
repoint_replicas() {
  replicas_in "$1" | awk '$4 != "-" && $5 != "-" && index($4, $5 "@") != 1 { print $1, $2 }' |
    while read -r replica master; do
      say "$replica replicates from an address its master $master has left: CLUSTER REPLICATE $master on it"
      node "$replica" CLUSTER REPLICATE "$master" >/dev/null || true
    done
}

# views: promotes, with CLUSTER FAILOVER TAKEOVER, the replica of a master whose container is gone, once two
# node timeouts have passed since the replica first flagged that master down and no election promoted it. An
# election needs the votes of most masters: when most of them went at once, the rest can neither flag them
# failed nor vote, and the cluster would stay down for good; and an election whose votes went astray is tried
# again only after two more node timeouts. A takeover needs no votes, so it is used only on Docker's word that
# the old master cannot come back (a stopped container, or a Docker that does not answer, never counts). Among
# several replicas, the one that holds the most of the master's data; one that never synced is not promoted.
down_since=
take_over_gone() {
  # "master-id replica-address offset link-down-seconds" for each replica that flags its master down (fail or
  # fail?).
  orphans=$(replicas_in "$1" | awk '$3 ~ /fail/ { print $2, $1, $6, $7 }')
  now_s=$(date +%s)
  kept=
  for master in $(echo "$orphans" | awk '{ print $1 }' | sort -u); do
    since=$(echo "$down_since" | tr ' ' '\n' | sed -n "s/^$master=//p")
    [ -n "$since" ] || since=$now_s
    kept="$kept $master=$since"
    # The first of the largest offsets among replicas whose link to the master once came up.
    best=$(echo "$orphans" | awk -v m="$master" '
      $1 == m && $3 ~ /^[0-9]+$/ && $4 ~ /^[0-9]+$/ && (best == "" || $3 + 0 > offset) { best = $2; offset = $3 + 0 }
      END { if (best != "") print best }')
    [ -n "$best" ] || continue
    timeout_ms=$(node "$best" CONFIG GET cluster-node-timeout 2>/dev/null | tail -n 1)
    case $timeout_ms in "" | *[!0-9]*) timeout_ms=15000 ;; esac
    [ $((now_s - since)) -ge $((2 * timeout_ms / 1000)) ] || continue
    container_gone "$master" || continue
    say "$master is down and its container is gone, and no election promoted a replica in $((now_s - since)) s: $best takes over (CLUSTER FAILOVER TAKEOVER)"
    node "$best" CLUSTER FAILOVER TAKEOVER >/dev/null || say "$best refused to take over (see its reply above): asking again next round"
  done
  down_since=$kept
}

# True when the cluster knows every member at its address. A node can leave the cluster while the member
# list stays the same (redis-cli --cluster del-node, CLUSTER RESET): a round then looks at it too.
all_known() {
  e=$(entry_node "$1") || return 1
  [ -z "$(unknown_to "$e" "$1")" ]
}

until form; do sleep 1; done
seen=
while :; do
  if listed=$(members WITHNAMES 2>&1); then
    now=$(echo "$listed" | awk 'NR % 2')
    learn_names "$listed"
    views=$(views_of "$now")
    take_over_gone "$views"
    repoint_replicas "$views"
    forget_gone "$now" "$views"
    if [ "$now" = "$seen" ] && all_known "$now"; then
      # Every member is known at its address: none is a forgotten node.
      suspects=
    elif reconcile "$now"; then
      seen=$now
    fi
  else
    say "rediscover did not list the nodes: $listed"
  fi
  sleep "$interval"
done
