//! A compose cluster seen from the host: one compose project per test, run with compose/cluster.sh and
//! removed when dropped, its nodes asked with redis-cli through their published ports.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{published_announce, run, run_ok};

/// How long the cluster may take to settle after each step.
pub const SETTLE: Duration = Duration::from_secs(240);
/// A cluster.sh or swarm.sh step that takes longer has the manager's log printed, to show where the time went.
pub const SLOW_STEP: Duration = Duration::from_secs(90);
/// How long a cluster.sh that may build its images first may take to reach a step.
pub const BUILD_AND_SETTLE: Duration = Duration::from_secs(600);
/// Keys written from the host and read back after every step.
pub const KEYS: usize = 1000;

/// One cluster of a test binary at a time under `cargo test`, which runs a binary's tests as threads of one
/// process; cargo nextest runs each test as a process and two compose clusters at once (.config/nextest.toml).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One compose project of the test's own, removed with `cluster.sh down` when dropped.
pub struct Project {
    pub name: String,
    pub discover_port: u16,
    pub announce_ip: String,
    /// Environment for every cluster.sh call: REDIS_PASSWORD, TLS=1, DISCOVER_PASSWORD and so on.
    pub env: BTreeMap<&'static str, String>,
    /// TLS_DIR, when the project speaks TLS: removed with the project.
    pub tls_dir: Option<PathBuf>,
}

impl Project {
    pub fn new() -> Project {
        // Another compose project may run beside it, a swarm test may not (see .config/nextest.toml).
        super::hold_engine(super::Engine::Shared);
        let name = format!("rdtest{}x{}", std::process::id(), super::unique() % 1_000_000);
        // Its own rediscover port, so that a cluster already running on this host is left alone; below the
        // ephemeral range, where Docker picks the nodes' host ports.
        let discover_port = (0..100)
            .map(|i| 20_000 + ((super::unique() + i) % 10_000) as u16)
            .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
            .expect("a free port for rediscover between 20000 and 29999");
        let announce_ip = rediscover::config::resolve_announce_ip(None, None)
            .expect("this host has a default route (rediscover announces its address)")
            .to_string();
        Project { name, discover_port, announce_ip, env: BTreeMap::new(), tls_dir: None }
    }

