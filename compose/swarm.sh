#!/usr/bin/env bash
# Runs the Redis Cluster of compose/stack.yml on the Docker Swarm this engine manages:
#   compose/swarm.sh up N      build the images, bring them to every node, deploy; wait until cluster_state:ok
#   compose/swarm.sh scale N   grow to N nodes (the manager adds them), or shrink to N: the nodes of the
#                              highest task slots hand their slots to the others and leave the cluster, then
#                              the service loses just those tasks; fewer than 6 nodes only with --force (or
#                              FORCE=1); waits until cluster_state:ok
#   compose/swarm.sh status    cluster info and cluster nodes, and the swarm node each Redis node runs on
#   compose/swarm.sh down      remove the stack, its volumes and its images on every node
# When this engine is in no swarm, `up` makes it the manager of a single-node swarm (docker swarm init) and says
# so; `down` leaves a swarm that `up` made (and only such a one), once the stack is gone.
# Environment: STACK (rediscover), SWARM_ENGINES (the other nodes' engines, as `docker -H` values separated by
# spaces, e.g. "ssh://node2 tcp://10.0.0.3:2376": the images reach them by docker save | docker load, without a
# registry; a node left out must have the images already), SWARM_ADVERTISE_ADDR (for swarm init; default: the
# address of the default route's interface), DISCOVER_PORT (7379), REDIS_IMAGE (redis:7), RUST_IMAGE
# (rust:1-alpine), CLUSTER_NODE_TIMEOUT (5000 ms), WAIT_SECONDS (300), PULL_SECONDS (600), CLUSTER_OP_SECONDS
# (600: how long one redis-cli --cluster operation of a scale in may move keys), FAILOVER_SECONDS (120: how
# long a scale in waits for a leaving master's replica to take over), OFFLINE=1 (use the
# images of compose/offline-images.sh without trying a registry), DISCOVER_USER (uid:gid of rediscover in its
# containers; default 0:0, root without capabilities, as the Docker group's id may differ between hosts),
# REDIS_PASSWORD (none: see README, Security), TLS=1 (the nodes speak TLS only), DISCOVER_TLS=1 (rediscover
# does), TLS_DIR (compose/tls: ca.crt, node.crt and node.key; made by tls.sh for the swarm nodes' addresses when
# it holds none), TLS_AUTH_CLIENTS (optional). TLS settings not given are those the running stack has.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
stack=${STACK:-rediscover}
wait_seconds=${WAIT_SECONDS:-300}
pull_seconds=${PULL_SECONDS:-600}
offline_redis_image=${OFFLINE_REDIS_IMAGE:-rediscover-offline/redis:7-bookworm}
discover_port=${DISCOVER_PORT:-7379}
redis_tag=rediscover-swarm/redis:$stack
discover_tag=rediscover-swarm/discover:$stack
# The node label that records a swarm this script made, and whether docker_gwbridge was there before.
made_label=io.rediscover.swarm-made-by
# The Redis service's label that records the TLS_DIR the stack was deployed from.
tls_dir_label=io.rediscover.tls-dir
stack_files=(-c "$here/stack.yml")
# redis-cli's TLS options towards the nodes (TLS=1) and towards rediscover (DISCOVER_TLS=1), and the mount that
# gives a throwaway redis-cli container TLS_DIR: set by choose_tls.
node_tls=()
discover_tls=()
tls_mount=()
# A REDISCLI_AUTH of the caller's is no password of the stack's: the nodes' goes to each call that needs it.
unset REDISCLI_AUTH

die() { echo "swarm.sh: $*" >&2; exit 1; }
say() { echo "swarm.sh: $*" >&2; }
# shellcheck source=compose/scale-in.sh
. "$here/scale-in.sh"

