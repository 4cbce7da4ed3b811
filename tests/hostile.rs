//! Hostile input against the real binary: each attack gets an error or a closed connection, the server's
//! memory stays under a stated bound, and a well-behaved client keeps getting answers in time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{resp, RawClient, ServerProcess};
use tokio::io::AsyncWriteExt;

/// The most memory the server may hold during an attack (peak RSS, VmHWM).
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// The slowest reply the well-behaved client may see during an attack.
const LATENCY_BOUND: Duration = Duration::from_millis(500);
/// How long each flag-limited attack waits for the server's verdict.
const REQUEST_TIMEOUT_SECS: &str = "2";

/// A well-behaved client that pings throughout an attack and records what it saw.
struct Bystander {
    stop: Arc<AtomicBool>,
    max_latency_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Bystander {
    async fn start(server: &ServerProcess) -> Bystander {
        let mut client = server.connect().await;
        let stop = Arc::new(AtomicBool::new(false));
        let max_latency_us = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max_latency_us.clone());
        let task = tokio::spawn(async move {
            let (mut ok, mut bad) = (0u64, 0u64);
            // At least one round trip, however short the attack.
            loop {
                let started = Instant::now();
                client.send(&resp(&[b"ECHO", b"still-here"])).await;
                let got = client.read_exact_len(17).await;
                m.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if got == b"$10\r\nstill-here\r\n" {
                    ok += 1;
                } else {
                    bad += 1;
                }
                if s.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, bad)
        });
        Bystander { stop, max_latency_us, task }
    }

    /// Stops it and checks it was answered correctly and in time throughout.
    async fn finish(self, attack: &str, server: &ServerProcess) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, bad) = self.task.await.expect("the bystander task does not panic");
        let latency = Duration::from_micros(self.max_latency_us.load(Ordering::Relaxed));
        let peak = peak_rss_kib(server);
        println!("{attack}: bystander {ok} ok, {bad} bad, max latency {latency:?}; server peak RSS {peak} KiB");
        assert!(ok > 0 && bad == 0, "{attack}: the bystander got {bad} wrong replies");
        assert!(latency < LATENCY_BOUND, "{attack}: the bystander waited {latency:?}");
        assert!(peak < RSS_BOUND_KIB, "{attack}: peak RSS {peak} KiB");
    }
}

