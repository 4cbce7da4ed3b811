#!/usr/bin/env bash
# Builds rediscover as the static musl binary that the compose image ships, adding the musl Rust target and
# Debian's musl-gcc when they are missing (cargo does nothing when the binary is up to date).
#
#   compose/static-binary.sh         prints the binary's path, its only line on standard output
set -eu
cd "$(dirname "$0")/.."

musl_target=x86_64-unknown-linux-musl

die() { echo "static-binary.sh: $*" >&2; exit 1; }

rustup target list --installed 2>/dev/null | grep -qx "$musl_target" || rustup target add "$musl_target" >&2 \
  || die "the Rust target $musl_target is missing and rustup could not add it: rustup target add $musl_target"
# A crate with C code (ring, for TLS) needs a C compiler for musl: Debian's musl-gcc, from musl-tools.
if ! command -v musl-gcc >/dev/null; then
  [ "$(id -u)" = 0 ] || die "musl-gcc is missing: apt-get install musl-tools, or rerun as root"
  echo "static-binary.sh: installing musl-tools" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null; } \
    || die "musl-tools is missing and apt-get could not install it: install musl-tools and rerun"
fi
export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
# Run from a test (cluster.sh under cargo test), this script inherits the variables cargo sets for the test
# binary (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). A build script that reads them (ring's does) is rerun when
# they change, and with it the whole TLS stack and rediscover are rebuilt: they are cleared, so the build is the
# same whether a shell or a test asks for it.
for var in $(compgen -e); do
  case $var in
    CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR)
      unset "$var"
      ;;
  esac
done
cargo build --quiet --release --locked --target "$musl_target" \
  || die "cargo build --release --target $musl_target failed: fix the build and rerun"
# Where cargo put it: CARGO_TARGET_DIR, or a target-dir in cargo's configuration, moves it out of target/.
target_dir=$(cargo metadata --quiet --locked --no-deps --format-version 1 \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cargo metadata did not say where cargo builds"
echo "$target_dir/$musl_target/release/rediscover"
