//! Counters of the port table and its Docker calls, for INFO docker.

use std::sync::atomic::AtomicU64;

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Lookups answered from the table.
    pub hits: AtomicU64,
    /// Lookups that had to ask Docker.
    pub misses: AtomicU64,
    /// Requests sent to Docker (info, list, inspect; tasks, nodes and services on a swarm manager).
    pub docker_calls: AtomicU64,
    /// Times the swarm's tasks were read (three of the calls each).
    pub swarm_reads: AtomicU64,
    /// Times the table was rebuilt from a full list.
    pub resyncs: AtomicU64,
    /// Container events applied.
    pub events: AtomicU64,
}
