#!/usr/bin/env bash
# Runs the Redis Cluster of compose/docker-compose.yml:
#   compose/cluster.sh up N      start discover, N Redis nodes and the manager; wait until cluster_state:ok
#   compose/cluster.sh scale N   grow to N nodes (the manager adds them), or shrink to N: the slots of the
#                                nodes compose removes first move to the others, redis-cli --cluster del-node
#                                removes them from the cluster, then their containers go; fewer than 6 nodes
#                                (3 masters, one replica each) only with --force (or FORCE=1);
#                                waits until cluster_state:ok
#   compose/cluster.sh status    cluster info and cluster nodes, as a node sees them
#   compose/cluster.sh down      remove the containers, networks, volumes and built images of the project
# Environment: COMPOSE_PROJECT_NAME (rediscover), DISCOVER_PORT (7379), REDIS_IMAGE (redis:7),
# RUST_IMAGE (rust:1-alpine), CLUSTER_NODE_TIMEOUT (5000 ms), WAIT_SECONDS (300), PULL_SECONDS (600),
# CLUSTER_OP_SECONDS (600: how long one redis-cli --cluster operation of a scale in may move keys),
# FAILOVER_SECONDS (120: how long a scale in waits for a leaving master's replica to take over),
# OFFLINE=1 to use the images of compose/offline-images.sh without trying a registry, DISCOVER_USER (uid:gid
# of rediscover in its container; default: nobody in the Docker socket's group), REDIS_PASSWORD (none: the
# nodes accept every client; see README, Security), TLS=1 (the nodes speak TLS only), DISCOVER_TLS=1
# (rediscover does), TLS_DIR (compose/tls: ca.crt, node.crt and node.key; made by tls.sh when none is there),
# TLS_AUTH_CLIENTS (optional), DISCOVER_PASSWORD (rediscover's --requirepass), ANNOUNCE_HOSTNAME (the host
# name the nodes announce and send clients to), ANNOUNCE_IP (the address the nodes announce: rediscover's
# --announce-ip; by default the address of the host's default route, or its swarm node address on a swarm node).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-rediscover}
wait_seconds=${WAIT_SECONDS:-300}
# A registry out of reach fails at once; a real download may take a while.
pull_seconds=${PULL_SECONDS:-600}
offline_redis_image=${OFFLINE_REDIS_IMAGE:-rediscover-offline/redis:7-bookworm}

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }
# shellcheck source=compose/scale-in.sh
. "$here/scale-in.sh"

if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  die "neither 'docker compose' nor docker-compose is installed: install one of them"
fi
compose_files=(-f "$here/docker-compose.yml")
compose() { "${compose_cmd[@]}" "${compose_files[@]}" -p "$COMPOSE_PROJECT_NAME" "$@"; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pull() { [ "${OFFLINE:-0}" != 1 ] && timeout "$pull_seconds" docker pull -q "$1" >/dev/null 2>&1; }

# Picks the images, first found wins. Redis: REDIS_IMAGE here; the local stand-in here; REDIS_IMAGE pulled; the
# stand-in built by compose/offline-images.sh. rediscover: built in RUST_IMAGE when that is here (or, before
# any prebuilt binary exists, can be pulled); else the binary built on this host, in Dockerfile.prebuilt.
# With "fresh", that binary is rebuilt when the sources changed.
choose_images() {
  local redis=${REDIS_IMAGE:-redis:7} rust=${RUST_IMAGE:-rust:1-alpine} fresh=${1:-}
  if have_image "$redis"; then
    export REDIS_IMAGE=$redis
  elif [ -z "${REDIS_IMAGE:-}" ] && have_image "$offline_redis_image"; then
    export REDIS_IMAGE=$offline_redis_image
  elif pull "$redis"; then
    export REDIS_IMAGE=$redis
  elif [ -z "${REDIS_IMAGE:-}" ]; then
    say "$redis cannot be pulled: building $offline_redis_image"
    "$here/offline-images.sh" >/dev/null || die "offline-images.sh failed: see its message above"
    export REDIS_IMAGE=$offline_redis_image
  else
    die "REDIS_IMAGE=$redis is neither here nor pullable: pull it, or unset REDIS_IMAGE to build a local one"
  fi
  if have_image "$rust" || { [ ! -e "$here/discover/rediscover" ] && pull "$rust"; }; then
    export RUST_IMAGE=$rust DISCOVER_CONTEXT=.. DISCOVER_DOCKERFILE=compose/discover/Dockerfile
  else
    if [ "$fresh" = fresh ] || [ ! -e "$here/discover/rediscover" ]; then
      # Builds (when stale) and copies the static binary for Dockerfile.prebuilt.
      "$here/offline-images.sh" >/dev/null || die "offline-images.sh failed: see its message above"
    fi
    export DISCOVER_CONTEXT=./discover DISCOVER_DOCKERFILE=Dockerfile.prebuilt
  fi
}

# rediscover's user in its container (compose file: DISCOVER_USER): nobody in the socket's group when that
# group may read and write the socket, else root (still without capabilities), said in one line.
choose_user() {
  local socket=/var/run/docker.sock mode
  [ -z "${DISCOVER_USER:-}" ] || return 0
  mode=$(stat -c %a "$socket" 2>/dev/null) || mode=000
  case ${mode: -2:1} in
    6 | 7) export DISCOVER_USER="65534:$(stat -c %g "$socket")" ;;
    *)
      say "$socket is not group read-write (mode $mode): rediscover runs as root in its container; set DISCOVER_USER=uid:gid to choose"
      export DISCOVER_USER=0:0
      ;;
  esac
}

