#!/usr/bin/env bash
# Installs what the tests need, idempotently, on a Debian machine with a Docker engine: Debian's redis-server,
# redis-tools (redis-cli, redis-benchmark), busybox-static (the test containers' image) and debootstrap (the
# offline base image), openssl (test certificates), redis-py, cargo-nextest (the test runner), the musl Rust target,
# the local images of compose/offline-images.sh, and the layers of the images the tests build.
# README's test command runs it before `cargo nextest run`; whatever is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "tests/setup.sh: $*" >&2; exit 1; }

need=()
for pkg in redis-server redis-tools busybox-static debootstrap curl openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages ${need[*]}: rerun as root or apt-get install them"
  echo "tests/setup.sh: installing ${need[*]}" >&2
  apt-get update -qq || die "apt-get update failed: check the Debian mirror in /etc/apt/sources.list*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed: install them by hand and rerun"
  # The packaged redis-server starts itself on 6379; the tests start their own servers.
  systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
fi

python3 -c 'import redis' 2>/dev/null || python3 -m pip install -q redis \
  || die "pip install redis failed: install redis-py by hand and rerun"

command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked -q \
  || die "cargo install cargo-nextest failed: install it by hand and rerun"

docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start dockerd and rerun"
# The base images and the static binary that compose/ uses without a registry (kept when present).
redis_base=$(compose/offline-images.sh | tail -n 1)

# Each cluster test builds the images of a compose project or a stack of its own and removes them at its end.
# Without BuildKit (docker-compose v1, or no buildx) Docker's builder keeps its cache only in images: these two
# tags keep the layers of compose/'s two Dockerfiles, built from what the tests build them from, so that a test's
# build is a cache hit of a second rather than ten seconds of new layers.
docker build -q -t rediscover-test/node-layers --build-arg "REDIS_IMAGE=$redis_base" -f compose/redis/Dockerfile \
  compose >/dev/null 2>&1 || die "docker build of compose/redis/Dockerfile failed: run it by hand to see why"
docker build -q -t rediscover-test/discover-layers -f compose/discover/Dockerfile.prebuilt compose/discover \
  >/dev/null 2>&1 || die "docker build of compose/discover/Dockerfile.prebuilt failed: run it by hand to see why"
