#!/usr/bin/env bash
# Makes the certificates of a TLS cluster (compose/cluster.sh runs it with TLS=1 when they are missing):
#   compose/tls.sh DIR [NAME...]
# DIR gets ca.crt (a CA made for this cluster), node.crt and node.key (the certificate every node serves and
# presents as a client, signed by that CA). Its subjectAltName lists localhost, 127.0.0.1, ::1, this host's
# name and every address of this host, and each NAME given (a host name or an IP address). The CA's key is
# thrown away once node.crt is signed: nothing else can be signed with it; for new names make a new DIR.
# node.key is readable by its owner and by GROUP (env; default: the group of /var/run/docker.sock, which
# rediscover runs in: DISCOVER_TLS=1 serves rediscover with these files); DAYS (825) is node.crt's lifetime.
set -eu

die() { echo "tls.sh: $*" >&2; exit 1; }

dir=${1:-}
[ -n "$dir" ] || die "usage: $0 DIR [NAME...]: name the directory for ca.crt, node.crt and node.key"
shift
command -v openssl >/dev/null || die "openssl is missing: apt-get install openssl"
for f in ca.crt node.crt node.key; do
  [ ! -e "$dir/$f" ] || die "$dir/$f exists: remove $dir to make new certificates, or use it as it is"
done
group=${GROUP:-$(stat -c %g /var/run/docker.sock 2>/dev/null || id -g)}
days=${DAYS:-825}

# subjectAltName: the names and addresses a client may check the nodes' certificate against.
sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$(hostname)" $(hostname -I 2>/dev/null) "$@"; do
  [ -n "$name" ] || continue
  case $name in
    *:* | [0-9]*.[0-9]*.[0-9]*.[0-9]*) sans="$sans,IP:$name" ;;
    *) sans="$sans,DNS:$name" ;;
  esac
done

mkdir -p "$dir" || die "cannot create $dir: choose a writable TLS_DIR"
work=$(mktemp -d) || die "mktemp failed: check TMPDIR"
trap 'rm -rf "$work"' EXIT
(
  umask 077
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$((days + 1))" -subj "/CN=rediscover cluster CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$work/ca.crt"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/node.key" 2>/dev/null
  openssl req -new -key "$work/node.key" -subj "/CN=redis cluster node" -out "$work/node.csr"
  # Servers (clients, cluster bus, rediscover) and clients (peers, replicas, the manager) alike.
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=$sans" >"$work/node.ext"
  openssl x509 -req -in "$work/node.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -sha256 -days "$days" -extfile "$work/node.ext" -out "$work/node.crt" 2>/dev/null
) || die "openssl could not make the certificates: see its message above"
chgrp "$group" "$work/node.key" 2>/dev/null || echo "tls.sh: node.key is not in group $group: rediscover may not read it with DISCOVER_TLS=1" >&2
chmod 640 "$work/node.key"
chmod 644 "$work/ca.crt" "$work/node.crt"
mv "$work/ca.crt" "$work/node.crt" "$work/node.key" "$dir/" || die "cannot write into $dir: check its permissions"
echo "tls.sh: made $dir/ca.crt, node.crt and node.key for $sans" >&2
