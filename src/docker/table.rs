//! The port table: what rediscover knows of each container, which entries an event made uncertain, and how a
//! name, id or id prefix finds one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Length of the short id Docker uses as a container's default hostname.
pub const SHORT_ID_LEN: usize = 12;
/// Length of a full container id.
pub const ID_LEN: usize = 64;

/// One container as the port table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full 64-character id.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Whether it is running now.
    pub running: bool,
    /// Published TCP ports: (container port, host port).
    pub ports: Vec<(u16, u16)>,
    /// The address to announce for it when it is not the server's own: a swarm task's node address.
    pub ip: Option<IpAddr>,
    /// Other names it answers to: a swarm task's `service.slot`.
    pub aliases: Vec<String>,
    /// Read from a swarm manager's task list (a task of any node), not from the engine's own containers.
    pub from_swarm: bool,
}

impl Container {
    /// The host port published for this container TCP port, if any.
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        self.ports.iter().find(|(c, _)| *c == container_port).map(|(_, h)| *h)
    }

    /// True when the container carries this label (and, when given, with this value).
    pub fn has_label(&self, filter: &LabelFilter) -> bool {
        match (self.labels.get(&filter.key), &filter.value) {
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
            (None, _) => false,
        }
    }
}

/// `KEY` or `KEY=VALUE`: which containers a lookup may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    /// The label's key.
    pub key: String,
    /// The value it must have; any value when `None`.
    pub value: Option<String>,
}

impl std::str::FromStr for LabelFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (s, None),
        };
        if key.is_empty() {
            return Err(format!("label filter '{s}' has an empty key"));
        }
        Ok(LabelFilter { key: key.to_string(), value })
    }
}

impl std::fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// What a lookup in the table found: the container's shared record, or, lent by the table, a reference to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<C = Arc<Container>> {
    /// Exactly one container.
    One(C),
    /// No container by that name, id or prefix.
    None,
    /// An id prefix shared by several containers.
    Ambiguous,
}

impl<C> Found<C> {
    /// The same finding, lending the container.
    pub fn as_ref(&self) -> Found<&C> {
        match self {
            Found::One(c) => Found::One(c),
            Found::None => Found::None,
            Found::Ambiguous => Found::Ambiguous,
        }
    }
}

impl<C: Clone> Found<&C> {
    /// The same finding, with a share of the container of its own.
    pub fn cloned(self) -> Found<C> {
        match self {
            Found::One(c) => Found::One(c.clone()),
            Found::None => Found::None,
            Found::Ambiguous => Found::Ambiguous,
        }
    }
}

/// Every known container, indexed by full id, short id and name, and which of them changed since they were
/// last read. The indexes are keyed by bytes, so that a lookup takes a client's argument as it came.
#[derive(Debug, Default)]
pub struct PortTable {
    by_id: FxHashMap<Box<[u8]>, Arc<Container>>,
    by_short_id: FxHashMap<Box<[u8]>, Vec<Arc<Container>>>,
    by_name: FxHashMap<Box<[u8]>, Arc<Container>>,
    /// Containers an event said changed (started, renamed, ...), with that event's number: what the table holds
    /// of them is not to be trusted until a read issued after that event settles them.
    changed: FxHashMap<String, u64>,
    events: u64,
}

impl PortTable {
    /// A table holding exactly these containers.
    pub fn from_containers(containers: impl IntoIterator<Item = Container>) -> Self {
        let mut table = PortTable::default();
        for c in containers {
            table.upsert(c);
        }
        table
    }

    /// How many containers it holds.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many containers wait to be read again after an event.
    pub fn changed_len(&self) -> usize {
        self.changed.len()
    }

    /// Every container, in no particular order.
    pub fn containers(&self) -> impl Iterator<Item = &Arc<Container>> {
        self.by_id.values()
    }

    /// Running containers whose ports are known to be current: no event has changed them since they were read.
    pub fn running(&self) -> impl Iterator<Item = &Arc<Container>> {
        self.by_id.values().filter(|c| self.is_running(c))
    }

    /// True when this container runs and its ports were read after its last event.
    pub fn is_running(&self, container: &Container) -> bool {
        container.running && !self.changed.contains_key(&container.id)
    }

    /// An event said this container changed: until it is read again, its ports are not answered. Returns the
    /// event's number, which the read must bring back to [`PortTable::settle`].
    pub fn mark_changed(&mut self, id: &str) -> u64 {
        self.events += 1;
        self.changed.insert(id.to_string(), self.events);
        self.events
    }

    /// The event number a container waits to be read for, if any.
    pub fn changed_since(&self, id: &str) -> Option<u64> {
        self.changed.get(id).copied()
    }

    /// Applies a read that was issued after event `event`: `None` means Docker has no such container. A read
    /// overtaken by a later event (or by a `die`, or a resync) is dropped, since it may predate that event.
    pub fn settle(&mut self, id: &str, event: u64, read: Option<Container>) -> bool {
        if self.changed.get(id) != Some(&event) {
            return false;
        }
        match read {
            // A local read of a swarm task knows nothing of its node (a node label may set its address) nor of
            // its `service.slot`: keep what the swarm said.
            Some(mut container) => {
                if let Some(known) = self.by_id.get(id.as_bytes()).filter(|k| k.from_swarm) {
                    container.ip = known.ip;
                    container.aliases = known.aliases.clone();
                    container.from_swarm = true;
                }
                self.upsert(container)
            }
            None => self.remove(id),
        }
        true
    }

