//! DISCOVER and MEMBERS on a swarm manager: task containers on every node are answered with their node's address
//! and the host-mode ports their task published; a single-node swarm on this machine's own engine too. Each test
//! holds the host's swarm alone and leaves it as it found it.

mod common;
mod engines;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    array, bulk, ensure_test_image, info_number, info_value, labelled_config, run, run_ok, test_label, unique,
    ServerProcess, TestServer, TEST_IMAGE,
};
use engines::{Engines, Host, Service, SingleNodeSwarm, Task};

/// How long a service's tasks may take to run.
const TASKS_READY: Duration = Duration::from_secs(60);
/// How long a change may take to reach the table: generous, and far below the periodic read the test sets.
const CHANGE_SEEN: Duration = Duration::from_secs(60);
/// The periodic read of a server that must learn of changes from the swarm's events.
const SLOW_READ_EVERY: &str = "600";
/// Both cluster ports published on the node that runs the task.
const CLUSTER_PORTS: [&str; 4] = ["--publish", "mode=host,target=6379", "--publish", "mode=host,target=16379"];

/// The IPv4 host port a container publishes `port` on, asked of the engine that runs it (`-H`, or the host's).
fn ipv4_port(host_arg: Option<&str>, container: &str, port: u16) -> u16 {
    let port = format!("{port}/tcp");
    let mut args = host_arg.map_or_else(Vec::new, |h| vec!["-H", h]);
    args.extend_from_slice(&["port", container, &port]);
    let out = run_ok("docker", &args);
    out.lines()
        .find_map(|l| l.strip_prefix("0.0.0.0:")?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 port for {port} of {container} in {out:?}"))
}

/// What DISCOVER must answer for a task: its node's address, and the ports its engine published.
fn expected_announce(engines: &Engines, nodes: &HashMap<String, String>, task: &Task) -> String {
    let engine = engines.by_node(&task.node_id).map(|e| e.host_arg());
    let ip = &nodes[&task.node_id];
    let (data, bus) = (
        ipv4_port(engine.as_deref(), &task.container_id, 6379),
        ipv4_port(engine.as_deref(), &task.container_id, 16379),
    );
    format!("{ip}:{data}@{bus}")
}

/// A runtime for the in-process server; the Docker work of these tests stays on the test's own thread, which
/// holds the host's swarm.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

#[test]
fn tasks_on_every_node_are_announced_at_their_nodes_address() {
    let label = test_label("swarm");
    ensure_test_image();
    let host = Host::claim();
    let mut engines = Engines::start(&host, 2);
    engines.load(TEST_IMAGE);
    engines.join_swarm();
    let spread = ["--replicas", "3", "--placement-pref", "spread=node.id", "--replicas-max-per-node", "1"];
    let flags = [&spread[..], &["--container-label", &label], &CLUSTER_PORTS].concat();
    let redis = Service::create(&engines, "redis", &flags, TEST_IMAGE, &["sleep", "3600"]);
    let other = [&["--replicas", "1"][..], &CLUSTER_PORTS].concat();
    let hidden = Service::create(&engines, "other", &other, TEST_IMAGE, &["sleep", "3600"]);
    let tasks = redis.wait_running(3, TASKS_READY);
    let hidden_task = hidden.wait_running(1, TASKS_READY).remove(0);
    let nodes: HashMap<String, String> = host.nodes().into_iter().map(|n| (n.id, n.addr)).collect();
    let expected: Vec<(Task, String)> = tasks
        .into_iter()
        .map(|t| {
            let announce = expected_announce(&engines, &nodes, &t);
            (t, announce)
        })
        .collect();
    let distinct_ips: std::collections::HashSet<&str> =
        expected.iter().map(|(_, e)| e.split(':').next().unwrap_or_default()).collect();
    assert_eq!(distinct_ips.len(), 3, "one task on each node: {expected:?}");

    runtime().block_on(async {
        let server = TestServer::with_docker(labelled_config(&label)).await;
        server.wait_info("the server reads the swarm's tasks", |i| info_number(i, "swarm_tasks") == 3).await;
        let mut client = server.connect().await;
        let mut members: Vec<String> = expected.iter().map(|(_, e)| e.clone()).collect();
        members.sort();
        assert_eq!(client.request(&[b"MEMBERS", b"MIN", b"3", b"TIMEOUT", b"30000"]).await, array(&members));
        for (task, announce) in &expected {
            // By hostname: a task container's default hostname is its short id.
            let reply = client.request(&[b"DISCOVER", &task.container_id.as_bytes()[..12]]).await;
            assert_eq!(reply, bulk(announce), "task {task:?}");
        }
        let short = &hidden_task.container_id[..12];
        let reply = client.request(&[b"DISCOVER", short.as_bytes()]).await;
        assert_eq!(reply, format!("-NOCONTAINER no such container: '{short}'\r\n"), "a task without the label");
    });
    println!("swarm: {} tasks announced at {distinct_ips:?}", expected.len());
}

/// A service of the test image on this engine's single-node swarm, its containers labelled `label` and both
/// cluster ports published in host mode; does not wait.
fn local_service(tag: &str, replicas: usize, label: &str) -> Service {
    let name = format!("rdtest-{tag}-{}", unique() % 1_000_000_000);
    let image = run_ok("docker", &["image", "inspect", "-f", "{{.Id}}", TEST_IMAGE]);
    let replicas = replicas.to_string();
    let mut args =
        vec!["service", "create", "-d", "-q", "--no-resolve-image", "--name", &name, "--replicas", &replicas];
    args.extend_from_slice(&["--container-label", label]);
    args.extend_from_slice(&CLUSTER_PORTS);
    args.extend_from_slice(&[&image, "sleep", "3600"]);
    run_ok("docker", &args);
    Service { name }
}

/// What DISCOVER must answer for a task container of this engine announced at `ip`.
fn local_announce(ip: &str, container: &str) -> String {
    format!("{ip}:{}@{}", ipv4_port(None, container, 6379), ipv4_port(None, container, 16379))
}

#[test]
fn a_single_node_swarm_on_this_engine_answers_by_id_name_and_slot() {
    let label = test_label("single");
    ensure_test_image();
    let host = Host::claim();
    let swarm = SingleNodeSwarm::init(&host);
    let node_ip = run_ok("docker", &["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
    let service = local_service("single", 2, &label);
    let mut expected = Vec::new();
    for task in service.wait_running(2, TASKS_READY) {
        let id = task.container_id;
        let announce = local_announce(&node_ip, &id);
        let name = run_ok("docker", &["inspect", "-f", "{{.Name}}", &id]).trim_start_matches('/').to_string();
        let slot_name = name.rsplit_once('.').map(|(s, _)| s.to_string()).unwrap_or_default();
        expected.push((id, name, slot_name, announce));
    }
    runtime().block_on(async {
        let server = TestServer::with_docker(labelled_config(&label)).await;
        server.wait_info("the server reads the swarm's tasks", |i| info_number(i, "swarm_tasks") == 2).await;
        let mut client = server.connect().await;
        for (id, name, slot_name, announce) in &expected {
            // By hostname (the short id), by the container's name (service.slot.task-id) and by service.slot.
            for query in [&id[..12], name.as_str(), slot_name.as_str()] {
                let reply = client.request(&[b"DISCOVER", query.as_bytes()]).await;
                assert_eq!(reply, bulk(announce), "DISCOVER {query}");
            }
        }
        let mut members: Vec<String> = expected.iter().map(|e| e.3.clone()).collect();
        members.sort();
        assert_eq!(client.request(&[b"MEMBERS"]).await, array(&members));

        // The swarm replaces every task: the old containers stay behind, stopped, but never run again, so they are
        // gone to DISCOVER, from the table and from Docker alike.
        run_ok("docker", &["service", "update", "--force", "--detach=true", &service.name]);
        let replaced = engines::wait_for("both tasks replaced", TASKS_READY, || {
            let tasks = service.running();
            if tasks.len() == 2 && tasks.iter().all(|t| expected.iter().all(|e| e.0 != t.container_id)) {
                Ok(tasks)
            } else {
                Err(format!("{tasks:?}"))
            }
        });
        for (id, name, _, _) in &expected {
            let state = run_ok("docker", &["inspect", "-f", "{{.State.Running}}", id]);
            assert_eq!(state, "false", "the old container {name} is left behind, stopped");
        }
        for task in &replaced {
            let announce = bulk(&local_announce(&node_ip, &task.container_id));
            let mut reply = String::new();
            for _ in 0..120 {
                reply = client.request(&[b"DISCOVER", &task.container_id.as_bytes()[..12]]).await;
                if reply == announce {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert_eq!(reply, announce, "DISCOVER of the new task {}", task.container_id);
        }
        for (_, name, _, _) in &expected {
            let reply = client.request(&[b"DISCOVER", name.as_bytes()]).await;
            assert!(reply.starts_with("-NOCONTAINER"), "DISCOVER {name} of a task the swarm replaced: {reply:?}");
        }
    });
    drop((service, swarm));
}

/// A label on this engine's swarm node, put back as it was when dropped.
struct NodeLabel {
    node: String,
    key: String,
    before: Option<String>,
}

impl NodeLabel {
    fn set(key: &str, value: &str) -> NodeLabel {
        let node = run_ok("docker", &["info", "-f", "{{.Swarm.NodeID}}"]);
        let labels = run_ok(
            "docker",
            &["node", "inspect", &node, "-f", "{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}}\n{{end}}"],
        );
        let before = labels.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_string);
        run_ok("docker", &["node", "update", "--label-add", &format!("{key}={value}"), &node]);
        NodeLabel { node, key: key.to_string(), before }
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        let (flag, arg) = match &self.before {
            Some(value) => ("--label-add", format!("{}={value}", self.key)),
            None => ("--label-rm", self.key.clone()),
        };
        let _ = run("docker", &["node", "update", flag, &arg, &self.node]);
    }
}

/// Asks `server` `args` until the reply is `expected`; fails after `within` with the last reply, INFO docker and
/// the server's log.
async fn wait_reply(server: &ServerProcess, args: &[&[u8]], expected: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut client = server.connect().await;
    loop {
        let reply = client.request(args).await;
        if reply == expected {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let info = client.request(&[b"INFO", b"docker"]).await;
            panic!("{args:?} answered {reply:?}, not {expected:?}, for {within:?}\n{info}\nlog: {:#?}", server.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks `server` INFO docker until `ready` holds; fails after `within` saying `what`, with the reply and the
/// server's log.
async fn wait_info(server: &ServerProcess, what: &str, within: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut client = server.connect().await;
    loop {
        let info = client.request(&[b"INFO", b"docker"]).await;
        if ready(&info) {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within {within:?}: {info}\nlog: {:#?}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn node_and_service_events_reach_the_table_between_periodic_reads() {
    let label = test_label("events");
    ensure_test_image();
    let host = Host::claim();
    let swarm = SingleNodeSwarm::init(&host);
    let node_ip = run_ok("docker", &["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
    let first = local_service("events-a", 1, &label);
    let task = first.wait_running(1, TASKS_READY).remove(0).container_id;
    let short = &task.as_bytes()[..12];
    // The periodic read is ten minutes apart: what the table learns within the test, it learns from events.
    let server = ServerProcess::start(&["--require-label", &label, "--swarm-read-every", SLOW_READ_EVERY]);
    runtime().block_on(async {
        let synced = wait_info(&server, "the server reads the swarm's tasks", CHANGE_SEEN, |i| {
            info_number(i, "table_fresh") == 1 && info_number(i, "swarm_tasks") == 1
        })
        .await;
        assert_eq!(info_number(&synced, "swarm_manager"), 1);
        wait_reply(&server, &[b"DISCOVER", short], &bulk(&local_announce(&node_ip, &task)), CHANGE_SEEN).await;
        let before = server.connect().await.request(&[b"INFO", b"docker"]).await;

        // A node label changes the address of the node's tasks: a node event, and no task changes.
        let node_label = NodeLabel::set(rediscover::docker::swarm::ANNOUNCE_IP_LABEL, "198.18.0.77");
        wait_reply(&server, &[b"DISCOVER", short], &bulk(&local_announce("198.18.0.77", &task)), CHANGE_SEEN).await;
        let after = server.connect().await.request(&[b"INFO", b"docker"]).await;
        assert!(
            info_number(&after, "swarm_events") > info_number(&before, "swarm_events"),
            "the node event was counted: {before}\n{after}"
        );
        assert_eq!(info_value(&after, "swarm_last_read_cause").as_deref(), Some("event"), "{after}");
        assert_eq!(info_number(&after, "table_resyncs"), info_number(&before, "table_resyncs"), "{after}");
        drop(node_label);
        wait_reply(&server, &[b"DISCOVER", short], &bulk(&local_announce(&node_ip, &task)), CHANGE_SEEN).await;

        // A service made now is found: by the reads that follow its event, or by the lookup's own read.
        let before = server.connect().await.request(&[b"INFO", b"docker"]).await;
        let second = local_service("events-b", 2, &label);
        let tasks = second.wait_running(2, TASKS_READY);
        let mut client = server.connect().await;
        for t in &tasks {
            let reply = client.request(&[b"DISCOVER", &t.container_id.as_bytes()[..12]]).await;
            assert_eq!(reply, bulk(&local_announce(&node_ip, &t.container_id)), "task {t:?}");
        }
        let after = wait_info(&server, "the service event is counted", CHANGE_SEEN, |i| {
            info_number(i, "swarm_events") > info_number(&before, "swarm_events")
        })
        .await;
        let (hits, misses) = (info_number(&after, "table_hits"), info_number(&after, "table_misses"));
        println!(
            "events: {} swarm events, {} swarm reads (last by {:?}), {hits} hits, {misses} misses",
            info_number(&after, "swarm_events"),
            info_number(&after, "swarm_reads"),
            info_value(&after, "swarm_last_read_cause").unwrap_or_default(),
        );
        drop(second);
    });
    drop((server, first, swarm));
}
