//! rediscover tells each Redis Cluster node running in Docker the address it must announce
//! (`ip:port@bus-port`), read from the ports Docker published for it, over the Redis protocol.
//!
//! # Layout
//! - [`config`]: settings, limits and their defaults; how the announce address is chosen.
//! - [`server`]: the accept loop, the client limit, shutdown.
//! - [`connection`]: one client: read, run, reply, with its timeouts and output limit.
//! - [`coalesce`]: naps of the event loop for more input, under many busy clients.
//! - [`protocol`]: our bounded request decoder and the RESP2/RESP3 reply encoder.
//! - [`command`]: the commands, one family per file.
//! - [`docker`]: the port table fed by Docker's events, and the Docker client behind it.
//! - [`announce`]: the `ip:port@bus-port` a node announces, as DISCOVER answers it.
//! - [`tls`]: the certificate and key clients are served with over TLS.
//!
//! Each layer only looks down: `server` and `connection` drive `command`; `command` reads `docker`, `config`
//! and the connection's `Session`; `protocol` knows requests and replies, nothing of Docker.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod announce;
pub mod coalesce;
pub mod command;
pub mod config;
pub mod connection;
pub mod docker;
pub mod protocol;
pub mod server;
pub mod tls;

pub use config::Config;
pub use docker::{follow, DockerClient, Ports};
pub use server::run;
