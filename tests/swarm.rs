//! Several real Docker hosts on this machine: extra engines join the host's swarm, serve a service's tasks at their
//! own addresses, go down and come back, and leave nothing behind, whether a test passes, fails or is killed.

mod common;
mod engines;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{ensure_test_image, run_ok, TEST_IMAGE};
use engines::{leftovers, timed, wait_for, Engines, Host, Service, NODE_STATE};

/// How long a service's tasks may take to run and answer.
const TASKS_READY: Duration = Duration::from_secs(60);

/// Each task answers HTTP on port 80 with the host name of the node it runs on.
const WHO_AM_I: &[&str] =
    &["sh", "-c", "busybox mkdir -p /www && echo \"$NODE\" >/www/index.html && exec busybox httpd -f -p 80 -h /www"];

/// Three replicas, one per node, each publishing port 80 on its own node's address.
fn web_service(engines: &Engines) -> Service {
    let flags = ["--replicas", "3", "--placement-pref", "spread=node.id", "--replicas-max-per-node", "1"];
    let publish = ["--publish", "mode=host,target=80", "--env", "NODE={{.Node.Hostname}}"];
    Service::create(engines, "web", &[&flags[..], &publish].concat(), TEST_IMAGE, WHO_AM_I)
}

/// The IPv4 host port a container publishes port 80 on, asked of the engine that runs it (the host for None).
fn published_port(engine: Option<&engines::Engine>, container: &str) -> u16 {
    let args = ["port", container, "80/tcp"];
    let out = match engine {
        Some(engine) => engine.docker(&args),
        None => run_ok("docker", &args),
    };
    out.lines()
        .find_map(|l| l.strip_prefix("0.0.0.0:")?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 port for 80/tcp of {container} in {out:?}"))
}

/// The body of `GET /` at `addr`, or why there is none.
fn http_get(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    reply.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_string()).ok_or(reply)
}

/// Whether a process still runs the command it ran when it was seen (a PID may be reused).
fn still_runs(pid: u32, cmdline: &[u8]) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']));
    alive && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|now| now == cmdline)
}

#[test]
fn a_replicated_service_answers_on_each_engine_at_its_node_address() {
    ensure_test_image();
    let host = Host::claim();
    let mut engines = Engines::start(&host, 2);
    engines.load(TEST_IMAGE);
    engines.join_swarm();

    let nodes = host.nodes();
    assert_eq!(nodes.len(), 3, "the host and two engines in the node list: {nodes:?}");
    for engine in engines.engines() {
        let node = nodes.iter().find(|n| engine.node_id.as_ref() == Some(&n.id));
        let node = node.unwrap_or_else(|| panic!("engine {} missing from the node list {nodes:?}", engine.name));
        assert_eq!(node.addr, engine.addr.to_string(), "the manager sees engine {} at its own address", engine.name);
        assert_eq!(node.hostname, engine.name, "an engine's node is named after it");
    }

    let web = web_service(&engines);
    timed("3 tasks of a service answer", || {
        let tasks = web.wait_running(3, TASKS_READY);
        let mut on: Vec<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
        on.sort_unstable();
        on.dedup();
        assert_eq!(on.len(), 3, "one task on each node: {tasks:?}");
        for task in &tasks {
            let node = nodes.iter().find(|n| n.id == task.node_id).expect("a task runs on a listed node");
            let port = published_port(engines.by_node(&node.id), &task.container_id);
            let addr = SocketAddr::new(node.addr.parse().expect("Status.Addr is an IP address"), port);
            let answer =
                wait_for(&format!("the task on {} answers at {addr}", node.hostname), TASKS_READY, || http_get(addr));
            assert_eq!(answer, node.hostname, "the task at {addr} runs on node {}", node.hostname);
        }
    });
}

#[test]
fn a_lost_engine_is_marked_down_and_comes_back_ready_with_its_data() {
    ensure_test_image();
    let host = Host::claim();
    let mut engines = Engines::start(&host, 2);
    engines.load(TEST_IMAGE);
    engines.join_swarm();

    engines.stop(0);
    let lost = &engines.engines()[0];
    assert_eq!(lost.pids(), Vec::<u32>::new(), "a lost host runs nothing");
    timed("the swarm marks a lost engine down", || engines.wait_node(0, "down", NODE_STATE));
    // The other engine stays up: only the lost one is down.
    engines.wait_node(1, "ready", Duration::ZERO);

    engines.start_again(0);
    let back = timed("the engine is ready again", || engines.wait_node(0, "ready", NODE_STATE));
    let engine = &engines.engines()[0];
    assert_eq!(back.addr, engine.addr.to_string(), "the engine comes back at its address");
    assert_eq!(back.hostname, engine.name, "the engine comes back as the same node");
    engine.docker(&["image", "inspect", "-f", "{{.Id}}", TEST_IMAGE]);
}

/// What the failing test says when it fails where it means to.
const ON_PURPOSE: &str = "this test fails on purpose while its engines and their tasks run";

#[test]
fn a_failing_test_leaves_no_engine_node_or_namespace_behind() {
    ensure_test_image();
    let host = Host::claim();
    let before = host.swarm();
    let mut seen = (String::new(), Vec::new());
    let failed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut engines = Engines::start(&host, 2);
        engines.load(TEST_IMAGE);
        engines.join_swarm();
        let web = web_service(&engines);
        web.wait_running(3, TASKS_READY);
        let pids = engines.pids();
        let cmdlines = pids.iter().map(|p| (*p, std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()));
        seen = (engines.name().to_string(), cmdlines.collect());
        let running = leftovers(engines.name());
        for kind in ["process", "node", "service", "iptables", "netns", "link", "cgroup", "directory"] {
            assert!(running.iter().any(|l| l.starts_with(kind)), "the leftover check sees the engines' {kind}");
        }
        panic!("{ON_PURPOSE}");
    }));
    match failed {
        Err(why) if why.downcast_ref::<String>().is_some_and(|w| w == ON_PURPOSE) => {}
        Err(why) => std::panic::resume_unwind(why),
        Ok(()) => panic!("the test body did not fail"),
    }

    let (name, processes) = seen;
    assert!(!processes.is_empty(), "the engines ran processes");
    for (pid, cmdline) in &processes {
        assert!(!still_runs(*pid, cmdline), "process {pid} of the engines still runs: kill it");
    }
    assert_eq!(leftovers(&name), Vec::<String>::new(), "nothing of run {name} remains");
    assert_eq!(host.swarm(), before, "the host's swarm is as it was");
}

#[test]
fn the_next_claim_sweeps_away_a_run_that_was_killed() {
    let host = Host::claim();
    let before = host.swarm();
    let mut engines = Engines::start(&host, 1);
    engines.join_swarm();
    let name = engines.name().to_string();
    // A killed run never drops its engines.
    std::mem::forget(engines);
    assert!(!leftovers(&name).is_empty(), "the killed run left its engine");
    drop(host);

    let host = Host::claim();
    assert_eq!(leftovers(&name), Vec::<String>::new(), "the claim removed all of run {name}");
    assert_eq!(host.swarm(), before, "the host's swarm is as it was");
}
