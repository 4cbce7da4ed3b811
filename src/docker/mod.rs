//! What rediscover knows of Docker: the port table, kept current by Docker's events, with Docker itself
//! behind it.
//!
//! # Layout
//! - [`table`]: the containers the table holds, and how a name, id or id prefix finds one.
//! - [`ports`]: [`Ports`], the table's holder: what lookups may trust, and what they must ask Docker.
//! - [`misses`]: lookups the table cannot answer share Docker list calls.
//! - [`follow`]: the event follower that keeps the table current (on a swarm manager, also its tasks).
//! - [`stats`]: counters for INFO.
//! - [`swarm`]: on a swarm manager, the task containers of every node.
//! - [`client`]: the Docker API through bollard.
//!
//! With a required label, Docker itself filters lists and events, so the table never holds a container
//! without it: such a container is answered exactly as a missing one, by reply, counters and Docker calls.

pub mod client;
pub mod follow;
pub mod misses;
pub mod ports;
pub mod stats;
pub mod swarm;
pub mod table;

use std::sync::{Mutex, RwLock};

pub use client::{ContainerEvent, DockerClient, DockerError, SwarmEvent};
pub use follow::follow;
pub use ports::{is_container_ref, Ports};
pub use stats::{PortStats, ReadCause};
pub use table::{Container, Found, LabelFilter, PortTable};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