# rediscover's settings, passed to its container only when set: an empty one would count as given.
discover_settings() {
  unset REDISCOVER_REQUIREPASS REDISCOVER_ANNOUNCE_HOSTNAME REDISCOVER_ANNOUNCE_IP
  [ -z "${DISCOVER_PASSWORD:-}" ] || export REDISCOVER_REQUIREPASS=$DISCOVER_PASSWORD
  [ -z "${ANNOUNCE_HOSTNAME:-}" ] || export REDISCOVER_ANNOUNCE_HOSTNAME=$ANNOUNCE_HOSTNAME
  [ -z "${ANNOUNCE_IP:-}" ] || export REDISCOVER_ANNOUNCE_IP=$ANNOUNCE_IP
}

# With TLS=1 or DISCOVER_TLS=1: docker-compose.tls.yml mounts TLS_DIR (absolute) into the containers, and
# tls.sh fills it when it holds none of ca.crt, node.crt and node.key.
choose_tls() {
  local f have=0
  unset REDISCOVER_TLS_CERT REDISCOVER_TLS_KEY REDISCOVER_TLS_CA_CERT
  [ "${TLS:-0}" = 1 ] || [ "${DISCOVER_TLS:-0}" = 1 ] || return 0
  mkdir -p "${TLS_DIR:=$here/tls}" || die "cannot create TLS_DIR=$TLS_DIR: choose a writable directory"
  TLS_DIR=$(cd "$TLS_DIR" && pwd)
  export TLS_DIR
  for f in ca.crt node.crt node.key; do
    [ ! -e "$TLS_DIR/$f" ] || have=$((have + 1))
  done
  if [ "$have" = 0 ]; then
    # shellcheck disable=SC2086 # no name, or one
    "$here/tls.sh" "$TLS_DIR" ${ANNOUNCE_HOSTNAME:-} || die "tls.sh could not make the certificates: see its message above"
  fi
  for f in ca.crt node.crt node.key; do
    [ -r "$TLS_DIR/$f" ] || die "TLS_DIR=$TLS_DIR has no readable $f: give ca.crt, node.crt and node.key, or an empty directory for new ones"
  done
  compose_files+=(-f "$here/docker-compose.tls.yml")
  if [ "${DISCOVER_TLS:-0}" = 1 ]; then
    export REDISCOVER_TLS_CERT=/tls/node.crt REDISCOVER_TLS_KEY=/tls/node.key REDISCOVER_TLS_CA_CERT=/tls/ca.crt
  fi
}

