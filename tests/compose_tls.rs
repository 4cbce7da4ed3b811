//! compose/ with TLS, rediscover's password and announced host names: real clusters from `compose/cluster.sh`,
//! used from the host with redis-cli.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::cluster::{eventually, one_at_a_time, redis_cli_env, Project, KEYS};
use common::run_ok;

impl Project {
    /// redis-cli from the host to one node (`ip:port@bus` or `ip:port`): over TLS, trusting only the project's
    /// CA and showing no certificate, when the project speaks TLS. `stdin` lines are sent as commands.
    fn cli(&self, addr: &str, args: &[&str], stdin: &str) -> String {
        let addr = addr.split('@').next().unwrap_or(addr);
        let (ip, port) = addr.rsplit_once(':').expect("an address is ip:port");
        let mut all: Vec<String> = Vec::new();
        if self.tls_dir.is_some() {
            all.extend(["--tls".to_string(), "--cacert".to_string(), self.tls_file("ca.crt")]);
        }
        all.extend(["-h", ip, "-p", port].map(str::to_string));
        all.extend(args.iter().map(|a| a.to_string()));
        redis_cli(&all, stdin, &[])
    }
}

/// redis-cli from the host with these arguments and extra environment: what it printed, standard error last.
fn redis_cli(args: &[String], stdin: &str, env: &[(&str, &str)]) -> String {
    let (stdout, stderr) = redis_cli_env(args, stdin, env);
    stdout + &stderr
}

/// Every running node reports cluster_state:ok, knows `n` nodes and announces itself as Docker published it;
/// returns CLUSTER NODES as the first node sees it.
fn settled(project: &Project, n: usize) -> Result<String, String> {
    let members = project.expected_members();
    if members.len() != n {
        return Err(format!("{} nodes run", members.len()));
    }
    for m in &members {
        let info = project.cli(m, &["cluster", "info"], "");
        if !info.lines().any(|l| l == "cluster_state:ok")
            || !info.lines().any(|l| l == format!("cluster_known_nodes:{n}"))
        {
            return Err(format!("{m}: {}", info.lines().take(7).collect::<Vec<_>>().join(" ")));
        }
        let nodes = project.cli(m, &["cluster", "nodes"], "");
        let myself = nodes.lines().find(|l| l.contains("myself")).unwrap_or_default();
        let addr = myself.split_whitespace().nth(1).unwrap_or_default();
        if addr.split(',').next() != Some(m.as_str()) {
            return Err(format!("the node behind {m} announces {addr:?}"));
        }
    }
    let first = members.iter().next().expect("n is at least 3");
    Ok(project.cli(first, &["cluster", "nodes"], ""))
}

/// The `ip:port` of every master that serves slots, from CLUSTER NODES.
fn masters(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 8 && f[2].contains("master"))
        .map(|f| f[1].split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// Writes `KEYS` keys through `entry` with redis-cli -c, which follows the redirections, and reads every one
/// back through another node.
fn write_and_read_keys(project: &Project, entry: &str, other: &str) {
    let sets: String = (0..KEYS).map(|i| format!("SET key:{i} value-{i}\n")).collect();
    let replies = project.cli(entry, &["-c"], &sets);
    let ok = replies.lines().filter(|l| *l == "OK").count();
    assert_eq!(ok, KEYS, "SET replies through {entry}: {}", replies.lines().take(5).collect::<Vec<_>>().join(" | "));
    let gets: String = (0..KEYS).map(|i| format!("GET key:{i}\n")).collect();
    let replies = project.cli(other, &["-c"], &gets);
    let got: Vec<&str> = replies.lines().collect();
    assert_eq!(
        got.len(),
        KEYS,
        "GET replies through {other}: {}",
        got.iter().take(5).copied().collect::<Vec<_>>().join(" | ")
    );
    for (i, value) in got.iter().enumerate() {
        assert_eq!(*value, format!("value-{i}"), "key:{i} read through {other}");
    }
}

/// A key whose slot `addr` does not serve, and the MOVED reply it gets there without -c.
fn moved_from(project: &Project, addr: &str) -> String {
    (0..100)
        .map(|i| project.cli(addr, &["GET", &format!("probe:{i}")], ""))
        .find(|reply| reply.contains("MOVED"))
        .unwrap_or_else(|| panic!("{addr} serves every probe key"))
}

/// What a node's published port says to plain text: the bytes read back within 3 s, and how the read ended.
fn plain_text_ping(addr: &str) -> (Vec<u8>, String) {
    let addr = addr.split('@').next().unwrap_or(addr);
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(3))).expect("a read timeout");
    let _ = stream.write_all(b"PING\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let end = loop {
        match stream.read(&mut buf) {
            Ok(0) => break "closed".to_string(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break format!("{:?}", e.kind()),
        }
    };
    (got, end)
}

