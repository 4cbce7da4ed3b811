//! compose/swarm.sh end to end: a Redis Cluster across the engines of a real swarm (this machine's engine as the
//! manager, extra engines as workers), formed, grown and used from the host through the addresses rediscover
//! announced; one of its engines lost, or cut off the network while it runs, and back; and a single-node swarm
//! that `swarm.sh up` makes and `swarm.sh down` leaves. Each test holds the host's swarm alone and leaves it as it
//! found it.

mod common;
mod engines;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{assert_no_refused_move, redis_cli, SLOW_STEP};
use common::{run, run_ok, unique};
use engines::{Engines, Host};

/// How long `swarm.sh up` or `scale` may wait for cluster_state:ok (it may build the images first).
const SETTLE: Duration = Duration::from_secs(600);
/// How long the lost engine's nodes may take to be forgotten, and its tasks to join again on the other hosts.
const FORGET: Duration = Duration::from_secs(300);
/// How many keys go through the cluster.
const KEYS: usize = 1000;

/// One stack of the test's own, removed with `swarm.sh down` when dropped.
struct Stack {
    name: String,
    discover_port: u16,
    engines: Vec<String>,
}

impl Stack {
    fn new(name: String, engines: Vec<String>) -> Stack {
        // A port free on this host; the extra engines have ports of their own.
        let discover_port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        Stack { name, discover_port, engines }
    }

    fn swarm_sh(&self, args: &[&str]) -> Output {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/swarm.sh"))
            .args(args)
            .env("STACK", &self.name)
            .env("DISCOVER_PORT", self.discover_port.to_string())
            .env("SWARM_ENGINES", self.engines.join(" "))
            .env("WAIT_SECONDS", SETTLE.as_secs().to_string())
            .output()
            .expect("run compose/swarm.sh")
    }

    /// Runs swarm.sh, which must succeed; returns its stdout, its stderr and the wall time.
    fn swarm_sh_ok(&self, args: &[&str]) -> (String, String, Duration) {
        let start = Instant::now();
        let out = self.swarm_sh(args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        if !out.status.success() {
            panic!("swarm.sh {args:?} failed:\n{stdout}\n{stderr}");
        }
        let took = start.elapsed();
        if took > SLOW_STEP {
            eprintln!("swarm.sh {args:?} took {took:.1?}; manager log:\n{}", self.manager_log(Some(400)));
        }
        (stdout, stderr, took)
    }

    /// The announce addresses (ip:port@bus) rediscover on this host lists.
    fn members(&self) -> Vec<String> {
        let out = run_ok("redis-cli", &["-p", &self.discover_port.to_string(), "MEMBERS"]);
        out.lines().map(str::to_string).collect()
    }
}

impl Stack {
    /// The last `lines` lines the cluster manager logged (`None`: all of them).
    fn manager_log(&self, lines: Option<usize>) -> String {
        common::docker_log(&["service", "logs"], &format!("{}_manager", self.name), lines)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("manager log of stack {}:\n{}", self.name, self.manager_log(Some(400)));
        }
        let out = self.swarm_sh(&["down"]);
        if !out.status.success() {
            eprintln!("swarm.sh down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    ip: String,
    addr: String,
    master: bool,
    master_id: String,
    slots: usize,
    flags: String,
}

/// A command to one node at `ip:port`; an error when it does not answer.
fn node_reply(addr: &str, args: &[&str]) -> Result<String, String> {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let out = run("redis-cli", &[&["-h", ip, "-p", port][..], args].concat());
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).replace('\r', ""))
    } else {
        Err(format!("{addr} does not answer {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f[1].split(['@', ',']).next().unwrap_or_default().to_string();
            NodeLine {
                id: f[0].to_string(),
                ip: addr.rsplit_once(':').map(|(ip, _)| ip.to_string()).unwrap_or_default(),
                addr,
                master: f[2].contains("master"),
                master_id: f[3].to_string(),
                slots: f.len().saturating_sub(8),
                flags: f[2].to_string(),
            }
        })
        .collect()
}

fn cluster_nodes(addr: &str) -> Vec<NodeLine> {
    parse_nodes(&node_reply(addr, &["cluster", "nodes"]).unwrap_or_else(|e| panic!("{e}")))
}

fn cluster_info(addr: &str) -> String {
    node_reply(addr, &["cluster", "info"]).unwrap_or_else(|e| panic!("{e}"))
}

/// A field of CLUSTER INFO.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
}

