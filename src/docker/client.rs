//! The Docker API through bollard: connect and negotiate, list, inspect, and the event streams.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum, EventMessage, LocalNodeState, PortMap,
};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptions, ListNodesOptions, ListServicesOptions,
    ListTasksOptions,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};

use super::lock;
use super::table::{Container, LabelFilter};

/// What can go wrong when asking Docker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// The socket is missing, refuses connections, or the connection broke.
    #[error("Docker is unreachable: {0}")]
    Unreachable(String),
    /// Docker did not answer in time.
    #[error("Docker did not answer within {0:?}")]
    Timeout(Duration),
    /// Docker answered with an error status.
    #[error("Docker answered with an error: {0}")]
    Api(String),
}

/// This engine's place in a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmNode {
    /// It manages the swarm, and so can tell the tasks of every node.
    pub manager: bool,
    /// The address its own containers are announced at, when it is a swarm node.
    pub addr: Option<IpAddr>,
}

/// A change to one container, from Docker's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEvent {
    /// Its process exited: it has no ports any more.
    Died(String),
    /// It was removed.
    Destroyed(String),
    /// It started, was renamed, or otherwise changed what the table holds: read it again.
    Changed(String),
}

/// A change to the swarm's nodes or services, from Docker's event stream: its tasks may have changed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmEvent {
    /// The object's type, the action and the object's id, for the log.
    pub what: String,
}

/// Container events that change what the port table holds.
const WATCHED_EVENTS: &[&str] = &["start", "die", "destroy", "rename", "unpause", "pause"];

/// A lazily connected Docker client that reconnects after a failure.
pub struct DockerClient {
    host: String,
    timeout: Duration,
    conn: Mutex<Option<Docker>>,
    api_version: Mutex<Option<String>>,
}

impl std::fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClient").field("host", &self.host).field("timeout", &self.timeout).finish()
    }
}

impl DockerClient {
    /// A client for `host` (`unix:///path`, `/path`, `tcp://host:port`); it connects on first use.
    pub fn new(host: impl Into<String>, timeout: Duration) -> Self {
        DockerClient { host: host.into(), timeout, conn: Mutex::new(None), api_version: Mutex::new(None) }
    }

    /// Where it connects.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version agreed with the engine, once connected.
    pub fn api_version(&self) -> Option<String> {
        lock(&self.api_version).clone()
    }

    /// True while a negotiated connection is held.
    pub fn is_connected(&self) -> bool {
        lock(&self.conn).is_some()
    }

