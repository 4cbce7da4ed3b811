//! compose/swarm.sh with TLS=1 and DISCOVER_TLS=1 on this machine's engine as a single-node swarm: the
//! certificates reach the tasks as swarm configs and a secret, the nodes and rediscover speak TLS only, a second
//! `up` with the same files changes nothing, other files are refused, `scale` (up and down) and `status` speak
//! TLS unasked, and `down` leaves nothing behind; and the same across three engines, whose nodes speak TLS to
//! each other. Each test holds the host's swarm alone and leaves it as it found it.

mod common;
mod engines;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::redis_cli_env;
use common::{run, run_ok, unique};
use engines::{Engines, Host, SingleNodeSwarm};

/// How long `swarm.sh up` may wait for cluster_state:ok (it may build the images first).
const SETTLE: Duration = Duration::from_secs(600);
/// How many keys go through the cluster.
const KEYS: usize = 300;
/// The settings a caller's environment could give swarm.sh: each call gets only the test's.
const SETTINGS: [&str; 6] = ["TLS", "DISCOVER_TLS", "TLS_DIR", "TLS_AUTH_CLIENTS", "REDIS_PASSWORD", "SWARM_ENGINES"];

/// One stack of the test's own, with its own TLS_DIR; removed with `swarm.sh down` when dropped.
struct Stack {
    name: String,
    discover_port: u16,
    tls_dir: PathBuf,
    /// SWARM_ENGINES: the extra engines' `-H` arguments, for swarm.sh to bring the images to.
    engines: Vec<String>,
}

impl Stack {
    fn new() -> Stack {
        let name = format!("rdtls{}", unique() % 1_000_000);
        // Below the ephemeral range, where Docker picks the nodes' host ports.
        let discover_port = (0..100)
            .map(|i| 20_000 + ((unique() + i) % 10_000) as u16)
            .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
            .expect("a free port for rediscover between 20000 and 29999");
        let tls_dir = std::env::temp_dir().join(format!("{name}-tls"));
        Stack { name, discover_port, tls_dir, engines: Vec::new() }
    }

    /// swarm.sh with this stack's name and port, and `env` as its only other settings.
    fn swarm_sh(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/swarm.sh"));
        command
            .args(args)
            .env("STACK", &self.name)
            .env("DISCOVER_PORT", self.discover_port.to_string())
            .env("WAIT_SECONDS", SETTLE.as_secs().to_string());
        for name in SETTINGS {
            command.env_remove(name);
        }
        if !self.engines.is_empty() {
            command.env("SWARM_ENGINES", self.engines.join(" "));
        }
        command.envs(env.iter().copied()).output().expect("run compose/swarm.sh")
    }

    /// Runs swarm.sh, which must succeed; returns its stdout, its stderr and the wall time.
    fn swarm_sh_ok(&self, args: &[&str], env: &[(&str, &str)]) -> (String, String, Duration) {
        let start = Instant::now();
        let out = self.swarm_sh(args, env);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "swarm.sh {args:?} failed:\n{stdout}\n{stderr}");
        (stdout, stderr, start.elapsed())
    }

    fn file(&self, name: &str) -> String {
        self.tls_dir.join(name).display().to_string()
    }

    /// redis-cli over TLS, trusting the stack's CA, to `ip:port` (a node's address, without `@bus`); with the
    /// node certificate when `cert`. `stdin` lines are sent as commands; stdout and stderr come back as one.
    fn tls_cli(&self, addr: &str, cert: bool, args: &[&str], stdin: &str) -> String {
        let (ip, port) = addr.rsplit_once(':').expect("an address is ip:port");
        let mut all = vec!["--tls".to_string(), "--cacert".to_string(), self.file("ca.crt")];
        if cert {
            all.extend(["--cert".to_string(), self.file("node.crt"), "--key".to_string(), self.file("node.key")]);
        }
        all.extend(["-h", ip, "-p", port].iter().chain(args).map(|a| a.to_string()));
        let (stdout, stderr) = redis_cli_env(&all, stdin, &[]);
        stdout + &stderr
    }

    /// The announce addresses (ip:port@bus) rediscover on this host lists, asked over TLS with the node
    /// certificate.
    fn members(&self) -> Vec<String> {
        let discover = format!("127.0.0.1:{}", self.discover_port);
        self.tls_cli(&discover, true, &["-e", "MEMBERS"], "").lines().map(str::to_string).collect()
    }

    /// The IDs of the stack's running containers.
    fn containers(&self) -> String {
        run_ok("docker", &["ps", "-q", "--filter", &format!("label=com.docker.stack.namespace={}", self.name)])
    }

    /// The IDs of the stack's swarm objects of one kind (`secret`, `config`) on the swarm this engine manages.
    fn objects(&self, kind: &str) -> String {
        let filter = format!("label=com.docker.stack.namespace={}", self.name);
        run_ok("docker", &[kind, "ls", "-q", "--filter", &filter])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = run("docker", &["service", "logs", "--tail", "40", &format!("{}_manager", self.name)]);
            eprintln!("manager log of stack {}:\n{}", self.name, String::from_utf8_lossy(&logs.stdout));
        }
        let out = self.swarm_sh(&["down"], &[]);
        if !out.status.success() {
            eprintln!("swarm.sh down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = std::fs::remove_dir_all(&self.tls_dir);
    }
}