/// The cluster as every member sees it: state ok, exactly `n` nodes known and none flagged fail, every master
/// with slots, and no replica on its master's host when the nodes are on more than one host. Returns the nodes
/// as the first member lists them, or what is not so yet.
fn cluster_whole(members: &[String], n: usize) -> Result<Vec<NodeLine>, String> {
    if members.len() != n {
        return Err(format!("rediscover lists {} nodes, not {n}: {members:?}", members.len()));
    }
    let mut first = None;
    for m in members {
        let addr = m.split('@').next().unwrap_or_default();
        let info = node_reply(addr, &["cluster", "info"])?;
        let (state, known) = (info_field(&info, "cluster_state"), info_field(&info, "cluster_known_nodes"));
        if state != Some("ok") || known != Some(n.to_string().as_str()) {
            return Err(format!("{addr}: cluster_state {state:?}, cluster_known_nodes {known:?} of {n}"));
        }
        let nodes = parse_nodes(&node_reply(addr, &["cluster", "nodes"])?);
        if nodes.len() != n {
            return Err(format!("{addr} lists {} nodes: {nodes:?}", nodes.len()));
        }
        if let Some(failed) = nodes.iter().find(|n| n.flags.contains("fail")) {
            return Err(format!("{addr} lists {} {} {}", failed.id, failed.addr, failed.flags));
        }
        first.get_or_insert(nodes);
    }
    let nodes = first.expect("n is at least 1");
    if let Some(idle) = nodes.iter().find(|n| n.master && n.slots == 0) {
        return Err(format!("master {} serves no slot: {nodes:?}", idle.addr));
    }
    let ips: HashSet<&str> = nodes.iter().map(|n| n.ip.as_str()).collect();
    let by_id: HashMap<&str, &NodeLine> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for r in nodes.iter().filter(|n| !n.master) {
        let Some(master) = by_id.get(r.master_id.as_str()) else {
            return Err(format!("{r:?} replicates an unknown master"));
        };
        if ips.len() > 1 && r.ip == master.ip {
            return Err(format!("replica {} and its master {} on one host: {nodes:?}", r.addr, master.addr));
        }
    }
    Ok(nodes)
}

/// Checks the cluster as every member sees it (see [`cluster_whole`]); returns the nodes.
fn check_cluster(members: &[String], n: usize) -> Vec<NodeLine> {
    cluster_whole(members, n).unwrap_or_else(|e| panic!("{e}"))
}

/// Every master has a replica, on another host.
fn every_master_replicated_elsewhere(nodes: &[NodeLine]) -> Result<(), String> {
    for m in nodes.iter().filter(|n| n.master) {
        if !nodes.iter().any(|r| !r.master && r.master_id == m.id && r.ip != m.ip) {
            return Err(format!("master {} has no replica on another host: {nodes:?}", m.addr));
        }
    }
    Ok(())
}

/// `redis-cli -c` through the node at `addr`, with `input` on its stdin.
fn cluster_cli(addr: &str, input: String) -> String {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    redis_cli(&["-c", "-h", ip, "-p", port], &input)
}

/// Writes KEYS keys with `redis-cli -c` through one node and reads them back through another.
fn write_and_read_keys(write_at: &str, read_at: &str, tag: &str) {
    let sets: String = (0..KEYS).map(|i| format!("SET {tag}:{i} v{i}\n")).collect();
    let replies = cluster_cli(write_at, sets);
    assert_eq!(replies.lines().filter(|l| *l == "OK").count(), KEYS, "every SET acknowledged: {replies}");
    read_keys(read_at, tag);
}

/// Reads back the KEYS keys `write_and_read_keys` wrote under `tag`, through the node at `read_at`.
fn read_keys(read_at: &str, tag: &str) {
    let gets: String = (0..KEYS).map(|i| format!("GET {tag}:{i}\n")).collect();
    let replies = cluster_cli(read_at, gets);
    let values: Vec<&str> = replies.lines().collect();
    assert_eq!(values.len(), KEYS, "one reply per GET: {replies}");
    for (i, value) in values.iter().enumerate() {
        assert_eq!(*value, format!("v{i}"), "{tag}:{i} reads back");
    }
}