#[test]
fn tls_cluster_serves_tls_only_grows_and_rediscover_wants_its_password() {
    let _serial = one_at_a_time();
    let mut project = Project::new().with_tls();
    let password = format!("discover-secret-{}", common::unique());
    project.env.insert("DISCOVER_TLS", "1".to_string());
    project.env.insert("DISCOVER_PASSWORD", password.clone());

    // 1. Six nodes speaking TLS only, with certificates cluster.sh makes, formed by a manager that reaches the
    // nodes and rediscover over TLS and rediscover with its password.
    let (out, took) = project.cluster_sh_ok(&["up", "6"]);
    eprintln!(
        "compose_tls: TLS=1 DISCOVER_TLS=1 up 6: {}; {:.1} s wall time",
        out.lines().last().unwrap_or_default(),
        took.as_secs_f64()
    );
    for file in ["ca.crt", "node.crt", "node.key"] {
        assert!(Path::new(&project.tls_file(file)).is_file(), "cluster.sh made no {file}");
    }
    let nodes =
        eventually("6 nodes with cluster_state:ok, each announcing its published TLS port", || settled(&project, 6));
    let members: Vec<String> = project.expected_members().into_iter().collect();
    let masters = masters(&nodes);
    assert_eq!(masters.len(), 3, "{nodes}");
    // CLUSTER SHARDS names each node's published port as its TLS port, and no plain-text port.
    let shards = project.cli(&members[0], &["cluster", "shards"], "");
    let fields: Vec<&str> = shards.lines().collect();
    let tls_ports: BTreeSet<String> =
        fields.windows(2).filter(|w| w[0] == "tls-port").map(|w| w[1].to_string()).collect();
    let published_ports: BTreeSet<String> =
        members.iter().filter_map(|m| m.split('@').next()?.rsplit(':').next().map(str::to_string)).collect();
    assert_eq!(tls_ports, published_ports, "CLUSTER SHARDS: {shards}");
    assert!(!fields.contains(&"port"), "CLUSTER SHARDS names a plain-text port: {shards}");

    // 2. From the host, trusting the CA only: redis-cli -c follows MOVED to the published ports.
    write_and_read_keys(&project, &members[0], &members[members.len() - 1]);
    let published: BTreeSet<String> =
        members.iter().map(|m| m.split('@').next().unwrap_or_default().to_string()).collect();
    let moved = moved_from(&project, &masters[0]);
    let target = moved.split_whitespace().last().unwrap_or_default();
    assert!(
        published.contains(target),
        "{} sends a client to {moved:?}, not a published port of {published:?}",
        masters[0]
    );
    for m in &masters {
        let keys: usize = project.cli(m, &["dbsize"], "").trim().parse().unwrap_or(0);
        assert!(keys > 0, "master {m} holds no key");
    }

    // 3. A seventh node, asked for without any of those settings: cluster.sh takes them from the running
    // nodes, so it joins over TLS, and the manager gives it its slots.
    let settings = std::mem::take(&mut project.env);
    let before: BTreeSet<String> = members.iter().cloned().collect();
    let (out, took) = project.cluster_sh_ok(&["scale", "7"]);
    project.env = settings;
    eprintln!(
        "compose_tls: scale 7 without the TLS settings: {}; {:.1} s wall time",
        out.lines().last().unwrap_or_default(),
        took.as_secs_f64()
    );
    eventually("7 nodes with cluster_state:ok", || settled(&project, 7));
    let members: Vec<String> = project.expected_members().into_iter().collect();
    let newcomer = members.iter().find(|m| !before.contains(*m)).expect("a new node").clone();
    let gets: String = (0..KEYS).map(|i| format!("GET key:{i}\n")).collect();
    let replies = project.cli(&newcomer, &["-c"], &gets);
    let got: Vec<&str> = replies.lines().collect();
    let want: Vec<String> = (0..KEYS).map(|i| format!("value-{i}")).collect();
    assert!(got == want, "keys through the new node {newcomer}: {:?}", got.iter().take(5).collect::<Vec<_>>());

    // 4. Plain text gets nothing from the published ports, neither the data port nor the cluster bus.
    for m in &members {
        let (got, end) = plain_text_ping(m);
        assert!(!String::from_utf8_lossy(&got).contains("PONG"), "{m} answered plain text: {got:?} ({end})");
        let bus = format!("{}:{}", project.announce_ip, m.rsplit('@').next().unwrap_or_default());
        let (got, end) = plain_text_ping(&bus);
        assert!(got.is_empty() || !got.starts_with(b"+"), "bus {bus} answered plain text: {got:?} ({end})");
    }
    let plain = redis_cli(
        &[
            "-h",
            &project.announce_ip,
            "-p",
            members[0].split('@').next().and_then(|a| a.rsplit(':').next()).unwrap_or_default(),
            "ping",
        ]
        .map(str::to_string),
        "",
        &[],
    );
    assert!(!plain.contains("PONG"), "redis-cli without --tls: {plain}");

    // 5. rediscover speaks TLS only, asks for a certificate of the CA, and serves nothing without its
    // password; with it, it lists the nodes.
    let discover = format!("{}", project.discover_port);
    let ca = project.tls_file("ca.crt");
    let cert = project.tls_file("node.crt");
    let key = project.tls_file("node.key");
    let label = format!("io.rediscover.cluster={}", project.name);
    let with_cert = |command: &[&str], env: &[(&str, &str)]| {
        let mut args: Vec<String> =
            ["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key, "-p", &discover].map(str::to_string).to_vec();
        args.extend(command.iter().map(|a| a.to_string()));
        redis_cli(&args, "", env)
    };
    let stranger = with_cert(&["MEMBERS", "LABEL", &label], &[]);
    assert!(stranger.contains("NOAUTH"), "rediscover without its password: {stranger}");
    let listed = with_cert(&["MEMBERS", "LABEL", &label], &[("REDISCLI_AUTH", &password)]);
    let listed: BTreeSet<String> = listed.lines().map(str::to_string).collect();
    assert_eq!(listed, project.expected_members(), "MEMBERS with the password");
    assert_eq!(listed.len(), 7, "MEMBERS with the password");
    let no_cert = redis_cli(&["--tls", "--cacert", &ca, "-p", &discover, "PING"].map(str::to_string), "", &[]);
    assert!(!no_cert.contains("PONG"), "rediscover without a client certificate: {no_cert}");
    let plain = redis_cli(&["-p", &discover, "PING"].map(str::to_string), "", &[]);
    assert!(!plain.contains("PONG"), "rediscover in plain text: {plain}");

    // 6. No process on this host shows rediscover's password on its command line: neither rediscover, nor the
    // entrypoints and the manager that give it.
    for _ in 0..5 {
        let ps = run_ok("ps", &["-eww", "-o", "args="]);
        assert!(
            !ps.contains(&password),
            "the password is in ps: {}",
            ps.lines().find(|l| l.contains(&password)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 7. status speaks TLS too, again without the settings.
    project.env.clear();
    let (status, _) = project.cluster_sh_ok(&["status"]);
    assert!(status.lines().any(|l| l == "cluster_state:ok"), "status under TLS: {status}");
    assert_eq!(status.lines().filter(|l| l.contains("connected")).count(), 7, "status under TLS: {status}");
}

#[test]
fn cluster_with_a_host_name_announces_it_and_sends_clients_there() {
    let _serial = one_at_a_time();
    let mut project = Project::new();
    // A name every client on this host resolves, and the published ports listen on loopback too.
    project.env.insert("ANNOUNCE_HOSTNAME", "localhost".to_string());
    let (out, took) = project.cluster_sh_ok(&["up", "3"]);
    eprintln!(
        "compose_tls: ANNOUNCE_HOSTNAME=localhost up 3: {}; {:.1} s wall time",
        out.lines().last().unwrap_or_default(),
        took.as_secs_f64()
    );
    let nodes = eventually("3 nodes with cluster_state:ok", || settled(&project, 3));
    for line in nodes.lines() {
        let addr = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(addr.ends_with(",localhost"), "CLUSTER NODES without the host name: {line}");
    }
    let members: Vec<String> = project.expected_members().into_iter().collect();
    let shards = project.cli(&members[0], &["cluster", "shards"], "");
    let fields: Vec<&str> = shards.lines().collect();
    let after = |name: &str| fields.windows(2).filter(|w| w[0] == name).map(|w| w[1]).collect::<Vec<_>>();
    assert_eq!(after("hostname"), vec!["localhost"; 3], "CLUSTER SHARDS: {shards}");
    assert_eq!(after("endpoint"), vec!["localhost"; 3], "CLUSTER SHARDS: {shards}");

    // Clients are sent to the host name with the published port, and get there.
    let moved = moved_from(&project, &members[0]);
    let target = moved.split_whitespace().last().unwrap_or_default();
    let ports: BTreeSet<String> = members
        .iter()
        .filter_map(|m| m.split('@').next()?.rsplit(':').next().map(|p| format!("localhost:{p}")))
        .collect();
    assert!(ports.contains(target), "MOVED to {target:?}, not one of {ports:?}");
    write_and_read_keys(&project, &members[0], &members[2]);
}
