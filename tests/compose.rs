//! compose/ end to end: a real cluster from `compose/cluster.sh`, used from the host with redis-cli, formed and
//! grown while its manager is restarted, failed over, crashed, restarted and removed; and how long `up` takes for
//! 6 and 12 nodes.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{docker_announce, run, run_ok};

/// How long the cluster may take to settle after each step.
const SETTLE: Duration = Duration::from_secs(240);
/// How long a cluster.sh that may build its images first may take to reach a step.
const BUILD_AND_SETTLE: Duration = Duration::from_secs(600);
/// Keys written from the host and read back after every step.
const KEYS: usize = 1000;

/// One cluster at a time: two would share the machine's cores and skew the timings they print.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One compose project of the test's own, removed with `cluster.sh down` when dropped.
struct Project {
    name: String,
    discover_port: u16,
    announce_ip: String,
    /// REDIS_PASSWORD for cluster.sh, if any.
    password: Option<String>,
}

impl Project {
    fn new() -> Project {
        let name = format!("rdtest{}x{}", std::process::id(), common::unique() % 1_000_000);
        // Its own rediscover port, so that a cluster already running on this host is left alone; below the
        // ephemeral range, where Docker picks the nodes' host ports.
        let discover_port = (0..100)
            .map(|i| 20_000 + ((common::unique() + i) % 10_000) as u16)
            .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
            .expect("a free port for rediscover between 20000 and 29999");
        let announce_ip = rediscover::config::resolve_announce_ip(None, None)
            .expect("this host has a default route (rediscover announces its address)")
            .to_string();
        Project { name, discover_port, announce_ip, password: None }
    }

