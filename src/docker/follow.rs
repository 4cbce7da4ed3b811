//! The event follower: lists the containers once, then applies Docker's events as they come, reading changed
//! containers again in the background so that no read ever holds up the next event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::DockerError;
use super::ports::Ports;
use super::table::Container;

/// A finished read: the container's id, the event number it settles, what Docker said.
type Read = (String, u64, Result<Option<Container>, DockerError>);

/// How long the follower waits before reconnecting, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How far back a resync replays events, to cover the time the list itself took.
const REPLAY_MARGIN: Duration = Duration::from_secs(1);
/// Most reads of changed containers out at once; the rest wait their turn (and are answered from Docker
/// meanwhile).
const MAX_READS: usize = 16;
/// How often a swarm manager's tasks are read again: Swarm sends no task events.
const SWARM_READ_EVERY: Duration = Duration::from_secs(2);

/// Keeps the table in step with Docker until `shutdown`: list once, then follow events; on any failure mark the
/// table stale, wait, reconnect and list again.
pub async fn follow(ports: Arc<Ports>, shutdown: CancellationToken) {
    let mut retry = RETRY_FIRST;
    loop {
        let err = tokio::select! {
            _ = shutdown.cancelled() => return,
            err = sync_and_follow(&ports, &mut retry) => err,
        };
        ports.mark_stale(&err);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

async fn sync_and_follow(ports: &Arc<Ports>, retry: &mut Duration) -> DockerError {
    let client = ports.client();
    // Events from a little before the list are replayed: applying one twice only makes the table read that
    // container again, while missing one could leave old ports in it.
    let since = SystemTime::now() - REPLAY_MARGIN;
    ports.stats.docker_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (swarm, node_ip) = match client.swarm_node().await {
        Ok(node) => (node.manager, node.addr),
        Err(e) => return e,
    };
    ports.set_swarm(swarm);
    ports.set_node_ip(node_ip);
    let list = match ports.read_all(swarm).await {
        Ok(list) => list,
        Err(e) => return e,
    };
    let mut events = match client.events(since, ports.label()).await {
        Ok(events) => events,
        Err(e) => return e,
    };
    ports.install(list);
    *retry = RETRY_FIRST;
    tracing::info!(containers = ports.table_len(), swarm, node_ip = ?ports.node_ip(), "port table synced with Docker");
    let mut swarm_reads: JoinSet<Result<Vec<Container>, DockerError>> = JoinSet::new();
    let mut swarm_tick = tokio::time::interval(SWARM_READ_EVERY);
    swarm_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    swarm_tick.reset();
    // Dropped with this function: a resync abandons the reads still out.
    let mut reads: JoinSet<Read> = JoinSet::new();
    let mut waiting: VecDeque<String> = VecDeque::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if let Some(id) = ports.apply(event) {
                        waiting.push_back(id);
                    }
                }
                Some(Err(e)) => return e,
                None => return DockerError::Unreachable("the event stream ended".into()),
            },
            _ = swarm_tick.tick(), if swarm && swarm_reads.is_empty() => {
                let ports = ports.clone();
                swarm_reads.spawn(async move { ports.read_swarm().await });
            }
            Some(done) = swarm_reads.join_next(), if !swarm_reads.is_empty() => match done {
                Ok(Ok(tasks)) => ports.install_swarm(tasks),
                Ok(Err(e)) => return e,
                Err(e) => return DockerError::Unreachable(format!("a swarm read failed: {e}")),
            },
            Some(done) = reads.join_next(), if !reads.is_empty() => match done {
                Ok((id, event, Ok(container))) => ports.settle(&id, event, container),
                // The table cannot know this container: start again from a full list.
                Ok((_, _, Err(e))) => return e,
                Err(e) => return DockerError::Unreachable(format!("a container read failed: {e}")),
            },
        }
        while reads.len() < MAX_READS {
            let Some(id) = waiting.pop_front() else { break };
            // Read only what still waits, for the latest event that changed it.
            let Some(event) = ports.changed_since(&id) else { continue };
            ports.stats.docker_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ports = ports.clone();
            reads.spawn(async move {
                let read = ports.client().inspect(&id).await;
                (id, event, read)
            });
        }
    }
}
