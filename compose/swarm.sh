#!/usr/bin/env bash
# Runs the Redis Cluster of compose/stack.yml on the Docker Swarm this engine manages:
#   compose/swarm.sh up N      build the images, bring them to every node, deploy; wait until cluster_state:ok
#   compose/swarm.sh scale N   grow to N nodes; the manager adds them; wait until cluster_state:ok
#   compose/swarm.sh status    cluster info and cluster nodes, and the swarm node each Redis node runs on
#   compose/swarm.sh down      remove the stack, its volumes and its images on every node
# When this engine is in no swarm, `up` makes it the manager of a single-node swarm (docker swarm init) and says
# so; `down` leaves a swarm that `up` made (and only such a one), once the stack is gone.
# Environment: STACK (rediscover), SWARM_ENGINES (the other nodes' engines, as `docker -H` values separated by
# spaces, e.g. "ssh://node2 tcp://10.0.0.3:2376": the images reach them by docker save | docker load, without a
# registry; a node left out must have the images already), SWARM_ADVERTISE_ADDR (for swarm init; default: the
# address of the default route's interface), DISCOVER_PORT (7379), REDIS_IMAGE (redis:7), RUST_IMAGE
# (rust:1-alpine), CLUSTER_NODE_TIMEOUT (5000 ms), WAIT_SECONDS (300), PULL_SECONDS (600), OFFLINE=1 (use the
# images of compose/offline-images.sh without trying a registry), DISCOVER_USER (uid:gid of rediscover in its
# containers; default 0:0, root without capabilities, as the Docker group's id may differ between hosts),
# REDIS_PASSWORD (none: see README, Security).
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

die() { echo "swarm.sh: $*" >&2; exit 1; }
say() { echo "swarm.sh: $*" >&2; }

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

# cli ARGS...: redis-cli from this host (a throwaway container of the node image when it has none), given up
# after 60 s; with REDIS_PASSWORD, authenticated through the environment.
cli() {
  local env=(env -u REDISCLI_AUTH)
  [ -z "${REDIS_PASSWORD:-}" ] || env=(env "REDISCLI_AUTH=$REDIS_PASSWORD")
  if command -v redis-cli >/dev/null; then
    "${env[@]}" timeout 60 redis-cli "$@"
  else
    "${env[@]}" timeout 60 docker run --rm --network host -e REDISCLI_AUTH --entrypoint redis-cli "$redis_tag" "$@"
  fi
}

# The cluster's nodes (ip:port@bus-port), as this manager's rediscover lists them.
members() { env -u REDISCLI_AUTH timeout 10 redis-cli -e -p "$discover_port" MEMBERS 2>/dev/null; }
members_any() {
  if command -v redis-cli >/dev/null; then
    members
  else
    timeout 60 docker run --rm --network host --entrypoint redis-cli "$redis_tag" -e -p "$discover_port" MEMBERS
  fi
}

# How many Redis nodes the stack asks for.
replicas() { docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "${stack}_redis" 2>/dev/null || echo 0; }

refuse_shrink() {
  local now
  now=$(replicas)
  # A smaller replicated service loses the tasks Docker picks (the nodes with the most, then any), so their slots
  # cannot be moved off first as cluster.sh does.
  [ "$1" -ge "$now" ] || die "$now nodes exist and shrinking is not supported on a swarm: Docker picks which tasks a smaller service loses, so their slots cannot be moved off first; '$0 down' and '$0 up $1'"
}

# True when N nodes are listed, each reports cluster_state:ok, knows N nodes and sees every master serve slots,
# and redis-cli finds no open slot and nothing to rebalance (the manager has finished).
cluster_ok() {
  local n=$1 all m info addr
  all=$(members_any | tr -d '\r') || return 1
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

deploy() {
  STACK=$stack CLUSTER_SIZE=$1 DISCOVER_USER=${DISCOVER_USER:-0:0} \
    REDIS_NODE_IMAGE=$(image_id "$redis_tag") DISCOVER_NODE_IMAGE=$(image_id "$discover_tag") \
    docker stack deploy --resolve-image never -c "$here/stack.yml" "$stack" >&2 \
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

cmd=${1:-}
case $cmd in
  up)
    size_arg "${2:-}"
    ensure_swarm
    refuse_shrink "$2"
    began=$SECONDS
    build_images
    ship_images
    started=$SECONDS
    deploy "$2"
    await_cluster "$2" "$began" "$started"
    ;;
  scale)
    size_arg "${2:-}"
    [ "$(replicas)" != 0 ] || die "stack $stack runs no Redis node: start it with '$0 up $2'"
    refuse_shrink "$2"
    began=$SECONDS
    docker service scale --detach "${stack}_redis=$2" >/dev/null \
      || die "docker service scale failed: see its message above"
    await_cluster "$2" "$began" "$began"
    ;;
  status)
    all=$(members_any | tr -d '\r') || true
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
    docker stack rm "$stack" >&2 || die "docker stack rm failed: see its message above"
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
    die "usage: $0 up N | scale N | status | down"
    ;;
esac