[[ $stack =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "STACK=$stack: use lower-case letters, digits, '-' and '_'"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start dockerd and rerun"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pull() { [ "${OFFLINE:-0}" != 1 ] && timeout "$pull_seconds" docker pull -q "$1" >/dev/null 2>&1; }

# Picks the base images as compose/cluster.sh does (first found wins) and builds the stack's two images.
# Redis: REDIS_IMAGE here; the local stand-in; REDIS_IMAGE pulled; the stand-in built by offline-images.sh.
# rediscover: built in RUST_IMAGE when that is here (or can be pulled before any prebuilt binary exists); else
# the binary built on this host (rebuilt when the sources changed), in Dockerfile.prebuilt.
build_images() {
  local redis=${REDIS_IMAGE:-redis:7} rust=${RUST_IMAGE:-rust:1-alpine}
  if have_image "$redis"; then
    :
  elif [ -z "${REDIS_IMAGE:-}" ] && have_image "$offline_redis_image"; then
    redis=$offline_redis_image
  elif pull "$redis"; then
    :
  elif [ -z "${REDIS_IMAGE:-}" ]; then
    say "$redis cannot be pulled: building $offline_redis_image"
    "$here/offline-images.sh" >/dev/null || die "offline-images.sh failed: see its message above"
    redis=$offline_redis_image
  else
    die "REDIS_IMAGE=$redis is neither here nor pullable: pull it, or unset REDIS_IMAGE to build a local one"
  fi
  docker build -q -t "$redis_tag" --build-arg "REDIS_IMAGE=$redis" -f "$here/redis/Dockerfile" "$here" >/dev/null \
    || die "docker build of the Redis node image failed: see its messages above"
  if have_image "$rust" || { [ ! -e "$here/discover/rediscover" ] && pull "$rust"; }; then
    docker build -q -t "$discover_tag" --build-arg "RUST_IMAGE=$rust" -f "$here/discover/Dockerfile" "$here/.." \
      >/dev/null || die "docker build of the rediscover image failed: see its messages above"
  else
    "$here/offline-images.sh" >/dev/null || die "offline-images.sh failed: see its message above"
    docker build -q -t "$discover_tag" -f "$here/discover/Dockerfile.prebuilt" "$here/discover" >/dev/null \
      || die "docker build of the rediscover image failed: see its messages above"
  fi
}

# image_id TAG [ENGINE]: the image's ID, on this engine or on ENGINE (a `docker -H` value).
image_id() { docker ${2:+-H "$2"} image inspect -f '{{.Id}}' "$1" 2>/dev/null; }

# Brings both images to every engine of SWARM_ENGINES that lacks them, without a registry.
ship_images() {
  local engine want have
  for engine in ${SWARM_ENGINES:-}; do
    want="$(image_id "$redis_tag") $(image_id "$discover_tag")"
    have="$(image_id "$redis_tag" "$engine") $(image_id "$discover_tag" "$engine")" || true
    [ "$want" != "$have" ] || continue
    docker save "$redis_tag" "$discover_tag" | docker -H "$engine" load -q >/dev/null \
      || die "docker save | docker -H $engine load failed: check that $engine answers (docker -H $engine info)"
  done
}

# Makes this engine the manager of a single-node swarm when it is in none; fails on a worker.
ensure_swarm() {
  local state addr gwbridge=false
  state=$(docker info -f '{{.Swarm.LocalNodeState}}')
  case $state in
    active)
      [ "$(docker info -f '{{.Swarm.ControlAvailable}}')" = true ] \
        || die "this engine is a swarm worker: run swarm.sh on a manager (docker node ls there)"
      ;;
    inactive)
      addr=${SWARM_ADVERTISE_ADDR:-$(default_address)} \
        || die "no default route to pick the swarm's address from: set SWARM_ADVERTISE_ADDR"
      docker network inspect docker_gwbridge >/dev/null 2>&1 && gwbridge=true
      docker swarm init --advertise-addr "$addr" >/dev/null \
        || die "docker swarm init failed: see its message above, or set SWARM_ADVERTISE_ADDR"
      docker node update --label-add "$made_label=swarm.sh,gwbridge-before=$gwbridge" "$(docker info -f "{{.Swarm.NodeID}}")" >/dev/null \
        || die "cannot label this swarm node: 'docker swarm leave --force' and rerun"
      say "this engine was in no swarm: it now manages a single-node swarm at $addr ('$0 down' leaves it)"
      ;;
    *) die "this engine's swarm is $state: repair it, or 'docker swarm leave --force', and rerun" ;;
  esac
}