    /// The container's process exited: it publishes no ports until it starts again.
    pub fn mark_stopped(&mut self, id: &str) {
        self.changed.remove(id);
        if let Some(c) = self.by_id.get(id.as_bytes()) {
            let stopped = Container { running: false, ports: Vec::new(), ..(**c).clone() };
            self.upsert(stopped);
        }
    }

    /// Replaces every swarm task with `tasks`, leaving the engine's own containers as they are, except the
    /// containers of tasks the swarm no longer wants (those `tasks` lists come back as the swarm's entries).
    pub fn replace_swarm(&mut self, tasks: Vec<Container>) {
        let old: Vec<String> = self
            .by_id
            .values()
            .filter(|c| c.from_swarm || super::swarm::left_behind(c))
            .map(|c| c.id.clone())
            .collect();
        for id in old {
            self.remove(&id);
        }
        for task in tasks {
            self.upsert(task);
        }
    }

    /// Whether it holds this container as a swarm task (with its node's address).
    pub fn is_swarm_task(&self, id: &str) -> bool {
        self.by_id.get(id.as_bytes()).is_some_and(|c| c.from_swarm)
    }

    /// How many swarm tasks it holds.
    pub fn swarm_len(&self) -> usize {
        self.by_id.values().filter(|c| c.from_swarm).count()
    }

    /// Adds a container or replaces what the table knew of it.
    pub fn upsert(&mut self, container: Container) {
        self.remove(&container.id);
        let container = Arc::new(container);
        let short = short_id(container.id.as_bytes()).into();
        self.by_short_id.entry(short).or_default().push(container.clone());
        for name in std::iter::once(&container.name).chain(&container.aliases) {
            self.by_name.insert(name.as_bytes().into(), container.clone());
        }
        self.by_id.insert(container.id.as_bytes().into(), container);
    }

    /// Forgets a container, by full id.
    pub fn remove(&mut self, id: &str) {
        self.changed.remove(id);
        let Some(old) = self.by_id.remove(id.as_bytes()) else {
            return;
        };
        for name in std::iter::once(&old.name).chain(&old.aliases) {
            if self.by_name.get(name.as_bytes()).is_some_and(|c| c.id == id) {
                self.by_name.remove(name.as_bytes());
            }
        }
        let short = short_id(id.as_bytes());
        if let Some(same_prefix) = self.by_short_id.get_mut(short) {
            same_prefix.retain(|c| c.id != id);
            if same_prefix.is_empty() {
                self.by_short_id.remove(short);
            }
        }
    }

    /// Finds a container as Docker does: full id, then name, then unique id prefix. A lookup by hostname or
    /// name hashes the query at most twice.
    pub fn find(&self, query: &[u8]) -> Found<&Arc<Container>> {
        if query.len() == ID_LEN {
            if let Some(c) = self.by_id.get(query) {
                return Found::One(c);
            }
        }
        let name = query.strip_prefix(b"/").unwrap_or(query);
        if let Some(c) = self.by_name.get(name) {
            return Found::One(c);
        }
        if query.len() == SHORT_ID_LEN {
            return match self.by_short_id.get(query).map(Vec::as_slice) {
                Some([c]) => Found::One(c),
                Some([_, _, ..]) => Found::Ambiguous,
                _ => Found::None,
            };
        }
        if query.is_empty() || query.len() > ID_LEN {
            return Found::None;
        }
        let mut hits = self.by_id.values().filter(|c| c.id.as_bytes().starts_with(query));
        match (hits.next(), hits.next()) {
            (Some(c), None) => Found::One(c),
            (Some(_), Some(_)) => Found::Ambiguous,
            _ => Found::None,
        }
    }
}