    pub fn cluster_sh_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/cluster.sh"));
        command
            .args(args)
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env("DISCOVER_PORT", self.discover_port.to_string())
            .env("WAIT_SECONDS", SETTLE.as_secs().to_string());
        for name in [
            "REDIS_PASSWORD",
            "TLS",
            "TLS_DIR",
            "DISCOVER_TLS",
            "DISCOVER_PASSWORD",
            "ANNOUNCE_HOSTNAME",
            "ANNOUNCE_IP",
        ] {
            command.env_remove(name);
        }
        command.envs(&self.env);
        command
    }

    /// Makes the project speak TLS, with certificates cluster.sh makes in a directory of its own.
    pub fn with_tls(mut self) -> Project {
        let dir = std::env::temp_dir().join(format!("{}-tls", self.name));
        self.env.insert("TLS", "1".to_string());
        self.env.insert("TLS_DIR", dir.display().to_string());
        self.tls_dir = Some(dir);
        self
    }

    /// A file of TLS_DIR.
    pub fn tls_file(&self, name: &str) -> String {
        self.tls_dir.as_ref().expect("a TLS project").join(name).display().to_string()
    }

    pub fn cluster_sh(&self, args: &[&str]) -> Output {
        self.cluster_sh_command(args).output().expect("run compose/cluster.sh")
    }

    /// Starts cluster.sh without waiting for it; `cluster_sh_finish` waits.
    pub fn cluster_sh_start(&self, args: &[&str]) -> Running {
        let child = self
            .cluster_sh_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run compose/cluster.sh");
        Running { child: Some(child), args: args.iter().map(|a| a.to_string()).collect(), start: Instant::now() }
    }

    /// Waits for a cluster.sh started with `cluster_sh_start`, which must succeed; as `cluster_sh_ok`.
    pub fn cluster_sh_finish(&self, mut running: Running) -> (String, Duration) {
        let child = running.child.take().expect("a started cluster.sh is waited for once");
        let out = child.wait_with_output().expect("wait for compose/cluster.sh");
        let args: Vec<&str> = running.args.iter().map(String::as_str).collect();
        self.checked(&args, out, running.start.elapsed())
    }

    /// Runs cluster.sh, which must succeed; returns its standard output and the wall time.
    pub fn cluster_sh_ok(&self, args: &[&str]) -> (String, Duration) {
        let start = Instant::now();
        let out = self.cluster_sh(args);
        self.checked(args, out, start.elapsed())
    }

    pub fn checked(&self, args: &[&str], out: Output, elapsed: Duration) -> (String, Duration) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed:\n{}\n{}\nmanager log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stdout),
            self.manager_log()
        );
        if elapsed > SLOW_STEP {
            eprintln!("cluster.sh {args:?} took {elapsed:.1?}; manager log:\n{}", self.manager_log());
        }
        (String::from_utf8_lossy(&out.stdout).trim_end().to_string(), elapsed)
    }

    pub fn manager_log(&self) -> String {
        self.log("manager")
    }

    /// All the manager logged, across its restarts.
    pub fn whole_manager_log(&self) -> String {
        self.log_lines("manager", None)
    }

    /// The last lines a service's first container logged.
    pub fn log(&self, service: &str) -> String {
        self.log_lines(service, Some(400))
    }

    fn log_lines(&self, service: &str, lines: Option<usize>) -> String {
        self.containers(service, true).first().map(|id| super::container_log(id, lines)).unwrap_or_default()
    }

    /// Container ids of a service, running ones only unless `all`.
    pub fn containers(&self, service: &str, all: bool) -> Vec<String> {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={service}");
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &project, "--filter", &service];
        if all {
            args.push("-a");
        }
        run_ok("docker", &args).lines().map(str::to_string).collect()
    }

    /// The announce string of every running Redis node, as Docker publishes its ports; a container that is
    /// restarting publishes none, and is left out.
    pub fn expected_members(&self) -> BTreeSet<String> {
        self.containers("redis", false).iter().filter_map(|id| published_announce(id, &self.announce_ip)).collect()
    }

    /// Whatever of the project is left: containers, networks, built images and the given volumes.
    pub fn leftovers(&self, volumes: &[String]) -> Vec<String> {
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
    pub fn restart_manager(&self) {
        let manager = self.containers("manager", false);
        let id = manager.first().expect("the manager runs");
        run_ok("docker", &["restart", "-t", "0", id]);
    }

    /// Restarts the manager the moment `now` holds, while `running` has not finished; panics when it finishes
    /// first, since then nothing was interrupted.
    pub fn restart_manager_when(&self, running: &mut Running, what: &str, mut now: impl FnMut() -> bool) {
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
pub struct Running {
    child: Option<Child>,
    args: Vec<String>,
    start: Instant,
}

impl Running {
    pub fn finished(&mut self) -> bool {
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
            eprintln!("first node's log of {}:\n{}", self.name, self.log("redis"));
        }
        let _ = self.cluster_sh(&["down"]);
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// redis-cli from the host; `stdin` lines are sent as commands, one reply a line comes back.
pub fn redis_cli(args: &[&str], stdin: &str) -> String {
    redis_cli_env(args, stdin, &[]).0
}

/// redis-cli from the host with extra environment: its standard output (without the lines `-c` prints for the
/// redirections it follows) and its standard error.
pub fn redis_cli_env<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: &str, env: &[(&str, &str)]) -> (String, String) {
    let mut child = Command::new("redis-cli")
        .args(args)
        .envs(env.iter().copied())
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
    (without_redirections(&out.stdout), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Output of redis-cli -c without the line it prints for each redirection it follows.
pub fn without_redirections(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .replace('\r', "")
        .lines()
        .filter(|l| !l.starts_with("-> Redirected"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A command to one node, by its `ip:port@bus` or `ip:port`.
pub fn node_cmd(addr: &str, args: &[&str]) -> String {
    let addr = addr.split('@').next().unwrap_or(addr);
    let (ip, port) = addr.rsplit_once(':').expect("an address is ip:port");
    let mut all = vec!["-h", ip, "-p", port];
    all.extend_from_slice(args);
    without_redirections(&run("redis-cli", &all).stdout)
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub addr: String,
    pub flags: String,
    pub master_id: String,
    pub slots: usize,
}

impl NodeLine {
    pub fn is_master(&self) -> bool {
        self.flags.contains("master") && !self.flags.contains("fail")
    }
    pub fn is_replica(&self) -> bool {
        self.flags.contains("slave") && !self.flags.contains("fail")
    }
}

pub fn cluster_nodes(addr: &str) -> Vec<NodeLine> {
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

pub fn info_field(addr: &str, field: &str) -> Option<String> {
    node_cmd(addr, &["cluster", "info"]).lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
}

/// Polls `check` until it returns Ok, or panics with its last complaint after `SETTLE`.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
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
pub fn settled(project: &Project, known: usize) -> Result<Vec<NodeLine>, String> {
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
    replicas_in_sync(&nodes)?;
    let seen: BTreeSet<String> = nodes.iter().filter(|l| !l.flags.contains("fail")).map(|l| l.addr.clone()).collect();
    if seen != members {
        return Err(format!("cluster nodes {seen:?} but Docker publishes {members:?}"));
    }
    // A node the manager adds as a replica is a master without slots for a moment (add-node, then REPLICATE),
    // perhaps after the rebalance check above saw it still in its handshake.
    if let Some(idle) = nodes.iter().find(|n| n.is_master() && n.slots == 0 && !n.flags.contains("fail")) {
        return Err(format!("{} is a master without slots: still being placed", idle.addr));
    }
    Ok(nodes)
}

/// Writes `KEYS` keys through one published port with redis-cli -c, which follows the redirections.
pub fn write_keys(entry: &str, prefix: &str) {
    let addr = entry.split('@').next().unwrap_or(entry);
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let commands: String = (0..KEYS).map(|i| format!("SET {prefix}{i} value-{i}\n")).collect();
    let replies = redis_cli(&["-c", "-h", ip, "-p", port], &commands);
    let ok = replies.lines().filter(|l| *l == "OK").count();
    assert_eq!(ok, KEYS, "SET replies through {addr}: {}", replies.lines().take(5).collect::<Vec<_>>().join(" | "));
}

/// Reads the keys back through any node.
pub fn read_keys(entry: &str, prefix: &str, count: usize) -> Result<(), String> {
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

pub fn masters_and_replicas(nodes: &[NodeLine]) -> (Vec<&NodeLine>, Vec<&NodeLine>) {
    (nodes.iter().filter(|n| n.is_master() && n.slots > 0).collect(), nodes.iter().filter(|n| n.is_replica()).collect())
}

pub fn container_of(project: &Project, addr: &str) -> String {
    project
        .containers("redis", false)
        .into_iter()
        .find(|id| published_announce(id, &project.announce_ip).as_deref() == Some(addr))
        .unwrap_or_else(|| panic!("no running container publishes {addr}"))
}

pub fn volumes_of(ids: &[String]) -> Vec<String> {
    ids.iter()
        .flat_map(|id| {
            run_ok("docker", &["inspect", "-f", "{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}", id])
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A command through one node with redirections followed.
pub fn node_cmd_c(addr: &str, args: &[&str]) -> String {
    let mut all = vec!["-c"];
    all.extend_from_slice(args);
    node_cmd(addr, &all)
}

/// Writes 200 keys to one master, all with one hash tag it serves, and has `WAIT 1` confirm that a replica
/// holds them; returns the keys, whose values are `value-of-<key>`.
pub fn write_acknowledged(master: &str, prefix: &str) -> Vec<String> {
    // One hash tag the master serves, so that every key goes to it and one WAIT covers them all.
    let tag = (0..1000)
        .map(|n| format!("{{t{n}}}"))
        .find(|t| !node_cmd(master, &["GET", &format!("{prefix}{t}:0")]).contains("MOVED"))
        .expect("a hash tag the master serves");
    let acked: Vec<String> = (0..200).map(|i| format!("{prefix}{tag}:{i}")).collect();
    let mut commands: String = acked.iter().map(|k| format!("SET {k} value-of-{k}\n")).collect();
    commands.push_str("WAIT 1 5000\n");
    let (ip, port) = master.split('@').next().and_then(|a| a.rsplit_once(':')).expect("ip:port@bus");
    let replies = redis_cli(&["-h", ip, "-p", port], &commands);
    let replies: Vec<&str> = replies.lines().collect();
    assert_eq!(replies.len(), acked.len() + 1, "{replies:?}");
    assert!(replies[..acked.len()].iter().all(|r| *r == "OK"), "SET on {master}: {replies:?}");
    assert!(replies[acked.len()].parse::<u32>().unwrap_or(0) >= 1, "WAIT 1 5000: {}", replies[acked.len()]);
    acked
}

/// Reads back keys written by `write_acknowledged`, following redirections from `entry`.
pub fn read_acknowledged(entry: &str, keys: &[String]) -> Result<(), String> {
    for k in keys {
        let got = node_cmd_c(entry, &["GET", k]);
        if got.trim() != format!("value-of-{k}") {
            return Err(format!("acknowledged {k} reads {:?}", got.trim()));
        }
    }
    Ok(())
}

/// A master that has a replica, and the id of that replica.
pub fn replicated_master(nodes: &[NodeLine]) -> (NodeLine, String) {
    replicated_masters(nodes).into_iter().next().expect("a master with a replica")
}

/// Every master that has a replica, each with the id of one of its replicas.
pub fn replicated_masters(nodes: &[NodeLine]) -> Vec<(NodeLine, String)> {
    let (masters, replicas) = masters_and_replicas(nodes);
    masters
        .iter()
        .filter_map(|m| replicas.iter().find(|r| r.master_id == m.id).map(|r| ((*m).clone(), r.id.clone())))
        .collect()
}

/// Ok once every replica in `nodes` is in sync with its master ([`replica_in_sync`]).
pub fn replicas_in_sync(nodes: &[NodeLine]) -> Result<(), String> {
    let (masters, replicas) = masters_and_replicas(nodes);
    for replica in replicas {
        let master = masters.iter().find(|m| m.id == replica.master_id).ok_or_else(|| {
            format!("{} replicates {}, not a master that serves slots", replica.addr, replica.master_id)
        })?;
        replica_in_sync(&replica.addr, &master.addr)?;
    }
    Ok(())
}

/// Ok once the node at `replica` has its replication link up, to `master`'s address: a replica can go on asking
/// an address its master has left, which CLUSTER NODES does not show.
pub fn replica_in_sync(replica: &str, master: &str) -> Result<(), String> {
    let info = node_cmd(replica, &["info", "replication"]);
    let field = |name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(':'))).unwrap_or_default()
    };
    let from = format!("{}:{}", field("master_host"), field("master_port"));
    let at = master.split('@').next().unwrap_or_default();
    if field("master_link_status") == "up" && from == at {
        Ok(())
    } else {
        Err(format!("{replica} replicates from {from}, link {:?}; its master is at {at}", field("master_link_status")))
    }
}

/// Fails when a manager's log shows a move refused by a master that saw the cluster down (`CLUSTERDOWN`): the
/// manager moves keys only once every master reports cluster_state:ok.
pub fn assert_no_refused_move(log: &str) {
    assert!(!log.contains("CLUSTERDOWN"), "a move was refused by a master that saw the cluster down:\n{log}");
}

/// Ok once `survivor` reports cluster_state:ok and sees `heir` as a master that serves slots.
pub fn promoted(survivor: &str, heir: &str) -> Result<(), String> {
    let state = info_field(survivor, "cluster_state").unwrap_or_default();
    let promoted = cluster_nodes(survivor).iter().any(|n| n.id == heir && n.is_master() && n.slots > 0);
    if state == "ok" && promoted {
        Ok(())
    } else {
        Err(format!("cluster_state {state}, replica promoted: {promoted}"))
    }
}
