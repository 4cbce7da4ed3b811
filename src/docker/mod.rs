//! What rediscover knows of Docker: the port table, fed by Docker's events, with Docker itself behind it.
//!
//! A lookup reads the table while it follows the event stream; a miss (or a table gone stale because the
//! stream dropped) costs one inspect, shared by every concurrent lookup of the same container.

pub mod announce;
pub mod client;
pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;

pub use announce::Announce;
pub use client::{ContainerEvent, DockerClient, DockerError};
pub use table::{Container, Found, LabelFilter, PortTable};

/// How long the event follower waits before reconnecting, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How far back a resync replays events, to cover the time the list itself took.
const REPLAY_MARGIN: Duration = Duration::from_secs(1);

type Shared = Arc<OnceCell<Result<Found, DockerError>>>;

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Lookups answered from the table.
    pub hits: AtomicU64,
    /// Lookups that had to ask Docker.
    pub misses: AtomicU64,
    /// Requests sent to Docker (list, inspect).
    pub docker_calls: AtomicU64,
    /// Times the table was rebuilt from a full list.
    pub resyncs: AtomicU64,
    /// Container events applied.
    pub events: AtomicU64,
}

/// The port table and the Docker client behind it.
#[derive(Debug)]
pub struct Ports {
    table: RwLock<PortTable>,
    /// True while the table follows the event stream; lookups trust it only then.
    fresh: AtomicBool,
    changed: watch::Sender<u64>,
    client: Option<DockerClient>,
    inflight: Mutex<HashMap<String, Shared>>,
    last_error: Mutex<Option<String>>,
    /// Counters for INFO.
    pub stats: PortStats,
}

impl Ports {
    /// A table fed by this Docker client; call [`Ports::follow`] to keep it current.
    pub fn new(client: DockerClient) -> Arc<Self> {
        Arc::new(Self::build(PortTable::default(), Some(client), false))
    }

    /// A fixed table with no Docker behind it, for tests and fuzzing.
    pub fn in_memory(containers: impl IntoIterator<Item = Container>) -> Arc<Self> {
        Arc::new(Self::build(PortTable::from_containers(containers), None, true))
    }

    fn build(table: PortTable, client: Option<DockerClient>, fresh: bool) -> Self {
        Ports {
            table: RwLock::new(table),
            fresh: AtomicBool::new(fresh),
            changed: watch::channel(0).0,
            client,
            inflight: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
            stats: PortStats::default(),
        }
    }

    /// The Docker client, when there is one.
    pub fn client(&self) -> Option<&DockerClient> {
        self.client.as_ref()
    }