# Settings not given now are those the project's nodes started with, so that nodes that join later, or are
# created again, speak as the others do: TLS, TLS_AUTH_CLIENTS, DISCOVER_TLS, TLS_DIR, DISCOVER_PASSWORD,
# ANNOUNCE_HOSTNAME, REDIS_PASSWORD; and ANNOUNCE_IP, which rediscover started with. Given but empty counts as
# given.
inherit_settings() {
  local id env name
  id=$(containers discover -a | head -n 1)
  if [ -z "${ANNOUNCE_IP+set}" ] && [ -n "$id" ]; then
    env=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id") \
      || die "cannot inspect rediscover's container $id: see 'docker inspect $id'"
    ANNOUNCE_IP=$(sed -n 's/^REDISCOVER_ANNOUNCE_IP=//p' <<<"$env" | head -n 1)
    export ANNOUNCE_IP
  fi
  id=$(nodes -a | head -n 1)
  [ -n "$id" ] || return 0
  env=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id") \
    || die "cannot inspect node $id: see 'docker inspect $id'"
  for name in TLS TLS_AUTH_CLIENTS DISCOVER_TLS DISCOVER_PASSWORD REDIS_PASSWORD ANNOUNCE_HOSTNAME; do
    [ -z "${!name+set}" ] || continue
    # The nodes know the host name to ask for as DISCOVER_HOSTNAME.
    printf -v "$name" '%s' "$(sed -n "s/^${name/ANNOUNCE_HOSTNAME/DISCOVER_HOSTNAME}=//p" <<<"$env" | head -n 1)"
    export "${name?}"
  done
  if [ -z "${TLS_DIR+set}" ]; then
    TLS_DIR=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/tls"}}{{.Source}}{{end}}{{end}}' "$id")
    [ -n "$TLS_DIR" ] || unset TLS_DIR
  fi
}

# containers SERVICE [-a]: the project's containers of one service: every one (-a), or the running ones.
# `docker-compose ps -q` (v1) lists stopped containers too, and `docker exec` fails on them.
containers() {
  local service=$1
  shift
  docker ps -q --no-trunc "$@" --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$service"
}
# The project's Redis containers, as containers does.
nodes() { containers redis "$@"; }
# How many Redis containers the project has, running or not: the number `--scale redis=N` starts from.
count_nodes() { nodes -a | grep -c . || true; }

# node_cli ID ARGS...: redis-cli inside a node, given up after call_seconds; with REDIS_PASSWORD, authenticated
# (the password goes through the environment, not the command line); over TLS when the node speaks it (its
# common.sh holds the options).
node_cli() {
  local id=$1 limit
  # shellcheck disable=SC2016 # expanded by the node's shell
  local cli=(sh -c '. /usr/local/lib/rediscover/common.sh && exec redis-cli $node_tls "$@"' node_cli)
  shift
  limit=$(call_seconds "$@")
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    REDISCLI_AUTH=$REDIS_PASSWORD timeout "$limit" docker exec -e REDISCLI_AUTH "$id" "${cli[@]}" "$@"
  else
    timeout "$limit" docker exec "$id" "${cli[@]}" "$@"
  fi
}

# True when N nodes run, each reports cluster_state:ok and knows N nodes, and redis-cli finds no open slot and
# nothing to rebalance (the manager has finished).
cluster_ok() {
  local n=$1 ids id info
  ids=$(nodes) || return 1
  [ "$(echo "$ids" | grep -c .)" = "$n" ] || return 1
  for id in $ids; do
    info=$(node_cli "$id" cluster info 2>/dev/null | tr -d '\r') || return 1
    grep -qx cluster_state:ok <<<"$info" || return 1
    grep -qx "cluster_known_nodes:$n" <<<"$info" || return 1
  done
  node_cli "$id" --cluster check 127.0.0.1:6379 >/dev/null 2>&1 || return 1
  node_cli "$id" --cluster rebalance 127.0.0.1:6379 --cluster-use-empty-masters --cluster-simulate \
    2>/dev/null | grep -q 'No rebalancing needed'
}

# Waits for cluster_ok and says how long it took since the command began and since the containers started.
await_cluster() {
  local n=$1 began=$2 started=$3
  until cluster_ok "$n"; do
    [ $((SECONDS - started)) -lt "$wait_seconds" ] \
      || die "no cluster_state:ok on $n nodes after ${wait_seconds}s: see '$0 status' and '${compose_cmd[*]} -p $COMPOSE_PROJECT_NAME logs manager'"
    sleep 1
  done
  echo "cluster of $n nodes ok: $((SECONDS - started))s after docker compose up, $((SECONDS - began))s in all"
}

