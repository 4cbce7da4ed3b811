//! Extra Docker engines on this machine, each in its own network namespace, that join the host's swarm as workers:
//! several real Docker hosts for the tests, removed again by name and by PID whatever way a test ends.
//!
//! Each engine is a `dockerd` of its own (data-root, exec-root, pidfile and socket under a temporary directory),
//! entered with `nsenter --net` into a network namespace whose `eth0` is one end of a veth pair; the other ends
//! hang on a bridge the fixture adds to the host, with addresses from 198.18.0.0/15 (set aside for benchmark
//! networks). Engines have no default route: they reach each other, the host, and nothing beyond.
//!
//! Everything carries the name of its run (`rdsw` and six hex digits): namespaces, links, cgroups, the temporary
//! directory, the engines' host names (their swarm node names) and the services tests create. One run at a time
//! holds the machine, across processes, so whatever carries the prefix when a run begins is a leftover of a run
//! that was killed, and is swept away.
//!
//! ```ignore
//! let host = Host::claim(); // this test alone holds the host's swarm; leftovers of killed runs are gone
//! let mut engines = Engines::start(&host, 2); // two more Docker hosts, each answering on its own socket
//! engines.load(TEST_IMAGE); // tasks find the image without a registry
//! engines.join_swarm(); // the host manages, the engines work; the drop undoes both
//! let web = Service::create(&engines, "web", &["--replicas", "3"], TEST_IMAGE, &["sleep", "3600"]);
//! engines.stop(0); // a host lost; engines.start_again(0) brings it back
//! ```
#![allow(dead_code, reason = "each test file uses a different part of the fixture")]

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// What every name of the fixture begins with, followed by the run's hex digits.
pub const PREFIX: &str = "rdsw";
/// How many hex digits name a run: the longest name, a veth `rdsw123456v1`, fits the 15 bytes of a link name.
const RUN_DIGITS: usize = 6;
/// The engine label that names an engine, seen in the swarm's node list as `Description.Engine.Labels`.
pub const ENGINE_LABEL: &str = "io.rediscover.test.engine";
/// How long an engine may take to answer on its socket.
const ENGINE_START: Duration = Duration::from_secs(30);
/// How long a swarm node may take to reach a state (the default heartbeat marks a lost node down in ~15 s).
pub const NODE_STATE: Duration = Duration::from_secs(60);
/// The heartbeat of a swarm the fixture creates: a lost node is marked down within a few of them.
const HEARTBEAT: &str = "2s";
/// The abstract Unix socket whose binding means "this process holds the extra engines".
const MACHINE_LOCK: &str = "rediscover-engines";
/// How long to wait for another process to give the machine up.
const MACHINE_LOCK_WAIT: Duration = Duration::from_secs(600);
/// Where network namespaces are bound.
const NETNS_DIR: &str = "/var/run/netns";
/// The engine's start in its namespaces: `$0` its host name, `$1` its socket, then the daemon's command line. The
/// socket is bound over /var/run/docker.sock in the engine's private mount namespace as soon as it appears (a socket
/// left by a killed daemon is removed first: the bind must take the new one).
const OWN_SOCKET: &str = r#"hostname "$0" || exit 1
sock=$1
shift
rm -f "$sock"
(i=0
 while [ ! -S "$sock" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
 mount --bind "$sock" /var/run/docker.sock) &
exec "$@""#;
/// The file in a run's directory that records a swarm the fixture created on the host.
const HOST_SWARM_MARK: &str = "host-swarm";

/// The host engine's swarm, held by one test at a time across all processes on this machine.
///
/// Claiming it sweeps away whatever a killed run left behind; the extra engines borrow it.
pub struct Host {
    _turn: MutexGuard<'static, ()>,
}

/// One swarm node as the host's manager lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its swarm ID.
    pub id: String,
    /// Its host name (an engine's name, for the extra engines).
    pub hostname: String,
    /// `Status.Addr`: the address the manager sees it at.
    pub addr: String,
    /// `Status.State`: ready, down, unknown, disconnected.
    pub state: String,
}

/// The host's swarm state, as far as the fixture may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmState {
    /// `Swarm.LocalNodeState`: inactive, active, pending, error, locked.
    pub local_node_state: String,
    /// The host's node ID, empty outside a swarm.
    pub node_id: String,
    /// Every node's ID, sorted; empty unless the host is a manager.
    pub nodes: Vec<String>,
    /// Whether the network a swarm creates on each node (docker_gwbridge) exists.
    pub gwbridge: bool,
}