/// The seconds figures of a "cluster of N nodes ok: Xs after docker stack deploy, Ys in all" line.
fn ok_line(stdout: &str, n: usize) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("cluster of {n} nodes ok: ")))
        .unwrap_or_else(|| panic!("no 'cluster of {n} nodes ok' line in {stdout:?}"));
    let secs: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
    (secs[1], secs[2])
}

fn have_redis_cli() {
    assert!(
        Command::new("redis-cli").arg("--version").output().is_ok(),
        "redis-cli is missing: run tests/setup.sh (apt-get install redis-tools)"
    );
}

/// The task slots of the stack's Redis service that the swarm wants running.
fn running_slots(stack: &str) -> Vec<u32> {
    let names = run_ok(
        "docker",
        &["service", "ps", "--filter", "desired-state=running", "--format", "{{.Name}}", &format!("{stack}_redis")],
    );
    let mut slots: Vec<u32> =
        names.lines().filter_map(|n| n.rsplit('.').next()).map(|s| s.parse().expect("a task slot")).collect();
    slots.sort_unstable();
    slots
}

#[test]
fn a_cluster_spans_three_engines_grows_and_shrinks_with_no_replica_beside_its_master() {
    have_redis_cli();
    let size: usize = std::env::var("SWARM_CLUSTER_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let host = Host::claim();
    let before = host.swarm();
    let mut engines = Engines::start(&host, 2);
    engines.join_swarm();
    let stack = Stack::new(engines.name().to_string(), engines.engines().iter().map(|e| e.host_arg()).collect());

    let (stdout, _, took) = stack.swarm_sh_ok(&["up", &size.to_string()]);
    let (after_deploy, in_all) = ok_line(&stdout, size);
    println!(
        "swarm: up {size} on 3 engines: {after_deploy} s after docker stack deploy, {in_all} s in all ({took:.1?})"
    );
    let members = stack.members();
    let nodes = check_cluster(&members, size);
    let ips: HashSet<&str> = nodes.iter().map(|n| n.ip.as_str()).collect();
    assert_eq!(ips.len(), 3, "nodes on the three engines' addresses: {nodes:?}");
    let engine_ips: HashSet<String> = engines.engines().iter().map(|e| e.addr.to_string()).collect();
    assert!(engine_ips.iter().all(|ip| ips.contains(ip.as_str())), "{engine_ips:?} among {ips:?}");
    let masters: Vec<&NodeLine> = nodes.iter().filter(|n| n.master).collect();
    write_and_read_keys(&masters[0].addr, &masters[masters.len() - 1].addr, "up");

    let (status, _, _) = stack.swarm_sh_ok(&["status"]);
    assert!(status.contains("cluster_state:ok"), "{status}");
    for engine in engines.engines() {
        assert!(status.contains(&format!("runs on {}", engine.name)), "status names host {}: {status}", engine.name);
    }

    let grown = size + 3;
    let (stdout, _, took) = stack.swarm_sh_ok(&["scale", &grown.to_string()]);
    let (after_scale, _) = ok_line(&stdout, grown);
    println!("swarm: scale {size} -> {grown}: {after_scale} s ({took:.1?})");
    assert_no_refused_move(&stack.manager_log(None));
    let members = stack.members();
    let nodes = check_cluster(&members, grown);
    assert!(nodes.iter().filter(|n| n.master).count() >= size / 2, "{nodes:?}");
    let masters: Vec<&NodeLine> = nodes.iter().filter(|n| n.master).collect();
    write_and_read_keys(&masters[masters.len() - 1].addr, &masters[0].addr, "scaled");

    // Fewer nodes than 3 masters with a replica each need is refused without --force, and nothing changes.
    let refused = stack.swarm_sh(&["scale", "4"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("--force"), "scale 4 on {grown} nodes: {said}");
    assert_eq!(running_slots(&stack.name), (1..=grown as u32).collect::<Vec<_>>(), "a refused scale 4 removed tasks");

    // Back to the first size: the nodes of the highest slots (those that joined last) hand their slots over and
    // leave, the service loses just their tasks, and their volumes go from every engine.
    let (stdout, stderr, took) = stack.swarm_sh_ok(&["scale", &size.to_string()]);
    let (after_shrink, _) = ok_line(&stdout, size);
    println!("swarm: scale {grown} -> {size}: {after_shrink} s ({took:.1?})");
    assert!(stderr.contains(&format!("{} node(s) removed from the cluster", grown - size)), "{stderr}");
    assert_eq!(running_slots(&stack.name), (1..=size as u32).collect::<Vec<_>>(), "the highest slots left");
    let members = stack.members();
    let nodes = check_cluster(&members, size);
    every_master_replicated_elsewhere(&nodes).unwrap_or_else(|e| panic!("{e}"));
    read_keys(&nodes[0].addr, "up");
    read_keys(&nodes[nodes.len() - 1].addr, "scaled");
    let volumes = |docker: &dyn Fn(&[&str]) -> String| -> Vec<String> {
        docker(&["volume", "ls", "-q", "--filter", &format!("name={}_redis-", stack.name)])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let mut left = volumes(&|args| run_ok("docker", args));
    for engine in engines.engines() {
        left.extend(volumes(&|args| engine.docker(args)));
    }
    for slot in size + 1..=grown {
        let name = format!("{}_redis-{slot}", stack.name);
        assert!(!left.contains(&name), "volume {name} of a slot that left is still there: {left:?}\n{stderr}");
    }
    let manager = run_ok(
        "docker",
        &["service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}}", &format!("{}_manager", stack.name)],
    );
    assert_eq!(manager, "1", "the manager runs again after scale in");

    drop(stack);
    drop(engines);
    assert_eq!(host.swarm(), before, "the host's swarm is as it was");
}

#[test]
fn on_an_engine_in_no_swarm_up_makes_a_single_node_swarm_and_down_leaves_it() {
    have_redis_cli();
    let host = Host::claim();
    let before = host.swarm();
    assert_eq!(
        before.local_node_state, "inactive",
        "this test needs an engine in no swarm: 'docker swarm leave' (if nothing else needs it) and rerun"
    );
    /// Leaves a swarm the test left behind, whatever way it ends.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            if run_ok("docker", &["info", "-f", "{{.Swarm.LocalNodeState}}"]) != "inactive" {
                let _ = run("docker", &["swarm", "leave", "--force"]);
                if !self.0 {
                    let _ = run("docker", &["network", "rm", "docker_gwbridge"]);
                }
            }
        }
    }
    let _restore = Restore(before.gwbridge);
    let stack = Stack::new(format!("rdtest{}", unique() % 1_000_000), Vec::new());
    let (stdout, stderr, took) = stack.swarm_sh_ok(&["up", "6"]);
    assert!(stderr.contains("it now manages a single-node swarm"), "up says it made a swarm: {stderr}");
    let (after_deploy, in_all) = ok_line(&stdout, 6);
    println!("swarm: up 6 on a single-node swarm: {after_deploy} s after deploy, {in_all} s in all ({took:.1?})");
    let node_ip = run_ok("docker", &["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
    let members = stack.members();
    let nodes = check_cluster(&members, 6);
    assert!(nodes.iter().all(|n| n.ip == node_ip), "every node at the swarm node's address {node_ip}: {nodes:?}");
    write_and_read_keys(&nodes[0].addr, &nodes[5].addr, "single");

    // A node stopped by a signal (`docker stop`) exits non-zero: the on-failure policy starts its slot again,
    // on its volume, and it rejoins under its own id.
    let stopped = &nodes[0];
    let port = stopped.addr.rsplit_once(':').map(|(_, p)| p.to_string()).expect("ip:port");
    let container = run_ok("docker", &["ps", "-q", "--filter", &format!("publish={port}")]);
    assert_eq!(container.lines().count(), 1, "one container publishes {port}: {container}");
    // Room for Redis's shutdown-timeout (10 s of waiting for lagging replicas) when the swarm stops a task; a
    // task's container does not carry it for a plain `docker stop`, which is given it here.
    let spec = "{{.Spec.TaskTemplate.ContainerSpec.StopGracePeriod}}";
    let grace = run_ok("docker", &["service", "inspect", "-f", spec, &format!("{}_redis", stack.name)]);
    assert_eq!(grace, "20s", "the nodes' stop grace period");
    let stopping = Instant::now();
    run_ok("docker", &["stop", "-t", "20", &container]);
    println!("swarm: docker stop of a node: {:.1?}", stopping.elapsed());
    let code = run_ok("docker", &["inspect", "-f", "{{.State.ExitCode}}", &container]);
    if code != "143" {
        let log = common::container_log(&container, Some(20));
        panic!("a node stopped by SIGTERM exits 143, this one {code}; its log ends:\n{log}");
    }
    engines::wait_for("the stopped node's slot running again, the cluster whole", SETTLE, || {
        let members = stack.members();
        let nodes = cluster_whole(&members, 6)?;
        if nodes.iter().any(|n| n.id == stopped.id) {
            Ok(())
        } else {
            Err(format!("{} is not back: {nodes:?}", stopped.id))
        }
    });
    assert_eq!(running_slots(&stack.name), (1..=6).collect::<Vec<_>>(), "the same six slots");
    read_keys(&nodes[5].addr, "single");

    let out = stack.swarm_sh(&["down"]);
    assert!(out.status.success(), "down: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("left the single-node swarm"));
    assert_eq!(host.swarm(), before, "the engine is in no swarm again, docker_gwbridge as it was");
}

/// Writes KEYS keys, each followed by `WAIT 1`, through `addr`; returns the keys at least one replica
/// acknowledged.
fn write_acknowledged(addr: &str, tag: &str) -> Vec<usize> {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let input: String = (0..KEYS).map(|i| format!("SET {tag}:{i} v{i}\nWAIT 1 2000\n")).collect();
    let text = redis_cli(&["-c", "-h", ip, "-p", port], &input);
    let replies: Vec<&str> = text.lines().collect();
    assert_eq!(replies.len(), 2 * KEYS, "a reply to each SET and WAIT: {text}");
    (0..KEYS).filter(|i| replies[2 * i] == "OK" && replies[2 * i + 1].parse::<u32>().is_ok_and(|n| n >= 1)).collect()
}

/// The node timeout of the stack's Redis nodes (compose/stack.yml: CLUSTER_NODE_TIMEOUT).
const NODE_TIMEOUT: Duration = Duration::from_millis(5000);

/// Runs `body` on a stack of 6 nodes over the host and two extra engines, given the nodes and the acknowledged
/// keys written through them; then removes the stack and the engines, and checks the host's swarm is as it was.
fn on_three_hosts(body: impl FnOnce(&mut Engines<'_>, &Stack, Vec<NodeLine>, Vec<usize>)) {
    have_redis_cli();
    let host = Host::claim();
    let before = host.swarm();
    let mut engines = Engines::start(&host, 2);
    engines.join_swarm();
    let stack = Stack::new(engines.name().to_string(), engines.engines().iter().map(|e| e.host_arg()).collect());
    stack.swarm_sh_ok(&["up", "6"]);
    let nodes = check_cluster(&stack.members(), 6);
    let acked = write_acknowledged(&nodes[0].addr, "kept");
    // A replica still catching up may leave a WAIT unanswered; what it acknowledged is what must survive.
    assert!(acked.len() >= KEYS * 9 / 10, "most writes reached a replica while all nodes run: {}", acked.len());
    body(&mut engines, &stack, nodes, acked);
    drop(stack);
    drop(engines);
    assert_eq!(host.swarm(), before, "the host's swarm is as it was");
}

/// Waits, watching from `survivor`, until the cluster serves every slot with no master left on `gone_ip`;
/// returns the time since `since`.
fn served_without(survivor: &str, gone_ip: &str, since: Instant) -> Duration {
    engines::wait_for("the cluster serves every slot without the engine", NODE_TIMEOUT * 6, || {
        let info = cluster_info(survivor);
        let nodes = cluster_nodes(survivor);
        let gone_masters = nodes.iter().filter(|n| n.master && n.slots > 0 && n.ip == gone_ip).count();
        if info.contains("cluster_state:ok") && gone_masters == 0 {
            Ok(since.elapsed())
        } else {
            Err(format!("{gone_masters} masters with slots on {gone_ip}; {}", info.lines().next().unwrap_or("")))
        }
    })
}

/// Every acknowledged key reads back through `addr`.
fn acknowledged_read_back(addr: &str, acked: &[usize]) {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let gets: String = acked.iter().map(|i| format!("GET kept:{i}\n")).collect();
    let text = redis_cli(&["-c", "-h", ip, "-p", port], &gets);
    let values: Vec<&str> = text.lines().collect();
    assert_eq!(values.len(), acked.len(), "a reply to each GET: {text}");
    for (i, value) in acked.iter().zip(values) {
        assert_eq!(value, format!("v{i}"), "kept:{i}, acknowledged by a replica, survives");
    }
}

/// The swarm starts the tasks of the engine on `gone_ip` again on the other hosts; the manager forgets its nodes
/// (failed, serving no slot, their task containers no longer wanted) and joins the new ones. Waits until every
/// running node forgot `gone_ids`, then until 6 nodes run with each master replicated on another host; returns
/// both times since `since`.
fn forgotten_and_replaced(stack: &Stack, gone_ip: &str, gone_ids: &HashSet<String>, since: Instant) -> [Duration; 2] {
    let on_gone_host = format!("{gone_ip}:");
    let forgotten = engines::wait_for("every running node forgets the engine's nodes", FORGET, || {
        let members = stack.members();
        if let Some(m) = members.iter().find(|m| m.starts_with(&on_gone_host)) {
            return Err(format!("rediscover still lists {m} on the engine"));
        }
        for m in &members {
            let addr = m.split('@').next().unwrap_or_default();
            let nodes = parse_nodes(&node_reply(addr, &["cluster", "nodes"])?);
            if let Some(gone) = nodes.iter().find(|n| gone_ids.contains(&n.id)) {
                return Err(format!("{addr} lists {} {} {}", gone.id, gone.addr, gone.flags));
            }
        }
        Ok(since.elapsed())
    });
    let replaced = engines::wait_for("6 nodes on the other hosts, each master replicated elsewhere", FORGET, || {
        let members = stack.members();
        let nodes = cluster_whole(&members, 6)?;
        every_master_replicated_elsewhere(&nodes)?;
        Ok(since.elapsed())
    });
    let nodes = check_cluster(&stack.members(), 6);
    assert!(nodes.iter().all(|n| n.ip != gone_ip && !gone_ids.contains(&n.id)), "{nodes:?}");
    [forgotten, replaced]
}

/// Once engine `i` is back in the swarm and its own rediscover answers again: no Redis task of the stack runs on
/// it, at the latest `tasks_gone_within` later (the swarm does not move tasks back, and shuts down the tasks the
/// engine still runs; zero: none at the first look), and for as long as gossip would take to bring them back the
/// cluster stays whole without `gone_ids`. Returns the time from the call until no task ran.
fn stays_whole_once_back(
    stack: &Stack,
    engines: &Engines,
    i: usize,
    gone_ids: &HashSet<String>,
    tasks_gone_within: Duration,
) -> Duration {
    let since = Instant::now();
    engines.wait_node(i, "ready", engines::NODE_STATE);
    let engine = &engines.engines()[i];
    let back = format!("{}:{}", engine.addr, stack.discover_port);
    engines::wait_for("the returned engine's rediscover answers", FORGET, || {
        node_reply(&back, &["PING"]).and_then(|r| if r.trim() == "PONG" { Ok(()) } else { Err(r) })
    });
    let label = format!("label=io.rediscover.cluster={}", stack.name);
    let tasks_gone =
        engines::wait_for("no Redis task of the stack runs on the returned engine", tasks_gone_within, || {
            let tasks = engine.docker(&["ps", "-q", "--filter", &label]);
            if tasks.is_empty() {
                Ok(since.elapsed())
            } else {
                Err(format!("running: {}", tasks.replace('\n', " ")))
            }
        });
    let watch = Instant::now();
    while watch.elapsed() < NODE_TIMEOUT * 3 {
        let nodes = check_cluster(&stack.members(), 6);
        every_master_replicated_elsewhere(&nodes).unwrap_or_else(|e| panic!("after the engine is back: {e}"));
        assert!(nodes.iter().all(|n| !gone_ids.contains(&n.id)), "a node of the engine is back: {nodes:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    tasks_gone
}

#[test]
fn an_engine_lost_has_its_masters_replaced_on_the_other_hosts_with_no_acknowledged_write_lost() {
    on_three_hosts(|engines, stack, nodes, acked| {
        // The engine whose loss takes a master, and a node on another host to watch from.
        let lost = engines
            .engines()
            .iter()
            .position(|e| nodes.iter().any(|n| n.master && n.ip == e.addr.to_string()))
            .expect("a master on one of the extra engines");
        let lost_ip = engines.engines()[lost].addr.to_string();
        let lost_ids: HashSet<String> = nodes.iter().filter(|n| n.ip == lost_ip).map(|n| n.id.clone()).collect();
        let survivor = nodes.iter().find(|n| n.ip != lost_ip).expect("a node on another host").addr.clone();
        let killed = Instant::now();
        engines.stop(lost);
        let took = served_without(&survivor, &lost_ip, killed);
        println!("swarm: engine {lost_ip} lost, its masters replaced, cluster_state:ok after {took:.1?}");
        acknowledged_read_back(&survivor, &acked);
        let [forgotten, replaced] = forgotten_and_replaced(stack, &lost_ip, &lost_ids, killed);
        println!(
            "swarm: engine {lost_ip} lost: its {} nodes forgotten everywhere after {forgotten:.1?}, the cluster whole \
             again on the other hosts after {replaced:.1?}",
            lost_ids.len()
        );

        // The host comes back: its engine rejoins the swarm, and the lost nodes stay out. Its containers died with
        // it, and the swarm does not start them again there.
        engines.start_again(lost);
        let gone = stays_whole_once_back(stack, engines, lost, &lost_ids, Duration::ZERO);
        println!("swarm: engine {lost_ip} back: no Redis task of the stack runs there {gone:.1?} after it started");
    });
}

#[test]
fn an_engine_cut_off_stops_serving_on_its_side_is_replaced_on_the_other_and_stays_out_when_the_cut_heals() {
    on_three_hosts(|engines, stack, nodes, acked| {
        // An engine with one master of the three: cut off, its side holds a minority of the masters. Its daemon and
        // nodes go on running.
        let masters_on = |ip: &str| nodes.iter().filter(|n| n.master && n.ip == ip).count();
        let cut = engines
            .engines()
            .iter()
            .position(|e| masters_on(&e.addr.to_string()) == 1)
            .unwrap_or_else(|| panic!("an extra engine with exactly one master: {nodes:?}"));
        let cut_ip = engines.engines()[cut].addr.to_string();
        let cut_ids: HashSet<String> = nodes.iter().filter(|n| n.ip == cut_ip).map(|n| n.id.clone()).collect();
        let survivor = nodes.iter().find(|n| n.ip != cut_ip).expect("a node on another host").addr.clone();
        let engine = &engines.engines()[cut];
        let label = format!("label=io.rediscover.cluster={}", stack.name);
        let cut_off: Vec<String> =
            engine.docker(&["ps", "-q", "--filter", &label]).lines().map(str::to_string).collect();
        assert_eq!(cut_off.len(), cut_ids.len(), "a Redis container on {cut_ip} for each of its nodes");
        let on_cut_side = |container: &str, args: &[&str]| {
            engine.docker(&[&["exec", container, "redis-cli", "-p", "6379"][..], args].concat()).replace('\r', "")
        };
        let cut_at = Instant::now();
        engines.cut(cut);

        // On its side, Redis stops serving on its own: its nodes reach a minority of the masters, so once the node
        // timeout has passed each sees the cluster down and refuses every key.
        let down = engines::wait_for("the cut-off nodes see the cluster down", NODE_TIMEOUT * 6, || {
            for c in &cut_off {
                let info = on_cut_side(c, &["cluster", "info"]);
                let state = info_field(&info, "cluster_state");
                if state != Some("fail") {
                    return Err(format!("{c}: cluster_state {state:?}"));
                }
            }
            Ok(cut_at.elapsed())
        });
        for c in &cut_off {
            let said = on_cut_side(c, &["set", "during-the-cut", "x"]);
            assert!(said.contains("CLUSTERDOWN"), "a cut-off node answers a write with {said}");
        }
        // On the other side, the engine is as good as lost.
        let took = served_without(&survivor, &cut_ip, cut_at);
        println!(
            "swarm: engine {cut_ip} cut off: its side down after {down:.1?}; its masters replaced, cluster_state:ok \
             on the other side after {took:.1?}"
        );
        acknowledged_read_back(&survivor, &acked);
        let [forgotten, replaced] = forgotten_and_replaced(stack, &cut_ip, &cut_ids, cut_at);
        println!(
            "swarm: engine {cut_ip} cut off: its {} nodes forgotten on the other side after {forgotten:.1?}, the \
             cluster whole there after {replaced:.1?}",
            cut_ids.len()
        );

        // The cut heals while the old nodes still run, with the cluster's old view: the swarm shuts them down, and
        // none of them is taken back, though they still know every node.
        engines.heal(cut);
        let gone = stays_whole_once_back(stack, engines, cut, &cut_ids, FORGET);
        println!("swarm: engine {cut_ip} back: its old Redis tasks shut down {gone:.1?} after the cut healed");
        acknowledged_read_back(&survivor, &acked);
    });
}