# The IPv4 address of the default route's interface.
default_address() {
  local iface
  iface=$(awk '$2 == "00000000" && $8 == "00000000" { print $7, $1 }' /proc/net/route | sort -n | awk 'NR == 1 { print $2 }')
  [ -n "$iface" ] || return 1
  ip -4 -o addr show dev "$iface" 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }' | grep .
}

have_cli() { command -v redis-cli >/dev/null; }

# redis_cli SECONDS ARGS...: redis-cli from this host, or from a throwaway container of the node image on the
# host network (TLS_DIR at /tls) when this host has none; given up after SECONDS.
redis_cli() {
  local limit=$1
  shift
  if have_cli; then
    timeout "$limit" redis-cli "$@"
  else
    timeout "$limit" docker run --rm --network host -e REDISCLI_AUTH "${tls_mount[@]}" --entrypoint redis-cli \
      "$redis_tag" "$@"
  fi
}

# cli ARGS...: redis-cli towards the nodes, given up after cli_seconds (60 s): over TLS with TLS=1; with
# REDIS_PASSWORD, authenticated through the environment.
cli() {
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    REDISCLI_AUTH=$REDIS_PASSWORD redis_cli "${cli_seconds:-60}" "${node_tls[@]}" "$@"
  else
    redis_cli "${cli_seconds:-60}" "${node_tls[@]}" "$@"
  fi
}

# node_cli IP:PORT ARGS...: cli towards one node, given up after call_seconds.
node_cli() {
  local addr=$1 cli_seconds
  shift
  cli_seconds=$(call_seconds "$@")
  cli -h "${addr%:*}" -p "${addr##*:}" "$@"
}

# The cluster's nodes (ip:port@bus-port), as this manager's rediscover lists them (over TLS with DISCOVER_TLS=1);
# MEMBERS options may follow.
members() { redis_cli 30 "${discover_tls[@]}" -e -p "$discover_port" MEMBERS "$@" 2>/dev/null; }

# The Redis nodes as "slot ip:port" lines, lowest task slot first: MEMBERS WITHNAMES names each node's task
# service.slot.task-id.
by_slot() {
  members WITHNAMES | tr -d '\r' | awk -v service="${stack}_redis" '
    NR % 2 { split($0, a, "@"); addr = a[1]; next }
    { split($0, f, "."); if (f[1] == service) print f[2], addr }' | sort -n
}

# The slots of the Redis service's tasks that the swarm wants running.
running_slots() {
  docker service ps --filter desired-state=running --format '{{.Name}}' "${stack}_redis" 2>/dev/null \
    | awk -F . '{ print $NF }' | sort -n
}

# still_wanted SLOTS: those of SLOTS (one a line) whose tasks the swarm still wants running.
still_wanted() { running_slots | grep -Fx -f <(echo "$1") || true; }

# How many Redis nodes the stack asks for.
replicas() { docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "${stack}_redis" 2>/dev/null || echo 0; }