    fn cluster_sh_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/cluster.sh"));
        command
            .args(args)
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env("DISCOVER_PORT", self.discover_port.to_string())
            .env("WAIT_SECONDS", SETTLE.as_secs().to_string());
        match &self.password {
            Some(password) => command.env("REDIS_PASSWORD", password),
            None => command.env_remove("REDIS_PASSWORD"),
        };
        command
    }

    fn cluster_sh(&self, args: &[&str]) -> Output {
        self.cluster_sh_command(args).output().expect("run compose/cluster.sh")
    }

    /// Starts cluster.sh without waiting for it; `cluster_sh_finish` waits.
    fn cluster_sh_start(&self, args: &[&str]) -> Running {
        let child = self
            .cluster_sh_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run compose/cluster.sh");
        Running { child: Some(child), args: args.iter().map(|a| a.to_string()).collect(), start: Instant::now() }
    }

    /// Waits for a cluster.sh started with `cluster_sh_start`, which must succeed; as `cluster_sh_ok`.
    fn cluster_sh_finish(&self, mut running: Running) -> (String, Duration) {
        let child = running.child.take().expect("a started cluster.sh is waited for once");
        let out = child.wait_with_output().expect("wait for compose/cluster.sh");
        let args: Vec<&str> = running.args.iter().map(String::as_str).collect();
        self.checked(&args, out, running.start.elapsed())
    }

    /// Runs cluster.sh, which must succeed; returns its last line and the wall time.
    fn cluster_sh_ok(&self, args: &[&str]) -> (String, Duration) {
        let start = Instant::now();
        let out = self.cluster_sh(args);
        self.checked(args, out, start.elapsed())
    }

    fn checked(&self, args: &[&str], out: Output, elapsed: Duration) -> (String, Duration) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed:\n{}\n{}\nmanager log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stdout),
            self.manager_log()
        );
        let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
        (last, elapsed)
    }

    fn manager_log(&self) -> String {
        let ids = self.containers("manager", true);
        ids.first()
            .map(|id| {
                let out = run("docker", &["logs", "--tail", "150", id]);
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            })
            .unwrap_or_default()
    }

    /// Container ids of a service, running ones only unless `all`.
    fn containers(&self, service: &str, all: bool) -> Vec<String> {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={service}");
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &project, "--filter", &service];
        if all {
            args.push("-a");
        }
        run_ok("docker", &args).lines().map(str::to_string).collect()
    }

    /// The announce string of every running Redis node, as Docker publishes its ports.
    fn expected_members(&self) -> BTreeSet<String> {
        self.containers("redis", false).iter().map(|id| docker_announce(id, &self.announce_ip)).collect()
    }

    /// Whatever of the project is left: containers, networks, built images and the given volumes.
    fn leftovers(&self, volumes: &[String]) -> Vec<String> {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let mut left = run_ok("docker", &["ps", "-aq", "--filter", &project])
            .lines()
            .chain(run_ok("docker", &["network", "ls", "-q", "--filter", &project]).lines())
            .map(str::to_string)
            .collect::<Vec<_>>();
        left.extend(volumes.iter().filter(|v| run("docker", &["volume", "inspect", v]).status.success()).cloned());
        // Images built for the project: <project>_<service> (docker-compose v1) or <project>-<service>.
        let images = run_ok("docker", &["images", "--format", "{{.Repository}}"]);
        left.extend(
            images
                .lines()
                .filter(|r| r.strip_prefix(&self.name).is_some_and(|s| s.starts_with('_') || s.starts_with('-')))
                .map(str::to_string),
        );
        left
    }

    /// Kills the manager container and starts it again (`docker restart -t 0`), whatever it is doing.
    fn restart_manager(&self) {
        let manager = self.containers("manager", false);
        let id = manager.first().expect("the manager runs");
        run_ok("docker", &["restart", "-t", "0", id]);
    }

    /// Restarts the manager the moment `now` holds, while `running` has not finished; panics when it finishes
    /// first, since then nothing was interrupted.
    fn restart_manager_when(&self, running: &mut Running, what: &str, mut now: impl FnMut() -> bool) {
        // cluster.sh may first build the images, which takes minutes on a busy machine; it is watched meanwhile.
        let deadline = Instant::now() + BUILD_AND_SETTLE;
        loop {
            if now() {
                self.restart_manager();
                eprintln!(
                    "compose: manager restarted when {what}, {:.1} s into cluster.sh",
                    running.start.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                !running.finished(),
                "cluster.sh {:?} finished before {what}: nothing was interrupted",
                running.args
            );
            assert!(Instant::now() < deadline, "still not {what} after {BUILD_AND_SETTLE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A cluster.sh running in the background; killed when dropped unfinished.
struct Running {
    child: Option<Child>,
    args: Vec<String>,
    start: Instant,
}

impl Running {
    fn finished(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().map(|s| s.is_some()).unwrap_or(true))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("manager log of {}:\n{}", self.name, self.manager_log());
        }
        let _ = self.cluster_sh(&["down"]);
    }
}

/// redis-cli from the host; `stdin` lines are sent as commands, one reply a line comes back.
fn redis_cli(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli is missing: apt-get install redis-tools (.ci/run does)");
    let mut input = child.stdin.take().expect("stdin is piped");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for redis-cli");
    let _ = writer.join();
    without_redirections(&out.stdout)
}

/// Output of redis-cli -c without the line it prints for each redirection it follows.
fn without_redirections(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .replace('\r', "")
        .lines()
        .filter(|l| !l.starts_with("-> Redirected"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A command to one node, by its `ip:port@bus` or `ip:port`.
fn node_cmd(addr: &str, args: &[&str]) -> String {
    let addr = addr.split('@').next().unwrap_or(addr);
    let (ip, port) = addr.rsplit_once(':').expect("an address is ip:port");
    let mut all = vec!["-h", ip, "-p", port];
    all.extend_from_slice(args);
    without_redirections(&run("redis-cli", &all).stdout)
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    addr: String,
    flags: String,
    master_id: String,
    slots: usize,
}

impl NodeLine {
    fn is_master(&self) -> bool {
        self.flags.contains("master") && !self.flags.contains("fail")
    }
    fn is_replica(&self) -> bool {
        self.flags.contains("slave") && !self.flags.contains("fail")
    }
}

fn cluster_nodes(addr: &str) -> Vec<NodeLine> {
    node_cmd(addr, &["cluster", "nodes"])
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 8).then(|| NodeLine {
                id: f[0].to_string(),
                addr: f[1].split(',').next().unwrap_or_default().to_string(),
                flags: f[2].to_string(),
                master_id: f[3].to_string(),
                slots: f[8..].len(),
            })
        })
        .collect()
}

fn info_field(addr: &str, field: &str) -> Option<String> {
    node_cmd(addr, &["cluster", "info"]).lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
}

/// Polls `check` until it returns Ok, or panics with its last complaint after `SETTLE`.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: still not so after {SETTLE:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Every running node reports cluster_state:ok and knows `known` nodes, redis-cli --cluster check is clean and
/// finds nothing to rebalance, every replica is in sync, and every node announces what Docker published for it.
fn settled(project: &Project, known: usize) -> Result<Vec<NodeLine>, String> {
    let members = project.expected_members();
    let first = members.iter().next().ok_or("no Redis node runs")?.clone();
    for m in &members {
        let state = info_field(m, "cluster_state").unwrap_or_default();
        let n = info_field(m, "cluster_known_nodes").unwrap_or_default();
        if state != "ok" || n != known.to_string() {
            return Err(format!("{m}: cluster_state {state:?}, known nodes {n:?}"));
        }
        let myself = cluster_nodes(m).into_iter().find(|l| l.flags.contains("myself"));
        if myself.as_ref().map(|l| l.addr.as_str()) != Some(m.as_str()) {
            return Err(format!("the node behind {m} announces {myself:?}"));
        }
    }
    let check = run("redis-cli", &["--cluster", "check", first.split('@').next().unwrap_or_default()]);
    if !check.status.success() {
        return Err(format!("redis-cli --cluster check: {}", String::from_utf8_lossy(&check.stdout)));
    }
    let simulate = run(
        "redis-cli",
        &[
            "--cluster",
            "rebalance",
            first.split('@').next().unwrap_or_default(),
            "--cluster-use-empty-masters",
            "--cluster-simulate",
        ],
    );
    if !String::from_utf8_lossy(&simulate.stdout).contains("No rebalancing needed") {
        return Err("slots are still being moved".to_string());
    }
    let nodes = cluster_nodes(&first);
    for replica in nodes.iter().filter(|n| n.is_replica()) {
        let link = node_cmd(&replica.addr, &["info", "replication"]);
        if !link.lines().any(|l| l == "master_link_status:up") {
            return Err(format!("replica {} is not in sync with its master", replica.addr));
        }
    }
    let seen: BTreeSet<String> = nodes.iter().filter(|l| !l.flags.contains("fail")).map(|l| l.addr.clone()).collect();
    if seen != members {
        return Err(format!("cluster nodes {seen:?} but Docker publishes {members:?}"));
    }
    Ok(nodes)
}

/// Writes `KEYS` keys through one published port with redis-cli -c, which follows the redirections.
fn write_keys(entry: &str, prefix: &str) {
    let addr = entry.split('@').next().unwrap_or(entry);
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let commands: String = (0..KEYS).map(|i| format!("SET {prefix}{i} value-{i}\n")).collect();
    let replies = redis_cli(&["-c", "-h", ip, "-p", port], &commands);
    let ok = replies.lines().filter(|l| *l == "OK").count();
    assert_eq!(ok, KEYS, "SET replies through {addr}: {}", replies.lines().take(5).collect::<Vec<_>>().join(" | "));
}

/// Reads the keys back through any node.
fn read_keys(entry: &str, prefix: &str, count: usize) -> Result<(), String> {
    let addr = entry.split('@').next().unwrap_or(entry);
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let commands: String = (0..count).map(|i| format!("GET {prefix}{i}\n")).collect();
    let replies = redis_cli(&["-c", "-h", ip, "-p", port], &commands);
    let got: Vec<&str> = replies.lines().collect();
    let want: Vec<String> = (0..count).map(|i| format!("value-{i}")).collect();
    if got.len() != count || got.iter().zip(&want).any(|(g, w)| g != w) {
        let bad = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(got.len());
        return Err(format!("{} replies, first wrong at {prefix}{bad}: {:?}", got.len(), got.get(bad)));
    }
    Ok(())
}

fn masters_and_replicas(nodes: &[NodeLine]) -> (Vec<&NodeLine>, Vec<&NodeLine>) {
    (nodes.iter().filter(|n| n.is_master() && n.slots > 0).collect(), nodes.iter().filter(|n| n.is_replica()).collect())
}

fn container_of(project: &Project, addr: &str) -> String {
    project
        .containers("redis", false)
        .into_iter()
        .find(|id| docker_announce(id, &project.announce_ip) == addr)
        .unwrap_or_else(|| panic!("no running container publishes {addr}"))
}

fn started_at(id: &str) -> String {
    run_ok("docker", &["inspect", "-f", "{{.State.StartedAt}}", id])
}

fn volumes_of(ids: &[String]) -> Vec<String> {
    ids.iter()
        .flat_map(|id| {
            run_ok("docker", &["inspect", "-f", "{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}", id])
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn compose_cluster_forms_grows_fails_over_and_goes_away() {
    let _serial = one_at_a_time();
    let project = Project::new();

    // 1. Six nodes: three masters, three replicas, each announcing the host address and its own ports; formed
    // although the manager is killed and restarted while redis-cli --cluster create is half done.
    let mut up = project.cluster_sh_start(&["up", "6"]);
    let mut nodes_seen = Vec::new();
    project.restart_manager_when(&mut up, "create has assigned slots", || {
        if nodes_seen.len() < 6 {
            nodes_seen = project
                .containers("redis", false)
                .iter()
                .filter_map(|id| published_port(id, 6379))
                .map(|port| format!("{}:{port}", project.announce_ip))
                .collect();
        }
        nodes_seen.len() == 6
            && nodes_seen.iter().any(|n| info_field(n, "cluster_slots_assigned").is_some_and(|s| s != "0"))
    });
    let (line, took) = project.cluster_sh_finish(up);
    eprintln!("compose: up 6: {line}; {:.1} s wall time", took.as_secs_f64());
    let nodes = eventually("3 masters and 3 replicas", || {
        let nodes = settled(&project, 6)?;
        let (masters, replicas) = masters_and_replicas(&nodes);
        if masters.len() == 3 && replicas.len() == 3 {
            Ok(nodes)
        } else {
            Err(format!("{} masters, {} replicas", masters.len(), replicas.len()))
        }
    });
    assert!(nodes.iter().all(|n| n.addr.starts_with(&format!("{}:", project.announce_ip))));
    let entry = nodes[0].addr.clone();

    // rediscover holds the Docker socket, so it runs with as little as it can: not root (the socket's group
    // lets it in), no capability, no way to gain privileges, nothing writable.
    let discover = project.containers("discover", false);
    let discover = discover.first().expect("discover runs");
    let pid = run_ok("docker", &["inspect", "-f", "{{.State.Pid}}", discover]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process status of rediscover");
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(str::trim).unwrap_or_default().to_string()
    };
    assert_eq!(field("Uid").split_whitespace().count(), 4, "the Uid line of rediscover: {status}");
    assert!(field("Uid").split_whitespace().all(|u| u != "0"), "rediscover runs as root: Uid {}", field("Uid"));
    assert_eq!(field("CapEff"), "0000000000000000", "rediscover's effective capabilities");
    assert_eq!(field("CapPrm"), "0000000000000000", "rediscover's permitted capabilities");
    assert_eq!(field("NoNewPrivs"), "1", "rediscover may gain privileges");
    let read_only = run_ok("docker", &["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", discover]);
    assert_eq!(read_only, "true", "rediscover's root file system is writable");

    // 2. From the host, through the published ports: 1,000 keys over every master.
    write_keys(&entry, "key:");
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after up 6: {e}"));
    let (masters, _) = masters_and_replicas(&nodes);
    for m in masters {
        let n: usize = node_cmd(&m.addr, &["dbsize"]).trim().parse().unwrap_or(0);
        assert!(n > 0, "master {} holds no key", m.addr);
    }

    // 3. Nine nodes: the three new ones join, the first six keep running untouched; the slots reach the new
    // masters although the manager is killed and restarted in the middle of moving one: as often as it takes
    // for a kill to leave a slot open (migrating on one node, importing on another).
    let before: Vec<(String, String)> =
        project.containers("redis", false).into_iter().map(|id| (started_at(&id), id)).collect();
    let mut scale = project.cluster_sh_start(&["scale", "9"]);
    let mut restarts = 0;
    let left_open = loop {
        project.restart_manager_when(&mut scale, "a slot is being moved", || !open_slots(&entry).is_empty());
        restarts += 1;
        let left = open_slots(&entry);
        if !left.is_empty() {
            break left;
        }
        assert!(restarts < 10, "{restarts} restarts of the manager in the middle of moves left no slot open");
    };
    eprintln!("compose: {restarts} manager restart(s) during the rebalance; left open: {left_open:?}");
    let (line, took) = project.cluster_sh_finish(scale);
    eprintln!("compose: scale 9: {line}; {:.1} s wall time", took.as_secs_f64());
    for (started, id) in &before {
        assert_eq!(&started_at(id), started, "scale restarted {id}");
    }
    let nodes = eventually("slots on 4 masters or a replica for every master", || {
        let nodes = settled(&project, 9)?;
        let (masters, replicas) = masters_and_replicas(&nodes);
        let empty = nodes.iter().filter(|n| n.is_master() && n.slots == 0).count();
        let served: BTreeSet<&str> = replicas.iter().map(|r| r.master_id.as_str()).collect();
        let every_master_served = masters.iter().all(|m| served.contains(m.id.as_str()));
        if empty == 0 && (masters.len() >= 4 || every_master_served) {
            Ok(nodes)
        } else {
            Err(format!("{} masters with slots, {empty} without, {} replicas", masters.len(), replicas.len()))
        }
    });
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after scale 9: {e}"));

    // 4. A master stops: its replica takes over, and acknowledged writes survive.
    let (masters, replicas) = masters_and_replicas(&nodes);
    let victim = masters
        .iter()
        .find(|m| replicas.iter().any(|r| r.master_id == m.id))
        .map(|m| (*m).clone())
        .expect("a master with a replica");
    let heir = replicas.iter().find(|r| r.master_id == victim.id).map(|r| r.id.clone()).expect("its replica");
    // Keys with one hash tag the victim serves, so that they all go to it and one WAIT covers them.
    let tag = (0..1000)
        .map(|n| format!("{{t{n}}}"))
        .find(|t| !node_cmd(&victim.addr, &["GET", &format!("acked{t}:0")]).contains("MOVED"))
        .expect("a hash tag the victim serves");
    let acked: Vec<String> = (0..200).map(|i| format!("acked{tag}:{i}")).collect();
    let mut commands: String = acked.iter().map(|k| format!("SET {k} value-of-{k}\n")).collect();
    commands.push_str("WAIT 1 5000\n");
    let (ip, port) = victim.addr.split('@').next().and_then(|a| a.rsplit_once(':')).expect("ip:port@bus");
    let replies = redis_cli(&["-h", ip, "-p", port], &commands);
    let replies: Vec<&str> = replies.lines().collect();
    assert_eq!(replies.len(), acked.len() + 1, "{replies:?}");
    assert!(replies[..acked.len()].iter().all(|r| *r == "OK"), "SET on {}: {replies:?}", victim.addr);
    assert!(replies[acked.len()].parse::<u32>().unwrap_or(0) >= 1, "WAIT 1 5000: {}", replies[acked.len()]);
    let victim_container = container_of(&project, &victim.addr);
    run_ok("docker", &["stop", &victim_container]);
    let survivor = nodes.iter().find(|n| n.id != victim.id).map(|n| n.addr.clone()).expect("another node");
    eventually("the replica promoted and cluster_state:ok", || {
        let state = info_field(&survivor, "cluster_state").unwrap_or_default();
        let nodes = cluster_nodes(&survivor);
        let promoted = nodes.iter().any(|n| n.id == heir && n.is_master() && n.slots > 0);
        if state == "ok" && promoted {
            Ok(())
        } else {
            Err(format!("cluster_state {state}, replica promoted: {promoted}"))
        }
    });
    eventually("keys after the failover", || read_keys(&survivor, "key:", KEYS));
    for k in &acked {
        let got = node_cmd_c(&survivor, &["GET", k]);
        assert_eq!(got.trim(), format!("value-of-{k}"), "acknowledged {k} after the failover");
    }

    // ... and comes back under whatever ports Docker gives it now, as a replica.
    run_ok("docker", &["start", &victim_container]);
    let back = docker_announce(&victim_container, &project.announce_ip);
    eprintln!("compose: the stopped master was {} and is back at {back}", victim.addr);
    let nodes = eventually("the old master back as a replica", || {
        let nodes = settled(&project, 9)?;
        match nodes.iter().find(|n| n.id == victim.id) {
            Some(n) if n.addr == back && n.is_replica() => Ok(nodes),
            other => Err(format!("the old master is {other:?}")),
        }
    });
    assert!(nodes.iter().all(|n| !n.flags.contains("fail")), "{nodes:?}");
    read_keys(&survivor, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the restart: {e}"));

    // 5. A node's redis-server dies (SIGKILL from the host): Docker starts it again, it rejoins under its own
    // id and the cluster is whole.
    let (masters, _) = masters_and_replicas(&nodes);
    let crashed = masters.first().map(|m| (*m).clone()).expect("a master");
    let crashed_container = container_of(&project, &crashed.addr);
    let pid = run_ok("docker", &["inspect", "-f", "{{.State.Pid}}", &crashed_container]);
    run_ok("kill", &["-KILL", &pid]);
    let back = eventually("the crashed node running again and back in the cluster", || {
        let state = run_ok("docker", &["inspect", "-f", "{{.State.Running}} {{.RestartCount}}", &crashed_container]);
        if state != "true 1" {
            return Err(format!("running, restarts: {state}"));
        }
        let nodes = settled(&project, 9)?;
        let now = docker_announce(&crashed_container, &project.announce_ip);
        match nodes.iter().find(|n| n.id == crashed.id) {
            Some(n) if n.addr == now && (n.is_master() || n.is_replica()) => Ok(now),
            other => Err(format!("the crashed node is {other:?}")),
        }
    });
    // Its address may have changed with the restart: ask through it.
    read_keys(&back, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the crash: {e}"));

    // 6. With a node stopped, status still answers from a running one (docker-compose v1 lists the stopped
    // container first: it is number 1) ...
    let project_label = format!("label=com.docker.compose.project={}", project.name);
    let first = run_ok(
        "docker",
        &[
            "ps",
            "-q",
            "--filter",
            &project_label,
            "--filter",
            "label=com.docker.compose.service=redis",
            "--filter",
            "label=com.docker.compose.container-number=1",
        ],
    );
    assert!(!first.is_empty(), "node number 1 runs");
    run_ok("docker", &["stop", &first]);
    let status = project.cluster_sh(&["status"]);
    assert!(
        status.status.success()
            && String::from_utf8_lossy(&status.stdout).lines().any(|l| l.starts_with("cluster_state:")),
        "status with node 1 stopped: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    // ... and `up` with fewer nodes than exist refuses, as scale does, rather than remove nodes that hold slots.
    let all_nodes = project.containers("redis", true).len();
    let shrink = project.cluster_sh(&["up", "6"]);
    let said = String::from_utf8_lossy(&shrink.stderr);
    assert!(!shrink.status.success(), "up 6 on {all_nodes} nodes succeeded: {said}");
    assert!(said.contains("shrinking is not supported"), "up 6 on {all_nodes} nodes says: {said}");
    assert_eq!(project.containers("redis", true).len(), all_nodes, "up 6 removed nodes");
    run_ok("docker", &["start", &first]);
    let nodes = eventually("the stopped node back", || {
        let running = project.expected_members().len();
        if running == 9 {
            settled(&project, 9)
        } else {
            Err(format!("{running} nodes run"))
        }
    });
    read_keys(&nodes[0].addr, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the stop: {e}"));

    // 7. Down leaves nothing of the project behind.
    let volumes = volumes_of(&project.containers("redis", true));
    assert!(volumes.len() >= 9, "each node has its own /data volume: {volumes:?}");
    project.cluster_sh_ok(&["down"]);
    assert_eq!(project.leftovers(&volumes), Vec::<String>::new(), "left behind by down");
}

#[test]
fn compose_cluster_of_twelve_forms_in_bounded_time() {
    let _serial = one_at_a_time();
    let project = Project::new();
    let (line, took) = project.cluster_sh_ok(&["up", "12"]);
    eprintln!("compose: up 12: {line}; {:.1} s wall time", took.as_secs_f64());
    eventually("6 masters and 6 replicas", || {
        let nodes = settled(&project, 12)?;
        let (masters, replicas) = masters_and_replicas(&nodes);
        if masters.len() == 6 && replicas.len() == 6 {
            Ok(())
        } else {
            Err(format!("{} masters, {} replicas", masters.len(), replicas.len()))
        }
    });
    let volumes = volumes_of(&project.containers("redis", true));
    project.cluster_sh_ok(&["down"]);
    assert_eq!(project.leftovers(&volumes), Vec::<String>::new(), "left behind by down");
}

#[test]
fn compose_cluster_with_a_password_serves_only_clients_that_give_it() {
    let _serial = one_at_a_time();
    let mut project = Project::new();
    let password = format!("secret-{}", common::unique());
    project.password = Some(password.clone());
    let (line, took) = project.cluster_sh_ok(&["up", "3"]);
    eprintln!("compose: up 3 with a password: {line}; {:.1} s wall time", took.as_secs_f64());

    let members = project.expected_members();
    assert_eq!(members.len(), 3, "{members:?}");
    let with_password = |addr: &str, args: &[&str]| {
        let (ip, port) = addr.split('@').next().and_then(|a| a.rsplit_once(':')).expect("ip:port@bus");
        let out = Command::new("redis-cli")
            .args(["-h", ip, "-p", port])
            .args(args)
            .env("REDISCLI_AUTH", &password)
            .output()
            .expect("redis-cli is missing: apt-get install redis-tools (.ci/run does)");
        without_redirections(&out.stdout)
    };
    for m in &members {
        let stranger = node_cmd(m, &["set", "k", "v"]);
        assert!(stranger.contains("NOAUTH"), "{m} without the password answers: {stranger}");
        let info = with_password(m, &["cluster", "info"]);
        assert!(info.lines().any(|l| l == "cluster_state:ok"), "{m} with the password: {info}");
        // redis-server puts its title over its command line: the password is not left in ps.
        let id = container_of(&project, m);
        let pid = run_ok("docker", &["inspect", "-f", "{{.State.Pid}}", &id]);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the command line of redis-server");
        assert!(!String::from_utf8_lossy(&cmdline).contains(&password), "the password is in ps: {cmdline:?}");
    }
    let entry = members.iter().next().expect("a node");
    assert_eq!(with_password(entry, &["-c", "set", "{a}k", "v"]).trim(), "OK");
    assert_eq!(with_password(entry, &["-c", "get", "{a}k"]).trim(), "v");
    let status = project.cluster_sh(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).lines().any(|l| l == "cluster_state:ok"),
        "status with a password: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );

    let volumes = volumes_of(&project.containers("redis", true));
    project.cluster_sh_ok(&["down"]);
    assert_eq!(project.leftovers(&volumes), Vec::<String>::new(), "left behind by down");
}

/// Slots a master marks as migrating or importing (`[slot->-id]`, `[slot-<-id]` in its own CLUSTER NODES line),
/// asked of every master the entry node knows.
fn open_slots(entry: &str) -> Vec<String> {
    cluster_nodes(entry)
        .iter()
        .filter(|n| n.is_master())
        .flat_map(|n| {
            node_cmd(&n.addr, &["cluster", "nodes"])
                .lines()
                .filter(|l| l.contains("myself"))
                .flat_map(|l| {
                    l.split_whitespace().filter(|f| f.starts_with('[')).map(str::to_string).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The host port Docker published for a container's port, once it has.
fn published_port(id: &str, port: u16) -> Option<u16> {
    let out = run("docker", &["port", id, &format!("{port}/tcp")]);
    String::from_utf8_lossy(&out.stdout).lines().next()?.rsplit(':').next()?.trim().parse().ok()
}

/// A command through one node with redirections followed.
fn node_cmd_c(addr: &str, args: &[&str]) -> String {
    let mut all = vec!["-c"];
    all.extend_from_slice(args);
    node_cmd(addr, &all)
}
