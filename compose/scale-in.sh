# Sourced by cluster.sh and swarm.sh (bash): takes nodes out of a Redis Cluster without losing a slot. The
# caller defines die, say and node_cli HANDLE ARGS... (redis-cli towards one node: a container in cluster.sh,
# ip:port in swarm.sh), sets began (SECONDS when its command began), and has stopped the cluster manager (it
# would place a drained master again, or move slots onto it).

# The fewest nodes that keep a replica for each of 3 masters.
min_kept=6

# refuse_shrink N NOW: `up` never removes a node: it refuses N fewer than the NOW nodes there are.
refuse_shrink() {
  [ "$1" -ge "$2" ] || die "$2 nodes exist and shrinking is not supported by up: '$0 scale $1' moves the slots away and removes nodes"
}

# refuse_small N NOW FORCE: refuses to shrink from NOW nodes to N, fewer than min_kept, unless FORCE is 1.
refuse_small() {
  if [ "$1" -lt "$2" ] && [ "$1" -lt "$min_kept" ] && [ "$3" != 1 ]; then
    die "scale $1 leaves a master without a replica (3 masters with one replica each need $min_kept nodes): add --force to scale in anyway"
  fi
}

# call_seconds ARGS...: how long a redis-cli call with these arguments may take: a --cluster operation moves
# keys for as long as the data needs (CLUSTER_OP_SECONDS, 600 s), any other call 60 s.
call_seconds() {
  if [ "${1:-}" = --cluster ]; then echo "${CLUSTER_OP_SECONDS:-600}"; else echo 60; fi
}

# read_force ARGS...: sets force (1 with --force among ARGS, else FORCE, else 0) and args (ARGS without it).
read_force() {
  local a
  force=${FORCE:-0}
  args=()
  for a in "$@"; do
    if [ "$a" = --force ]; then force=1; else args+=("$a"); fi
  done
}

# is_replica_of NODE ID: NODE's own view has it a replica of the node ID.
is_replica_of() {
  node_cli "$1" cluster nodes | awk -v id="$2" '$3 ~ /myself/ && $3 ~ /slave/ && $4 == id { found = 1 } END { exit !found }'
}

# all_see_replica NODES ID MASTER: each of NODES (handles, one a line) knows the node ID as a replica of MASTER.
all_see_replica() {
  local node
  for node in $1; do
    node_cli "$node" cluster nodes \
      | awk -v id="$2" -v m="$3" '$1 == id && $3 ~ /slave/ && $4 == m { found = 1 } END { exit !found }' || return 1
  done
}

# hand_over HEIR ID ENTRY NODES: the replica HEIR takes the place of its master ID (CLUSTER FAILOVER), until
# ENTRY sees ID as its replica. The failover is asked for once each of NODES (the cluster's nodes) knows HEIR as
# ID's replica: until then ID ignores the request, and the masters refuse their votes to what they take for a
# master. Redis drops a manual failover without a word after 5 s, so it is asked again, for up to
# FAILOVER_SECONDS (120 s).
hand_over() {
  local heir=$1 id=$2 entry=$3 nodes=$4 heir_id until_s tries=0 said
  until_s=$((SECONDS + ${FAILOVER_SECONDS:-120}))
  heir_id=$(node_cli "$heir" cluster myid | tr -d '\r')
  while :; do
    if all_see_replica "$nodes" "$heir_id" "$id" \
      && node_cli "$heir" info replication | tr -d '\r' | grep -qx 'master_link_status:up'; then
      tries=$((tries + 1))
      [ "$tries" = 1 ] || say "$id is still a master: CLUSTER FAILOVER again on $heir (try $tries)"
      # -e: redis-cli exits 0 on an error reply without it.
      said=$(node_cli "$heir" -e cluster failover 2>&1) || say "CLUSTER FAILOVER on $heir: $said"
      # A failover that takes is over within a second; one that Redis dropped has given up after 5 s.
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        is_replica_of "$heir" "$id" || break
        sleep 1
      done
    elif all_see_replica "$entry" "$id" "$heir_id"; then
      return 0
    fi
    [ "$SECONDS" -lt "$until_s" ] \
      || die "$id is still a master ${FAILOVER_SECONDS:-120} s after its replica $heir was to take over ($tries CLUSTER FAILOVER): see '$0 status'"
    sleep 1
  done
}

