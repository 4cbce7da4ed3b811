//! Docker Swarm: on a manager, the task containers of every node, each with its node's address and the host-mode
//! ports its task published, read from the tasks, nodes and services the manager knows. Swarm sends no task
//! events, so these are read at each resync, after node and service events, periodically, and on a miss.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bollard::models::{
    EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, Node, Service, Task, TaskState,
};

use super::table::{Container, LabelFilter};

/// A node label that overrides the address announced for the tasks on that node (a host behind its own NAT).
pub const ANNOUNCE_IP_LABEL: &str = "io.rediscover.announce-ip";
/// The label Docker puts on a task's container.
pub const TASK_ID_LABEL: &str = "com.docker.swarm.task.id";

/// True for a stopped container of this engine that a swarm task made (it carries the task id label). Unless the
/// swarm's tasks list it, the swarm no longer wants that task: such a container never runs again (the swarm
/// starts a new task instead), so it is answered as gone, not as stopped. A running one is kept: the manager may
/// not know yet which container a task that just started runs in.
pub fn left_behind(local: &Container) -> bool {
    !local.running && local.labels.contains_key(TASK_ID_LABEL)
}

/// The task containers the swarm wants running and that carry `label`, as table entries: named
/// `service.slot.task-id` (Docker's name for the container) and also `service.slot`, with their node's address.
pub fn task_containers(
    tasks: Vec<Task>,
    nodes: &[Node],
    services: &[Service],
    label: Option<&LabelFilter>,
) -> Vec<Container> {
    let addresses: HashMap<&str, IpAddr> =
        nodes.iter().filter_map(|n| Some((n.id.as_deref()?, node_address(n)?))).collect();
    let service_names: HashMap<&str, &str> =
        services.iter().filter_map(|s| Some((s.id.as_deref()?, s.spec.as_ref()?.name.as_deref()?))).collect();
    tasks
        .into_iter()
        // A task the swarm no longer wants (shut down, replaced) belongs to a container that is gone or going.
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter_map(|t| task_container(t, &addresses, &service_names))
        .filter(|c| label.is_none_or(|l| c.has_label(l)))
        .collect()
}

fn task_container(
    task: Task,
    addresses: &HashMap<&str, IpAddr>,
    service_names: &HashMap<&str, &str>,
) -> Option<Container> {
    let status = task.status?;
    let id = status.container_status?.container_id?;
    let task_id = task.id?;
    let service = *service_names.get(task.service_id.as_deref()?)?;
    let running = status.state == Some(TaskState::RUNNING);
    let (name, aliases) = match task.slot {
        Some(slot) => (format!("{service}.{slot}.{task_id}"), vec![format!("{service}.{slot}")]),
        // A global service's task is named after its node.
        None => (format!("{service}.{}.{task_id}", task.node_id.as_deref().unwrap_or_default()), Vec::new()),
    };
    let mut ports: Vec<(u16, u16)> = Vec::new();
    if running {
        for p in status.port_status.and_then(|s| s.ports).unwrap_or_default() {
            let host_mode = p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST);
            let tcp = p.protocol.is_none_or(|p| p == EndpointPortConfigProtocolEnum::TCP);
            let (Some(target), Some(published)) = (p.target_port, p.published_port) else { continue };
            let (Ok(target), Ok(published)) = (u16::try_from(target), u16::try_from(published)) else { continue };
            // Each binding is listed, IPv4 first, as `docker port` lists them: take the IPv4 one.
            if host_mode && tcp && published != 0 && !ports.iter().any(|(t, _)| *t == target) {
                ports.push((target, published));
            }
        }
    }
    Some(Container {
        id,
        name,
        labels: task.spec.and_then(|s| s.container_spec).and_then(|c| c.labels).unwrap_or_default(),
        running,
        ports,
        ip: task.node_id.as_deref().and_then(|n| addresses.get(n).copied()),
        aliases,
        from_swarm: true,
    })
}