# Shrinks to N nodes: the tasks of the highest slots leave. A smaller replicated service loses the tasks Docker
# picks (on the nodes with the most, then any) unless some are no longer running: so the leaving nodes first
# hand over their slots and replicas and leave the cluster (scale-in.sh's take_out), forget it (CLUSTER RESET
# HARD: a later task of their slot that finds their volume starts as a new node) and end with SHUTDOWN, which
# their entrypoint passes on as exit code 0, so that the on-failure restart policy lets their tasks complete.
# Only then does the service get smaller, and it loses just those slots. The manager service has no task
# meanwhile (it would place a drained master again, or move slots onto it); it gets one back at the end, also
# when this is cut short, and so it does from any later swarm.sh up or scale.
scale_in() {
  local n=$1 all running keep leave leave_slots addr w gone v engine
  # Every task the swarm wants running must be a listed node. A slot whose node already ended (a scale in cut
  # short after its SHUTDOWN) is no such task: it goes with the others at the end.
  all=$(by_slot)
  running=$(running_slots)
  [ "$(tr '\n' ' ' <<<"$running")" = "$(awk '{ printf "%s ", $1 }' <<<"$all")" ] \
    || die "rediscover lists $(grep -c . <<<"$all") nodes, the swarm wants $(grep -c . <<<"$running") running: scale in once every node runs (see '$0 status' and 'docker service ps ${stack}_redis')"
  keep=$(head -n "$n" <<<"$all")
  leave=$(tail -n +"$((n + 1))" <<<"$all")
  leave_slots=$(awk '{ print $1 }' <<<"$leave")
  trap 'docker service scale --detach "${stack}_manager=1" >/dev/null 2>&1 || true' EXIT
  docker service scale "${stack}_manager=0" >/dev/null || die "cannot stop the manager: see 'docker service ps ${stack}_manager'"
  take_out "$(awk '{ print $2 }' <<<"$keep")" "$(awk '{ print $2 }' <<<"$leave")"
  for addr in $(awk '{ print $2 }' <<<"$leave"); do
    node_cli "$addr" cluster reset hard >/dev/null || say "CLUSTER RESET HARD failed on $addr: a later task of its slot on that host may find it removed"
    node_cli "$addr" shutdown nosave >/dev/null 2>&1 || true
  done
  # Each leaving task completes once its server has shut down.
  w=0
  until [ -z "$(still_wanted "$leave_slots")" ]; do
    w=$((w + 1))
    [ "$w" -lt 120 ] || die "the tasks of slots $(tr '\n' ' ' <<<"$leave_slots")still run 60 s after SHUTDOWN: see 'docker service ps ${stack}_redis'"
    sleep 0.5
  done
  docker service scale --detach "${stack}_redis=$n" >/dev/null || die "docker service scale failed: see its message above"
  gone=$(still_wanted "$leave_slots" | tr '\n' ' ')
  [ -z "$gone" ] || die "Docker started slot(s) $gone again before the service got smaller: their nodes join as new ones; '$0 scale $n' tries again"
  # The volumes of every slot the service no longer has go too, on every engine this script reaches, once
  # their containers are gone. An ended container of such a slot still holds its volume until its node removes
  # it, or for as long as the swarm's task history keeps it (an earlier task of the slot): it is removed here.
  for engine in $(engines); do
    for v in $(on "$engine" volume ls -q --filter "name=${stack}_redis-" 2>/dev/null | grep -E "^${stack}_redis-[0-9]+\$" || true); do
      ! awk '{ print $1 }' <<<"$keep" | grep -qx "${v##*-}" || continue
      w=0
      while on "$engine" volume inspect "$v" >/dev/null 2>&1 && ! on "$engine" volume rm "$v" >/dev/null 2>&1; do
        for c in $(on "$engine" ps -aq --filter "volume=$v" --filter status=exited --filter status=created \
          --filter status=dead 2>/dev/null); do
          on "$engine" rm "$c" >/dev/null 2>&1 || true
        done
        w=$((w + 1))
        [ "$w" -lt 60 ] || { say "volume $v is still in use on $engine: remove it later"; break; }
        sleep 0.5
      done
    done
  done
  trap - EXIT
  docker service scale --detach "${stack}_manager=1" >/dev/null || die "cannot start the manager again: 'docker service scale ${stack}_manager=1'"
}

# True when N nodes are listed, each reports cluster_state:ok, knows N nodes and sees every master serve slots,
# and redis-cli finds no open slot and nothing to rebalance (the manager has finished).
cluster_ok() {
  local n=$1 all m info addr
  all=$(members | tr -d '\r') || return 1
  [ "$(echo "$all" | grep -c .)" = "$n" ] || return 1
  for m in $all; do
    addr=${m%@*}
    info=$(cli -h "${addr%:*}" -p "${addr##*:}" cluster info 2>/dev/null | tr -d '\r') || return 1
    grep -qx cluster_state:ok <<<"$info" || return 1
    grep -qx "cluster_known_nodes:$n" <<<"$info" || return 1
    # Every node has heard of every role change: no master without slots (a replica still seen as the empty
    # master it was before it replicated), no node failed or joining.
    cli -h "${addr%:*}" -p "${addr##*:}" cluster nodes 2>/dev/null \
      | awk '$3 ~ /fail|handshake|noaddr/ || ($3 ~ /master/ && NF == 8) { bad = 1 } END { exit bad }' || return 1
  done
  cli --cluster check "$addr" >/dev/null 2>&1 || return 1
  cli --cluster rebalance "$addr" --cluster-use-empty-masters --cluster-simulate 2>/dev/null \
    | grep -q 'No rebalancing needed'
}

