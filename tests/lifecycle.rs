//! The life of a compose cluster after it formed: scaled in with `cluster.sh scale N`; masters whose containers
//! are destroyed taken over by their replicas, forgotten by every node and replaced; every node stopped and
//! started under new ports; keys checked before and after every step.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::cluster::{
    cluster_nodes, container_of, eventually, info_field, masters_and_replicas, node_cmd, one_at_a_time, promoted,
    read_acknowledged, read_keys, replica_in_sync, replicated_masters, settled, volumes_of, write_acknowledged,
    write_keys, NodeLine, Project, KEYS,
};
use common::run_ok;

/// `masters` masters that serve slots, each with at least one replica, and no master without slots.
fn every_master_replicated(nodes: &[NodeLine], masters: usize) -> Result<(), String> {
    let (serving, replicas) = masters_and_replicas(nodes);
    let served: BTreeSet<&str> = replicas.iter().map(|r| r.master_id.as_str()).collect();
    let lonely: Vec<&str> =
        serving.iter().filter(|m| !served.contains(m.id.as_str())).map(|m| m.addr.as_str()).collect();
    let idle = nodes.iter().filter(|n| n.is_master() && n.slots == 0).count();
    if serving.len() == masters && lonely.is_empty() && idle == 0 {
        Ok(())
    } else {
        Err(format!("{} masters serve slots, {idle} none; without a replica: {lonely:?}", serving.len()))
    }
}

/// Every running node knows exactly the running nodes: `cluster_known_nodes` is their number everywhere and no
/// node lists one in fail or handshake, or one that is not running.
fn knows_only_the_running(project: &Project) -> Result<(), String> {
    let members = project.expected_members();
    for m in &members {
        let known = info_field(m, "cluster_known_nodes").unwrap_or_default();
        if known != members.len().to_string() {
            return Err(format!("{m} knows {known} nodes, {} run", members.len()));
        }
        let nodes = cluster_nodes(m);
        if let Some(odd) = nodes
            .iter()
            .find(|n| n.flags.contains("fail") || n.flags.contains("handshake") || !members.contains(&n.addr))
        {
            return Err(format!("{m} lists {} {} {}", odd.id, odd.addr, odd.flags));
        }
    }
    Ok(())
}

/// compose's number of each Redis container, running or not.
fn container_numbers(project: &Project) -> BTreeSet<u32> {
    project
        .containers("redis", true)
        .iter()
        .map(|id| {
            run_ok("docker", &["inspect", "-f", "{{index .Config.Labels \"com.docker.compose.container-number\"}}", id])
                .parse()
                .expect("compose numbers its containers")
        })
        .collect()
}

/// `up 6`, settled with a replica for each master, and `KEYS` keys written and read back: the cluster's nodes
/// and the node the keys went through.
fn up_six_with_keys(project: &Project) -> (Vec<NodeLine>, String) {
    let (line, took) = project.cluster_sh_ok(&["up", "6"]);
    eprintln!("lifecycle: up 6: {line}; {:.1} s", took.as_secs_f64());
    let nodes = eventually("3 masters with a replica each", || {
        let nodes = settled(project, 6)?;
        every_master_replicated(&nodes, 3).map(|()| nodes)
    });
    let entry = nodes[0].addr.clone();
    write_keys(&entry, "key:");
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after up 6: {e}"));
    (nodes, entry)
}