    /// Reads one container by its full id (as an event names it); `None` when Docker has no such container.
    pub async fn inspect(&self, id: &str) -> Result<Option<Container>, DockerError> {
        let docker = self.docker().await?;
        let options = InspectContainerOptions { size: false };
        match self.call(docker.inspect_container(id, Some(options))).await {
            Ok(r) => Ok(from_inspect(r)),
            Err(DockerError::Api(msg)) if msg.starts_with("404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists every container, running or not, that carries `label` (all of them without one): Docker filters,
    /// so a container without the label is never seen.
    pub async fn list(&self, label: Option<&LabelFilter>) -> Result<Vec<Container>, DockerError> {
        let docker = self.docker().await?;
        let filters = label.map(|l| HashMap::from([("label".to_string(), vec![l.to_string()])]));
        let options = ListContainersOptions { all: true, filters, ..Default::default() };
        let list = self.call(docker.list_containers(Some(options))).await?;
        Ok(list.into_iter().filter_map(from_summary).collect())
    }

    /// Whether this engine is a manager of a swarm, and so can tell the tasks of every node.
    pub async fn is_swarm_manager(&self) -> Result<bool, DockerError> {
        Ok(self.swarm_node().await?.manager)
    }

    /// What this engine is in a swarm: a manager or not, and the address its containers are reached at when it
    /// is a node of one (the label `io.rediscover.announce-ip` of the engine or, read on a manager, of its node;
    /// else the node address the swarm knows it by). One call, two on a manager.
    pub async fn swarm_node(&self) -> Result<SwarmNode, DockerError> {
        let docker = self.docker().await?;
        let info = self.call(docker.info()).await?;
        let engine_label =
            info.labels.unwrap_or_default().into_iter().find_map(|l| {
                l.strip_prefix(super::swarm::ANNOUNCE_IP_LABEL)?.strip_prefix('=')?.parse::<IpAddr>().ok()
            });
        let Some(swarm) = info.swarm.filter(|s| s.local_node_state == Some(LocalNodeState::ACTIVE)) else {
            return Ok(SwarmNode { manager: false, addr: None });
        };
        let manager = swarm.control_available.unwrap_or(false);
        let mut node_label = None;
        if let (true, Some(id)) = (manager, swarm.node_id.as_deref()) {
            let node = self.call(docker.inspect_node(id)).await?;
            let labels = node.spec.and_then(|s| s.labels).unwrap_or_default();
            node_label = labels.get(super::swarm::ANNOUNCE_IP_LABEL).and_then(|l| l.parse::<IpAddr>().ok());
        }
        let node_addr = swarm.node_addr.and_then(|a| a.parse::<IpAddr>().ok()).filter(|a| !a.is_unspecified());
        Ok(SwarmNode { manager, addr: node_label.or(engine_label).or(node_addr) })
    }

    /// The swarm's task containers that carry `label`, with their nodes' addresses (three calls: tasks, nodes,
    /// services).
    pub async fn swarm_tasks(&self, label: Option<&LabelFilter>) -> Result<Vec<Container>, DockerError> {
        let docker = self.docker().await?;
        let tasks = self.call(docker.list_tasks(None::<ListTasksOptions>)).await?;
        let nodes = self.call(docker.list_nodes(None::<ListNodesOptions>)).await?;
        let services = self.call(docker.list_services(None::<ListServicesOptions>)).await?;
        Ok(super::swarm::task_containers(tasks, &nodes, &services, label))
    }

    /// Follows the events of containers that carry `label` (all without one), from `since` on.
    pub async fn events(
        &self,
        since: SystemTime,
        label: Option<&LabelFilter>,
    ) -> Result<impl Stream<Item = Result<ContainerEvent, DockerError>> + Unpin, DockerError> {
        let mut filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), WATCHED_EVENTS.iter().map(|e| e.to_string()).collect()),
        ]);
        if let Some(label) = label {
            filters.insert("label".to_string(), vec![label.to_string()]);
        }
        let stream = self.event_stream(since, filters).await?.filter_map(|item| async move {
            let msg = match item {
                Ok(msg) => msg,
                Err(e) => return Some(Err(e)),
            };
            let id = msg.actor.and_then(|a| a.id)?;
            Some(Ok(match msg.action.as_deref() {
                Some("die") => ContainerEvent::Died(id),
                Some("destroy") => ContainerEvent::Destroyed(id),
                _ => ContainerEvent::Changed(id),
            }))
        });
        Ok(Box::pin(stream))
    }

    /// Follows the swarm's node and service events, from `since` on: a manager reports them, and they carry no
    /// container labels, so they cannot share the container stream (Docker ANDs its filter keys).
    pub async fn swarm_events(
        &self,
        since: SystemTime,
    ) -> Result<impl Stream<Item = Result<SwarmEvent, DockerError>> + Unpin, DockerError> {
        let filters = HashMap::from([("type".to_string(), vec!["node".to_string(), "service".to_string()])]);
        let stream = self.event_stream(since, filters).await?.map(|item| {
            let msg = item?;
            let kind = msg.typ.map(|t| t.to_string()).unwrap_or_default();
            let action = msg.action.unwrap_or_default();
            let id = msg.actor.and_then(|a| a.id).unwrap_or_default();
            Ok(SwarmEvent { what: format!("{kind} {action} {id}") })
        });
        Ok(Box::pin(stream))
    }

    /// Docker's events that match `filters`, from `since` on.
    async fn event_stream(
        &self,
        since: SystemTime,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<impl Stream<Item = Result<EventMessage, DockerError>>, DockerError> {
        let docker = self.docker().await?;
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let timeout = self.timeout;
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(filters),
        };
        Ok(docker.events(Some(options)).map(move |item| item.map_err(|e| classify(e, timeout))))
    }

    /// Drops the connection so the next call connects and negotiates again.
    pub fn reset(&self) {
        lock(&self.conn).take();
    }

    async fn docker(&self) -> Result<Docker, DockerError> {
        if let Some(d) = lock(&self.conn).clone() {
            return Ok(d);
        }
        let docker = connect(&self.host, self.timeout)?;
        // Debian's engine speaks an older API than bollard's default.
        let docker = match tokio::time::timeout(self.timeout, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(classify(e, self.timeout)),
            Err(_) => return Err(DockerError::Timeout(self.timeout)),
        };
        *lock(&self.api_version) = Some(docker.client_version().to_string());
        *lock(&self.conn) = Some(docker.clone());
        Ok(docker)
    }

    async fn call<T>(&self, fut: impl Future<Output = Result<T, BollardError>>) -> Result<T, DockerError> {
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| classify(e, self.timeout)),
            Err(_) => Err(DockerError::Timeout(self.timeout)),
        };
        if matches!(result, Err(DockerError::Unreachable(_) | DockerError::Timeout(_))) {
            self.reset();
        }
        result
    }
}

