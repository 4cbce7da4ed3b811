//! The event follower: lists the containers once, then applies Docker's events as they come, reading changed
//! containers again in the background so that no read ever holds up the next event. On a swarm manager it also
//! reads the swarm's tasks again after each node or service event, and periodically.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{stream, StreamExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::DockerError;
use super::ports::Ports;
use super::stats::ReadCause;
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
/// After a node or service event, the swarm's tasks are read at once, then this many more times, the first this
/// long after the event and each wait twice the last (0.5, 1.5, 3.5 and 7.5 s after it). A service event comes
/// when its spec is stored, before the swarm has placed its tasks and their containers have started and
/// published their ports, which takes a moment more on an idle host and some seconds on a busy one, and sends no
/// event of its own. A fixed few reads bound the cost (a burst of events only starts the count again); a task
/// that starts later still is found by the periodic read, or by the first lookup that misses it.
const EVENT_FOLLOW_UPS: u32 = 4;
const EVENT_FOLLOW_UP_FIRST: Duration = Duration::from_millis(500);

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
    let list = match ports.read_all(swarm, ReadCause::Resync).await {
        Ok(list) => list,
        Err(e) => return e,
    };
    let mut events = match client.events(since, ports.label()).await {
        Ok(events) => events,
        Err(e) => return e,
    };
    // A separate stream: node and service events carry no container labels, and Docker ANDs filter keys. Its
    // failure is the container stream's: both follow the same engine over the same connection.
    let mut swarm_events = if swarm {
        match client.swarm_events(since).await {
            Ok(events) => events.left_stream(),
            Err(e) => return e,
        }
    } else {
        stream::pending().right_stream()
    };
    ports.install(list);
    *retry = RETRY_FIRST;
    tracing::info!(containers = ports.table_len(), swarm, node_ip = ?ports.node_ip(), "port table synced with Docker");
    let mut swarm_reads = SwarmReads::default();
    // The bounded fallback: tasks that fail and are rescheduled send no node or service event.
    let mut swarm_tick = tokio::time::interval(ports.swarm_read_every());
    swarm_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    swarm_tick.reset();
    let follow_up = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(follow_up);
    let mut follow_ups = 0;
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
            event = swarm_events.next() => match event {
                Some(Ok(event)) => {
                    tracing::debug!(event = %event.what, "a swarm event: reading the swarm's tasks again");
                    ports.stats.swarm_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    swarm_reads.request(ports, ReadCause::Event);
                    follow_ups = EVENT_FOLLOW_UPS;
                    follow_up.as_mut().reset(tokio::time::Instant::now() + EVENT_FOLLOW_UP_FIRST);
                }
                Some(Err(e)) => return e,
                None => return DockerError::Unreachable("the swarm event stream ended".into()),
            },
            _ = &mut follow_up, if follow_ups > 0 => {
                follow_ups -= 1;
                swarm_reads.request(ports, ReadCause::Event);
                let wait = EVENT_FOLLOW_UP_FIRST * 2u32.pow(EVENT_FOLLOW_UPS - follow_ups);
                follow_up.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = swarm_tick.tick(), if swarm && swarm_reads.is_idle() => swarm_reads.request(ports, ReadCause::Timer),
            Some(done) = swarm_reads.out.join_next(), if !swarm_reads.is_idle() => match done {
                Ok(Ok(tasks)) => {
                    ports.install_swarm(tasks);
                    // The periodic read counts from the last read, whatever made it.
                    swarm_tick.reset();
                    if let Some(cause) = swarm_reads.wanted.take() {
                        swarm_reads.request(ports, cause);
                    }
                }
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

/// Reads of the swarm's tasks: one out at a time, and at most one more wanted after it, however many events ask
/// meanwhile (the read out may have listed the tasks before the latest of them).
#[derive(Default)]
struct SwarmReads {
    out: JoinSet<Result<Vec<Container>, DockerError>>,
    wanted: Option<ReadCause>,
}

impl SwarmReads {
    fn is_idle(&self) -> bool {
        self.out.is_empty()
    }

    /// Starts a read now, or once the read out has finished.
    fn request(&mut self, ports: &Arc<Ports>, cause: ReadCause) {
        if self.is_idle() {
            let ports = ports.clone();
            self.out.spawn(async move { ports.read_swarm(cause).await });
        } else {
            self.wanted = Some(cause);
        }
    }
}