await_cluster() {
  local n=$1 began=$2 started=$3
  until cluster_ok "$n"; do
    [ $((SECONDS - started)) -lt "$wait_seconds" ] \
      || die "no cluster_state:ok on $n nodes after ${wait_seconds}s: see '$0 status' and 'docker service logs ${stack}_manager'"
    sleep 1
  done
  echo "cluster of $n nodes ok: $((SECONDS - started))s after docker stack deploy, $((SECONDS - began))s in all"
}

# Announce address of every swarm node -> its host name: the node label io.rediscover.announce-ip, else the
# address the swarm knows it by (a manager may list 0.0.0.0 and its manager address instead).
node_hosts() {
  local ids
  ids=$(docker node ls -q) || return 1
  # shellcheck disable=SC2086 # one argument per id
  docker node inspect -f '{{with index .Spec.Labels "io.rediscover.announce-ip"}}{{.}}{{else}}-{{end}} {{.Status.Addr}} {{with .ManagerStatus}}{{.Addr}}{{else}}-{{end}} {{.Description.Hostname}}' $ids \
    | awk '{ ip = $1; if (ip == "-") ip = $2; if (ip == "0.0.0.0") { split($3, a, ":"); ip = a[1] } print ip, $4 }'
}

# TLS settings not given are those of the running stack's Redis service (TLS, DISCOVER_TLS, TLS_AUTH_CLIENTS,
# and the TLS_DIR it was deployed from). Another TLS or DISCOVER_TLS is refused: the tasks would be replaced one
# by one, and the cluster would speak two ways meanwhile.
inherit_tls() {
  local env name now
  env=$(docker service inspect -f '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}' \
    "${stack}_redis" 2>/dev/null) || return 0
  for name in TLS DISCOVER_TLS TLS_AUTH_CLIENTS; do
    now=$(sed -n "s/^$name=//p" <<<"$env" | head -n 1)
    if [ -z "${!name+set}" ]; then
      printf -v "$name" '%s' "$now"
      export "${name?}"
    elif [ "$name" != TLS_AUTH_CLIENTS ] && [ "${!name:-0}" != "${now:-0}" ]; then
      die "stack $stack runs with $name=${now:-0}, not ${!name}: leave $name unset, or '$0 down' first to change it"
    fi
  done
  if [ -z "${TLS_DIR+set}" ]; then
    TLS_DIR=$(docker service inspect -f "{{index .Spec.Labels \"$tls_dir_label\"}}" "${stack}_redis")
    [ -n "$TLS_DIR" ] || unset TLS_DIR
  fi
}