impl Host {
    /// Waits until no other test (in this process or another) holds the machine's extra engines, then removes
    /// whatever a killed run left behind.
    pub fn claim() -> Host {
        static IN_PROCESS: Mutex<()> = Mutex::new(());
        static ACROSS_PROCESSES: OnceLock<UnixListener> = OnceLock::new();
        let turn = IN_PROCESS.lock().unwrap_or_else(PoisonError::into_inner);
        ACROSS_PROCESSES.get_or_init(machine_lock);
        crate::common::hold_engine(crate::common::Engine::Alone);
        check_tools();
        sweep(PREFIX);
        Host { _turn: turn }
    }

    /// The host's swarm state now.
    pub fn swarm(&self) -> SwarmState {
        let info = docker_ok(None, &["info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}"]);
        let mut fields = info.split_whitespace();
        let local_node_state = fields.next().unwrap_or_default().to_string();
        let node_id = fields.next().unwrap_or_default().to_string();
        let mut nodes: Vec<String> = self.nodes().into_iter().map(|n| n.id).collect();
        nodes.sort();
        let gwbridge = network_exists("docker_gwbridge");
        SwarmState { local_node_state, node_id, nodes, gwbridge }
    }

    /// The swarm's nodes as the host's manager lists them; none when the host manages no swarm.
    pub fn nodes(&self) -> Vec<Node> {
        swarm_nodes().into_iter().map(|(node, _)| node).collect()
    }
}

/// The host's engine alone as a swarm manager, unless it manages one already: a swarm it made is left when
/// dropped (with docker_gwbridge if that was new), so the host's swarm state is as the test found it.
pub struct SingleNodeSwarm {
    made: bool,
    gwbridge: bool,
}

impl SingleNodeSwarm {
    pub fn init(host: &Host) -> SingleNodeSwarm {
        let before = host.swarm();
        match before.local_node_state.as_str() {
            "inactive" => {
                let ip = rediscover::config::resolve_announce_ip(None, None)
                    .expect("this host has a default route (the swarm advertises its address)")
                    .to_string();
                docker_ok(None, &["swarm", "init", "--advertise-addr", &ip]);
                SingleNodeSwarm { made: true, gwbridge: before.gwbridge }
            }
            "active" => SingleNodeSwarm { made: false, gwbridge: before.gwbridge },
            other => panic!("this engine's swarm state is '{other}': make it a manager or leave the swarm, and rerun"),
        }
    }
}

impl Drop for SingleNodeSwarm {
    fn drop(&mut self) {
        if self.made {
            let _ = docker(None, &["swarm", "leave", "--force"]);
            if !self.gwbridge {
                let _ = docker(None, &["network", "rm", "docker_gwbridge"]);
            }
        }
    }
}

/// One extra Docker engine: a network namespace with an address on the fixture's bridge and a `dockerd` in it.
pub struct Engine {
    /// Its name: network namespace, host name (its swarm node name), engine label and cgroup parent.
    pub name: String,
    /// Its address on the bridge, the one it advertises to the swarm.
    pub addr: Ipv4Addr,
    /// Its swarm node ID once it joined.
    pub node_id: Option<String>,
    dir: PathBuf,
    driver: String,
    daemon: Option<Child>,
}

impl Engine {
    /// The `-H` value that talks to it.
    pub fn host_arg(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Runs the docker CLI against this engine; fails the test unless it succeeds. Returns trimmed stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        docker_ok(Some(&self.host_arg()), args)
    }

