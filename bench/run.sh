#!/usr/bin/env bash
# Side-by-side benchmark: Debian's redis-server and rediscover, started here, measured by redis-benchmark in one
# run. Prints requests per second, p50 and p99, the server's CPU time per million requests (and its system part)
# and how often it slept or napped waiting for input, for PING (inline and multibulk), a warm DISCOVER of a real
# container and redis-server's GET of a value of the same length, each the median of three rounds (BENCH_ROUNDS);
# then system calls per request, memory per idle connection (fresh, and after a 60 KB request), start-up and
# cold-lookup figures.
#
#   bench/run.sh            full run (about 6 minutes)
#   bench/run.sh --quick    fewer requests, for a smoke test
#   BENCH_BIN=path bench/run.sh    measure that rediscover binary instead of this tree's static musl build
#   BENCH_ROUNDS=7 bench/run.sh    more rounds per figure (3 by default): a steadier median on a noisy machine
set -euo pipefail
cd "$(dirname "$0")/.."

requests=400000
idle_conns=10000
rounds=${BENCH_ROUNDS:-3}
if [ "${1:-}" = "--quick" ]; then
  requests=20000
  idle_conns=1000
  rounds=1
fi
case $rounds in
  '' | *[!0-9]* | 0) echo "bench: BENCH_ROUNDS must be a positive whole number, not '$rounds'"; exit 1 ;;
esac
redis_port=${BENCH_REDIS_PORT:-17380}
rediscover_port=${BENCH_REDISCOVER_PORT:-17381}
image=rediscover-bench/busybox:latest
socket=/var/run/docker.sock

for tool in redis-server redis-benchmark redis-cli curl python3 docker; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool is missing: apt-get install redis-server redis-tools curl"
    exit 1
  }
done
# System calls are counted by the kernel's raw_syscalls tracepoint through perf where it works (see below).
if perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true >/dev/null 2>&1; then
  syscall_counter=perf
elif command -v strace >/dev/null; then
  syscall_counter=strace
else
  echo "bench: neither perf nor strace can count system calls: apt-get install linux-perf (or strace)"
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "bench: the Docker engine does not answer: start dockerd"; exit 1; }
ulimit -n $((idle_conns + 1024)) 2>/dev/null || { echo "bench: raise the open-file limit (ulimit -n)"; exit 1; }

# By default the binary the compose image ships: static, for musl (compose/discover/Dockerfile builds the same
# on alpine), whose allocator differs from glibc's.
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  bin=$(compose/static-binary.sh) || { echo "bench: the static build failed (see above)"; exit 1; }
fi
# Requests counted under strace for the system-call figures.
traced_requests=$((requests / 10))
big_request=$((60 * 1024))

pids=()
container=
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A real container publishing the cluster ports, on a local image (no registry needed).
if ! docker image inspect "$image" >/dev/null 2>&1; then
  tree=$(mktemp -d)
  mkdir -p "$tree/bin"
  cp "$(command -v busybox)" "$tree/bin/busybox"
  ln -s busybox "$tree/bin/sleep"
  tar -C "$tree" -c . | docker import - "$image" >/dev/null
  rm -rf "$tree"
fi
container=rediscover-bench-$$
docker run -d --name "$container" --label io.rediscover.test -p 6379 -p 16379 "$image" sleep 3600 >/dev/null

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --maxclients $((idle_conns + 100)) \
  --logfile /dev/null &
pids+=($!)
redis_pid=$!

# Time from exec to the first PONG, measured by the process that starts it.
read -r rediscover_pid first_pong_ms < <(python3 - "$bin" "$rediscover_port" <<'EOF'
import os, socket, subprocess, sys, time
bin, port = sys.argv[1], int(sys.argv[2])
# As users run it: default flags and log level.
env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
start = time.perf_counter()
proc = subprocess.Popen([bin, "--listen", f"127.0.0.1:{port}", "--max-clients", "100000"], env=env,
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True)
while True:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16) == b"+PONG\r\n":
                break
    except OSError:
        if time.perf_counter() - start > 10:
            sys.exit("rediscover did not answer PING within 10 s")
        time.sleep(0.0005)