# With TLS=1 or DISCOVER_TLS=1: stack.tls.yml gives every task TLS_DIR's ca.crt and node.crt (swarm configs) and
# node.key (a swarm secret) at /tls, so no node needs a shared disk. With "make", tls.sh fills TLS_DIR when it
# holds none of them, for the address and host name of every swarm node. The configs and the secret are named
# after the stack and a digest of the three files (TLS_NAME): a second `up` with the same files finds them as
# they are (a swarm secret cannot change), and files other than those the stack runs with are refused.
choose_tls() {
  local make=${1:-} f have=0 running tls_at opts
  unset REDISCOVER_TLS_CERT REDISCOVER_TLS_KEY REDISCOVER_TLS_CA_CERT TLS_NAME
  [ "${TLS:-0}" = 1 ] || [ "${DISCOVER_TLS:-0}" = 1 ] || return 0
  TLS_DIR=${TLS_DIR:-$here/tls}
  if [ "$make" = make ]; then
    mkdir -p "$TLS_DIR" || die "cannot create TLS_DIR=$TLS_DIR: choose a writable directory"
    for f in ca.crt node.crt node.key; do
      [ ! -e "$TLS_DIR/$f" ] || have=$((have + 1))
    done
    if [ "$have" = 0 ]; then
      # shellcheck disable=SC2046 # one name a word
      "$here/tls.sh" "$TLS_DIR" $(node_hosts | tr ' ' '\n' | sort -u) \
        || die "tls.sh could not make the certificates: see its message above"
    fi
  fi
  TLS_DIR=$(cd "$TLS_DIR" 2>/dev/null && pwd) \
    || die "TLS_DIR=$TLS_DIR is no directory: set it to the one with the stack's ca.crt, node.crt and node.key"
  export TLS_DIR
  for f in ca.crt node.crt node.key; do
    [ -r "$TLS_DIR/$f" ] || die "TLS_DIR=$TLS_DIR has no readable $f: give ca.crt, node.crt and node.key, or an empty directory for new ones"
  done
  TLS_NAME=${stack}_tls-$(cat "$TLS_DIR/ca.crt" "$TLS_DIR/node.crt" "$TLS_DIR/node.key" | sha256sum | cut -c 1-12)
  export TLS_NAME
  running=$(docker service inspect -f "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}|{{index .Spec.Labels \"$tls_dir_label\"}}" \
    "${stack}_redis" 2>/dev/null) || running=
  if [[ " ${running%|*} " == *" ${stack}_tls-"* && " ${running%|*} " != *" ${TLS_NAME}_node.key "* ]]; then
    die "TLS_DIR=$TLS_DIR holds other certificates than stack $stack runs with (deployed from ${running##*|}): give that TLS_DIR, or '$0 down' first to change them"
  fi
  # rediscover's copy of node.key belongs to its user.
  [[ ${DISCOVER_USER:-0:0} =~ ^([0-9]+)(:([0-9]+))?$ ]] \
    || die "DISCOVER_USER=$DISCOVER_USER: with TLS give it as uid:gid in numbers (the owner of rediscover's node.key)"
  export DISCOVER_UID=${BASH_REMATCH[1]} DISCOVER_GID=${BASH_REMATCH[3]:-0}
  # First: see stack.tls.yml.
  stack_files=(-c "$here/stack.tls.yml" "${stack_files[@]}")
  if [ "${DISCOVER_TLS:-0}" = 1 ]; then
    export REDISCOVER_TLS_CERT=/tls/node.crt REDISCOVER_TLS_KEY=/tls/node.key REDISCOVER_TLS_CA_CERT=/tls/ca.crt
  fi
  tls_at=$TLS_DIR
  if ! have_cli; then
    tls_at=/tls
    tls_mount=(-v "$TLS_DIR:/tls:ro")
  fi
  # The CA, and the node certificate: rediscover asks every client for one, and TLS_AUTH_CLIENTS=yes nodes too.
  opts=(--tls --cacert "$tls_at/ca.crt" --cert "$tls_at/node.crt" --key "$tls_at/node.key")
  [ "${TLS:-0}" != 1 ] || node_tls=("${opts[@]}")
  [ "${DISCOVER_TLS:-0}" != 1 ] || discover_tls=("${opts[@]}")
}

deploy() {
  STACK=$stack CLUSTER_SIZE=$1 DISCOVER_USER=${DISCOVER_USER:-0:0} \
    REDIS_NODE_IMAGE=$(image_id "$redis_tag") DISCOVER_NODE_IMAGE=$(image_id "$discover_tag") \
    docker stack deploy --resolve-image never "${stack_files[@]}" "$stack" >&2 \
    || die "docker stack deploy failed: see its messages above"
}

size_arg() {
  [[ ${1:-} =~ ^[0-9]+$ ]] && [ "$1" -ge 3 ] || die "'$cmd' needs a node count of 3 or more, e.g. '$0 $cmd 6'"
}

# Every engine of the swarm this script can reach: this one and SWARM_ENGINES.
engines() { echo local ${SWARM_ENGINES:-}; }
on() {
  local engine=$1
  shift
  if [ "$engine" = local ]; then docker "$@"; else docker -H "$engine" "$@"; fi
}