    /// The PIDs of everything it runs (daemon, containerd, shims, containers) right now.
    pub fn pids(&self) -> Vec<u32> {
        processes(&self.name)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// Starts its daemon on its data-root and waits until it answers.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}; check the temporary directory", self.log().display()));
        let err = log.try_clone().expect("a log file handle can be cloned");
        let dir = |sub: &str| self.dir.join(sub).to_string_lossy().into_owned();
        let label = format!("{ENGINE_LABEL}={}", self.name);
        let cgroup = format!("/{}", self.name);
        // The engine's own networks come from the half of 198.18.0.0/15 the bridge is not in, not from Docker's
        // 172.17.0.0/16 and up, where the host's manager may be.
        let [a, b, _, _] = self.addr.octets();
        let inner = if b == 18 { 19 } else { 18 };
        let bip = format!("{a}.{inner}.0.1/24");
        let pool = format!("base={a}.{inner}.0.0/16,size=24");
        // `ip netns exec` would remount /sys and hide the cgroups; a private mount namespace keeps what the engine
        // mounts out of the host's view, and a UTS namespace gives it its own host name. In that namespace the
        // engine's socket is also at /var/run/docker.sock, once it exists: a container that mounts the socket
        // (rediscover) talks to the engine that runs it, as on a host of its own.
        let socket = self.socket().to_string_lossy().into_owned();
        let child = Command::new("nsenter")
            .arg(format!("--net={NETNS_DIR}/{}", self.name))
            .args(["unshare", "--mount", "--uts", "sh", "-c", OWN_SOCKET, &self.name, &socket])
            .args(["dockerd", "--config-file", &dir("daemon.json"), "--data-root", &dir("data")])
            .args(["--exec-root", &dir("exec"), "--pidfile", &dir("docker.pid"), "-H", &self.host_arg()])
            .args(["--storage-driver", &self.driver, "--label", &label])
            // cgroupfs, whatever the host uses, so that the engine's containers live under a cgroup named after it.
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", &cgroup])
            .args(["--bip", &bip, "--default-address-pool", &pool, "--log-level", "warn"])
            // A swarm task would ask a registry for its image first; there is none, and the engines reach nothing.
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}; apt-get install util-linux"));
        self.daemon = Some(child);
        let deadline = Instant::now() + ENGINE_START;
        while !ping(&self.socket()) {
            let exited = self.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "engine {} did not answer within {ENGINE_START:?} ({}); its log ends:\n{}",
                    self.name,
                    exited.map_or("still running".to_string(), |s| s.to_string()),
                    tail(&self.log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills its daemon, containerd and containers at once, as a host that loses power.
    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        kill_all(&self.name);
    }
}

/// N extra engines on a bridge of their own; removed, with everything they made, when dropped.
pub struct Engines<'h> {
    host: &'h Host,
    run: String,
    dir: PathBuf,
    bridge: String,
    gateway: Ipv4Addr,
    engines: Vec<Engine>,
}