print(proc.pid, f"{(time.perf_counter() - start) * 1000:.1f}")
EOF
)
pids+=("$rediscover_pid")

until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
answer=$(redis-cli -e -p "$rediscover_port" DISCOVER "$container")
redis-cli -p "$redis_port" SET announce "$answer" >/dev/null
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
idle_redis=$(rss_kib "$redis_pid")
idle_rediscover=$(rss_kib "$rediscover_pid")
info_field() { redis-cli -p "$rediscover_port" INFO docker | tr -d '\r' | awk -F: -v f="$1" '$1 == f {print $2}'; }
hits_before=$(info_field table_hits)
misses_before=$(info_field table_misses)

printf 'rediscover: %s\ncontainer %s answers %s\n\n' "$bin" "$container" "$answer"
printf '%-18s %-10s %10s %10s %6s %8s %8s %8s %8s %7s %7s %6s %7s %7s %7s %7s %8s %8s\n' test load "redis rps" \
  rediscover ratio "r p50" p50 "r p99" p99 "r cpu" cpu ratio "r sys" sys "r waits" waits "r client" client
echo "(each figure the median of $rounds round(s), the two servers in turn; cpu: the server's CPU time in ms per million"
echo " requests, from the scheduler's count in /proc/PID/task/*/schedstat; sys: its system part, from /proc/PID/stat;"
echo " waits: the times it slept or napped for want of input per 1,000 requests, its voluntary context switches; client:"
echo " redis-benchmark's CPU time in ms per million requests against that server)"