# The project's Redis containers, running or not, by compose's container number, lowest first: `--scale`
# keeps the lowest numbers and removes the highest (docker-compose v1: service.py _downscale).
by_number() {
  local id
  for id in $(nodes -a); do
    echo "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.container-number"}}' "$id") $id"
  done | sort -n | awk '{ print $2 }'
}

# Shrinks to N nodes: the containers with the highest numbers leave (scale-in.sh's take_out), then their
# containers and volumes go. The manager is stopped meanwhile; `compose up` at the end starts it again, and so
# does any later cluster.sh up or scale if this one is cut short.
scale_in() {
  local n=$1 ids keep leave id
  ids=$(by_number | cut -c 1-12)
  keep=$(head -n "$n" <<<"$ids")
  leave=$(tail -n +"$((n + 1))" <<<"$ids")
  for id in $ids; do
    [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] \
      || die "node container $id is not running: start it ('docker start $id') or remove it before scaling in"
  done
  # At once: the manager may be killed at any moment, and its shell would ignore the SIGTERM of a stop.
  compose stop -t 0 manager >&2 || die "cannot stop the manager: see the messages above"
  trap 'compose start manager >/dev/null 2>&1 || true' EXIT
  take_out "$keep" "$leave"
  # The containers go here rather than through compose, so that their volumes go with them.
  for id in $leave; do
    { docker stop "$id" >/dev/null && docker rm -v "$id" >/dev/null; } \
      || die "cannot remove container $id: remove it with 'docker rm -fv $id'"
  done
}

size_arg() {
  [[ ${1:-} =~ ^[0-9]+$ ]] && [ "$1" -ge 3 ] || die "'$cmd' needs a node count of 3 or more, e.g. '$0 $cmd 6'"
}

read_force "$@"
set -- "${args[@]}"
cmd=${1:-}
case $cmd in
  up)
    size_arg "${2:-}"
    refuse_shrink "$2" "$(count_nodes)"
    began=$SECONDS
    choose_images fresh
    choose_user
    inherit_settings
    choose_tls
    discover_settings
    export CLUSTER_SIZE=$2
    compose build >&2 || die "docker compose build failed: see its messages above"
    started=$SECONDS
    compose up -d --scale "redis=$2" >&2 || die "docker compose up failed: see its messages above"
    await_cluster "$2" "$began" "$started"
    ;;
  scale)
    size_arg "${2:-}"
    refuse_small "$2" "$(count_nodes)" "$force"
    began=$SECONDS
    choose_images
    choose_user
    inherit_settings
    choose_tls
    discover_settings
    if [ "$2" -lt "$(count_nodes)" ]; then
      scale_in "$2"
    fi
    compose up -d --no-recreate --scale "redis=$2" >&2 || die "docker compose up failed: see its messages above"
    await_cluster "$2" "$began" "$began"
    ;;
  status)
    inherit_settings
    id=$(nodes | head -n 1)
    [ -n "$id" ] || die "no Redis node of project $COMPOSE_PROJECT_NAME runs: start them with '$0 up 6'"
    node_cli "$id" cluster info | tr -d '\r'
    node_cli "$id" cluster nodes
    ;;
  down)
    # A container that docker-compose v1 recreated has its predecessor's volume by name, which `down -v`
    # keeps: note every volume first and remove what is left of them afterwards.
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    volumes=
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086 # one argument per id
      volumes=$(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' $ids)
    fi
    # Built images go too (a rebuild is quick); the base images stay.
    compose down -v --rmi local --remove-orphans >&2 || die "docker compose down failed: see its messages above"
    for v in $volumes; do
      if docker volume inspect "$v" >/dev/null 2>&1; then
        docker volume rm "$v" >/dev/null || die "cannot remove volume $v: see 'docker volume inspect $v'"
      fi
    done
    ;;
  *)
    die "usage: $0 up N | scale N [--force] | status | down"
    ;;
esac