fn connect(host: &str, timeout: Duration) -> Result<Docker, DockerError> {
    // Bollard counts whole seconds: its own limit is a backstop past ours, which cuts at the exact time.
    let secs = timeout.as_secs() + 1;
    let version = bollard::API_DEFAULT_VERSION;
    let result = if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, secs, version)
    } else {
        Docker::connect_with_unix(host, secs, version)
    };
    result.map_err(|e| classify(e, timeout))
}

/// Sorts bollard's errors into ours; `timeout` is the limit a request that timed out was given.
fn classify(e: BollardError, timeout: Duration) -> DockerError {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            DockerError::Api(format!("{status_code} {}", one_line(&message)))
        }
        BollardError::RequestTimeoutError => DockerError::Timeout(timeout),
        BollardError::SocketNotFoundError(path) => DockerError::Unreachable(format!("no socket at {path}")),
        other => DockerError::Unreachable(one_line(&other.to_string())),
    }
}

fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn from_summary(s: ContainerSummary) -> Option<Container> {
    let id = s.id?;
    let name = s.names.unwrap_or_default().into_iter().next().unwrap_or_default();
    let running = s.state == Some(ContainerSummaryStateEnum::RUNNING);
    let mut ports: Vec<(u16, u16)> = Vec::new();
    if running {
        for p in s.ports.unwrap_or_default() {
            let tcp = p.typ.map(|t| t.to_string()).is_none_or(|t| t == "tcp");
            if let (true, Some(public)) = (tcp, p.public_port) {
                if public != 0 && !ports.iter().any(|(c, _)| *c == p.private_port) {
                    ports.push((p.private_port, public));
                }
            }
        }
    }
    Some(Container {
        id,
        name: name.trim_start_matches('/').to_string(),
        labels: s.labels.unwrap_or_default(),
        running,
        ports,
        ip: None,
        aliases: Vec::new(),
        from_swarm: false,
    })
}

fn from_inspect(r: ContainerInspectResponse) -> Option<Container> {
    let id = r.id?;
    let running = r.state.and_then(|s| s.running).unwrap_or(false);
    let ports = match (running, r.network_settings.and_then(|n| n.ports)) {
        (true, Some(map)) => published_tcp(&map),
        _ => Vec::new(),
    };
    Some(Container {
        id,
        name: r.name.unwrap_or_default().trim_start_matches('/').to_string(),
        labels: r.config.and_then(|c| c.labels).unwrap_or_default(),
        running,
        ports,
        ip: None,
        aliases: Vec::new(),
        from_swarm: false,
    })
}

fn published_tcp(map: &PortMap) -> Vec<(u16, u16)> {
    let mut ports = Vec::new();
    for (key, bindings) in map {
        let Some(private) = key.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok()) else {
            continue;
        };
        let host =
            bindings.iter().flatten().filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok()).find(|p| *p != 0);
        if let Some(host) = host {
            ports.push((private, host));
        }
    }
    ports.sort_unstable();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortBinding;

    #[test]
    fn published_tcp_takes_the_first_bound_host_port_and_skips_udp() {
        let bind = |p: &str| Some(vec![PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some(p.into()) }]);
        let map: PortMap = HashMap::from([
            ("6379/tcp".to_string(), bind("32768")),
            ("16379/tcp".to_string(), bind("32769")),
            ("53/udp".to_string(), bind("40000")),
            ("80/tcp".to_string(), None),
            ("bogus".to_string(), bind("1")),
        ]);
        assert_eq!(published_tcp(&map), vec![(6379, 32768), (16379, 32769)]);
    }

    #[test]
    fn server_errors_keep_their_status_on_one_line() {
        let e = classify(
            BollardError::DockerResponseServerError { status_code: 500, message: "boom\nagain".into() },
            Duration::from_secs(1),
        );
        assert_eq!(e, DockerError::Api("500 boom again".into()));
    }
}
