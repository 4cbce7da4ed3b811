//! The event-fed port table against the real engine: warm lookups cost no Docker call, and a restarted
//! container is never told its old ports.

mod common;

use std::time::Duration;

use common::{docker_announce, run_ok, TestContainer, TestServer};
use rediscover::Config;

fn config() -> Config {
    Config { announce_ip: "127.0.0.1".parse().expect("an address"), ..Config::default() }
}

fn info_value(info: &str, field: &str) -> u64 {
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))?.trim().parse().ok()).unwrap_or(u64::MAX)
}

async fn wait_fresh(server: &TestServer) -> String {
    for _ in 0..250 {
        let info = server.connect().await.request(&[b"INFO", b"docker"]).await;
        if info_value(&info, "table_fresh") == 1 {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the port table never synced with Docker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_discover_makes_no_docker_call() {
    let c = tokio::task::spawn_blocking(|| TestContainer::with_cluster_ports(&[])).await.expect("join");
    let expected = c.expected_announce("127.0.0.1");
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    let mut client = server.connect().await;
    // The container started before the server: the first sync lists it.
    let before = info_value(&client.request(&[b"INFO", b"docker"]).await, "docker_calls");
    for _ in 0..100 {
        let reply = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
        assert_eq!(reply, format!("${}\r\n{expected}\r\n", expected.len()));
    }
    let info = client.request(&[b"INFO", b"docker"]).await;
    assert_eq!(info_value(&info, "docker_calls"), before, "{info}");
    assert!(info_value(&info, "table_hits") >= 100, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_twenty_times_always_gets_its_current_ports() {
    let server = TestServer::with_docker(config()).await;
    wait_fresh(&server).await;
    let c = tokio::task::spawn_blocking(|| TestContainer::with_cluster_ports(&[])).await.expect("join");
    let mut client = server.connect().await;
    let mut seen = std::collections::HashSet::new();
    for round in 0..20 {
        let id = c.id.clone();
        let expected = tokio::task::spawn_blocking(move || {
            run_ok("docker", &["stop", "-t", "0", &id]);
            run_ok("docker", &["start", &id]);
            docker_announce(&id, "127.0.0.1")
        })
        .await
        .expect("join");
        // Asked right after start, as an entrypoint does.
        let reply = client.request(&[b"DISCOVER", &c.id.as_bytes()[..12]]).await;
        assert_eq!(reply, format!("${}\r\n{expected}\r\n", expected.len()), "round {round}");
        seen.insert(expected);
    }
    println!("20 restarts, {} distinct port pairs", seen.len());
    assert!(seen.len() > 1, "ephemeral ports changed across restarts");
}
