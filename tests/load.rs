//! Load: a thousand concurrent clients asking DISCOVER of a real container, and many busy clients of the binary
//! as users run it (one event loop that naps for more input); every reply correct.

mod common;

use std::time::{Duration, Instant};

use common::{bulk, info_number, resp, test_label, RawClient, ServerProcess, TestContainer, TestServer};

const CLIENTS: usize = 1000;
const REQUESTS_EACH: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_discover_a_hundred_times_without_error() {
    let label = test_label("load");
    let config = common::labelled_config(&label);
    let container = tokio::task::spawn_blocking(move || TestContainer::with_cluster_ports(&["--label", &label]))
        .await
        .expect("join");
    let server = TestServer::with_docker(config).await;
    let name = container.name.clone();
    let expected = bulk(&container.expected_announce("127.0.0.1")).into_bytes();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut client = server.connect().await;
        let (name, expected) = (name.clone(), expected.clone());
        tasks.push(tokio::spawn(async move {
            let request = resp(&[b"DISCOVER", name.as_bytes()]);
            let (mut ok, mut bad) = (0usize, 0usize);
            for _ in 0..REQUESTS_EACH {
                client.send(&request).await;
                if client.read_exact_len(expected.len()).await == expected {
                    ok += 1;
                } else {
                    bad += 1;
                }
            }
            (ok, bad)
        }));
    }
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (o, b) = t.await.expect("a client task does not panic");
        ok += o;
        bad += b;
    }
    let elapsed = started.elapsed();
    let calls = info_number(&server.info_docker().await, "docker_calls");
    println!(
        "load: {CLIENTS} clients x {REQUESTS_EACH} DISCOVER = {ok} ok, {bad} errors in {elapsed:?} ({:.0} req/s), {calls} Docker calls",
        ok as f64 / elapsed.as_secs_f64()
    );
    assert_eq!((ok, bad), (CLIENTS * REQUESTS_EACH, 0));
}

/// Clients that pipeline at once, and what each sends.
const BUSY_CLIENTS: usize = 50;
const BATCHES_EACH: usize = 100;
const BATCH: usize = 16;

/// The CPU time a process has used, in clock ticks (user and system), from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after the command name, which is in parentheses and may hold spaces: utime and stime are the
    // 12th and 13th of them.
    let fields: Vec<&str> =
        stat.rsplit_once(')').expect("a stat line has the name in parentheses").1.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Eight clients of the server that each sent one PING at once and read its reply.
async fn burst_of_eight(server: &ServerProcess) -> Vec<RawClient> {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(server.connect().await);
    }
    ping_each(&mut clients).await;
    clients
}

/// Sends a PING on each client, then reads each reply.
async fn ping_each(clients: &mut [RawClient]) {
    for client in clients.iter_mut() {
        client.send(&resp(&[b"PING"])).await;
    }
    for client in clients.iter_mut() {
        assert_eq!(client.read_reply().await, "+PONG\r\n");
    }
}

/// INFO stats' `coalescing_naps` of a server.
async fn naps(server: &ServerProcess) -> u64 {
    info_number(&server.connect().await.request(&[b"INFO", b"stats"]).await, "coalescing_naps")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_clients_of_the_single_event_loop_get_every_reply_in_order_and_a_quiet_server_uses_no_cpu() {
    let server = ServerProcess::start(&[]);
    let mut tasks = Vec::with_capacity(BUSY_CLIENTS);
    for c in 0..BUSY_CLIENTS {
        let mut client = server.connect().await;
        tasks.push(tokio::spawn(async move {
            for b in 0..BATCHES_EACH {
                let words: Vec<String> = (0..BATCH).map(|i| format!("c{c}-b{b}-{i}")).collect();
                let batch: Vec<u8> = words.iter().flat_map(|w| resp(&[b"PING", w.as_bytes()])).collect();
                client.send(&batch).await;
                for w in &words {
                    assert_eq!(client.read_reply().await, bulk(w), "client {c}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("every reply in order");
    }
    // Once the clients are quiet the event loop sleeps: no nap goes on without input.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = cpu_ticks(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(server.pid()) - before;
    assert!(used <= 2, "a quiet server used {used} clock ticks of CPU in a second");
}

/// Eight clients send a request each at once, then one of them sends another alone: the lone request comes
/// while most active clients are quiet, when the event loop naps for more input before it sleeps. Repeated
/// until INFO counts a nap or `tries` are done; every reply is checked. Returns the naps counted.
async fn burst_then_lone_request(server: &ServerProcess, tries: usize) -> u64 {
    let mut clients = burst_of_eight(server).await;
    for n in 0..tries {
        if n > 0 {
            ping_each(&mut clients).await;
        }
        let word = format!("alone-{n}");
        assert_eq!(clients[0].request(&[b"PING", word.as_bytes()]).await, bulk(&word));
        let naps = naps(server).await;
        if naps > 0 {
            return naps;
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_among_many_active_clients_is_answered_after_a_nap_unless_naps_are_off() {
    let server = ServerProcess::start(&[]);
    assert!(burst_then_lone_request(&server, 200).await > 0, "no nap in 200 tries");
    let off = ServerProcess::start(&["--coalesce-us", "0"]);
    assert_eq!(burst_then_lone_request(&off, 200).await, 0, "naps with --coalesce-us 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_at_a_time_never_waits_on_a_nap() {
    let server = ServerProcess::start(&[]);
    // Clients that were busy together a while ago do not count. The burst itself may nap (its requests reach
    // the server one by one on a loaded machine): only the naps from here on count.
    let _burst = burst_of_eight(&server).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut client = server.connect().await;
    let before = naps(&server).await;
    for n in 0..2000 {
        let word = format!("w{n}");
        assert_eq!(client.request(&[b"PING", word.as_bytes()]).await, bulk(&word));
    }
    assert_eq!(naps(&server).await, before, "naps while one client sent 2,000 requests");
}