fn short_id(id: &[u8]) -> &[u8] {
    id.get(..SHORT_ID_LEN).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str) -> Container {
        Container {
            id: id.to_string(),
            name: name.to_string(),
            labels: HashMap::from([("role".to_string(), "redis".to_string())]),
            running: true,
            ports: vec![(6379, 32768), (16379, 32769)],
            ip: None,
            aliases: Vec::new(),
            from_swarm: false,
        }
    }

    #[test]
    fn finds_by_full_id_short_id_prefix_and_name() {
        let id = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
        let t = PortTable::from_containers([container(id, "node-1")]);
        for q in [id, &id[..12], &id[..5], "node-1", "/node-1"] {
            assert!(matches!(t.find(q.as_bytes()), Found::One(c) if c.id == id), "{q}");
        }
        assert_eq!(t.find(b"zzz"), Found::None);
        assert_eq!(t.find(b""), Found::None);
    }

    #[test]
    fn shared_prefix_is_ambiguous_and_removal_cleans_indexes() {
        let a = "abcdef012345aaaa";
        let b = "abcdef012345bbbb";
        let mut t = PortTable::from_containers([container(a, "a"), container(b, "b")]);
        assert_eq!(t.find(b"abcdef012345"), Found::Ambiguous);
        assert_eq!(t.find(b"abc"), Found::Ambiguous);
        t.remove(b);
        assert!(matches!(t.find(b"abcdef012345"), Found::One(c) if c.id == a));
        assert_eq!(t.find(b"b"), Found::None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_swarm_read_drops_the_stopped_containers_of_tasks_the_swarm_no_longer_wants() {
        let task_label = |mut c: Container| {
            c.labels.insert(super::super::swarm::TASK_ID_LABEL.to_string(), "t".to_string());
            c
        };
        let old_task = Container { running: false, ports: Vec::new(), ..task_label(container("old", "svc.1.t1")) };
        let starting = task_label(container("new", "svc.1.t2"));
        let stopped_plain = Container { running: false, ..container("plain", "plain") };
        let mut t = PortTable::from_containers([old_task, starting, stopped_plain]);
        t.replace_swarm(Vec::new());
        assert_eq!(t.find(b"svc.1.t1"), Found::None, "a stopped task container the swarm does not want is gone");
        assert!(matches!(t.find(b"svc.1.t2"), Found::One(_)), "a running one stays until the swarm names its task");
        assert!(matches!(t.find(b"plain"), Found::One(c) if !c.running), "a stopped plain container stays");
    }

    #[test]
    fn a_swarm_read_keeps_the_engines_own_containers_announced_at_its_node_address() {
        let node_ip: IpAddr = "198.18.0.10".parse().unwrap();
        let local = Container { ip: Some(node_ip), ..container("local", "plain") };
        let task = Container { ip: Some(node_ip), from_swarm: true, ..container("task", "svc.1.t1") };
        let mut t = PortTable::from_containers([local, task]);
        assert_eq!(t.swarm_len(), 1);
        t.replace_swarm(Vec::new());
        assert!(matches!(t.find(b"plain"), Found::One(_)), "a container of the engine itself is not a task");
        assert_eq!(t.find(b"svc.1.t1"), Found::None, "a task the swarm no longer lists is gone");
    }

    #[test]
    fn a_local_read_of_a_swarm_task_keeps_what_the_swarm_said() {
        let labelled: IpAddr = "203.0.113.7".parse().unwrap();
        let task = Container {
            ip: Some(labelled),
            aliases: vec!["svc.1".to_string()],
            from_swarm: true,
            ..container("task", "svc.1.t1")
        };
        let mut t = PortTable::from_containers([task]);
        let event = t.mark_changed("task");
        // The engine's own read, announced at its node address: the swarm's node label says otherwise.
        let local = Container { ip: Some("198.18.0.10".parse().unwrap()), ..container("task", "svc.1.t1") };
        assert!(t.settle("task", event, Some(local)));
        assert!(matches!(t.find(b"svc.1"), Found::One(c) if c.ip == Some(labelled) && c.from_swarm));
    }

    #[test]
    fn rename_replaces_the_old_name() {
        let mut t = PortTable::from_containers([container("1234", "old")]);
        t.upsert(container("1234", "new"));
        assert_eq!(t.find(b"old"), Found::None);
        assert!(matches!(t.find(b"new"), Found::One(_)));
    }

    #[test]
    fn a_changed_container_is_hidden_until_a_read_issued_after_the_change_settles_it() {
        let mut t = PortTable::from_containers([container("1234", "n")]);
        let running = |t: &PortTable| t.running().count();
        assert_eq!(running(&t), 1);
        let first = t.mark_changed("1234");
        assert_eq!(running(&t), 0, "a started or renamed container waits for its read");
        let second = t.mark_changed("1234");
        let stale = Container { ports: vec![(6379, 1), (16379, 2)], ..container("1234", "n") };
        assert!(!t.settle("1234", first, Some(stale)), "a read issued before the last event is dropped");
        assert_eq!(running(&t), 0);
        assert!(t.settle("1234", second, Some(container("1234", "n"))));
        assert_eq!(running(&t), 1);
        assert_eq!(t.changed_len(), 0);
        let third = t.mark_changed("1234");
        t.mark_stopped("1234");
        assert!(!t.settle("1234", third, Some(container("1234", "n"))), "a die overtakes the read");
        assert!(matches!(t.find(b"n"), Found::One(c) if !c.running && c.ports.is_empty()));
        let fourth = t.mark_changed("5678");
        assert!(t.settle("5678", fourth, Some(container("5678", "new"))), "a container the table did not know");
        assert!(matches!(t.find(b"new"), Found::One(_)));
    }

    #[test]
    fn label_filter_parses_and_matches() {
        let c = container("1", "x");
        assert!(c.has_label(&"role".parse().unwrap()));
        assert!(c.has_label(&"role=redis".parse().unwrap()));
        assert!(!c.has_label(&"role=other".parse().unwrap()));
        assert!(!c.has_label(&"nope".parse().unwrap()));
        assert!("=x".parse::<LabelFilter>().is_err());
        assert_eq!(c.host_port(6379), Some(32768));
        assert_eq!(c.host_port(1), None);
    }
}
