#!/usr/bin/env bash
# Builds local stand-ins for what compose/ would otherwise pull, so a machine without a registry can run the
# cluster: a Debian base image with redis-server and redis-tools (used as REDIS_IMAGE) and the static rediscover
# binary that compose/discover/Dockerfile.prebuilt ships. Idempotent: whatever already exists is kept.
#
#   compose/offline-images.sh        prints the image tag it made (or found) on its last line
#
# Environment: OFFLINE_REDIS_IMAGE (tag, default rediscover-offline/redis:7-bookworm), OFFLINE_SUITE (bookworm),
# OFFLINE_MIRROR (Debian mirror, default debootstrap's), OFFLINE_CACHE (root file system cache,
# default /var/cache/rediscover).
set -eu
cd "$(dirname "$0")/.."

image=${OFFLINE_REDIS_IMAGE:-rediscover-offline/redis:7-bookworm}
suite=${OFFLINE_SUITE:-bookworm}
cache=${OFFLINE_CACHE:-/var/cache/rediscover}
tarball=$cache/redis-$suite-rootfs.tar

die() { echo "offline-images.sh: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start dockerd and rerun"

# The Redis base: Debian's packages in a minimal root file system, imported as an image.
if ! docker image inspect "$image" >/dev/null 2>&1; then
  if [ ! -s "$tarball" ]; then
    [ "$(id -u)" = 0 ] || die "debootstrap needs root: rerun as root"
    if ! command -v debootstrap >/dev/null; then
      echo "offline-images.sh: installing debootstrap" >&2
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } \
        || die "debootstrap is missing and apt-get could not install it: install debootstrap and rerun"
    fi
    mkdir -p "$cache" || die "cannot create $cache: set OFFLINE_CACHE to a writable directory"
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "offline-images.sh: debootstrap $suite with redis-server and redis-tools into $root" >&2
    # shellcheck disable=SC2086 # an empty mirror must vanish, not become an empty argument
    debootstrap --variant=minbase --include=redis-server,redis-tools "$suite" "$root" ${OFFLINE_MIRROR:-} \
      >"$cache/debootstrap.log" 2>&1 \
      || die "debootstrap failed (log: $cache/debootstrap.log): check the Debian mirror or set OFFLINE_MIRROR"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" \
      || die "cannot write $tarball: free some space under $cache"
    rm -rf "$root"
    trap - EXIT
  fi
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["redis-server"]' \
    "$tarball" "$image" >/dev/null \
    || die "docker import of $tarball failed: delete it and rerun"
fi

# The rediscover binary for compose/discover/Dockerfile.prebuilt.
binary=$(compose/static-binary.sh) || die "the static build failed: see compose/static-binary.sh's message above"
cp -f "$binary" compose/discover/rediscover \
  || die "cannot copy the binary into compose/discover: check the permissions there"

echo "$image"