impl<'h> Engines<'h> {
    /// Starts `n` engines (1 to 9) and waits until each answers.
    pub fn start(host: &'h Host, n: usize) -> Engines<'h> {
        // Engine names end in their number, and one must never be the prefix of another.
        assert!((1..=9).contains(&n), "start 1 to 9 extra engines, not {n}");
        let run = format!("{PREFIX}{:0width$x}", unique() & 0xff_ffff, width = RUN_DIGITS);
        let dir = std::env::temp_dir().join(&run);
        let gateway = free_subnet();
        let bridge = format!("{run}br");
        // Built first, so that a failure below still drops it and removes what was made.
        let mut engines = Engines { host, run, dir, bridge, gateway, engines: Vec::new() };
        std::fs::create_dir_all(&engines.dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}; check the temporary directory", engines.dir.display()));
        timed(&format!("{n} engines start"), || {
            engines.add_bridge();
            let driver = docker_ok(None, &["info", "-f", "{{.Driver}}"]);
            for i in 1..=n {
                let engine = engines.add_engine(i, &driver);
                engines.engines.push(engine);
            }
            for engine in &mut engines.engines {
                engine.spawn();
            }
        });
        engines
    }

    /// The run's name: the prefix of everything it made.
    pub fn name(&self) -> &str {
        &self.run
    }

    /// The host's address on the engines' bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The engines, in the order they were started.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// The PIDs of everything the engines run (daemons, containerd, shims, containers) right now.
    pub fn pids(&self) -> Vec<u32> {
        self.engines.iter().flat_map(|e| processes(&e.name)).collect()
    }

    /// Copies an image of the host engine into every engine, as `docker save | docker load`.
    pub fn load(&self, image: &str) {
        timed(&format!("{image} loads into {} engines", self.engines.len()), || {
            let archive = self.dir.join("image.tar");
            docker_ok(None, &["save", "-o", &archive.to_string_lossy(), image]);
            for engine in &self.engines {
                engine.docker(&["load", "-q", "-i", &archive.to_string_lossy()]);
            }
            let _ = std::fs::remove_file(&archive);
        });
    }

    /// Makes the host a swarm manager unless it is one (recording what it was, so that the drop restores it), and
    /// joins every engine as a worker; returns when the manager lists them all ready.
    pub fn join_swarm(&mut self) {
        timed(&format!("{} engines join the host's swarm", self.engines.len()), || {
            let manager = self.host_as_manager();
            let manager_ip = manager.rsplit_once(':').map_or(manager.as_str(), |(ip, _)| ip);
            if !in_subnet(manager_ip, self.gateway) {
                // Engines have no default route: a manager beyond the bridge needs one of its own.
                let (route, via) = (format!("{manager_ip}/32"), self.gateway.to_string());
                for engine in &self.engines {
                    ip(&["-n", &engine.name, "route", "add", &route, "via", &via]);
                }
            }
            let token = docker_ok(None, &["swarm", "join-token", "-q", "worker"]);
            for engine in &mut self.engines {
                let addr = engine.addr.to_string();
                let listen = format!("{addr}:2377");
                let join = ["swarm", "join", "--token", &token, "--advertise-addr", &addr, "--listen-addr", &listen];
                engine.docker(&[&join[..], &[&manager]].concat());
                engine.node_id = Some(engine.docker(&["info", "-f", "{{.Swarm.NodeID}}"]));
            }
            for i in 0..self.engines.len() {
                self.wait_node(i, "ready", NODE_STATE);
            }
        });
    }

    /// Kills engine `i` as a host that loses power: its daemon, containerd and containers. Its namespace, address
    /// and data-root stay, for `start_again`.
    pub fn stop(&mut self, i: usize) {
        self.engines[i].kill();
    }

    /// Starts engine `i` again on the same data-root, as a host that comes back; waits until it answers.
    pub fn start_again(&mut self, i: usize) {
        let engine = &mut self.engines[i];
        timed(&format!("engine {} starts again", engine.name), || engine.spawn());
    }

    /// Cuts engine `i` off the bridge, as a host whose network fails while it runs: its daemon and containers go
    /// on, reaching no other host and reached by none (the host's tests still reach its daemon by its socket).
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]);
    }

    /// Puts engine `i` back on the bridge after [`Engines::cut`].
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "up"]);
    }

    /// The host's end of engine `i`'s link to the bridge.
    fn veth(&self, i: usize) -> String {
        format!("{}v{}", self.run, i + 1)
    }

    /// Waits until the manager lists engine `i`'s node in `state`; returns the node.
    pub fn wait_node(&self, i: usize, state: &str, within: Duration) -> Node {
        let engine = &self.engines[i];
        let id = engine.node_id.clone().unwrap_or_else(|| panic!("engine {} never joined the swarm", engine.name));
        wait_for(&format!("node {} ({id}) {state}", engine.name), within, || {
            match self.host.nodes().into_iter().find(|n| n.id == id) {
                Some(node) if node.state == state => Ok(node),
                other => Err(format!("{other:?}")),
            }
        })
    }

    /// The engine that runs a swarm node, or None for the host's own node.
    pub fn by_node(&self, node_id: &str) -> Option<&Engine> {
        self.engines.iter().find(|e| e.node_id.as_deref() == Some(node_id))
    }

    /// The host's manager address (`ip:port`), after making the host a manager when it was outside any swarm.
    fn host_as_manager(&self) -> String {
        let state = self.host.swarm();
        // Recorded before anything changes, so that even a killed run has it undone by the next claim. The host
        // makes docker_gwbridge when it first runs a task, so it is recorded whether or not the swarm is ours.
        let mark = format!("gwbridge={}\n", state.gwbridge);
        write(&self.dir.join(HOST_SWARM_MARK), &mark);
        match state.local_node_state.as_str() {
            "inactive" => {
                write(&self.dir.join(HOST_SWARM_MARK), &format!("{mark}init=pending\n"));
                let (gateway, listen) = (self.gateway.to_string(), format!("{}:2377", self.gateway));
                let init = ["swarm", "init", "--advertise-addr", &gateway, "--listen-addr", &listen];
                docker_ok(None, &[&init[..], &["--dispatcher-heartbeat", HEARTBEAT]].concat());
                let node = docker_ok(None, &["info", "-f", "{{.Swarm.NodeID}}"]);
                write(&self.dir.join(HOST_SWARM_MARK), &format!("{mark}init={node}\n"));
                listen
            }
            "active" => {
                let manages = docker_ok(None, &["info", "-f", "{{.Swarm.ControlAvailable}}"]);
                assert!(
                    manages == "true",
                    "the host engine is a swarm worker: promote it (docker node promote) or leave the swarm to run these tests"
                );
                let own = "{{range .Swarm.RemoteManagers}}{{if eq .NodeID $.Swarm.NodeID}}{{.Addr}}{{end}}{{end}}";
                docker_ok(None, &["info", "-f", own])
            }
            other => panic!("the host engine's swarm is {other}: repair it or `docker swarm leave` to run these tests"),
        }
    }

    fn add_bridge(&self) {
        ip(&["link", "add", &self.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", self.gateway), "dev", &self.bridge]);
        ip(&["link", "set", &self.bridge, "up"]);
        // Engine to engine crosses the host's FORWARD chain (br_netfilter), whose policy Docker sets to DROP.
        run_ok("iptables", &["-I", "FORWARD", "-i", &self.bridge, "-o", &self.bridge, "-j", "ACCEPT"]);
    }

    fn add_engine(&self, i: usize, driver: &str) -> Engine {
        let name = format!("{}e{i}", self.run);
        let veth = self.veth(i - 1);
        let [a, b, c, _] = self.gateway.octets();
        let addr = Ipv4Addr::new(a, b, c, 10 + i as u8);
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name]);
        ip(&["link", "set", &veth, "master", &self.bridge, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // Its own, empty, configuration: the host's daemon.json names the host's data-root.
        write(&dir.join("daemon.json"), "{}\n");
        Engine { name, addr, node_id: None, dir, driver: driver.to_string(), daemon: None }
    }
}

impl Drop for Engines<'_> {
    fn drop(&mut self) {
        let start = Instant::now();
        for engine in &mut self.engines {
            if let Some(mut daemon) = engine.daemon.take() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        sweep(&self.run);
        eprintln!("engines {}: removed in {:.1} s", self.run, start.elapsed().as_secs_f64());
    }
}

/// A swarm service of the test's own, named after the run; removed when dropped.
pub struct Service {
    /// Its name.
    pub name: String,
}

/// One running task of a service.
#[derive(Debug, Clone)]
pub struct Task {
    /// The node it runs on.
    pub node_id: String,
    /// Its container, on that node's engine.
    pub container_id: String,
}

impl Service {
    /// `docker service create` on the host's manager with these flags, image and command; does not wait.
    /// The image is named by its ID, so that no node asks a registry for it.
    pub fn create(engines: &Engines, name: &str, flags: &[&str], image: &str, command: &[&str]) -> Service {
        let name = format!("{}-{name}", engines.run);
        let id = docker_ok(None, &["image", "inspect", "-f", "{{.Id}}", image]);
        let mut args = vec!["service", "create", "--detach", "--no-resolve-image", "--name", &name];
        args.extend_from_slice(flags);
        args.push(&id);
        args.extend_from_slice(command);
        docker_ok(None, &args);
        Service { name }
    }

    /// Its tasks whose container runs now.
    pub fn running(&self) -> Vec<Task> {
        let ids =
            docker_ok(None, &["service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", &self.name]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let states = docker_ok(None, &[&["inspect", "-f", "{{.ID}} {{.Status.State}}"][..], &ids].concat());
        let running: Vec<&str> =
            states.lines().filter_map(|l| l.strip_suffix(" running")).filter(|id| !id.contains(' ')).collect();
        if running.is_empty() {
            return Vec::new();
        }
        // Only a task that has been given a node and a container has these fields (and a missing one fails the
        // template), so they are read for running tasks alone.
        let format = "{{.NodeID}} {{.Status.ContainerStatus.ContainerID}}";
        let out = docker_ok(None, &[&["inspect", "-f", format][..], &running].concat());
        out.lines()
            .filter_map(|line| {
                let (node, container) = line.split_once(' ')?;
                Some(Task { node_id: node.to_string(), container_id: container.to_string() })
            })
            .collect()
    }

    /// Waits until `n` tasks run; returns them.
    pub fn wait_running(&self, n: usize, within: Duration) -> Vec<Task> {
        wait_for(&format!("{n} tasks of {} running", self.name), within, || {
            let tasks = self.running();
            if tasks.len() == n {
                Ok(tasks)
            } else {
                Err(format!("{tasks:?}"))
            }
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["service", "rm", &self.name]).output();
    }
}

/// Everything that carries `prefix` and is still there: processes, swarm nodes and services, iptables rules,
/// network namespaces, links, cgroups, temporary directories. Empty after a clean drop.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    found.extend(processes(prefix).into_iter().map(|p| format!("process {p}: {}", cmdline(p))));
    found.extend(swarm_nodes().into_iter().filter(|(_, e)| carries(e, prefix)).map(|(n, _)| format!("node {n:?}")));
    found.extend(services(prefix).into_iter().map(|s| format!("service {s}")));
    found.extend(forward_rules(prefix).into_iter().map(|r| format!("iptables FORWARD {}", r.join(" "))));
    found.extend(netns(prefix).into_iter().map(|n| format!("netns {n}")));
    found.extend(links(prefix).into_iter().map(|l| format!("link {l}")));
    found.extend(cgroups(prefix).into_iter().map(|c| format!("cgroup {}", c.display())));
    found.extend(mounts(prefix).into_iter().map(|m| format!("mount {m}")));
    found.extend(run_dirs(prefix).into_iter().map(|d| format!("directory {}", d.display())));
    found
}

/// Prints how long `what` took and returns its result.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("engines: {what}: {:.2} s", start.elapsed().as_secs_f64());
    out
}

/// Polls `probe` every 100 ms until it is `Ok`; after `within`, fails the test saying `what` and the last `Err`.
pub fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(found) => return found,
            Err(last) if Instant::now() > deadline => {
                panic!("{what} within {within:?}, last seen {last}: see `docker node ls` and `docker service ps`")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Removes everything that carries `prefix`, in the order that lets each part go: processes first (so nothing
/// holds a mount, a namespace or a cgroup), then what the swarm knows, then the host's network plumbing, cgroups
/// and directories. Failures are printed, never raised: this runs in `drop`, maybe while a test panics.
fn sweep(prefix: &str) {
    kill_all(prefix);
    for service in services(prefix) {
        quiet("docker", &["service", "rm", &service]);
    }
    for (node, _) in swarm_nodes().into_iter().filter(|(_, engine)| carries(engine, prefix)) {
        quiet("docker", &["node", "rm", "--force", &node.id]);
    }
    for dir in run_dirs(prefix) {
        restore_host_swarm(&dir);
    }
    for rule in forward_rules(prefix) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        quiet("iptables", &[&["-D", "FORWARD"][..], &rule].concat());
    }
    // A veth goes with its peer, so the links go before the namespaces that hold their peers.
    for link in links(prefix) {
        quiet("ip", &["link", "delete", &link]);
    }
    for ns in netns(prefix) {
        quiet("ip", &["netns", "delete", &ns]);
    }
    for cgroup in cgroups(prefix) {
        remove_cgroup(&cgroup);
    }
    // The engines mount in a private mount namespace, which goes with their processes: a mount the host sees
    // under a run's directory is a surprise, and must go before the directory is deleted through it.
    for mount in mounts(prefix) {
        quiet("umount", &["--lazy", &mount]);
    }
    for dir in run_dirs(prefix) {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("engines: cannot remove {}: {e}; remove it by hand", dir.display());
        }
    }
}

/// Leaves the swarm the fixture created on the host, if the host is still in that one, and removes the
/// docker_gwbridge network that came with the fixture's tasks or swarm when there was none before.
fn restore_host_swarm(run_dir: &Path) {
    let Ok(mark) = std::fs::read_to_string(run_dir.join(HOST_SWARM_MARK)) else { return };
    let field = |key: &str| mark.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    let node = docker(None, &["info", "-f", "{{.Swarm.NodeID}}"]).unwrap_or_default();
    let made_by_us = match field("init") {
        // Killed between init and its record: the host is in a swarm only if the run made one.
        Some("pending") => !node.is_empty(),
        Some(recorded) => recorded == node,
        None => false,
    };
    if made_by_us && !node.is_empty() {
        quiet("docker", &["swarm", "leave", "--force"]);
    }
    if field("gwbridge") == Some("false") {
        // The host's tasks stop a moment after their service or swarm goes, and Docker keeps the network until
        // their endpoints are gone; it refuses while anything else uses it.
        let deadline = Instant::now() + Duration::from_secs(15);
        while network_exists("docker_gwbridge") {
            if docker(None, &["network", "rm", "docker_gwbridge"]).is_some() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("engines: docker_gwbridge is still in use; `docker network rm docker_gwbridge` later");
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Kills every process that carries `prefix`, until none is left (a dying daemon may still start one).
fn kill_all(prefix: &str) {
    for _ in 0..20 {
        let pids = processes(prefix);
        if pids.is_empty() {
            return;
        }
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        // Some may have exited since the scan: kill's complaint about them means nothing.
        let _ = Command::new("kill").arg("-KILL").args(&pids).output();
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in processes(prefix) {
        eprintln!("engines: process {pid} survives SIGKILL: {}; kill it by hand", cmdline(pid));
    }
}

/// Live processes that belong to an engine whose name starts with `prefix`: those in its network namespace, in
/// its cgroups (its containers), or with its directory on their command line. Zombies are dead.
fn processes(prefix: &str) -> Vec<u32> {
    let namespaces: Vec<u64> = netns(prefix)
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(NETNS_DIR).join(n)).ok())
        .map(|m| m.ino())
        .collect();
    let tmp = format!("{}/", std::env::temp_dir().to_string_lossy().trim_end_matches('/'));
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let proc = format!("/proc/{pid}");
            let in_netns = std::fs::metadata(format!("{proc}/ns/net")).is_ok_and(|m| namespaces.contains(&m.ino()));
            // Lines are `hierarchy:controllers:/path`; an engine's containers live under `/ENGINE/`.
            let in_cgroup = std::fs::read_to_string(format!("{proc}/cgroup")).is_ok_and(|c| {
                c.lines()
                    .any(|l| l.splitn(3, ':').nth(2).is_some_and(|path| carries(path.trim_start_matches('/'), prefix)))
            });
            (in_netns || in_cgroup || names_run_dir(&cmdline(pid), &tmp, prefix)) && !is_zombie(pid)
        })
        .collect();
    found.sort_unstable();
    found
}

/// Whether a command line names a path in a run's directory (`TMP/RUN/...`, engines in `TMP/RUN/ENGINE/...`)
/// whose run or engine starts with `prefix`.
fn names_run_dir(cmdline: &str, tmp: &str, prefix: &str) -> bool {
    cmdline
        .split([' ', '=', ',', ':'])
        .filter_map(|word| word.strip_prefix(tmp))
        .any(|path| path.split('/').take(2).any(|part| carries(part, prefix)))
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim_end().to_string())
        .unwrap_or_default()
}

