//! The event-fed port table against the real engine: warm lookups cost no Docker call, and a container
//! restarted again and again while it is asked without pause is never told ports it no longer has.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::{bulk, docker_announce, info_number, labelled_config, run_ok, test_label, TestContainer, TestServer};

const IP: &str = "127.0.0.1";
/// Restarts in the race test.
const RESTARTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_discover_makes_no_docker_call() {
    let label = test_label("warm");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    let c = tokio::task::spawn_blocking(move || TestContainer::with_cluster_ports(&["--label", &label]))
        .await
        .expect("join");
    let expected = c.expected_announce(IP);
    // Its start is the only event this server sees; once it is read, nothing else can move the counters.
    let before = server.wait_settled(1).await;
    let mut client = server.connect().await;
    for _ in 0..100 {
        let reply = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
        assert_eq!(reply, bulk(&expected));
    }
    let info = server.info_docker().await;
    assert_eq!(common::own_docker_calls(&info), common::own_docker_calls(&before), "{info}");
    assert_eq!(info_number(&info, "table_hits"), info_number(&before, "table_hits") + 100, "{info}");
    assert_eq!(info_number(&info, "table_misses"), info_number(&before, "table_misses"), "{info}");
}

/// What the restarting side has done so far, as the asking side reads it before each request.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Restart commands that have returned.
    completed: usize,
    /// A restart command is under way.
    in_flight: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_in_a_tight_loop_is_never_told_ports_it_no_longer_has() {
    let label = test_label("restarts");
    let server = TestServer::with_docker(labelled_config(&label)).await;
    server.wait_fresh().await;
    let c = tokio::task::spawn_blocking(move || TestContainer::with_cluster_ports(&["--label", &label]))
        .await
        .expect("join");
    let progress = Arc::new(Mutex::new(Progress::default()));
    // The ports of each run, in order: run 0 before the first restart, run k after the k-th.
    let restarter = {
        let (id, progress) = (c.id.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            let mut runs = vec![docker_announce(&id, IP)];
            for _ in 0..RESTARTS {
                progress.lock().expect("progress lock").in_flight = true;
                run_ok("docker", &["restart", "-t", "0", &id]);
                *progress.lock().expect("progress lock") = Progress { completed: runs.len(), in_flight: false };
                runs.push(docker_announce(&id, IP));
            }
            runs
        })
    };
    // Asked without pause; each answer is checked once every run's ports are known.
    let mut client = server.connect().await;
    let mut answers: Vec<(Progress, String)> = Vec::new();
    let mut errors = 0usize;
    while !restarter.is_finished() {
        let asked = *progress.lock().expect("progress lock");
        let reply = client.request(&[b"DISCOVER", c.name.as_bytes()]).await;
        match reply.strip_prefix('$').and_then(|r| r.split("\r\n").nth(1)) {
            Some(announce) => answers.push((asked, announce.to_string())),
            None => {
                // An error the entrypoint retries: the container is down for a moment.
                assert!(reply.starts_with("-NOTRUNNING ") || reply.starts_with("-NOPORT "), "{reply}");
                errors += 1;
            }
        }
    }
    let runs = restarter.await.expect("the restarter does not panic");
    let mut after_restart = 0usize;
    for (asked, announce) in &answers {
        let current = &runs[asked.completed];
        if asked.in_flight {
            // Asked during a restart: the run that is ending, or the one that is starting.
            let next = &runs[asked.completed + 1];
            assert!(announce == current || announce == next, "{announce}: neither {current} nor {next}");
        } else {
            assert_eq!(announce, current, "asked after restart {} returned", asked.completed);
            after_restart += 1;
        }
    }
    let distinct: HashSet<&String> = runs.iter().collect();
    println!(
        "{RESTARTS} restarts, {} distinct port pairs; {} answers with ports ({after_restart} asked between restarts), \
         {errors} errors",
        distinct.len(),
        answers.len()
    );
    assert!(distinct.len() > RESTARTS / 2, "ephemeral ports change across restarts: {runs:?}");
    assert!(after_restart >= RESTARTS, "the loop asked between restarts: {after_restart}");
    let info = server.info_docker().await;
    assert_eq!(info_number(&info, "table_changed"), 0, "{info}");
}
