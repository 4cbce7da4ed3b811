//! DISCOVER and MEMBERS on a swarm manager: a single-node swarm on this machine's own engine (made for the test
//! when the engine is in none, and left again afterwards), with task containers published in host mode.

mod common;

use std::time::Duration;

use common::{
    docker_host_port, ensure_test_image, info_number, labelled_config, run, run_ok, test_label, unique, TestServer,
    TEST_IMAGE, TEST_LABEL,
};
use tokio::time::Instant;

/// This engine as a swarm manager for the test's length: a swarm it made is left when dropped, one it found is
/// kept.
struct HostSwarm {
    made: bool,
}

impl HostSwarm {
    fn join() -> HostSwarm {
        let state = run_ok("docker", &["info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]);
        match state.as_str() {
            "inactive false" => {
                let ip = rediscover::config::resolve_announce_ip(None, None)
                    .expect("this host has a default route (the swarm advertises its address)")
                    .to_string();
                run_ok("docker", &["swarm", "init", "--advertise-addr", &ip]);
                HostSwarm { made: true }
            }
            "active true" => HostSwarm { made: false },
            other => panic!("this engine's swarm state is '{other}': make it a manager or leave the swarm, and rerun"),
        }
    }
}

impl Drop for HostSwarm {
    fn drop(&mut self) {
        if self.made {
            let _ = run("docker", &["swarm", "leave", "--force"]);
        }
    }
}

/// A replicated service of the test image, removed when dropped.
struct Service {
    name: String,
}

impl Service {
    fn create(replicas: u32, extra: &[&str]) -> Service {
        ensure_test_image();
        let name = format!("rdtest-swarm-{}", unique() % 1_000_000_000);
        let replicas = replicas.to_string();
        let mut args = vec!["service", "create", "-d", "-q", "--name", &name, "--replicas", &replicas];
        args.extend_from_slice(&["--container-label", TEST_LABEL]);
        args.extend_from_slice(extra);
        args.extend_from_slice(&[TEST_IMAGE, "sleep", "3600"]);
        run_ok("docker", &args);
        Service { name }
    }

    /// The ids of its running task containers on this engine.
    fn containers(&self) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.name);
        let out = run_ok("docker", &["ps", "-q", "--no-trunc", "--filter", &filter]);
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = run("docker", &["service", "rm", &self.name]);
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the blocking task does not panic")
}

fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_manager_answers_for_task_containers_with_their_nodes_address() {
    let label = test_label("swarm");
    let (swarm, visible, hidden, node_ip) = blocking({
        let label = label.clone();
        move || {
            let swarm = HostSwarm::join();
            let node_ip = run_ok("docker", &["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
            let ports = ["--publish", "mode=host,target=6379", "--publish", "mode=host,target=16379"];
            let mut flags = vec!["--container-label", label.as_str()];
            flags.extend_from_slice(&ports);
            let visible = Service::create(2, &flags);
            let hidden = Service::create(1, &ports);
            (swarm, visible, hidden, node_ip)
        }
    })
    .await;
    let server = TestServer::with_docker(labelled_config(&label)).await;
    let info = server.wait_info("the server sees the swarm", |i| info_number(i, "swarm_manager") == 1).await;
    assert_eq!(info_number(&info, "swarm_manager"), 1, "{info}");

    // Both tasks run, as the swarm tells: MEMBERS waits for them.
    let mut client = server.connect().await;
    let members = client.request(&[b"MEMBERS", b"MIN", b"2", b"TIMEOUT", b"60000"]).await;
    assert!(members.starts_with("*2\r\n"), "{members}");

    let started = Instant::now();
    let (ids, hidden_ids) = loop {
        let (ids, hidden_ids) = blocking({
            let (v, h) = (visible.containers(), hidden.containers());
            move || (v, h)
        })
        .await;
        if ids.len() == 2 && hidden_ids.len() == 1 {
            break (ids, hidden_ids);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the services' tasks never ran: {ids:?} {hidden_ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut expected_members = Vec::new();
    for id in &ids {
        let (owned, node_ip) = (id.clone(), node_ip.clone());
        let (expected, name, slot_name) = blocking(move || {
            let id = owned;
            let expected = format!("{node_ip}:{}@{}", docker_host_port(&id, 6379), docker_host_port(&id, 16379));
            let name = run_ok("docker", &["inspect", "-f", "{{.Name}}", &id]).trim_start_matches('/').to_string();
            let slot =
                run_ok("docker", &["inspect", "-f", "{{index .Config.Labels \"com.docker.swarm.task.name\"}}", &id]);
            let slot_name = slot.rsplit_once('.').map(|(s, _)| s.to_string()).unwrap_or_default();
            (expected, name, slot_name)
        })
        .await;
        // By hostname (the short id), by the container's name (service.slot.task) and by service.slot.
        for query in [&id[..12], name.as_str(), slot_name.as_str()] {
            let reply = client.request(&[b"DISCOVER", query.as_bytes()]).await;
            assert_eq!(reply, bulk(&expected), "DISCOVER {query}");
        }
        expected_members.push(expected);
    }
    expected_members.sort();
    let mut want = format!("*{}\r\n", expected_members.len());
    for m in &expected_members {
        want.push_str(&bulk(m));
    }
    assert_eq!(client.request(&[b"MEMBERS"]).await, want);
    // A task without the label is answered as a missing container.
    let short = &hidden_ids[0][..12];
    let reply = client.request(&[b"DISCOVER", short.as_bytes()]).await;
    assert_eq!(reply, format!("-NOCONTAINER no such container: '{short}'\r\n"));
    let info = server.info_docker().await;
    assert_eq!(info_number(&info, "swarm_tasks"), 2, "{info}");
    drop(server);
    blocking(move || drop((visible, hidden, swarm))).await;
}