fn is_zombie(pid: u32) -> bool {
    // The state follows the command name in parentheses, which may itself hold spaces and parentheses.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// Every node the host's manager lists, with its engine label (empty when it has none).
fn swarm_nodes() -> Vec<(Node, String)> {
    let Some(ids) = docker(None, &["node", "ls", "-q"]) else { return Vec::new() };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let format = format!(
        "{{{{.ID}}}} {{{{.Status.State}}}} {{{{.Status.Addr}}}} {{{{.Description.Hostname}}}} \
         {{{{index .Description.Engine.Labels \"{ENGINE_LABEL}\"}}}}"
    );
    let out = docker(None, &[&["node", "inspect", "-f", &format][..], &ids].concat()).unwrap_or_default();
    out.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(str::to_string);
            let node = Node { id: f.next()?, state: f.next()?, addr: f.next()?, hostname: f.next()? };
            Some((node, f.next().filter(|l| l != "<no value>").unwrap_or_default()))
        })
        .collect()
}

fn services(prefix: &str) -> Vec<String> {
    let out = docker(None, &["service", "ls", "--format", "{{.Name}}"]).unwrap_or_default();
    out.lines().filter(|s| carries(s, prefix)).map(str::to_string).collect()
}

/// FORWARD rules whose in-interface carries `prefix`, as the arguments after `-A FORWARD`.
fn forward_rules(prefix: &str) -> Vec<Vec<String>> {
    let out = run("iptables", &["-S", "FORWARD"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("-A FORWARD "))
        .filter(|rule| {
            rule.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w[0] == "-i" && carries(w[1], prefix))
        })
        .map(|rule| rule.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn netns(prefix: &str) -> Vec<String> {
    names_in(Path::new(NETNS_DIR), prefix)
}

fn links(prefix: &str) -> Vec<String> {
    names_in(Path::new("/sys/class/net"), prefix)
}

/// Cgroup directories named after an engine, in every hierarchy.
fn cgroups(prefix: &str) -> Vec<PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    let mut found: Vec<PathBuf> = hierarchies
        .filter_map(Result::ok)
        .filter(|h| h.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|h| names_in(&h.path(), prefix).into_iter().map(move |n| h.path().join(n)))
        .collect();
    found.sort();
    found
}

/// Removes a cgroup directory, its children first (a cgroup goes with `rmdir`, not with its files).
fn remove_cgroup(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.filter_map(Result::ok).filter(|c| c.file_type().is_ok_and(|t| t.is_dir())) {
            remove_cgroup(&child.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("engines: cannot remove cgroup {}: {e}; rmdir it by hand", dir.display());
        }
    }
}

/// Mount points the host sees in a run's directory, deepest first.
fn mounts(prefix: &str) -> Vec<String> {
    let tmp = format!("{}/", std::env::temp_dir().to_string_lossy().trim_end_matches('/'));
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|point| point.strip_prefix(&tmp).is_some_and(|path| carries(path, prefix)))
        .map(str::to_string)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

fn run_dirs(prefix: &str) -> Vec<PathBuf> {
    let tmp = std::env::temp_dir();
    names_in(&tmp, prefix).into_iter().map(|n| tmp.join(n)).filter(|d| d.is_dir()).collect()
}

/// The fixture's names in a directory that start with `prefix`.
fn names_in(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| carries(n, prefix)).collect();
    names.sort();
    names
}