# CPU time of a process so far, all its threads: nanoseconds on CPU, system clock ticks, voluntary context
# switches.
cpu_now() {
  cat /proc/"$1"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.0f ", ns }'
  awk '{ printf "%s ", $15 }' "/proc/$1/stat"
  cat /proc/"$1"/task/*/status | awk '$1 == "voluntary_ctxt_switches:" { n += $2 } END { print n }'
}
hz=$(getconf CLK_TCK)

# One redis-benchmark run against the server with this pid: prints "rps p50 p99 cpu sys waits client", CPU in ms
# per million requests, waits per thousand; client: redis-benchmark's own CPU time (user and system, from the
# shell's `times`) in ms per million requests.
measure() {
  local pid=$1 port=$2 clients=$3 pipeline=$4 n=$5 ns0 sys0 waits0 ns1 sys1 waits1 out client
  shift 5
  out=$(mktemp)
  read -r ns0 sys0 waits0 < <(cpu_now "$pid")
  client=$( { redis-benchmark -p "$port" -c "$clients" -P "$pipeline" -n "$n" --csv "$@" >"$out" 2>/dev/null; times; } \
    | awk -v n="$n" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
                               printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1e9 / n }')
  read -r ns1 sys1 waits1 < <(cpu_now "$pid")
  read -r rps p50 p99 < <(awk -F, 'NR == 2 { gsub(/"/, ""); print $2, $5, $7 }' "$out")
  rm -f "$out"
  awk -v r="$rps $p50 $p99" -v ns=$((ns1 - ns0)) -v t=$((sys1 - sys0)) -v w=$((waits1 - waits0)) -v hz="$hz" \
    -v n="$n" -v c="$client" 'BEGIN { printf "%s %.0f %.0f %.2f %s\n", r, ns / n, t * 1000 / hz * 1e6 / n, w * 1000 / n, c }'
}

# The median of each column over the rounds, one line of numbers per round on stdin.
medians() {
  python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
print(" ".join(f"{statistics.median(c):.2f}".rstrip("0").rstrip(".") for c in zip(*rows)))'
}

row() {
  local name=$1 clients=$2 pipeline=$3 redis_args=$4 ours_args=$5 n=$requests round runs r o
  # A pipelined run is short: more requests keep the CPU figure clear of the clock's tick.
  [ "$pipeline" -eq 1 ] || n=$((requests * 4))
  [ "$clients" -gt 1 ] || n=$((requests / 4))
  runs=$(for round in $(seq "$rounds"); do
    echo "r $(eval measure "$redis_pid" "$redis_port" "$clients" "$pipeline" "$n" "$redis_args")"
    echo "o $(eval measure "$rediscover_pid" "$rediscover_port" "$clients" "$pipeline" "$n" "$ours_args")"
  done)
  r=$(sed -n 's/^r //p' <<< "$runs" | medians)
  o=$(sed -n 's/^o //p' <<< "$runs" | medians)
  read -r r_rps r_p50 r_p99 r_cpu r_sys r_waits r_client <<< "$r"
  read -r o_rps o_p50 o_p99 o_cpu o_sys o_waits o_client <<< "$o"
  printf '%-18s %-10s %10.0f %10.0f %6s %8s %8s %8s %8s %7s %7s %6s %7s %7s %7s %7s %8s %8s\n' "$name" \
    "-c$clients -P$pipeline" \
    "$r_rps" "$o_rps" "$(awk -v a="$o_rps" -v b="$r_rps" 'BEGIN { printf "%.2f", a / b }')" "$r_p50" "$o_p50" "$r_p99" "$o_p99" \
    "$r_cpu" "$o_cpu" "$(awk -v a="$o_cpu" -v b="$r_cpu" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
    "$r_sys" "$o_sys" "$r_waits" "$o_waits" "$r_client" "$o_client"
}

for load in "50 1" "50 16" "1 1"; do
  set -- $load
  row "PING inline" "$1" "$2" "-t ping_inline" "-t ping_inline"
  row "PING multibulk" "$1" "$2" "-t ping_mbulk" "-t ping_mbulk"
  row "DISCOVER vs GET" "$1" "$2" "GET announce" "DISCOVER $container"
done

# System calls per request, every call of the server's threads over a fixed number of requests: counted by the
# kernel's raw_syscalls tracepoint through `perf stat` where it works, which leaves the timing as it is; else by
# strace, which slows each call so much that requests pile up between calls and the figure comes out low (about
# 2.0 at -P 1 where the tracepoint counts 2.4 to 2.9: the waits for input mostly vanish).
syscalls_per_request() {
  local pid=$1 port=$2 pipeline=$3 out counter
  shift 3
  out=$(mktemp)
  if [ "$syscall_counter" = perf ]; then
    perf stat -e raw_syscalls:sys_enter -x, -o "$out" -p "$pid" >/dev/null 2>&1 &
  else
    strace -c -f -p "$pid" -o "$out" 2>/dev/null &
  fi
  counter=$!
  sleep 1
  redis-benchmark -p "$port" -c 50 -P "$pipeline" -n "$traced_requests" -q "$@" >/dev/null 2>&1
  sleep 0.5
  kill -INT "$counter"
  wait "$counter" 2>/dev/null || true
  # perf: count,,event,... (the empty unit merges into the separator); strace's total line: % time, seconds,
  # usecs/call, calls, [errors,] total.
  awk -v n="$traced_requests" -F'[, ]+' '
    $2 == "raw_syscalls:sys_enter" { calls = $1 }
    $NF == "total" { calls = $4 }
    END { printf "%.2f\n", calls / n }' <(sed 's/^ *//' "$out")
  rm -f "$out"
}
hits_after=$(info_field table_hits)
misses_after=$(info_field table_misses)

# The median of the rounds, the two servers in turn: the figure at -P 1 moves with how often a server waits.
for pipeline in 1 16; do
  counts=$(for round in $(seq "$rounds"); do
    echo "$(syscalls_per_request "$redis_pid" "$redis_port" "$pipeline" GET announce) \
$(syscalls_per_request "$rediscover_pid" "$rediscover_port" "$pipeline" DISCOVER "$container")"
  done | medians)
  read -r "sys_redis_$pipeline" "sys_rediscover_$pipeline" <<< "$counts"
done