fn peak_rss_kib(server: &ServerProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn server() -> ServerProcess {
    ServerProcess::start(&["--docker-host", "/nonexistent/docker.sock", "--request-timeout", REQUEST_TIMEOUT_SECS])
}

/// Sends `input` as fast as the server takes it, then reads the reply; returns (reply, closed).
async fn attack_with(client: &mut RawClient, input: &[u8]) -> (String, bool) {
    // The server may close before all of it is sent: that is the expected outcome, not a failure.
    let _ = client.stream.write_all(input).await;
    let (got, closed) = client.read_to_close().await;
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_one_gigabyte_bulk_string_is_refused_at_once() {
    let s = server();
    let watch = Bystander::start(&s).await;
    let mut c = s.connect().await;
    let (reply, closed) = attack_with(&mut c, b"*2\r\n$4\r\nECHO\r\n$1073741824\r\nabc").await;
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);
    watch.finish("1 GB bulk", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_nested_arrays_do_not_recurse() {
    let s = server();
    let watch = Bystander::start(&s).await;
    let mut c = s.connect().await;
    let (reply, closed) = attack_with(&mut c, &b"*1\r\n".repeat(100_000)).await;
    assert_eq!(reply, "-ERR Protocol error: expected '$', got '*'\r\n");
    assert!(closed);
    watch.finish("100,000 nested arrays", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_inline_line_is_cut_off() {
    let s = server();
    let watch = Bystander::start(&s).await;
    let mut c = s.connect().await;
    let (reply, closed) = attack_with(&mut c, &vec![b'A'; 10 * 1024 * 1024]).await;
    assert_eq!(reply, "-ERR Protocol error: too big inline request\r\n");
    assert!(closed);
    watch.finish("10 MB inline", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_gets_an_error_or_a_close() {
    let s = server();
    let watch = Bystander::start(&s).await;
    // A fixed pseudo-random stream, so a failure can be replayed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..200 {
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut c = s.connect().await;
        let _ = c.stream.write_all(&garbage).await;
        let _ = c.stream.shutdown().await;
        let (got, closed) = c.read_to_close().await;
        assert!(closed, "round {round}: the server answers and closes, or closes");
        assert!(
            got.is_empty() || got.starts_with(b"-") || got.starts_with(b"+") || got.starts_with(b"$"),
            "round {round}"
        );
    }
    watch.finish("binary garbage", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dribbled_one_byte_per_100ms_is_timed_out() {
    let s = server();
    let watch = Bystander::start(&s).await;
    let mut c = s.connect().await;
    let request = resp(&[b"ECHO", &[b'x'; 200]]);
    let started = Instant::now();
    let mut closed_after = None;
    for byte in &request {
        if c.stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 128];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), c.stream.peek(&mut probe)).await {
            let text = String::from_utf8_lossy(&probe[..n]).into_owned();
            assert!(text.starts_with("-ERR request not completed within 2000 ms"), "{text:?}");
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let after = closed_after.expect("the server gives up on the dribbled request");
    println!("slow request cut after {after:?}");
    assert!(after >= Duration::from_secs(2) && after < Duration::from_secs(4), "{after:?}");
    watch.finish("dribbled request", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_cost_little_and_block_nobody() {
    let s = server();
    let before = s.rss_kib();
    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        idle.push(s.connect().await);
    }
    // Every connection is accepted and registered before we measure.
    let mut probe = s.connect().await;
    probe.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    let watch = Bystander::start(&s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = s.rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) / 5000;
    println!("5,000 idle connections: RSS {before} KiB -> {after} KiB, {per_conn} bytes each");
    assert!(per_conn < 32 * 1024, "{per_conn} bytes per idle connection");
    watch.finish("5,000 idle connections", &s).await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_a_million_pongs_is_disconnected() {
    let s = server();
    let watch = Bystander::start(&s).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    // A tiny receive window: the replies back up at once instead of filling the kernel's buffers.
    socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
    let mut stream = socket.connect(s.addr).await.expect("connect");
    let batch = b"PING\r\n".repeat(10_000);
    let started = Instant::now();
    let (mut sent, mut dropped) = (0usize, false);
    while sent < 1_000_000 && !dropped {
        match tokio::time::timeout(Duration::from_secs(10), stream.write_all(&batch)).await {
            Ok(Ok(())) => sent += 10_000,
            Ok(Err(_)) => dropped = true,
            Err(_) => panic!("the server neither read nor dropped the flooding client within 10 s"),
        }
    }
    // Whatever the kernels buffered, the server must drop a client that leaves its replies unread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dropped && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(b"PING\r\n")).await {
            Ok(Err(_)) => dropped = true,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let peak = peak_rss_kib(&s);
    println!("flood: {sent} PINGs written; the server dropped the client after {:?}", started.elapsed());
    assert!(dropped, "a client that reads nothing is disconnected");
    watch.finish(&format!("1,000,000 unread PINGs (peak {peak} KiB)"), &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_clients_over_max_clients_are_told_and_closed() {
    let s = ServerProcess::start(&["--docker-host", "/nonexistent", "--max-clients", "3"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = s.connect().await;
        c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
        held.push(c);
    }
    let mut extra = s.connect().await;
    let (got, closed) = extra.read_to_close().await;
    assert_eq!(String::from_utf8_lossy(&got), "-ERR max number of clients reached\r\n");
    assert!(closed);
    held.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = s.connect().await;
    again.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_after_the_timeout() {
    let s = ServerProcess::start(&["--docker-host", "/nonexistent", "--timeout", "1"]);
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    let started = Instant::now();
    let (got, closed) = c.read_to_close().await;
    assert!(closed && got.is_empty(), "closed silently, as Redis does");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_last_reply_out_and_exits_zero() {
    let s = server();
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    let status = tokio::task::spawn_blocking(move || s.terminate()).await.expect("join");
    assert!(status.success(), "{status:?}");
    let (_, closed) = c.read_to_close().await;
    assert!(closed);
}

/// Runs the binary with these flags, expecting it to refuse them and exit; returns its standard error.
fn refused_at_start(flags: &[&str]) -> String {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rediscover"))
        .args(["--listen", "127.0.0.1:0", "--announce-ip", "127.0.0.1", "--docker-host", "/nonexistent"])
        .args(flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the rediscover binary");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(output) = rx.recv_timeout(Duration::from_secs(5)) else {
        common::run_ok("kill", &["-KILL", &pid.to_string()]);
        panic!("rediscover {flags:?} was still running after 5 s instead of refusing the flags");
    };
    let output = output.expect("wait for the rediscover binary");
    assert!(!output.status.success(), "{flags:?} exits non-zero");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_number_for_a_numeric_flag_is_refused_with_the_flags_name() {
    for flag in [
        "--data-port",
        "--bus-port",
        "--max-clients",
        "--max-bulk-len",
        "--max-args",
        "--max-inline-len",
        "--max-request-len",
        "--max-output",
        "--threads",
    ] {
        let stderr = refused_at_start(&[flag, "-1"]);
        assert!(stderr.contains(flag), "the message names {flag}: {stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_too_large_for_a_deadline_are_refused_at_start() {
    for (flag, value) in [
        ("--timeout", "18446744073709551615"),
        ("--timeout", "2147483648"),
        ("--request-timeout", "1e18"),
        ("--request-timeout", "0"),
        ("--request-timeout", "inf"),
        ("--docker-timeout", "1e18"),
        ("--docker-timeout", "0"),
        ("--docker-timeout", "-1"),
        ("--coalesce-us", "1001"),
        ("--coalesce-us", "-1"),
        ("--timeout", "-1"),
    ] {
        let stderr = refused_at_start(&[flag, value]);
        println!("{flag} {value}: {}", stderr.trim());
        assert!(stderr.contains(flag), "the message names {flag}: {stderr:?}");
    }
    // The largest Redis takes (INT_MAX seconds) is served, and a client's deadline is computed without panic.
    let s = ServerProcess::start(&[
        "--docker-host",
        "/nonexistent",
        "--timeout",
        "2147483647",
        "--request-timeout",
        "2147483647",
        "--docker-timeout",
        "2147483647",
    ]);
    let mut c = s.connect().await;
    c.send(b"*1\r\n$4\r\nPI").await;
    c.roundtrip(b"NG\r\n", b"+PONG\r\n").await;
}

/// Opens `n` connections that each send `batch` and read `replies` replies, then stay open; returns them and
/// how much the server's resident memory grew, in KiB.
async fn open_idle(s: &ServerProcess, n: usize, batch: &[u8], replies: usize) -> (Vec<RawClient>, u64) {
    let before = s.rss_kib();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = s.connect().await;
        c.send(batch).await;
        for _ in 0..replies {
            let reply = c.read_reply().await;
            assert!(!reply.starts_with('-'), "{reply:?}");
        }
        clients.push(c);
    }
    // One more round trip, so the server has seen every connection go quiet before we measure.
    s.connect().await.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    (clients, s.rss_kib().saturating_sub(before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_the_same_memory_whatever_it_sent_before() {
    const N: usize = 200;
    let s = server();
    let big = vec![b'x'; 60 * 1024];
    let (_plain, plain) = open_idle(&s, N, &resp(&[b"PING"]), 1).await;
    let mut echo_then_names = resp(&[b"ECHO", &big]);
    echo_then_names.extend(resp(&[b"CLIENT", b"SETNAME", b"after-a-big-request"]));
    echo_then_names.extend(resp(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"some-lib"]));
    echo_then_names.extend(resp(&[b"CLIENT", b"SETINFO", b"LIB-VER", b"1.2.3"]));
    let (_named, named) = open_idle(&s, N, &echo_then_names, 4).await;
    let mut echo_then_hello = resp(&[b"ECHO", &big]);
    echo_then_hello.extend(resp(&[b"HELLO", b"2", b"SETNAME", b"named-by-hello"]));
    let (_hello, hello) = open_idle(&s, N, &echo_then_hello, 2).await;
    println!(
        "{N} idle connections: {plain} KiB after PING, {named} KiB after 60 KB ECHO + CLIENT SETNAME/SETINFO, \
         {hello} KiB after 60 KB ECHO + HELLO SETNAME"
    );
    // Allow for the one request's buffers the allocator keeps for reuse, and for the noise of page counting.
    let bound = 2 * plain + 512;
    assert!(named < bound, "after a big request and CLIENT SETNAME: {named} KiB, plain: {plain} KiB");
    assert!(hello < bound, "after a big request and HELLO SETNAME: {hello} KiB, plain: {plain} KiB");
}