/// Whether `name` is one of the fixture's (`rdsw`, six hex digits of a run, anything) and starts with `prefix`:
/// other things on this machine may well begin with `rdsw`.
fn carries(name: &str, prefix: &str) -> bool {
    let run = name.strip_prefix(PREFIX).and_then(|rest| rest.get(..RUN_DIGITS));
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    name.starts_with(prefix) && run.is_some_and(|r| r.bytes().all(hex))
}

/// Binds the machine-wide lock, waiting while another process holds it. The kernel frees an abstract socket
/// when its process dies, however it dies, so a killed run never leaves the lock behind.
fn machine_lock() -> UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(MACHINE_LOCK).expect("a short abstract name");
    let deadline = Instant::now() + MACHINE_LOCK_WAIT;
    let mut told = false;
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !told {
                    eprintln!("engines: another test process holds the extra engines; waiting for it");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!(
                "cannot hold @{MACHINE_LOCK}: {e}; another test process has held the extra engines for \
                 {MACHINE_LOCK_WAIT:?}: let it finish or kill it"
            ),
        }
    }
}

/// Fails the test with what to do when this machine cannot run extra engines; installs iproute2 and iptables
/// when they are missing.
fn check_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next().map(str::to_string)));
    assert!(uid.as_deref() == Some("0"), "run the swarm tests as root: they add network namespaces and Docker engines");
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !have("ip") || !have("iptables") {
        eprintln!("engines: installing iproute2 and iptables");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "iproute2", "iptables"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "apt-get install iproute2 iptables failed: install them by hand and rerun");
    }
    for (tool, package) in [("nsenter", "util-linux"), ("unshare", "util-linux"), ("dockerd", "docker.io")] {
        assert!(have(tool), "{tool} is missing: apt-get install {package}");
    }
}

