//! `Ports`: the port table's holder. A lookup trusts the table only for what it knows to be current, a
//! running container read after its last event; everything else asks Docker.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::client::{ContainerEvent, DockerClient, DockerError};
use super::misses::Misses;
use super::stats::{PortStats, ReadCause};
use super::table::{Container, Found, LabelFilter, PortTable};
use super::{lock, read, write};

/// How often a swarm manager's tasks are read again unless told otherwise: Swarm sends no task events.
pub const DEFAULT_SWARM_READ_EVERY: Duration = Duration::from_secs(2);

/// The port table and the Docker client behind it.
#[derive(Debug)]
pub struct Ports {
    table: RwLock<PortTable>,
    /// True while the table follows Docker's events; lookups trust it only then.
    fresh: AtomicBool,
    changed: watch::Sender<u64>,
    client: DockerClient,
    label: Option<LabelFilter>,
    misses: Misses,
    /// True when the engine manages a swarm: lookups see the tasks of every node.
    swarm: AtomicBool,
    /// When the swarm's tasks were last read into the table.
    swarm_read: Mutex<Option<std::time::Instant>>,
    /// How often the follower reads the swarm's tasks again when nothing else made it read them.
    swarm_read_every: Duration,
    /// Whether the engine's own containers are announced at its swarm node address when it is a swarm node.
    announce_node: AtomicBool,
    /// Whether they have no other address: until Docker tells the node address, they cannot be announced.
    node_ip_required: AtomicBool,
    /// The engine's swarm node address, as the follower last read it.
    node_ip: Mutex<Option<IpAddr>>,
    last_error: Mutex<Option<String>>,
    /// Counters for INFO.
    pub stats: PortStats,
}

impl Ports {
    /// An empty table in front of this Docker client, seeing only containers with `label` when one is given.
    /// Until [`follow`](super::follow) (or [`Ports::install`]) fills it, every lookup asks Docker. On a swarm
    /// manager, the follower reads the swarm's tasks again every `swarm_read_every` when no event made it read
    /// them (tasks that fail and are rescheduled send none); a period of zero is taken as a millisecond, as a
    /// timer needs one.
    pub fn new(client: DockerClient, label: Option<LabelFilter>, swarm_read_every: Duration) -> Arc<Self> {
        Arc::new(Ports {
            table: RwLock::new(PortTable::default()),
            fresh: AtomicBool::new(false),
            changed: watch::channel(0).0,
            client,
            label,
            misses: Misses::default(),
            swarm: AtomicBool::new(false),
            swarm_read: Mutex::new(None),
            swarm_read_every: swarm_read_every.max(Duration::from_millis(1)),
            announce_node: AtomicBool::new(false),
            node_ip_required: AtomicBool::new(false),
            node_ip: Mutex::new(None),
            last_error: Mutex::new(None),
            stats: PortStats::default(),
        })
    }

    /// Announces the engine's own containers at its swarm node address while it is a swarm node (an address the
    /// other nodes reach it at); with `required`, the server has no address of its own for them, and answers
    /// them as unknown until Docker tells the node address.
    pub fn announce_node_address(&self, required: bool) {
        self.announce_node.store(true, Ordering::Release);
        self.node_ip_required.store(required, Ordering::Release);
    }

    /// How often the follower reads a swarm's tasks again when no event made it read them.
    pub fn swarm_read_every(&self) -> Duration {
        self.swarm_read_every
    }

    /// Records the engine's swarm node address (`None` outside a swarm), as read at a resync.
    pub fn set_node_ip(&self, ip: Option<IpAddr>) {
        *lock(&self.node_ip) = ip;
    }

    /// The address the engine's own containers are announced at instead of the server's, if any.
    pub fn node_ip(&self) -> Option<IpAddr> {
        if self.announce_node.load(Ordering::Acquire) {
            *lock(&self.node_ip)
        } else {
            None
        }
    }

    /// Whether a container can be announced: it has an address, or the server's own will do.
    fn announceable(&self, c: &Container) -> bool {
        c.ip.is_some() || !self.node_ip_required.load(Ordering::Acquire)
    }

    /// The Docker client.
    pub fn client(&self) -> &DockerClient {
        &self.client
    }

    /// The label every container it sees carries.
    pub fn label(&self) -> Option<&LabelFilter> {
        self.label.as_ref()
    }