# Idle connections: open them to each server, each sending a request of this many bytes first (none when 0:
# only the last sends a PING, so that all are known to be accepted), let them idle a few seconds (Redis trims an
# idle client's buffers from its cron), then read the resident set. Prints the base, the resident set and the
# bytes each connection added since `base` (KiB; when empty, the resident set before these connections). Both
# rounds count from the same base, so memory the first left to the allocator is not free for the second.
with_idle() {
  python3 - "$1" "$2" "$idle_conns" "$3" "${4:-}" <<'EOF'
import socket, sys, time
pid, port, n, size, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
request, reply = b"", b""
if size:
    request = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (size, b"x" * size)
    reply = b"$%d\r\n%s\r\n" % (size, b"x" * size)
before = int(base) if base else rss()
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if len(conns) == n - 1 and not size:
        request, reply = b"PING\r\n", b"+PONG\r\n"
    s.sendall(request)
    got = b""
    while len(got) < len(reply):
        chunk = s.recv(len(reply) - len(got))
        assert chunk, "the server closed a connection"
        got += chunk
    assert got == reply, "a connection is served"
    conns.append(s)
time.sleep(4)
after = rss()
print(before, after, (after - before) * 1024 // n)
EOF
}
read -r base_redis conns_redis per_conn_redis < <(with_idle "$redis_pid" "$redis_port" 0)
read -r base_rediscover conns_rediscover per_conn_rediscover < <(with_idle "$rediscover_pid" "$rediscover_port" 0)
read -r _ big_redis per_big_redis < <(with_idle "$redis_pid" "$redis_port" "$big_request" "$base_redis")
read -r _ big_rediscover per_big_rediscover < <(with_idle "$rediscover_pid" "$rediscover_port" "$big_request" \
  "$base_rediscover")

# Cold lookups: a DISCOVER that must ask Docker (a name it has never seen), against one raw inspect.
cold=$(python3 - "$rediscover_port" <<'EOF'
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
times = []
for i in range(50):
    start = time.perf_counter()
    s.sendall(f"DISCOVER bench-missing-{i}\r\n".encode())
    reply = s.recv(256)
    times.append(time.perf_counter() - start)
    assert reply.startswith(b"-NOCONTAINER"), reply
times.sort()
print(f"{times[len(times) // 2] * 1000:.2f}")
EOF
)
inspect=$(for _ in $(seq 50); do
  curl -s -o /dev/null -w '%{time_total}\n' --unix-socket "$socket" "http://localhost/containers/$container/json"
done | sort -n | awk '{ t[NR] = $1 } END { printf "%.2f", t[int((NR + 1) / 2)] * 1000 }')

echo
printf '%-44s %14s %14s\n' "" redis-server rediscover
printf '%-44s %14s %14s\n' "idle RSS (KiB)" "$idle_redis" "$idle_rediscover"
printf '%-44s %14s %14s\n' "RSS with $idle_conns idle connections (KiB)" "$conns_redis" "$conns_rediscover"
printf '%-44s %14s %14s\n' "bytes per idle connection" "$per_conn_redis" "$per_conn_rediscover"
printf '%-44s %14s %14s\n' "RSS with $idle_conns idle after 60 KB each (KiB)" "$big_redis" "$big_rediscover"
printf '%-44s %14s %14s\n' "bytes per idle connection after 60 KB" "$per_big_redis" "$per_big_rediscover"
printf '%-44s %14s %14s\n' "system calls per request, -c50 -P1 ($syscall_counter)" "$sys_redis_1" "$sys_rediscover_1"
printf '%-44s %14s %14s\n' "system calls per request, -c50 -P16 ($syscall_counter)" "$sys_redis_16" "$sys_rediscover_16"
printf '%-44s %14s %14s\n' "start to first PONG (ms)" "-" "$first_pong_ms"
printf '%-44s %14s %14s\n' "cold DISCOVER, p50 of 50 (ms)" "-" "$cold"
printf '%-44s %14s %14s\n' "raw Docker inspect by curl, p50 of 50 (ms)" "$inspect" "-"
printf '%-44s %14s %14s\n' "warm DISCOVERs answered from the table" "-" "$((hits_after - hits_before))"
printf '%-44s %14s %14s\n' "warm DISCOVERs that asked Docker" "-" "$((misses_after - misses_before))"