/// The host's address on a /24 of 198.18.0.0/15 that no route of the host covers yet.
fn free_subnet() -> Ipv4Addr {
    let routes = String::from_utf8_lossy(&run("ip", &["-4", "route", "show", "table", "all"]).stdout).into_owned();
    let start = unique() as usize;
    (0..512)
        .map(|i| (start + i) % 512)
        .map(|n| Ipv4Addr::new(198, 18 + (n / 256) as u8, (n % 256) as u8, 1))
        .find(|gw| {
            let [a, b, c, _] = gw.octets();
            !routes.contains(&format!("{a}.{b}.{c}.")) && !routes.contains(&format!("{a}.{b}.0.0/"))
        })
        .expect("a free /24 in 198.18.0.0/15: remove the host's routes there (ip route) and rerun")
}

fn in_subnet(addr: &str, gateway: Ipv4Addr) -> bool {
    addr.parse::<Ipv4Addr>().is_ok_and(|a| a.octets()[..3] == gateway.octets()[..3])
}

/// Asks a Docker socket for `/_ping`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = String::new();
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.0 200")
}

fn network_exists(name: &str) -> bool {
    docker(None, &["network", "inspect", "-f", "{{.Name}}", name]).is_some()
}

/// Runs the docker CLI against `host` (the host engine for None); its trimmed stdout when it succeeds.
fn docker(host: Option<&str>, args: &[&str]) -> Option<String> {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    let out = command.args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn docker_ok(host: Option<&str>, args: &[&str]) -> String {
    let mut all = host.map_or_else(Vec::new, |h| vec!["-H", h]);
    all.extend_from_slice(args);
    run_ok("docker", &all)
}

fn ip(args: &[&str]) {
    run_ok("ip", args);
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}; install it"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a cleanup command; says what failed, and goes on.
fn quiet(program: &str, args: &[&str]) {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "engines: {program} {} failed: {}; run it by hand",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("engines: cannot run {program}: {e}"),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let x = t.wrapping_add(n) ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9);
    x ^ (x >> 24) ^ (x >> 48)
}