    /// True while the table follows Docker's events.
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::Acquire)
    }

    /// How many containers the table holds.
    pub fn table_len(&self) -> usize {
        read(&self.table).len()
    }

    /// How many containers wait to be read again after an event.
    pub fn changed_len(&self) -> usize {
        read(&self.table).changed_len()
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
    pub async fn find(&self, query: &[u8]) -> Result<Found, DockerError> {
        match self.find_in_table(query, |found| found.map(Found::cloned)) {
            Some(found) => {
                self.count_hits(1);
                found
            }
            None => self.find_in_docker(query).await,
        }
    }

    /// Counts lookups answered from the table, for INFO: [`Ports::find_in_table`] leaves that to its caller, which
    /// may count a batch of them at once.
    pub fn count_hits(&self, n: u64) {
        self.stats.hits.fetch_add(n, Ordering::Relaxed);
    }

    /// What the table alone can answer for [`Ports::find`], without waiting, given to `answer` while the table
    /// lends the container: `None` when Docker must be asked. The caller counts the hit ([`Ports::count_hits`]).
    pub fn find_in_table<R>(
        &self,
        query: &[u8],
        answer: impl FnOnce(Result<Found<&Arc<Container>>, DockerError>) -> R,
    ) -> Option<R> {
        if !self.is_fresh() {
            return None;
        }
        let table = read(&self.table);
        let found = match table.find(query) {
            Found::One(c) if table.is_running(c) => Found::One(c),
            Found::Ambiguous => Found::Ambiguous,
            // Unknown, stopped or just changed: it may have started since its last event was read.
            _ => return None,
        };
        Some(answer(self.announceable_found(found)))
    }

    /// [`Ports::find`] for a query the table could not answer.
    pub async fn find_in_docker(&self, query: &[u8]) -> Result<Found, DockerError> {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        if !is_container_ref(query) {
            return Ok(Found::None);
        }
        let found = self.ask_docker().await?.find(query).cloned();
        self.announceable_found(found)
    }

    /// A container found that has no address to be announced at yet is an error, not an answer.
    fn announceable_found<C: AsRef<Container>>(&self, found: Found<C>) -> Result<Found<C>, DockerError> {
        match found {
            Found::One(c) if !self.announceable(c.as_ref()) => Err(DockerError::Unreachable(
                "this engine's swarm node address is not known yet, and there is no default route: \
                 pass --announce-ip"
                    .into(),
            )),
            found => Ok(found),
        }
    }

    /// Every running container with current ports: from the table while it is fresh, else from Docker.
    pub async fn list(&self) -> Result<Vec<Arc<Container>>, DockerError> {
        let all = if self.is_fresh() {
            read(&self.table).running().cloned().collect()
        } else {
            self.ask_docker().await?.running().cloned().collect::<Vec<_>>()
        };
        Ok(all.into_iter().filter(|c| self.announceable(c)).collect())
    }

    /// Docker's list (and on a swarm manager, the swarm's tasks), from calls that started after this lookup
    /// arrived.
    async fn ask_docker(&self) -> Result<Arc<PortTable>, DockerError> {
        self.misses.snapshot(|| self.read_all(self.is_swarm(), ReadCause::Miss)).await
    }

    /// Every container the engine runs, and with `swarm` every task container of the swarm, which replaces the
    /// local entry of the same container; `cause` is what made the read, for INFO.
    pub async fn read_all(&self, swarm: bool, cause: ReadCause) -> Result<Vec<Container>, DockerError> {
        self.stats.docker_calls.fetch_add(1, Ordering::Relaxed);
        let mut list = self.client.list(self.label.as_ref()).await?;
        if let Some(ip) = self.node_ip() {
            list.iter_mut().for_each(|c| _ = c.ip.get_or_insert(ip));
        }
        if swarm {
            match self.read_swarm(cause).await {
                Ok(tasks) => {
                    // A task container is the swarm's entry when the swarm wants it, and gone when it does not.
                    let wanted: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
                    list.retain(|c| !wanted.contains(c.id.as_str()) && !super::swarm::left_behind(c));
                    list.extend(tasks);
                }
                // The engine left the swarm, or its manager role: answer for its own containers until the
                // follower looks again.
                Err(DockerError::Api(e)) => {
                    tracing::warn!(error = %e, "the swarm's tasks cannot be read; answering for local containers");
                    self.set_swarm(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(list)
    }

    /// The swarm's task containers; `cause` is what made the read, for INFO.
    pub async fn read_swarm(&self, cause: ReadCause) -> Result<Vec<Container>, DockerError> {
        self.stats.docker_calls.fetch_add(3, Ordering::Relaxed);
        self.stats.swarm_read(cause);
        self.client.swarm_tasks(self.label.as_ref()).await
    }

    /// True when the engine was last seen to manage a swarm.
    pub fn is_swarm(&self) -> bool {
        self.swarm.load(Ordering::Acquire)
    }

    /// Records whether the engine manages a swarm.
    pub fn set_swarm(&self, manager: bool) {
        self.swarm.store(manager, Ordering::Release);
        if !manager {
            lock(&self.swarm_read).take();
        }
    }

    /// How many swarm tasks the table holds, and how long ago they were read.
    pub fn swarm_status(&self) -> (usize, Option<Duration>) {
        (read(&self.table).swarm_len(), lock(&self.swarm_read).map(|t| t.elapsed()))
    }

    /// Replaces the table's swarm tasks with a fresh read. The engine manages a swarm again if a failed read had
    /// made lookups answer for its own containers only.
    pub fn install_swarm(&self, tasks: Vec<Container>) {
        self.swarm.store(true, Ordering::Release);
        write(&self.table).replace_swarm(tasks);
        *lock(&self.swarm_read) = Some(std::time::Instant::now());
        self.bump();
    }

    /// Replaces the table with a complete list of containers, as a resync does, and trusts it from now on.
    pub fn install(&self, containers: Vec<Container>) {
        if self.is_swarm() {
            *lock(&self.swarm_read) = Some(std::time::Instant::now());
        }
        *write(&self.table) = PortTable::from_containers(containers);
        self.fresh.store(true, Ordering::Release);
        lock(&self.last_error).take();
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        self.bump();
    }

    /// Stops trusting the table: lookups ask Docker until the next [`Ports::install`].
    pub fn mark_stale(&self, error: &DockerError) {
        self.fresh.store(false, Ordering::Release);
        let error = error.to_string();
        let mut last = lock(&self.last_error);
        if last.as_deref() != Some(error.as_str()) {
            tracing::warn!(error = %error, "port table is stale; lookups go to Docker until it resyncs");
        }
        *last = Some(error);
    }

    /// Applies one event at once, without asking Docker. Returns the container to read again, if any.
    pub fn apply(&self, event: ContainerEvent) -> Option<String> {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let read_again = {
            let mut table = write(&self.table);
            match event {
                ContainerEvent::Died(id) => {
                    table.mark_stopped(&id);
                    None
                }
                ContainerEvent::Destroyed(id) => {
                    table.remove(&id);
                    None
                }
                ContainerEvent::Changed(id) => {
                    table.mark_changed(&id);
                    Some(id)
                }
            }
        };
        self.bump();
        read_again
    }

    /// The event number a container still waits to be read for, if any.
    pub fn changed_since(&self, id: &str) -> Option<u64> {
        read(&self.table).changed_since(id)
    }

    /// Applies a read of `id` issued after event `event`; `None` when Docker has no such container.
    pub fn settle(&self, id: &str, event: u64, mut container: Option<Container>) {
        if let (Some(c), Some(ip)) = (container.as_mut(), self.node_ip()) {
            c.ip.get_or_insert(ip);
        }
        let mut table = write(&self.table);
        // On a swarm manager, a task container is announced at its node's address, which only the swarm tells:
        // until the swarm's tasks are read again, it is answered from Docker.
        let task = container.as_ref().is_some_and(|c| c.labels.contains_key(super::swarm::TASK_ID_LABEL));
        if task && self.is_swarm() && !table.is_swarm_task(id) {
            return;
        }
        if table.settle(id, event, container) {
            drop(table);
            self.bump();
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Whether `query` can name a container: Docker's name alphabet (after an optional `/`), or an id (hex).
/// Anything else cannot match, so it is answered without asking Docker.
pub fn is_container_ref(query: &[u8]) -> bool {
    let name = query.strip_prefix(b"/").unwrap_or(query);
    matches!(name.first(), Some(c) if c.is_ascii_alphanumeric())
        && name.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && name.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: char, ip: Option<IpAddr>) -> Container {
        Container {
            id: id.to_string().repeat(64),
            name: format!("node-{id}"),
            labels: Default::default(),
            running: true,
            ports: vec![(6379, 32768), (16379, 32769)],
            from_swarm: ip.is_some(),
            ip,
            aliases: Vec::new(),
        }
    }

    #[tokio::test]
    async fn with_no_address_of_its_own_a_local_container_waits_for_the_node_address() {
        let ports = Ports::new(
            DockerClient::new("unix:///nonexistent", Duration::from_secs(1)),
            None,
            DEFAULT_SWARM_READ_EVERY,
        );
        ports.announce_node_address(true);
        let task_ip: IpAddr = "198.18.0.11".parse().unwrap();
        ports.install(vec![container('a', None), container('b', Some(task_ip))]);
        assert!(
            ports.find("a".repeat(12).as_bytes()).await.is_err(),
            "a local container has no address to announce yet"
        );
        assert!(matches!(ports.find("b".repeat(12).as_bytes()).await, Ok(Found::One(c)) if c.ip == Some(task_ip)));
        let listed: Vec<String> = ports.list().await.unwrap().iter().map(|c| c.name.clone()).collect();
        assert_eq!(listed, vec!["node-b".to_string()]);
    }

    #[test]
    fn the_node_address_is_used_only_when_asked_for() {
        let ports = Ports::new(
            DockerClient::new("unix:///nonexistent", Duration::from_secs(1)),
            None,
            DEFAULT_SWARM_READ_EVERY,
        );
        let ip: IpAddr = "198.18.0.12".parse().unwrap();
        ports.set_node_ip(Some(ip));
        assert_eq!(ports.node_ip(), None, "an address given on the command line wins");
        ports.announce_node_address(false);
        assert_eq!(ports.node_ip(), Some(ip));
    }

    #[test]
    fn only_docker_names_and_ids_can_match() {
        for ok in ["abc123", "/node-1", "my_app.redis-1", "a"] {
            assert!(is_container_ref(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "/", "../images/json", "a/b", "a?x=1", "-x", "a b", "é"] {
            assert!(!is_container_ref(bad.as_bytes()), "{bad}");
        }
    }
}
