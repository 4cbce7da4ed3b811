//! DISCOVER and MEMBERS against the real Docker engine: every way to name a container, every error code,
//! the required label, waiting for members, and a Docker that appears only after the server started.

mod common;

use std::time::Duration;

use common::{run_ok, unique, TestContainer, TestServer, TEST_LABEL};
use rediscover::Config;
use tokio::time::Instant;

const IP: &str = "127.0.0.1";

fn config() -> Config {
    Config { announce_ip: IP.parse().expect("an address"), ..Config::default() }
}

/// A RESP bulk string.
fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

/// A RESP array of bulk strings.
fn array(items: &[String]) -> String {
    let mut out = format!("*{}\r\n", items.len());
    for item in items {
        out.push_str(&bulk(item));
    }
    out
}

/// Runs Docker CLI work off the runtime threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the blocking task does not panic")
}

/// A label `key=value` no other test uses.
fn unique_label(what: &str) -> String {
    format!("{TEST_LABEL}.{what}={}", unique())
}

/// The announce string of a container, from `docker port`.
fn docker_announce_of(id: &str) -> String {
    common::docker_announce(id, IP)
}

fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
}

fn info_number(info: &str, field: &str) -> u64 {
    info_value(info, field).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no number {field} in {info}"))
}

/// Waits until the server's port table follows Docker's events.
async fn wait_fresh(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = server.connect().await;
    loop {
        let info = client.request(&[b"INFO", b"docker"]).await;
        if info_value(&info, "table_fresh").as_deref() == Some("1") {
            return;
        }
        assert!(Instant::now() < deadline, "the port table never synced with Docker: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn discover(server: &TestServer, args: &[&str]) -> String {
    let mut request: Vec<&[u8]> = vec![b"DISCOVER"];
    request.extend(args.iter().map(|a| a.as_bytes()));
    server.connect().await.request(&request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_by_full_id_short_id_prefix_and_name_matches_docker_port() {
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    // Started after the table synced, and asked at once, as an entrypoint does.
    let (c, expected, hostname) = blocking(|| {
        let c = TestContainer::with_cluster_ports(&[]);
        let expected = c.expected_announce(IP);
        let hostname = run_ok("docker", &["exec", &c.id, "/bin/busybox", "hostname"]);
        (c, expected, hostname)
    })
    .await;
    assert_eq!(hostname, c.id[..12], "a container's hostname is its short id");
    let slash_name = format!("/{}", c.name);
    for query in [hostname.as_str(), c.id.as_str(), &c.id[..20], &c.id[..7], c.name.as_str(), slash_name.as_str()] {
        assert_eq!(discover(&server, &[query]).await, bulk(&expected), "DISCOVER {query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_with_port_and_busport_answers_the_other_published_ports() {
    let server = TestServer::with_docker(config()).await;
    let (c, data, bus, extra_data, extra_bus) = blocking(|| {
        let c = TestContainer::with_cluster_ports(&["-p", "7000", "-p", "17000"]);
        let ports = (c.host_port(6379), c.host_port(16379), c.host_port(7000), c.host_port(17000));
        (c, ports.0, ports.1, ports.2, ports.3)
    })
    .await;
    let name = c.name.as_str();
    assert_eq!(discover(&server, &[name]).await, bulk(&format!("{IP}:{data}@{bus}")));
    assert_eq!(
        discover(&server, &[name, "PORT", "7000", "BUSPORT", "17000"]).await,
        bulk(&format!("{IP}:{extra_data}@{extra_bus}"))
    );
    assert_eq!(discover(&server, &[name, "PORT", "7000"]).await, bulk(&format!("{IP}:{extra_data}@{bus}")));
    assert_eq!(discover(&server, &[name, "busport", "17000"]).await, bulk(&format!("{IP}:{data}@{extra_bus}")));
    assert_eq!(
        discover(&server, &[name, "PORT", "7001"]).await,
        format!("-NOPORT container '{name}' does not publish port 7001/tcp\r\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_the_ports_answers_noport() {
    let server = TestServer::with_docker(config()).await;
    let (none, data_only) = blocking(|| (TestContainer::start(&[]), TestContainer::start(&["-p", "6379"]))).await;
    assert_eq!(
        discover(&server, &[&none.name]).await,
        format!("-NOPORT container '{}' does not publish port 6379/tcp\r\n", none.name)
    );
    assert_eq!(
        discover(&server, &[&data_only.name]).await,
        format!("-NOPORT container '{}' does not publish port 16379/tcp\r\n", data_only.name)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_answers_notrunning() {
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    let c = blocking(|| TestContainer::with_cluster_ports(&[])).await;
    let expected = blocking({
        let id = c.id.clone();
        move || docker_announce_of(&id)
    })
    .await;
    assert_eq!(discover(&server, &[&c.name]).await, bulk(&expected));
    let id = c.id.clone();
    blocking(move || run_ok("docker", &["stop", "-t", "0", &id])).await;
    let notrunning = |q: &str| format!("-NOTRUNNING container '{q}' is not running\r\n");
    assert_eq!(discover(&server, &[&c.name]).await, notrunning(&c.name));
    assert_eq!(discover(&server, &[&c.id[..12]]).await, notrunning(&c.id[..12]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_answers_nocontainer() {
    let server = TestServer::with_docker(config()).await;
    let name = format!("rediscover-test-missing-{}", unique());
    assert_eq!(discover(&server, &[&name]).await, format!("-NOCONTAINER no such container: '{name}'\r\n"));
    // Outside Docker's name alphabet: answered without asking Docker.
    assert_eq!(discover(&server, &["../x"]).await, "-NOCONTAINER no such container: '../x'\r\n");
    let mut client = server.connect().await;
    assert_eq!(client.request(&[b"PING"]).await, "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_label_answers_an_unlabelled_container_exactly_like_a_missing_one() {
    let label = unique_label("visible");
    let config = Config { require_label: Some(label.parse().expect("a label filter")), ..config() };
    let (labelled, unlabelled, stopped, portless, expected) = blocking({
        let label = label.clone();
        move || {
            let labelled = TestContainer::with_cluster_ports(&["--label", &label]);
            let unlabelled = TestContainer::with_cluster_ports(&[]);
            let stopped = TestContainer::with_cluster_ports(&[]);
            run_ok("docker", &["stop", "-t", "0", &stopped.id]);
            let portless = TestContainer::start(&[]);
            let expected = labelled.expected_announce(IP);
            (labelled, unlabelled, stopped, portless, expected)
        }
    })
    .await;
    let server = TestServer::with_docker(config).await;
    assert_eq!(discover(&server, &[&labelled.name]).await, bulk(&expected));
    assert_eq!(discover(&server, &[&labelled.id[..12]]).await, bulk(&expected));

    let missing_name = format!("rediscover-test-{}", unique());
    let missing_id = "0".repeat(64);
    let as_missing = |reply: String, query: &str| reply.replace(query, "<query>");
    let missing_by_name = as_missing(discover(&server, &[&missing_name]).await, &missing_name);
    let missing_by_id = as_missing(discover(&server, &[&missing_id]).await, &missing_id);
    let missing_by_short_id = as_missing(discover(&server, &[&missing_id[..12]]).await, &missing_id[..12]);
    assert!(missing_by_name.starts_with("-NOCONTAINER "), "{missing_by_name}");
    for hidden in [&unlabelled, &stopped, &portless] {
        let by_name = discover(&server, &[&hidden.name]).await;
        assert_eq!(as_missing(by_name, &hidden.name), missing_by_name, "{}", hidden.name);
        let by_id = discover(&server, &[&hidden.id]).await;
        assert_eq!(as_missing(by_id, &hidden.id), missing_by_id, "{}", hidden.name);
        let by_short_id = discover(&server, &[&hidden.id[..12]]).await;
        assert_eq!(as_missing(by_short_id, &hidden.id[..12]), missing_by_short_id, "{}", hidden.name);
    }
    // MEMBERS shows only what DISCOVER may show.
    let members = server
        .connect()
        .await
        .request(&[b"MEMBERS", b"LABEL", TEST_LABEL.as_bytes(), b"MIN", b"1", b"TIMEOUT", b"5000"])
        .await;
    assert_eq!(members, array(&[expected]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_lists_the_sorted_announces_of_running_labelled_containers() {
    let label = unique_label("members");
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    let (containers, expected) = blocking({
        let label = label.clone();
        move || {
            let with_label = ["--label", label.as_str()];
            // The three members start last: once they are visible, every event before theirs was applied.
            let stopped = TestContainer::with_cluster_ports(&with_label);
            run_ok("docker", &["stop", "-t", "0", &stopped.id]);
            let portless = TestContainer::start(&with_label);
            let unlabelled = TestContainer::with_cluster_ports(&[]);
            let a = TestContainer::with_cluster_ports(&with_label);
            let b = TestContainer::with_cluster_ports(&with_label);
            let c = TestContainer::with_cluster_ports(&with_label);
            let mut expected: Vec<String> = [&a, &b, &c].iter().map(|c| c.expected_announce(IP)).collect();
            expected.sort();
            (vec![stopped, portless, unlabelled, a, b, c], expected)
        }
    })
    .await;
    let mut client = server.connect().await;
    let waited = client.request(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"MIN", b"3", b"TIMEOUT", b"5000"]).await;
    assert_eq!(waited, array(&expected));
    assert_eq!(client.request(&[b"MEMBERS", b"LABEL", label.as_bytes()]).await, array(&expected));
    let key = label.split('=').next().expect("a key");
    assert_eq!(client.request(&[b"MEMBERS", b"LABEL", key.as_bytes()]).await, array(&expected));
    assert_eq!(
        client.request(&[b"MEMBERS", b"LABEL", format!("{key}=other").as_bytes()]).await,
        array(&[]),
        "a label value must match"
    );
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_min_wakes_up_when_a_container_starts() {
    let label = unique_label("wait");
    let first = blocking({
        let label = label.clone();
        move || TestContainer::with_cluster_ports(&["--label", &label])
    })
    .await;
    let server = TestServer::with_docker(config()).await;
    let mut waiter = server.connect().await;
    waiter.send(&common::resp(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"MIN", b"2", b"TIMEOUT", b"30000"])).await;
    // Start the second container only once the request is waiting.
    let mut observer = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = observer.request(&[b"INFO", b"clients"]).await;
        if info_number(&info, "blocked_clients") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "MEMBERS MIN 2 never blocked: {info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let second = blocking({
        let label = label.clone();
        move || TestContainer::with_cluster_ports(&["--label", &label])
    })
    .await;
    let expected = blocking({
        let (a, b) = (first.id.clone(), second.id.clone());
        move || {
            let mut both = vec![docker_announce_of(&a), docker_announce_of(&b)];
            both.sort();
            both
        }
    })
    .await;
    let reply = waiter.read_reply().await;
    assert_eq!(reply, array(&expected));
    assert!(started.elapsed() < Duration::from_secs(10), "woke up {:?} after the start", started.elapsed());
    let info = observer.request(&[b"INFO", b"clients"]).await;
    assert_eq!(info_number(&info, "blocked_clients"), 0, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_min_times_out_with_the_timeout_error() {
    let label = unique_label("timeout");
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    let (only, expected) = blocking({
        let label = label.clone();
        move || {
            let only = TestContainer::with_cluster_ports(&["--label", &label]);
            let expected = only.expected_announce(IP);
            (only, expected)
        }
    })
    .await;
    let mut client = server.connect().await;
    let visible = client.request(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"MIN", b"1", b"TIMEOUT", b"5000"]).await;
    assert_eq!(visible, array(&[expected]));
    let started = Instant::now();
    let reply = client.request(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"MIN", b"2", b"TIMEOUT", b"300"]).await;
    let waited = started.elapsed();
    assert_eq!(reply, "-TIMEOUT only 1 of 2 members visible after 300 ms\r\n");
    assert!(waited >= Duration::from_millis(300), "answered after {waited:?}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    drop(only);
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_answers_dockerdown_until_the_socket_appears_then_works_without_restart() {
    let (c, expected) = blocking(|| {
        let c = TestContainer::with_cluster_ports(&[]);
        let expected = c.expected_announce(IP);
        (c, expected)
    })
    .await;
    let dir = TempDir(std::env::temp_dir().join(format!("rediscover-late-docker-{}", unique())));
    std::fs::create_dir_all(&dir.0).expect("create a temp dir");
    let socket = dir.0.join("docker.sock");
    let server = TestServer::with_docker_host(config(), &socket.to_string_lossy()).await;
    let mut client = server.connect().await;

    assert_eq!(client.request(&[b"PING"]).await, "+PONG\r\n");
    let reply = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
    assert!(reply.starts_with("-DOCKERDOWN Docker is unreachable: "), "{reply}");
    let reply = client.request(&[b"MEMBERS"]).await;
    assert!(reply.starts_with("-DOCKERDOWN "), "{reply}");
    let info = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_value(&info, "docker_connected").as_deref(), Some("0"), "{info}");
    assert_eq!(info_value(&info, "table_fresh").as_deref(), Some("0"), "{info}");

    std::os::unix::fs::symlink(common::DOCKER_SOCKET, &socket).expect("link the Docker socket");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
        if reply == bulk(&expected) {
            break;
        }
        assert!(reply.starts_with("-DOCKERDOWN "), "while Docker comes up: {reply}");
        assert!(Instant::now() < deadline, "DISCOVER still fails 10 s after the socket appeared: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The event follower reconnects too.
    wait_fresh(&server).await;
    let info = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_value(&info, "docker_connected").as_deref(), Some("1"), "{info}");
    assert_eq!(info_value(&info, "docker_last_error").as_deref(), Some(""), "{info}");
    assert_eq!(client.request(&[b"DISCOVER", c.name.as_bytes()]).await, bulk(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_docker_counts_hits_misses_and_docker_calls() {
    let c = blocking(|| TestContainer::with_cluster_ports(&[])).await;
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    let mut client = server.connect().await;
    let before = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_value(&before, "docker_host").as_deref(), Some(common::DOCKER_SOCKET), "{before}");
    assert_eq!(info_value(&before, "docker_connected").as_deref(), Some("1"), "{before}");
    assert!(info_value(&before, "docker_api_version").is_some_and(|v| !v.is_empty()), "{before}");
    assert!(info_number(&before, "table_size") >= 1, "{before}");
    assert!(info_number(&before, "table_resyncs") >= 1, "{before}");

    // The first sync replays the last second of events, this container's start among them; until that
    // event is applied, lookups of the container go to Docker.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = before;
    loop {
        let reply = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
        assert!(reply.starts_with('$'), "{reply}");
        let info = client.request(&[b"INFO", b"docker"]).await;
        let hit = info_number(&info, "table_hits") > info_number(&before, "table_hits");
        before = info;
        if hit {
            break;
        }
        assert!(Instant::now() < deadline, "DISCOVER never hit the table: {before}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A warm lookup is answered from the table: a hit, and no Docker call beyond what events cause.
    let warm = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
    assert!(warm.starts_with('$'), "{warm}");
    let after_warm = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_number(&after_warm, "table_hits"), info_number(&before, "table_hits") + 1, "{after_warm}");
    assert_eq!(info_number(&after_warm, "table_misses"), info_number(&before, "table_misses"), "{after_warm}");
    let calls = info_number(&after_warm, "docker_calls") - info_number(&before, "docker_calls");
    let events = info_number(&after_warm, "docker_events") - info_number(&before, "docker_events");
    assert!(calls <= events, "a warm DISCOVER asked Docker: {before}\n{after_warm}");

    // A name the table does not know may belong to a container that just started: Docker is asked.
    let missing = format!("rediscover-test-missing-{}", unique());
    let reply = client.request(&[b"DISCOVER", missing.as_bytes()]).await;
    assert!(reply.starts_with("-NOCONTAINER "), "{reply}");
    let after_miss = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_number(&after_miss, "table_misses"), info_number(&after_warm, "table_misses") + 1);
    assert!(info_number(&after_miss, "docker_calls") > info_number(&after_warm, "docker_calls"), "{after_miss}");
}