# take_out KEEP LEAVE: the nodes LEAVE (handles, one a line) hand their slots and replicas to the nodes KEEP
# and leave the cluster (redis-cli --cluster del-node); their servers still run, alone and serving nothing.
take_out() {
  local keep=$1 leave=$2 n entry id nodes_now slots moved weights=() leaving=() staying_masters
  local myself master to given= m has gets beside masters heir at
  n=$(grep -c . <<<"$keep")
  entry=$(head -n 1 <<<"$keep")
  # The entry node by the address it announces: redis-cli names the target of a slot move by the address it
  # was given, and 127.0.0.1 would send the keys back to their source.
  at=$(node_cli "$entry" cluster nodes | awk '$3 ~ /myself/ { split($2, a, "@"); print a[1] }')
  [ -n "$at" ] || die "node $entry does not answer CLUSTER NODES: see '$0 status'"
  # The manager may have been stopped in the middle of a move: its open slot is closed first.
  if ! node_cli "$entry" --cluster check "$at" >/dev/null 2>&1; then
    node_cli "$entry" --cluster fix "$at" --cluster-yes >&2 || true
    node_cli "$entry" --cluster check "$at" >&2 \
      || die "redis-cli --cluster check finds the cluster not whole (see above): scale in once it is"
  fi
  for id in $leave; do
    leaving+=("$(node_cli "$id" cluster myid | tr -d '\r')")
  done
  nodes_now=$(node_cli "$entry" cluster nodes) || die "cannot read cluster nodes: see '$0 status'"
  # While fewer than 3 masters would stay, a leaving master whose replica stays hands its slots to that
  # replica (CLUSTER FAILOVER on it) and becomes its replica, to be removed as one.
  masters=$(awk -v gone=" ${leaving[*]} " '
    index(gone, " " $1 " ") == 0 && $3 ~ /master/ && $3 !~ /fail/ && NF > 8 { n++ } END { print n + 0 }' <<<"$nodes_now")
  for id in "${leaving[@]}"; do
    [ "$masters" -lt 3 ] || break
    awk -v id="$id" '$1 == id && $3 ~ /master/ && NF > 8 { found = 1 } END { exit !found }' <<<"$nodes_now" || continue
    heir=
    for m in $keep; do
      if is_replica_of "$m" "$id"; then
        heir=$m
        break
      fi
    done
    [ -n "$heir" ] || continue
    say "$id leaves: its replica at $heir takes over (CLUSTER FAILOVER)"
    hand_over "$heir" "$id" "$entry" "$keep"$'\n'"$leave"
    masters=$((masters + 1))
  done
  nodes_now=$(node_cli "$entry" cluster nodes) || die "cannot read cluster nodes: see '$0 status'"
  # Masters that leave give their slots to the masters that stay: a rebalance in which they weigh 0.
  for id in "${leaving[@]}"; do
    slots=$(awk -v id="$id" '$1 == id && $3 ~ /master/ { print NF - 8 }' <<<"$nodes_now")
    if [ "${slots:-0}" -gt 0 ]; then
      weights+=("$id=0")
    fi
  done
  if [ "${#weights[@]}" -gt 0 ]; then
    say "moving the slots of ${#weights[@]} leaving master(s) to the masters that stay"
    moved=0
    for _ in 1 2 3; do
      if node_cli "$entry" --cluster rebalance "$at" --cluster-weight "${weights[@]}" --cluster-yes >&2; then
        moved=1
        break
      fi
      # A move cut short leaves its slot open: fix closes it before the next try.
      node_cli "$entry" --cluster fix "$at" --cluster-yes >&2 || true
      sleep 2
    done
    [ "$moved" = 1 ] || die "the slots did not move off the leaving nodes: see '$0 status'; '$0 scale $n' tries again"
    say "slots moved off the leaving nodes $((SECONDS - began))s after scale began"
  fi
  nodes_now=$(node_cli "$entry" cluster nodes) || die "cannot read cluster nodes: see '$0 status'"
  for id in "${leaving[@]}"; do
    slots=$(awk -v id="$id" '$1 == id { print NF - 8 }' <<<"$nodes_now")
    [ "${slots:-0}" = 0 ] || die "leaving node $id still serves slots: see '$0 status'; '$0 scale $n' tries again"
  done
  # A replica that stays but follows a leaving master follows the staying master with the fewest replicas,
  # one on another host (announce address) when there is one.
  staying_masters=$(awk -v gone=" ${leaving[*]} " '
    index(gone, " " $1 " ") == 0 && $3 ~ /master/ && $3 !~ /fail/ && NF > 8 { print $1 }' <<<"$nodes_now")
  for id in $keep; do
    myself=$(node_cli "$id" cluster nodes | awk '$3 ~ /myself/ { split($2, a, ":"); print $1, $4, a[1] }')
    master=$(awk '{ print $2 }' <<<"$myself")
    case " ${leaving[*]} " in
      *" $master "*) ;;
      *) continue ;;
    esac
    to=$(for m in $staying_masters; do
      has=$(awk -v m="$m" '$3 ~ /slave/ && $4 == m { n++ } END { print n + 0 }' <<<"$nodes_now")
      gets=$(awk -v m="$m" '{ for (i = 1; i <= NF; i++) if ($i == m) n++ } END { print n + 0 }' <<<"$given")
      beside=$(awk -v m="$m" -v ip="${myself##* }" '$1 == m { split($2, a, ":"); print (a[1] == ip) }' <<<"$nodes_now")
      echo "${beside:-0} $((has + gets)) $m"
    done | sort -n -k 1,1 -k 2,2 | awk '{ print $3; exit }')
    [ -n "$to" ] || die "no master stays for replica ${myself%% *}: scale to more nodes"
    say "${myself%% *} follows a leaving master: making it a replica of $to"
    node_cli "$id" cluster replicate "$to" >/dev/null || die "CLUSTER REPLICATE $to failed on $id: see '$0 status'"
    given="$given $to"
  done
  # Replicas first: del-node of a master re-points its replicas, to no avail when they leave too.
  for id in $(for id in "${leaving[@]}"; do
    awk -v id="$id" '$1 == id { print ($3 ~ /slave/ ? 0 : 1), id }' <<<"$nodes_now"
  done | sort -n | awk '{ print $2 }'); do
    node_cli "$entry" --cluster del-node "$at" "$id" >&2 \
      || die "redis-cli --cluster del-node $id failed: see its message above; '$0 scale $n' tries again"
  done
  say "${#leaving[@]} node(s) removed from the cluster $((SECONDS - began))s after scale began"
}