/// What a node's announced port says to plain text within 3 s.
fn plain_text_reply(addr: &str) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(3))).expect("a read timeout");
    let _ = stream.write_all(b"PING\r\n");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

/// Writes KEYS keys with `redis-cli -c` over TLS through one node and reads them back through another.
fn write_and_read_keys(stack: &Stack, write_at: &str, read_at: &str) {
    let sets: String = (0..KEYS).map(|i| format!("SET tls:{i} v{i}\n")).collect();
    let replies = stack.tls_cli(write_at, false, &["-c"], &sets);
    assert_eq!(replies.lines().filter(|l| *l == "OK").count(), KEYS, "every SET acknowledged: {replies}");
    let gets: String = (0..KEYS).map(|i| format!("GET tls:{i}\n")).collect();
    let replies = stack.tls_cli(read_at, false, &["-c"], &gets);
    let want: Vec<String> = (0..KEYS).map(|i| format!("v{i}")).collect();
    assert!(replies.lines().eq(want.iter().map(String::as_str)), "keys read back through {read_at}: {replies}");
}

/// Every announced address answers cluster_state:ok over TLS, knows `n` nodes and gives plain text nothing.
fn check_tls_only(stack: &Stack, addrs: &[&str], n: usize) {
    for addr in addrs {
        let info = stack.tls_cli(addr, false, &["cluster", "info"], "");
        assert!(info.lines().any(|l| l == "cluster_state:ok"), "{addr}: {info}");
        assert!(info.lines().any(|l| l == format!("cluster_known_nodes:{n}")), "{addr}: {info}");
        let got = plain_text_reply(addr);
        assert!(!got.starts_with(b"+") && !got.starts_with(b"-"), "{addr} answered plain text: {got:?}");
    }
}