/// The address announced for a node's tasks: its label, else the address the swarm reaches it at.
fn node_address(node: &Node) -> Option<IpAddr> {
    let labelled = node.spec.as_ref().and_then(|s| s.labels.as_ref()).and_then(|l| l.get(ANNOUNCE_IP_LABEL));
    if let Some(ip) = labelled.and_then(|l| l.parse().ok()) {
        return Some(ip);
    }
    let status: Option<IpAddr> = node.status.as_ref().and_then(|s| s.addr.as_deref()?.parse().ok());
    match status {
        Some(ip) if !ip.is_unspecified() => Some(ip),
        // A manager may report 0.0.0.0 for itself; its manager address says where it listens.
        _ => node.manager_status.as_ref().and_then(|m| m.addr.as_deref()?.parse::<SocketAddr>().ok()).map(|a| a.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a manager of Docker 20.10 answered for two replicas of a service with both cluster ports published
    /// in host mode (each binding listed twice, IPv4 then IPv6), one task being replaced.
    const TASKS: &str = r#"[
      {"ID": "kj5pxsvv3mxbbswwg44qohbpp", "ServiceID": "svc1", "Slot": 1, "NodeID": "node1", "DesiredState": "running",
       "Spec": {"ContainerSpec": {"Image": "x", "Labels": {"io.rediscover.cluster": "c1"}}},
       "Status": {"State": "running", "ContainerStatus": {"ContainerID": "7766575e3b52a13e3a45ce06da035938f98d0886d048471742618e6c41e48675"},
         "PortStatus": {"Ports": [
           {"Protocol": "tcp", "TargetPort": 6379, "PublishedPort": 32771, "PublishMode": "host"},
           {"Protocol": "tcp", "TargetPort": 6379, "PublishedPort": 32775, "PublishMode": "host"},
           {"Protocol": "tcp", "TargetPort": 16379, "PublishedPort": 32770, "PublishMode": "host"},
           {"Protocol": "tcp", "TargetPort": 16379, "PublishedPort": 32770, "PublishMode": "host"}]}}},
      {"ID": "a0pwrh4iesr89wzkmbf79dy7m", "ServiceID": "svc1", "Slot": 2, "NodeID": "node2", "DesiredState": "running",
       "Spec": {"ContainerSpec": {"Image": "x", "Labels": {"io.rediscover.cluster": "c1"}}},
       "Status": {"State": "starting", "ContainerStatus": {"ContainerID": "72d8739418613b16f0fabc57e2a8c4fef84d91592bb39c2e7e7caebb4e40f8f1"}}},
      {"ID": "oldtask", "ServiceID": "svc1", "Slot": 2, "NodeID": "node2", "DesiredState": "shutdown",
       "Spec": {"ContainerSpec": {"Image": "x", "Labels": {"io.rediscover.cluster": "c1"}}},
       "Status": {"State": "failed", "ContainerStatus": {"ContainerID": "99"}}}
    ]"#;
    const NODES: &str = r#"[
      {"ID": "node1", "Status": {"State": "ready", "Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "198.18.0.10:2377"}},
      {"ID": "node2", "Spec": {"Labels": {"io.rediscover.announce-ip": "203.0.113.7"}}, "Status": {"Addr": "198.18.0.11"}}
    ]"#;
    const SERVICES: &str = r#"[{"ID": "svc1", "Spec": {"Name": "rd_redis"}}]"#;

    fn containers(label: Option<&str>) -> Vec<Container> {
        let tasks: Vec<Task> = serde_json::from_str(TASKS).expect("tasks");
        let nodes: Vec<Node> = serde_json::from_str(NODES).expect("nodes");
        let services: Vec<Service> = serde_json::from_str(SERVICES).expect("services");
        let label = label.map(|l| l.parse().expect("a label"));
        task_containers(tasks, &nodes, &services, label.as_ref())
    }

    #[test]
    fn running_tasks_get_their_ipv4_host_ports_and_their_nodes_address() {
        let all = containers(None);
        assert_eq!(all.len(), 2, "the task the swarm shut down is left out: {all:?}");
        let first = &all[0];
        assert_eq!(first.name, "rd_redis.1.kj5pxsvv3mxbbswwg44qohbpp");
        assert_eq!(first.aliases, vec!["rd_redis.1".to_string()]);
        assert_eq!(first.ports, vec![(6379, 32771), (16379, 32770)]);
        assert_eq!(first.ip, Some("198.18.0.10".parse().unwrap()), "a manager's 0.0.0.0 falls back to its address");
        let second = &all[1];
        assert!(!second.running && second.ports.is_empty());
        assert_eq!(second.ip, Some("203.0.113.7".parse().unwrap()), "the node label wins");
    }

    #[test]
    fn the_required_label_filters_task_containers() {
        assert_eq!(containers(Some("io.rediscover.cluster=c1")).len(), 2);
        assert!(containers(Some("io.rediscover.cluster=c2")).is_empty());
    }
}