#[test]
fn scale_in_moves_the_slots_away_and_forgets_the_removed_nodes() {
    let _serial = one_at_a_time();
    let project = Project::new();
    let (_, entry) = up_six_with_keys(&project);

    // A size that cannot keep a replica for each of 3 masters is refused without --force, and nothing moves.
    let refused = project.cluster_sh(&["scale", "4"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "scale 4 on 6 nodes succeeded: {said}");
    assert!(said.contains("--force") && said.lines().count() == 1, "scale 4 on 6 nodes says: {said}");
    assert_eq!(project.containers("redis", true).len(), 6, "a refused scale 4 removed nodes");
    settled(&project, 6).unwrap_or_else(|e| panic!("after a refused scale 4: {e}"));
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after a refused scale 4: {e}"));

    let (line, took) = project.cluster_sh_ok(&["scale", "9"]);
    eprintln!("lifecycle: scale 9: {line}; {:.1} s", took.as_secs_f64());
    let nine = eventually("9 nodes settled", || settled(&project, 9));
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after scale 9: {e}"));
    let (masters, replicas) = masters_and_replicas(&nine);
    eprintln!("lifecycle: 9 nodes: {} masters, {} replicas", masters.len(), replicas.len());
    assert_eq!(container_numbers(&project), (1..=9).collect(), "compose numbers nine nodes 1 to 9");

    // A leaving replica takes over a staying master (CLUSTER REPLICATE, then CLUSTER FAILOVER): only 2 masters
    // would stay, so scale in must hand that master's slots back to a node that stays before removing it.
    let number_of = |addr: &str| -> u32 {
        let id = container_of(&project, addr);
        run_ok("docker", &["inspect", "-f", "{{index .Config.Labels \"com.docker.compose.container-number\"}}", &id])
            .parse()
            .expect("compose numbers its containers")
    };
    let leaving_replica = replicas
        .iter()
        .find(|r| number_of(&r.addr) > 6)
        .map(|r| (*r).clone())
        .expect("9 nodes with 5 masters hold a replica among the 3 that joined last");
    let staying_master =
        masters.iter().find(|m| number_of(&m.addr) <= 6).map(|m| (*m).clone()).expect("a master of the first six");
    // Redis's own replica migration would move replicas back meanwhile: it is off until scale in is over.
    for n in &nine {
        assert_eq!(node_cmd(&n.addr, &["config", "set", "cluster-allow-replica-migration", "no"]).trim(), "OK");
    }
    assert_eq!(node_cmd(&leaving_replica.addr, &["cluster", "replicate", &staying_master.id]).trim(), "OK");
    // A manual failover is ignored by a master that does not know the replica yet, and the other masters refuse
    // their votes to a replica they take for another master's: every node must know first.
    eventually("every node knows the leaving replica as the staying master's", || {
        for n in &nine {
            let seen = cluster_nodes(&n.addr).into_iter().find(|l| l.id == leaving_replica.id);
            match seen {
                Some(l) if l.is_replica() && l.master_id == staying_master.id => {}
                other => return Err(format!("{} sees {other:?}", n.addr)),
            }
        }
        Ok(())
    });
    eventually("the leaving replica in sync with a staying master", || {
        replica_in_sync(&leaving_replica.addr, &staying_master.addr)
    });
    assert_eq!(node_cmd(&leaving_replica.addr, &["cluster", "failover"]).trim(), "OK");
    eventually("the leaving node a master", || {
        let nodes = cluster_nodes(&entry);
        match nodes.iter().find(|n| n.id == leaving_replica.id) {
            Some(n) if n.is_master() && n.slots > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the failover to a leaving node: {e}"));

    // Back to six: compose's highest numbers (7, 8, 9) leave, after their slots moved and del-node removed them.
    let staying: BTreeSet<String> = project
        .containers("redis", false)
        .into_iter()
        .filter(|id| {
            let number = run_ok(
                "docker",
                &["inspect", "-f", "{{index .Config.Labels \"com.docker.compose.container-number\"}}", id],
            );
            number.parse::<u32>().is_ok_and(|n| n <= 6)
        })
        .collect();
    let start = Instant::now();
    let out = project.cluster_sh(&["scale", "6"]);
    let steps: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("cluster.sh:"))
        .map(str::to_string)
        .collect();
    let (line, took) = project.checked(&["scale", "6"], out, start.elapsed());
    eprintln!("lifecycle: scale 6 from 9: {line}; {:.1} s\n{}", took.as_secs_f64(), steps.join("\n"));
    assert!(steps.iter().any(|l| l.contains("takes over")), "no failover to a staying replica: {steps:?}");
    for m in project.expected_members() {
        assert_eq!(node_cmd(&m, &["config", "set", "cluster-allow-replica-migration", "yes"]).trim(), "OK");
    }
    assert_eq!(container_numbers(&project), (1..=6).collect(), "scale 6 kept compose's lowest numbers");
    assert_eq!(project.containers("redis", false).into_iter().collect::<BTreeSet<_>>(), staying);
    let six = eventually("6 nodes, 3 masters with a replica each, nothing failed", || {
        let nodes = settled(&project, 6)?;
        knows_only_the_running(&project)?;
        every_master_replicated(&nodes, 3).map(|()| nodes)
    });
    let entry = six[0].addr.clone();
    read_keys(&entry, "key:", KEYS).unwrap_or_else(|e| panic!("keys after scale 6: {e}"));
    // What del-node removed stays away: the manager adds nothing back over the next rounds.
    std::thread::sleep(std::time::Duration::from_secs(5));
    knows_only_the_running(&project).unwrap_or_else(|e| panic!("5 s after scale 6: {e}"));

    // The manager leaves alone a node that del-node removed while its container still runs (as scale does
    // before the container goes) ...
    let (_, replicas) = masters_and_replicas(&six);
    let removed = replicas.first().map(|r| (*r).clone()).expect("a replica");
    let other = six.iter().find(|n| n.id != removed.id).map(|n| n.addr.clone()).expect("another node");
    let del =
        common::run("redis-cli", &["--cluster", "del-node", other.split('@').next().unwrap_or_default(), &removed.id]);
    assert!(del.status.success(), "del-node: {}", String::from_utf8_lossy(&del.stdout));
    std::thread::sleep(std::time::Duration::from_secs(10));
    assert_eq!(info_field(&removed.addr, "cluster_known_nodes").as_deref(), Some("1"), "the removed node joined");
    for n in six.iter().filter(|n| n.id != removed.id) {
        assert_eq!(info_field(&n.addr, "cluster_known_nodes").as_deref(), Some("5"), "{} after del-node", n.addr);
        assert!(cluster_nodes(&n.addr).iter().all(|l| l.id != removed.id), "{} knows the removed node", n.addr);
    }
    read_keys(&other, "key:", KEYS).unwrap_or_else(|e| panic!("keys after del-node: {e}"));
    // ... and has it join again once it is reset hard.
    let (ip, port) = removed.addr.split('@').next().and_then(|a| a.rsplit_once(':')).expect("ip:port@bus");
    assert_eq!(common::run_ok("redis-cli", &["-h", ip, "-p", port, "cluster", "reset", "hard"]), "OK");
    eventually("the reset node back as a replica", || {
        let nodes = settled(&project, 6)?;
        knows_only_the_running(&project)?;
        every_master_replicated(&nodes, 3)
    });
    read_keys(&other, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the reset node joined: {e}"));

    let volumes = volumes_of(&project.containers("redis", true));
    project.cluster_sh_ok(&["down"]);
    assert_eq!(project.leftovers(&volumes), Vec::<String>::new(), "left behind by down");
}

#[test]
fn two_destroyed_masters_of_three_are_taken_over_and_replaced_then_every_node_restarts_under_new_ports() {
    let _serial = one_at_a_time();
    let project = Project::new();
    let (nodes, _) = up_six_with_keys(&project);

    // A stopped node is failed, not gone: it stays known, and comes back when started.
    let (_, replicas) = masters_and_replicas(&nodes);
    let stopped = replicas.first().map(|r| (*r).clone()).expect("a replica");
    let stopped_container = container_of(&project, &stopped.addr);
    run_ok("docker", &["stop", &stopped_container]);
    let others: Vec<String> = nodes.iter().filter(|n| n.id != stopped.id).map(|n| n.addr.clone()).collect();
    eventually("the stopped replica flagged fail", || {
        match cluster_nodes(&others[0]).into_iter().find(|n| n.id == stopped.id) {
            Some(n) if n.flags.contains("fail") && !n.flags.contains("fail?") => Ok(()),
            other => Err(format!("the stopped replica is {other:?}")),
        }
    });
    // Longer than the manager takes to forget a node whose container is gone (see below).
    std::thread::sleep(std::time::Duration::from_secs(15));
    for o in &others {
        assert!(cluster_nodes(o).iter().any(|n| n.id == stopped.id), "{o} forgot the stopped replica");
    }
    run_ok("docker", &["start", &stopped_container]);
    // Back under new ports: the keys are asked through a node that did not move.
    let nodes = eventually("the stopped replica back", || settled(&project, 6));
    read_keys(&others[0], "key:", KEYS).unwrap_or_else(|e| panic!("keys after the stop: {e}"));

    // Two of the three masters, each with writes its replica acknowledged, have their containers destroyed at
    // once. The master left can neither flag them failed nor elect a replica alone: Redis never fails them over
    // by itself. The manager knows from rediscover that their containers are gone, and has a replica take over.
    let victims: Vec<(NodeLine, String)> = replicated_masters(&nodes).into_iter().take(2).collect();
    assert_eq!(victims.len(), 2, "two masters with a replica: {nodes:?}");
    let acked: Vec<String> =
        victims.iter().enumerate().flat_map(|(i, (v, _))| write_acknowledged(&v.addr, &format!("acked{i}"))).collect();
    let containers: Vec<String> = victims.iter().map(|(v, _)| container_of(&project, &v.addr)).collect();
    let survivor = nodes
        .iter()
        .find(|n| victims.iter().all(|(v, heir)| n.id != v.id && n.id != *heir))
        .map(|n| n.addr.clone())
        .expect("a node that is neither destroyed nor an heir");
    let start = Instant::now();
    let mut rm = vec!["rm", "-f", "-v"];
    rm.extend(containers.iter().map(String::as_str));
    run_ok("docker", &rm);

    eventually("both replicas promoted and cluster_state:ok", || {
        victims.iter().try_for_each(|(_, heir)| promoted(&survivor, heir))
    });
    let failover = start.elapsed();
    // Every node sees the other promotion soon after the survivor does.
    eventually("keys after the failover", || read_keys(&survivor, "key:", KEYS));
    read_acknowledged(&survivor, &acked).unwrap_or_else(|e| panic!("after the failover: {e}"));
    // One takeover at least; it gives the masters a majority again, so the other may be Redis's own election.
    let log = project.manager_log();
    let taken_over = log.lines().filter(|l| l.contains("CLUSTER FAILOVER TAKEOVER")).count();
    assert!((1..=2).contains(&taken_over), "{taken_over} takeovers by the manager:\n{log}");

    eventually("the destroyed masters forgotten by every node", || {
        knows_only_the_running(&project)?;
        let members = project.expected_members();
        match members.iter().find(|m| cluster_nodes(m).iter().any(|n| victims.iter().any(|(v, _)| n.id == v.id))) {
            Some(m) => Err(format!("{m} still knows a destroyed master")),
            None => Ok(()),
        }
    });
    let forgotten = start.elapsed();

    // Nothing recreates a removed container by itself (a restart policy restarts, it does not recreate):
    // scale brings the count back, and the new nodes become the replicas of the masters that lack one.
    let (line, took) = project.cluster_sh_ok(&["scale", "6"]);
    eprintln!("lifecycle: scale 6 after the loss: {line}; {:.1} s", took.as_secs_f64());
    let nodes = eventually("6 nodes, 3 masters with a replica each", || {
        let nodes = settled(&project, 6)?;
        knows_only_the_running(&project)?;
        every_master_replicated(&nodes, 3).map(|()| nodes)
    });
    let replaced = start.elapsed();
    assert!(nodes.iter().all(|n| victims.iter().all(|(v, _)| n.id != v.id)), "a destroyed master is back: {nodes:?}");
    eprintln!(
        "lifecycle: two masters destroyed: failed over after {:.1} s, forgotten everywhere after {:.1} s, replaced \
         (scale 6, new replicas in sync) after {:.1} s",
        failover.as_secs_f64(),
        forgotten.as_secs_f64(),
        replaced.as_secs_f64()
    );
    read_keys(&nodes[0].addr, "key:", KEYS).unwrap_or_else(|e| panic!("keys after the replacement: {e}"));
    read_acknowledged(&nodes[0].addr, &acked).unwrap_or_else(|e| panic!("after the replacement: {e}"));

    // Every node stopped, then started again, as a host's reboot does: each comes back under new host ports and
    // finds its peers at none of the addresses it kept. The manager introduces to one node those it does not
    // know where they are, and the cluster comes back whole, with its keys.
    let before = project.expected_members();
    let redis = project.containers("redis", false);
    let start = Instant::now();
    for verb in ["stop", "start"] {
        let mut args = vec![verb];
        args.extend(redis.iter().map(String::as_str));
        run_ok("docker", &args);
    }
    let nodes = eventually("every node back after all were stopped and started", || settled(&project, 6));
    let after = project.expected_members();
    assert!(before.is_disjoint(&after), "every node under new ports after the restart: {before:?}, then {after:?}");
    eprintln!(
        "lifecycle: every node stopped and started: cluster_state:ok after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    eventually("keys after the restart of every node", || read_keys(&nodes[0].addr, "key:", KEYS));
    read_acknowledged(&nodes[0].addr, &acked).unwrap_or_else(|e| panic!("after the restart of every node: {e}"));

    let volumes = volumes_of(&project.containers("redis", true));
    project.cluster_sh_ok(&["down"]);
    assert_eq!(project.leftovers(&volumes), Vec::<String>::new(), "left behind by down");
}