#[test]
fn a_tls_stack_speaks_tls_only_through_its_announced_addresses_and_leaves_nothing_behind() {
    let host = Host::claim();
    let before = host.swarm();
    let swarm = SingleNodeSwarm::init(&host);
    let stack = Stack::new();
    let tls_dir = stack.tls_dir.display().to_string();
    let tls = [("TLS", "1"), ("DISCOVER_TLS", "1"), ("TLS_DIR", tls_dir.as_str())];

    // 1. Six nodes that speak TLS only, with certificates swarm.sh makes in an empty TLS_DIR.
    let (stdout, stderr, took) = stack.swarm_sh_ok(&["up", "6"], &tls);
    println!("swarm_tls: TLS=1 DISCOVER_TLS=1 up 6: {} ({took:.1?})", stdout.trim());
    assert!(stderr.contains("tls.sh: made"), "swarm.sh made the certificates: {stderr}");
    let node_ip = run_ok("docker", &["node", "inspect", "self", "-f", "{{.Status.Addr}}"]);
    let members = stack.members();
    assert_eq!(members.len(), 6, "rediscover over TLS lists the nodes: {members:?}");
    let addrs: Vec<&str> = members.iter().map(|m| m.split('@').next().unwrap_or_default()).collect();
    for addr in &addrs {
        assert!(addr.starts_with(&format!("{node_ip}:")), "{addr} at the swarm node's address {node_ip}");
    }
    check_tls_only(&stack, &addrs, 6);

    // 2. From the host, trusting the CA only: redis-cli -c follows MOVED between the announced addresses.
    write_and_read_keys(&stack, addrs[0], addrs[5]);

    // 3. rediscover answers TLS with a certificate of the CA only.
    let discover = format!("127.0.0.1:{}", stack.discover_port);
    assert_eq!(stack.tls_cli(&discover, true, &["PING"], "").trim(), "PONG");
    let no_cert = stack.tls_cli(&discover, false, &["PING"], "");
    assert!(!no_cert.contains("PONG"), "rediscover without a client certificate: {no_cert}");
    let port = stack.discover_port.to_string();
    let (plain, err) = redis_cli_env(&["-p", &port, "PING"], "", &[]);
    assert!(!plain.contains("PONG"), "rediscover in plain text: {plain}{err}");

    // 4. A second up with the same files finds its secret and configs as they are and replaces no task; other
    // files are refused before anything changes.
    let secrets = stack.objects("secret");
    let tasks = stack.containers();
    let (_, _, took) = stack.swarm_sh_ok(&["up", "6"], &tls);
    println!("swarm_tls: up 6 again with the same files: {took:.1?}");
    assert_eq!(stack.objects("secret"), secrets, "the same secret");
    let again = stack.containers();
    assert_eq!(again, tasks, "no task replaced");
    let other = std::env::temp_dir().join(format!("{}-other-tls", stack.name));
    run_ok(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/tls.sh"), &[&other.display().to_string()]);
    let out = stack.swarm_sh(&["up", "6"], &[("TLS_DIR", &other.display().to_string())]);
    let _ = std::fs::remove_dir_all(&other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("holds other certificates"), "up with other files: {stderr}");
    assert_eq!(stack.containers(), tasks, "the refused up replaced no task");

    // 5. scale and status speak TLS with no setting given: they take them from the running stack.
    let (stdout, _, took) = stack.swarm_sh_ok(&["scale", "7"], &[]);
    println!("swarm_tls: scale 7 with no setting given: {} ({took:.1?})", stdout.trim());
    assert_eq!(stack.members().len(), 7, "rediscover lists the new node");
    let (status, _, _) = stack.swarm_sh_ok(&["status"], &[]);
    assert!(status.lines().any(|l| l == "cluster_state:ok"), "status over TLS: {status}");
    assert_eq!(status.lines().filter(|l| l.contains(" runs on ")).count(), 7, "status over TLS: {status}");
    // Shrinking hands the slots over and removes the node over TLS too.
    let (stdout, stderr, took) = stack.swarm_sh_ok(&["scale", "6"], &[]);
    println!("swarm_tls: scale 7 -> 6 with no setting given: {} ({took:.1?})", stdout.trim());
    assert!(stdout.contains("cluster of 6 nodes ok"), "{stdout}");
    assert!(stderr.contains("1 node(s) removed from the cluster"), "{stderr}");
    assert_eq!(stack.members().len(), 6, "rediscover lists 6 nodes again");

    // 6. down leaves no stack, secret, config or volume in the swarm, which stays.
    stack.swarm_sh_ok(&["down"], &[]);
    let stacks = run_ok("docker", &["stack", "ls", "--format", "{{.Name}}"]);
    assert!(!stacks.lines().any(|s| s == stack.name), "stack {} is gone: {stacks}", stack.name);
    assert_eq!(stack.objects("secret"), "", "no secret of the stack left");
    assert_eq!(stack.objects("config"), "", "no config of the stack left");
    let volumes = run_ok("docker", &["volume", "ls", "-q", "--filter", &format!("name={}_", stack.name)]);
    assert_eq!(volumes, "", "no volume of the stack left");
    drop((stack, swarm));
    assert_eq!(host.swarm(), before, "the engine's swarm is as it was");
}

#[test]
fn a_tls_stack_spans_three_engines_whose_nodes_speak_tls_to_each_other() {
    let host = Host::claim();
    let before = host.swarm();
    let mut engines = Engines::start(&host, 2);
    engines.join_swarm();
    let mut stack = Stack::new();
    stack.engines = engines.engines().iter().map(|e| e.host_arg()).collect();
    let tls_dir = stack.tls_dir.display().to_string();
    let tls = [("TLS", "1"), ("DISCOVER_TLS", "1"), ("TLS_DIR", tls_dir.as_str())];

    // The certificates swarm.sh makes name every node's address; the workers' tasks get them from the swarm and
    // ask their own node's rediscover over TLS; the cluster bus between hosts is TLS too.
    let (stdout, _, took) = stack.swarm_sh_ok(&["up", "6"], &tls);
    println!("swarm_tls: TLS=1 DISCOVER_TLS=1 up 6 on 3 engines: {} ({took:.1?})", stdout.trim());
    let members = stack.members();
    assert_eq!(members.len(), 6, "rediscover over TLS lists the nodes: {members:?}");
    let addrs: Vec<&str> = members.iter().map(|m| m.split('@').next().unwrap_or_default()).collect();
    let ips: std::collections::HashSet<&str> =
        addrs.iter().filter_map(|a| a.rsplit_once(':')).map(|(ip, _)| ip).collect();
    for engine in engines.engines() {
        assert!(
            ips.contains(engine.addr.to_string().as_str()),
            "a node on engine {} ({}): {ips:?}",
            engine.name,
            engine.addr
        );
    }
    assert_eq!(ips.len(), 3, "nodes on three hosts: {addrs:?}");
    check_tls_only(&stack, &addrs, 6);
    write_and_read_keys(&stack, addrs[0], addrs[5]);

    drop(stack);
    drop(engines);
    assert_eq!(host.swarm(), before, "the host's swarm is as it was");
}