read_force "$@"
set -- "${args[@]}"
cmd=${1:-}
case $cmd in
  up)
    size_arg "${2:-}"
    ensure_swarm
    refuse_shrink "$2" "$(replicas)"
    began=$SECONDS
    inherit_tls
    choose_tls make
    build_images
    ship_images
    started=$SECONDS
    deploy "$2"
    await_cluster "$2" "$began" "$started"
    ;;
  scale)
    size_arg "${2:-}"
    now=$(replicas)
    [ "$now" != 0 ] || die "stack $stack runs no Redis node: start it with '$0 up $2'"
    refuse_small "$2" "$now" "$force"
    began=$SECONDS
    inherit_tls
    choose_tls
    if [ "$2" -lt "$now" ]; then
      scale_in "$2"
    else
      docker service scale --detach "${stack}_redis=$2" "${stack}_manager=1" >/dev/null \
        || die "docker service scale failed: see its message above"
    fi
    await_cluster "$2" "$began" "$began"
    ;;
  status)
    inherit_tls
    choose_tls
    all=$(members | tr -d '\r') || true
    first=$(echo "$all" | head -n 1)
    [ -n "$first" ] || die "no Redis node of stack $stack is listed by rediscover: start them with '$0 up 6'"
    first=${first%@*}
    cli -h "${first%:*}" -p "${first##*:}" cluster info | tr -d '\r'
    nodes=$(cli -h "${first%:*}" -p "${first##*:}" cluster nodes)
    echo "$nodes"
    hosts=$(node_hosts) || true
    echo "$nodes" | awk -v hosts="$hosts" '
      BEGIN { n = split(hosts, h, "\n"); for (i = 1; i <= n; i++) { split(h[i], f, " "); host[f[1]] = f[2] } }
      { split($2, a, "[:@,]"); role = $3 ~ /master/ ? "master" : "replica"
        printf "%s %s:%s %s runs on %s\n", substr($1, 1, 8), a[1], a[2], role, (a[1] in host) ? host[a[1]] : "?" }'
    ;;
  down)
    if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
      say "this engine is in no swarm: stack $stack does not run here"
      exit 0
    fi
    # stack rm removes the networks right after the services, and fails on one that a task still ending uses:
    # once the containers are gone, a second stack rm removes what is left.
    again=0
    docker stack rm "$stack" >&2 || again=1
    # Each node removes its containers on its own time; volumes and images go after them.
    for engine in $(engines); do
      w=0
      while [ -n "$(on "$engine" ps -aq --filter "label=com.docker.stack.namespace=$stack")" ]; do
        w=$((w + 1))
        [ "$w" -lt 120 ] || die "containers of stack $stack remain on $engine after 60 s: see 'docker ps -a' there and rerun '$0 down'"
        sleep 0.5
      done
      for v in $(on "$engine" volume ls -q --filter "name=${stack}_redis-"); do
        on "$engine" volume rm "$v" >/dev/null || die "cannot remove volume $v on $engine: see 'docker volume inspect $v'"
      done
      on "$engine" image rm "$redis_tag" "$discover_tag" >/dev/null 2>&1 || true
    done
    if [ "$again" = 1 ]; then
      docker stack rm "$stack" >&2 || die "docker stack rm failed twice: see its message above"
    fi
    w=0
    while [ -n "$(docker network ls -q --filter "label=com.docker.stack.namespace=$stack")" ]; do
      w=$((w + 1))
      [ "$w" -lt 120 ] || die "the networks of stack $stack remain after 60 s: see 'docker network ls' and rerun '$0 down'"
      sleep 0.5
    done
    made=$(docker node inspect self -f "{{index .Spec.Labels \"$made_label\"}}" 2>/dev/null) || made=
    case $made in
      swarm.sh*)
        if [ -n "$(docker service ls -q)" ]; then
          say "this engine's swarm was made by '$0 up' but runs other services: it stays"
        else
          docker swarm leave --force >/dev/null || die "docker swarm leave failed: see its message above"
          if [ "${made##*gwbridge-before=}" = false ]; then
            docker network rm docker_gwbridge >/dev/null 2>&1 || say "docker_gwbridge is still in use: 'docker network rm docker_gwbridge' later"
          fi
          say "left the single-node swarm '$0 up' made"
        fi
        ;;
    esac
    ;;
  *)
    die "usage: $0 up N | scale N [--force] | status | down"
    ;;
esac
