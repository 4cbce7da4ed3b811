//! compose/ end to end: a real cluster from `compose/cluster.sh`, used from the host with redis-cli, formed and
//! grown while its manager is restarted, failed over, crashed, restarted and removed; and how long `up` takes for
//! 6 and 12 nodes.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{
    assert_no_refused_move, cluster_nodes, container_of, eventually, info_field, masters_and_replicas, node_cmd,
    node_cmd_c, one_at_a_time, promoted, read_keys, replicated_master, settled, volumes_of, without_redirections,
    write_acknowledged, write_keys, Project, KEYS, SETTLE,
};
use common::{docker_announce, published_port, run_ok};

fn started_at(id: &str) -> String {
    run_ok("docker", &["inspect", "-f", "{{.State.StartedAt}}", id])
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
    // masters although the manager is killed and restarted in the middle of moving one, leaving its slot open
    // (migrating on one node, importing on another).
    let before: Vec<(String, String)> =
        project.containers("redis", false).into_iter().map(|id| (started_at(&id), id)).collect();
    let mut scale = project.cluster_sh_start(&["scale", "9"]);
    let manager = project.containers("manager", false).first().cloned().expect("the manager runs");
    let (mut tries, mut left_open) = (0, Vec::new());
    // A move holds its slot open for a moment only, and a restart takes longer than that: the manager is frozen
    // first, so the slots seen open then are the ones the restart leaves open (its redis-cli can neither finish
    // the move nor start the next). Nothing between the pause and the unpause or restart panics.
    project.restart_manager_when(&mut scale, "a slot is being moved", || {
        if open_slots(&entry).is_empty() {
            return false;
        }
        tries += 1;
        run_ok("docker", &["pause", &manager]);
        left_open = open_slots(&entry);
        if left_open.is_empty() {
            run_ok("docker", &["unpause", &manager]);
        }
        !left_open.is_empty()
    });
    eprintln!("compose: the manager frozen {tries} time(s) in a move before a slot stayed open: {left_open:?}");
    let (line, took) = project.cluster_sh_finish(scale);
    eprintln!("compose: scale 9: {line}; {:.1} s wall time", took.as_secs_f64());
    for (started, id) in &before {
        assert_eq!(&started_at(id), started, "scale restarted {id}");
    }
    // A master refuses the keys of a move while it sees the cluster down, as a new one does for a few seconds
    // after it learnt the slots: the manager waits for that, not for a failed move and the next round.
    assert_no_refused_move(&project.whole_manager_log());
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
    let (victim, heir) = replicated_master(&nodes);
    let acked = write_acknowledged(&victim.addr, "acked");
    let victim_container = container_of(&project, &victim.addr);
    // Room for Redis's shutdown-timeout (10 s of waiting for lagging replicas) before Docker kills it.
    let grace = run_ok("docker", &["inspect", "-f", "{{.Config.StopTimeout}}", &victim_container]);
    assert_eq!(grace, "20", "a node's stop timeout outlasts Redis's shutdown-timeout");
    run_ok("docker", &["stop", &victim_container]);
    let survivor = nodes.iter().find(|n| n.id != victim.id).map(|n| n.addr.clone()).expect("another node");
    eventually("the replica promoted and cluster_state:ok", || promoted(&survivor, &heir));
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

    // 5. A node's redis-server dies (SIGKILL from the host, to the server under the entrypoint's shell): the
    // container exits with its status, Docker starts it again, it rejoins under its own id and the cluster is
    // whole.
    let (masters, _) = masters_and_replicas(&nodes);
    let crashed = masters.first().map(|m| (*m).clone()).expect("a master");
    let crashed_container = container_of(&project, &crashed.addr);
    let pid = run_ok("docker", &["inspect", "-f", "{{.State.Pid}}", &crashed_container]);
    run_ok("pkill", &["-KILL", "-P", &pid, "-x", "redis-server"]);
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

    // 7. A node the cluster forgot while it was away comes back with its old nodes.conf and data (as a swarm
    // task whose slot starts again where an earlier task left its volume): nobody answers it, so the manager
    // empties it and adds it as a new node.
    let (masters, replicas) = masters_and_replicas(&nodes);
    let shape = (masters.len(), replicas.len());
    let lost = replicas.first().map(|r| (*r).clone()).expect("a replica");
    let lost_container = container_of(&project, &lost.addr);
    run_ok("docker", &["stop", &lost_container]);
    for n in nodes.iter().filter(|n| n.id != lost.id) {
        let said = node_cmd(&n.addr, &["CLUSTER", "FORGET", &lost.id]);
        assert_eq!(said.trim(), "OK", "{} forgets {}", n.addr, lost.id);
    }
    let forgotten = Instant::now();
    run_ok("docker", &["start", &lost_container]);
    let nodes = eventually("the forgotten node emptied and added again as a new node", || {
        let nodes = settled(&project, 9)?;
        let now = docker_announce(&lost_container, &project.announce_ip);
        match nodes.iter().find(|n| n.addr == now) {
            Some(n) if n.id != lost.id && !nodes.iter().any(|o| o.id == lost.id) => Ok(nodes),
            other => Err(format!("the node at {now} is {other:?}")),
        }
    });
    eprintln!(
        "compose: a forgotten node back with its old state joined again as a new node after {:.1?}",
        forgotten.elapsed()
    );
    let (masters, replicas) = masters_and_replicas(&nodes);
    assert_eq!((masters.len(), replicas.len()), shape, "as many masters and replicas as before: {nodes:?}");
    assert!(nodes.iter().all(|n| !n.is_master() || n.slots > 0), "no idle master: {nodes:?}");
    read_keys(&nodes[0].addr, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the forgotten node: {e}"));

    // 8. Down leaves nothing of the project behind.
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
    project.env.insert("REDIS_PASSWORD", password.clone());
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

#[test]
fn compose_cluster_announces_the_address_it_is_given_and_keeps_it_for_a_node_that_joins_while_a_slot_is_open() {
    let _serial = one_at_a_time();
    let mut project = Project::new();
    // Another address of this host, which the containers reach too: the host's address on Docker's default
    // bridge (docker0).
    let bridge_name = r#"{{index .Options "com.docker.network.bridge.name"}}"#;
    let bridge = run_ok("docker", &["network", "inspect", "bridge", "-f", bridge_name]);
    let addr = run_ok("ip", &["-4", "-o", "addr", "show", "dev", &bridge]);
    let gateway = addr.split_whitespace().nth(3).and_then(|a| a.split('/').next()).unwrap_or_default().to_string();
    assert!(gateway.parse::<std::net::Ipv4Addr>().is_ok(), "the host's address on {bridge}: {addr:?}");
    assert_ne!(gateway, project.announce_ip, "the host's address on {bridge} is the default route's address");
    project.announce_ip = gateway.clone();
    project.env.insert("ANNOUNCE_IP", gateway.clone());
    let (line, took) = project.cluster_sh_ok(&["up", "3"]);
    eprintln!("compose: up 3 with ANNOUNCE_IP={gateway}: {line}; {:.1} s wall time", took.as_secs_f64());
    let nodes = eventually("3 nodes announcing the given address", || settled(&project, 3));
    assert!(nodes.iter().all(|n| n.addr.starts_with(&format!("{gateway}:"))), "{nodes:?}");

    // A node that joins later, by an `up` that does not name the address (and would start rediscover again with
    // other settings), announces the same one.
    project.env.remove("ANNOUNCE_IP");
    project.cluster_sh_ok(&["up", "4"]);
    let nodes = eventually("4 nodes announcing the given address", || settled(&project, 4));
    assert!(nodes.iter().all(|n| n.addr.starts_with(&format!("{gateway}:"))), "{nodes:?}");
    write_keys(&nodes[0].addr, "given:");
    read_keys(&nodes[3].addr, "given:", KEYS).unwrap_or_else(|e| panic!("keys through {gateway}: {e}"));

    // A slot left open, as a move cut short leaves it: migrating on its master, importing on another. The
    // manager is paused meanwhile, so that no round of its closes the slot before the new node is there; nothing
    // between the pause and the unpause panics, so a paused manager is never left behind.
    let (masters, _) = masters_and_replicas(&nodes);
    let (owner, other) = (masters[0], masters[1]);
    let slot = first_slot(&owner.addr);
    let manager = project.containers("manager", false).first().cloned().expect("the manager runs");
    run_ok("docker", &["pause", &manager]);
    let importing = node_cmd(&other.addr, &["cluster", "setslot", &slot, "importing", &owner.id]);
    let migrating = node_cmd(&owner.addr, &["cluster", "setslot", &slot, "migrating", &other.id]);
    let entry = owner.addr.clone();
    let opened = open_slots(&entry);
    // A node that joins now is refused by redis-cli --cluster add-node before it is introduced: the manager
    // closes the slot and adds the node the next round, without waiting on a node that never heard of the
    // cluster. The manager goes on only once the fifth node answers: a round that found it still starting would
    // pass it by and close the slot first.
    let scale = project.cluster_sh_start(&["scale", "5"]);
    let deadline = Instant::now() + SETTLE;
    let answers = |m: &String| {
        let id = node_cmd(m, &["cluster", "myid"]);
        id.trim().len() == 40 && id.trim().bytes().all(|b| b.is_ascii_hexdigit())
    };
    let mut members = project.expected_members();
    while !(members.len() == 5 && members.iter().all(answers)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        members = project.expected_members();
    }
    run_ok("docker", &["unpause", &manager]);
    assert_eq!((importing.trim(), migrating.trim()), ("OK", "OK"), "slot {slot} opened by hand");
    assert_eq!(opened.len(), 2, "slot {slot} open on both masters: {opened:?}");
    assert!(members.len() == 5 && members.iter().all(answers), "five nodes answer after {SETTLE:?}: {members:?}");
    project.cluster_sh_finish(scale);
    let nodes = eventually("5 nodes", || settled(&project, 5));
    assert_eq!(open_slots(&entry), Vec::<String>::new(), "slots left open after scale 5: {nodes:?}");
    let log = project.whole_manager_log();
    assert!(log.contains("did not add"), "add-node was not refused for the open slot:\n{log}");
    assert!(!log.contains("after 30 s") && !log.contains("does not replicate"), "the manager waited in vain:\n{log}");
    read_keys(&nodes[4].addr, "given:", KEYS).unwrap_or_else(|e| panic!("keys after scale 5: {e}"));

    let volumes = volumes_of(&project.containers("redis", true));
    project.cluster_sh_ok(&["down"]);
    assert_eq!(project.leftovers(&volumes), Vec::<String>::new(), "left behind by down");
}

/// The fields of a node's own line of CLUSTER NODES (the one flagged `myself`); none when it does not answer.
fn own_line(node: &str) -> Vec<String> {
    let nodes = node_cmd(node, &["cluster", "nodes"]);
    let own = nodes.lines().find(|l| l.contains("myself")).unwrap_or_default();
    own.split_whitespace().map(str::to_string).collect()
}

/// The first slot a node serves, from its own CLUSTER NODES line (`0-5460`: 0).
fn first_slot(node: &str) -> String {
    let own = own_line(node);
    let range = own.get(8).unwrap_or_else(|| panic!("{node} serves no slot: {own:?}"));
    range.split('-').next().unwrap_or(range).to_string()
}

/// Slots a master marks as migrating or importing (`[slot->-id]`, `[slot-<-id]` in its own CLUSTER NODES line),
/// asked of every master the entry node knows.
fn open_slots(entry: &str) -> Vec<String> {
    cluster_nodes(entry)
        .iter()
        .filter(|n| n.is_master())
        .flat_map(|n| own_line(&n.addr).into_iter().filter(|f| f.starts_with('[')))
        .collect()
}