    /// True while the table follows Docker's events.
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::Acquire)
    }

    /// How many containers the table holds.
    pub fn table_len(&self) -> usize {
        read(&self.table).len()
    }

    /// The last error seen while following Docker, if the follower is not connected.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// A receiver that sees a new value each time the table changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Finds one container by full id, unique id prefix or name.
    pub async fn find(&self, query: &str) -> Result<Found, DockerError> {
        if self.client.is_none() || self.is_fresh() {
            let found = read(&self.table).find(query);
            // A stopped or unknown container may have started since its last event: ask Docker.
            if self.client.is_none() || matches!(&found, Found::One(c) if c.running) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(found);
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        if !is_container_ref(query) {
            return Ok(Found::None);
        }
        self.inspect_shared(query).await
    }

    /// Every container: from the table while it is fresh, else from Docker.
    pub async fn list(&self) -> Result<Vec<Arc<Container>>, DockerError> {
        match &self.client {
            Some(client) if !self.is_fresh() => {
                self.stats.docker_calls.fetch_add(1, Ordering::Relaxed);
                Ok(client.list().await?.into_iter().map(Arc::new).collect())
            }
            _ => Ok(read(&self.table).containers().cloned().collect()),
        }
    }

    /// Keeps the table in step with Docker until `shutdown`: list once, then follow events; on any
    /// failure mark the table stale, wait, reconnect and list again.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(client) = &self.client else { return };
        let mut retry = RETRY_FIRST;
        loop {
            let err = tokio::select! {
                _ = shutdown.cancelled() => return,
                err = self.sync_and_follow(client, &mut retry) => err,
            };
            self.fresh.store(false, Ordering::Release);
            let err = err.to_string();
            if lock(&self.last_error).as_deref() != Some(err.as_str()) {
                tracing::warn!(error = %err, "port table is stale; lookups go to Docker until it resyncs");
            }
            *lock(&self.last_error) = Some(err);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    async fn sync_and_follow(&self, client: &DockerClient, retry: &mut Duration) -> DockerError {
        let since = SystemTime::now() - REPLAY_MARGIN;
        self.stats.docker_calls.fetch_add(1, Ordering::Relaxed);
        let list = match client.list().await {
            Ok(list) => list,
            Err(e) => return e,
        };
        let mut events = match client.events(since).await {
            Ok(events) => events,
            Err(e) => return e,
        };
        *write(&self.table) = PortTable::from_containers(list);
        self.fresh.store(true, Ordering::Release);
        lock(&self.last_error).take();
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        self.bump();
        *retry = RETRY_FIRST;
        tracing::info!(containers = self.table_len(), "port table synced with Docker");
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(client, event).await,
                Err(e) => return e,
            }
        }
        DockerError::Unreachable("the event stream ended".into())
    }

    async fn apply(&self, client: &DockerClient, event: ContainerEvent) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        match event {
            ContainerEvent::Died(id) => self.mark_stopped(&id),
            ContainerEvent::Destroyed(id) => write(&self.table).remove(&id),
            ContainerEvent::Changed(id) => {
                // A restart always sends `die` first, which hides the old ports; a start, rename or pause of an
                // entry still marked running (a replayed event) leaves its ports as they are while it is read.
                self.stats.docker_calls.fetch_add(1, Ordering::Relaxed);
                match client.inspect(&id).await {
                    Ok(Some(c)) => write(&self.table).upsert(c),
                    Ok(None) => write(&self.table).remove(&id),
                    Err(e) => {
                        tracing::warn!(container = %id, error = %e, "could not read a changed container")
                    }
                }
            }
        }
        self.bump();
    }

    fn mark_stopped(&self, id: &str) {
        let mut table = write(&self.table);
        if let Found::One(c) = table.find(id) {
            let stopped = Container { running: false, ports: Vec::new(), ..(*c).clone() };
            table.upsert(stopped);
        }
    }

    async fn inspect_shared(&self, query: &str) -> Result<Found, DockerError> {
        let cell = lock(&self.inflight).entry(query.to_string()).or_default().clone();
        let result = cell.get_or_init(|| self.inspect(query)).await.clone();
        let mut inflight = lock(&self.inflight);
        if inflight.get(query).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(query);
        }
        result
    }

    async fn inspect(&self, query: &str) -> Result<Found, DockerError> {
        let Some(client) = &self.client else {
            return Ok(Found::None);
        };
        self.stats.docker_calls.fetch_add(1, Ordering::Relaxed);
        match client.inspect(query).await {
            Ok(Some(c)) => Ok(Found::One(Arc::new(c))),
            Ok(None) => Ok(Found::None),
            // Docker refuses a prefix that several ids share.
            Err(DockerError::Api(msg)) if msg.contains("multiple") => Ok(Found::Ambiguous),
            Err(e) => Err(e),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Whether `query` can name a container: Docker's name alphabet, or an id (hex). Anything else never reaches
/// Docker, so a client cannot steer the request path.
pub fn is_container_ref(query: &str) -> bool {
    let name = query.strip_prefix('/').unwrap_or(query);
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_docker_names_and_ids_reach_docker() {
        for ok in ["abc123", "/node-1", "my_app.redis-1", "a"] {
            assert!(is_container_ref(ok), "{ok}");
        }
        for bad in ["", "/", "../images/json", "a/b", "a?x=1", "-x", "a b", "é"] {
            assert!(!is_container_ref(bad), "{bad}");
        }
    }
}
