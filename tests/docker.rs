//! DISCOVER and MEMBERS against the real Docker engine: every way to name a container, every error code,
//! the required label, waiting for members, and a Docker that appears only after the server started.

mod common;

use std::time::Duration;

use common::{
    array, bulk, info_number, info_value, labelled_config, own_docker_calls, run_ok, test_label, unique, TestContainer,
    TestServer,
};
use tokio::time::Instant;

const IP: &str = "127.0.0.1";

/// Runs Docker CLI work off the runtime threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the blocking task does not panic")
}

/// The announce string of a container, from `docker port`.
fn docker_announce_of(id: &str) -> String {
    common::docker_announce(id, IP)
}

async fn discover(server: &TestServer, args: &[&str]) -> String {
    let mut request: Vec<&[u8]> = vec![b"DISCOVER"];
    request.extend(args.iter().map(|a| a.as_bytes()));
    server.connect().await.request(&request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_by_full_id_short_id_prefix_and_name_matches_docker_port() {
    let label = test_label("names");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    // Started after the table synced, and asked at once, as an entrypoint does.
    let (c, expected, hostname) = blocking(move || {
        let c = TestContainer::with_cluster_ports(&["--label", &label]);
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
    let label = test_label("extra-ports");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    let (c, data, bus, extra_data, extra_bus) = blocking(move || {
        let c = TestContainer::with_cluster_ports(&["--label", &label, "-p", "7000", "-p", "17000"]);
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
    let label = test_label("noport");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    let (none, data_only) = blocking(move || {
        (TestContainer::start(&["--label", &label]), TestContainer::start(&["--label", &label, "-p", "6379"]))
    })
    .await;
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
    let label = test_label("stopped");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    let c = blocking(move || TestContainer::with_cluster_ports(&["--label", &label])).await;
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
    let server = TestServer::with_docker(labelled_config(&test_label("missing"))).await;
    let name = format!("rediscover-test-missing-{}", unique());
    assert_eq!(discover(&server, &[&name]).await, format!("-NOCONTAINER no such container: '{name}'\r\n"));
    // Outside Docker's name alphabet: answered without asking Docker.
    assert_eq!(discover(&server, &["../x"]).await, "-NOCONTAINER no such container: '../x'\r\n");
    let mut client = server.connect().await;
    assert_eq!(client.request(&[b"PING"]).await, "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_label_answers_an_unlabelled_container_exactly_like_a_missing_one() {
    let label = test_label("visible");
    let config = labelled_config(&label);
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
        .request(&[b"MEMBERS", b"LABEL", common::TEST_LABEL.as_bytes(), b"MIN", b"1", b"TIMEOUT", b"5000"])
        .await;
    assert_eq!(members, array(&[expected]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_lists_the_sorted_announces_of_running_labelled_containers() {
    // The server requires the key; MEMBERS asks for a value of it.
    let key = test_label("members").replace('=', "-");
    let label = format!("{key}=a");
    let server = TestServer::with_docker(labelled_config(&key)).await;
    server.wait_fresh().await;
    let (containers, expected, all) = blocking({
        let (key, label) = (key.clone(), label.clone());
        move || {
            let with_label = ["--label", label.as_str()];
            // The members start last: once they are visible, every event before theirs was applied.
            let stopped = TestContainer::with_cluster_ports(&with_label);
            run_ok("docker", &["stop", "-t", "0", &stopped.id]);
            let portless = TestContainer::start(&with_label);
            let unlabelled = TestContainer::with_cluster_ports(&[]);
            let other = TestContainer::with_cluster_ports(&["--label", &format!("{key}=b")]);
            let a = TestContainer::with_cluster_ports(&with_label);
            let b = TestContainer::with_cluster_ports(&with_label);
            let c = TestContainer::with_cluster_ports(&with_label);
            let mut expected: Vec<String> = [&a, &b, &c].iter().map(|c| c.expected_announce(IP)).collect();
            expected.sort();
            let mut all = expected.clone();
            all.push(other.expected_announce(IP));
            all.sort();
            (vec![stopped, portless, unlabelled, other, a, b, c], expected, all)
        }
    })
    .await;
    let mut client = server.connect().await;
    let waited = client.request(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"MIN", b"3", b"TIMEOUT", b"5000"]).await;
    assert_eq!(waited, array(&expected));
    assert_eq!(client.request(&[b"MEMBERS", b"LABEL", label.as_bytes()]).await, array(&expected));
    let waited = client.request(&[b"MEMBERS", b"MIN", b"4", b"TIMEOUT", b"5000"]).await;
    assert_eq!(waited, array(&all), "every running container the server sees");
    assert_eq!(client.request(&[b"MEMBERS", b"LABEL", key.as_bytes()]).await, array(&all));
    assert_eq!(
        client.request(&[b"MEMBERS", b"LABEL", format!("{key}=c").as_bytes()]).await,
        array(&[]),
        "a label value must match"
    );
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_withnames_follows_each_announce_with_the_name_discover_accepts() {
    let label = test_label("withnames");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    let (mut containers, expected) = blocking({
        let label = label.clone();
        move || {
            let containers: Vec<TestContainer> =
                (0..3).map(|_| TestContainer::with_cluster_ports(&["--label", &label])).collect();
            let mut pairs: Vec<(String, String)> =
                containers.iter().map(|c| (c.expected_announce(IP), c.name.clone())).collect();
            pairs.sort();
            (containers, pairs)
        }
    })
    .await;
    let announces: Vec<String> = expected.iter().map(|(a, _)| a.clone()).collect();
    let flat: Vec<String> = expected.iter().flat_map(|(a, n)| [a.clone(), n.clone()]).collect();
    let mut client = server.connect().await;
    let waited = client
        .request(&[b"MEMBERS", b"WITHNAMES", b"LABEL", label.as_bytes(), b"MIN", b"3", b"TIMEOUT", b"5000"])
        .await;
    assert_eq!(waited, array(&flat), "announce and name, in the order MEMBERS lists the announces");
    assert_eq!(client.request(&[b"MEMBERS", b"LABEL", label.as_bytes()]).await, array(&announces));
    assert_eq!(client.request(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"withnames"]).await, array(&flat));
    for (announce, name) in &expected {
        assert_eq!(discover(&server, &[name]).await, bulk(announce), "DISCOVER of the name MEMBERS gave");
    }
    // A container that goes leaves the list with its name.
    let first = containers.remove(0);
    let gone = first.name.clone();
    blocking(move || drop(first)).await;
    let rest: Vec<String> =
        expected.iter().filter(|(_, n)| *n != gone).flat_map(|(a, n)| [a.clone(), n.clone()]).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = client.request(&[b"MEMBERS", b"LABEL", label.as_bytes(), b"WITHNAMES"]).await;
        if listed == array(&rest) {
            break;
        }
        assert!(Instant::now() < deadline, "MEMBERS still lists {gone}: {listed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(discover(&server, &[&gone]).await.starts_with("-NOCONTAINER "), "{gone} is gone");
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_min_wakes_up_when_a_container_starts() {
    let label = test_label("wait");
    let first = blocking({
        let label = label.clone();
        move || TestContainer::with_cluster_ports(&["--label", &label])
    })
    .await;
    let server = TestServer::with_docker(labelled_config(&label)).await;
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
    let label = test_label("timeout");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
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
    let label = test_label("late-docker");
    let config = labelled_config(&label);
    let (c, expected) = blocking(move || {
        let c = TestContainer::with_cluster_ports(&["--label", &label]);
        let expected = c.expected_announce(IP);
        (c, expected)
    })
    .await;
    let dir = TempDir(std::env::temp_dir().join(format!("rediscover-late-docker-{}", unique())));
    std::fs::create_dir_all(&dir.0).expect("create a temp dir");
    let socket = dir.0.join("docker.sock");
    let server = TestServer::with_docker_host(config, &socket.to_string_lossy()).await;
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
    server.wait_fresh().await;
    let info = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_value(&info, "docker_connected").as_deref(), Some("1"), "{info}");
    assert_eq!(info_value(&info, "docker_last_error").as_deref(), Some(""), "{info}");
    assert_eq!(client.request(&[b"DISCOVER", c.name.as_bytes()]).await, bulk(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_docker_counts_hits_misses_and_docker_calls() {
    let label = test_label("counters");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    let mut client = server.connect().await;
    let before = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_value(&before, "docker_host").as_deref(), Some(common::DOCKER_SOCKET), "{before}");
    assert_eq!(info_value(&before, "docker_connected").as_deref(), Some("1"), "{before}");
    assert!(info_value(&before, "docker_api_version").is_some_and(|v| !v.is_empty()), "{before}");
    assert_eq!(info_number(&before, "table_size"), 0, "only this test's containers are seen: {before}");
    assert_eq!(info_number(&before, "table_resyncs"), 1, "{before}");
    assert_eq!(own_docker_calls(&before), 2, "whether it is a swarm manager, and the first list: {before}");

    // Its start is the one event the server sees; the container is read once, then answered from the table.
    let c = blocking(move || TestContainer::with_cluster_ports(&["--label", &label])).await;
    let settled = server.wait_settled(1).await;
    assert_eq!(info_number(&settled, "table_size"), 1, "{settled}");
    assert_eq!(own_docker_calls(&settled), 3, "the first sync and one read: {settled}");
    let (hits, misses) = (info_number(&settled, "table_hits"), info_number(&settled, "table_misses"));
    for _ in 0..10 {
        assert!(client.request(&[b"DISCOVER", c.name.as_bytes()]).await.starts_with('$'));
    }
    let warm = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_number(&warm, "table_hits"), hits + 10, "{warm}");
    assert_eq!(info_number(&warm, "table_misses"), misses, "{warm}");
    assert_eq!(own_docker_calls(&warm), 3, "warm lookups ask nothing of Docker: {warm}");

    // A name the table does not know may belong to a container that just started: Docker is asked, once.
    let missing = format!("rediscover-test-missing-{}", unique());
    let reply = client.request(&[b"DISCOVER", missing.as_bytes()]).await;
    assert_eq!(reply, format!("-NOCONTAINER no such container: '{missing}'\r\n"));
    let after_miss = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_number(&after_miss, "table_misses"), misses + 1, "{after_miss}");
    assert_eq!(info_number(&after_miss, "table_hits"), hits + 10, "{after_miss}");
    assert_eq!(own_docker_calls(&after_miss), 4, "{after_miss}");
    assert_eq!(info_number(&after_miss, "docker_events"), 1, "{after_miss}");
}

/// Creates `n` containers with these flags at once, never started.
fn create_many(n: usize, extra: &[&str]) -> Vec<TestContainer> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(|| TestContainer::create(extra))).collect();
        handles.into_iter().map(|h| h.join().expect("docker create does not panic")).collect()
    })
}

/// What DISCOVER of an id prefix must answer when exactly `visible` ids can be seen.
fn expected_for_prefix(prefix: &str, visible: &[String]) -> String {
    match visible.iter().filter(|id| id.starts_with(prefix)).count() {
        0 => format!("-NOCONTAINER no such container: '{prefix}'\r\n"),
        // Created, never started.
        1 => format!("-NOTRUNNING container '{prefix}' is not running\r\n"),
        _ => format!("-AMBIGUOUS more than one container matches '{prefix}'; use a longer id or the name\r\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_prefix_answers_over_visible_containers_only_from_the_table_and_from_docker() {
    let label = test_label("prefix");
    // Seventeen ids over sixteen hex digits: at least two share their first digit.
    let (visible, hidden) = blocking({
        let label = label.clone();
        move || (create_many(17, &["--label", &label]), create_many(8, &[]))
    })
    .await;
    let visible_ids: Vec<String> = visible.iter().map(|c| c.id.clone()).collect();
    let prefixes: Vec<String> = "0123456789abcdef".chars().map(String::from).collect();
    assert!(
        prefixes.iter().any(|p| expected_for_prefix(p, &visible_ids).starts_with("-AMBIGUOUS")),
        "a shared prefix among {visible_ids:?}"
    );
    let warm = TestServer::with_docker(labelled_config(&label)).await;
    warm.wait_fresh().await;
    let cold = TestServer::cold(labelled_config(&label)).await;
    for (server, kind) in [(&warm, "from the table"), (&cold, "from Docker")] {
        let mut client = server.connect().await;
        for prefix in &prefixes {
            let reply = client.request(&[b"DISCOVER", prefix.as_bytes()]).await;
            assert_eq!(reply, expected_for_prefix(prefix, &visible_ids), "DISCOVER {prefix} {kind}");
        }
    }
    let info = warm.connect().await.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_number(&info, "table_size"), 17, "hidden containers are not in the table: {info}");
    drop((visible, hidden));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_name_is_found_on_cold_lookups() {
    let label = test_label("slash");
    let (running, stopped, expected) = blocking({
        let label = label.clone();
        move || {
            let running = TestContainer::with_cluster_ports(&["--label", &label]);
            let stopped = TestContainer::with_cluster_ports(&["--label", &label]);
            run_ok("docker", &["stop", "-t", "0", &stopped.id]);
            let expected = running.expected_announce(IP);
            (running, stopped, expected)
        }
    })
    .await;
    let cold = TestServer::cold(labelled_config(&label)).await;
    assert_eq!(discover(&cold, &[&format!("/{}", running.name)]).await, bulk(&expected));
    let slash_stopped = format!("/{}", stopped.name);
    assert_eq!(
        discover(&cold, &[&slash_stopped]).await,
        format!("-NOTRUNNING container '{slash_stopped}' is not running\r\n")
    );
    // Just started, asked at once by its `/name`, as the table may not know it yet.
    let warm = TestServer::with_docker(labelled_config(&label)).await;
    warm.wait_fresh().await;
    let (late, expected) = blocking(move || {
        let late = TestContainer::with_cluster_ports(&["--label", &label]);
        let expected = late.expected_announce(IP);
        (late, expected)
    })
    .await;
    assert_eq!(discover(&warm, &[&format!("/{}", late.name)]).await, bulk(&expected));
}

/// The INFO docker counters a lookup may move.
const LOOKUP_COUNTERS: [&str; 5] = ["table_size", "table_hits", "table_misses", "docker_events", "docker_calls"];

async fn counters(client: &mut common::RawClient) -> Vec<u64> {
    let info = client.request(&[b"INFO", b"docker"]).await;
    let mut counters: Vec<u64> = LOOKUP_COUNTERS[..4].iter().map(|field| info_number(&info, field)).collect();
    counters.push(own_docker_calls(&info));
    counters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_container_moves_the_same_counters_as_a_missing_one() {
    let label = test_label("hidden");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    let (visible, hidden) = blocking({
        let label = label.clone();
        move || (TestContainer::with_cluster_ports(&["--label", &label]), TestContainer::with_cluster_ports(&[]))
    })
    .await;
    server.wait_settled(1).await;
    let mut client = server.connect().await;
    let missing_id = format!("{:x}", unique()).repeat(8)[..64].to_string();
    let missing_name = format!("rediscover-test-missing-{}", unique());
    for (hidden_query, missing_query) in [
        (hidden.name.as_str(), missing_name.as_str()),
        (&hidden.id, &missing_id),
        (&hidden.id[..12], &missing_id[..12]),
    ] {
        let before = counters(&mut client).await;
        let started = Instant::now();
        let hidden_reply = discover(&server, &[hidden_query]).await;
        let hidden_took = started.elapsed();
        let after_hidden = counters(&mut client).await;
        let started = Instant::now();
        let missing_reply = discover(&server, &[missing_query]).await;
        let missing_took = started.elapsed();
        let after_missing = counters(&mut client).await;
        assert_eq!(hidden_reply.replace(hidden_query, "<query>"), missing_reply.replace(missing_query, "<query>"));
        let moved = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| y - x).collect::<Vec<_>>();
        assert_eq!(
            moved(&before, &after_hidden),
            moved(&after_hidden, &after_missing),
            "{LOOKUP_COUNTERS:?} moved alike for {hidden_query} and {missing_query}"
        );
        println!("hidden {hidden_query}: {hidden_took:?}, missing {missing_query}: {missing_took:?}");
    }
    // Its events never reach the server: stopping and starting it moves nothing, while the visible
    // container's restart (two events, die and start) is seen.
    let before = counters(&mut client).await;
    let restarted = blocking({
        let (hidden, visible) = (hidden.id.clone(), visible.id.clone());
        move || {
            run_ok("docker", &["restart", "-t", "0", &hidden]);
            run_ok("docker", &["restart", "-t", "0", &visible]);
            docker_announce_of(&visible)
        }
    })
    .await;
    // MEMBERS answers from the table: once it shows the new ports, every earlier event was applied.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.request(&[b"MEMBERS"]).await != array(std::slice::from_ref(&restarted)) {
        assert!(Instant::now() < deadline, "MEMBERS never showed the restarted container");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = counters(&mut client).await;
    assert_eq!(after[3], before[3] + 2, "only the visible container's die and start are seen");
    assert_eq!(after[0], 1, "table_size");
}
