//! What the command and session targets share: a server with a fixed port table, a runtime, reply checks.
#![allow(dead_code, reason = "each target uses part of it")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use redis_protocol::{resp2, resp3};
use rediscover::docker::Container;
use rediscover::command::Shared;
use rediscover::{Config, DockerClient, Ports};
use tokio::runtime::Runtime;

/// Server state over three containers: one complete, one sharing its id prefix without a bus port, one stopped.
pub fn shared(config: Config) -> Arc<Shared> {
    let container = |id: &str, name: &str, running: bool, ports: &[(u16, u16)]| Container {
        id: format!("{id:0<64}"),
        name: name.to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        running,
        ports: ports.to_vec(),
        ip: None,
        aliases: Vec::new(),
        from_swarm: false,
    };
    // No Docker engine answers behind the table: what it cannot answer gets DOCKERDOWN at once.
    let ports = Ports::new(DockerClient::new("/nonexistent/docker.sock", config.docker_timeout), None, config.swarm_read_every);
    ports.install(vec![
        container("0123456789ab", "redis-1", true, &[(6379, 32768), (16379, 32769)]),
        container("0123456789ac", "redis-2", true, &[(6379, 32770)]),
        container("fedcba987654", "stopped", false, &[]),
    ]);
    Shared::new(config, ports, SocketAddr::from(([127, 0, 0, 1], 7379)))
}

/// One current-thread runtime for all runs, its clock paused: waits end as soon as nothing else can run.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime can be built")
    })
}

/// Splits `out` into whole RESP2 or RESP3 replies; panics on anything else, a partial reply included.
pub fn replies(mut out: &[u8]) {
    while !out.is_empty() {
        let used = match resp2::decode::decode(out) {
            Ok(Some((_, used))) => used,
            // After HELLO 3: maps, sets, `_` and verbatim strings are RESP3 only.
            _ => match resp3::decode::complete::decode(out) {
                Ok(Some((_, used))) => used,
                other => panic!("not a RESP reply: {other:?} at {:?}", String::from_utf8_lossy(out)),
            },
        };
        out = &out[used..];
    }
}
