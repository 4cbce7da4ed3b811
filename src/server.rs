//! The accept loop: the client limit, one task per connection, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::command::command_docs::COMMANDS;
use crate::config::Config;
use crate::connection;
use crate::docker::Ports;

/// Backoff after a failed accept (out of file descriptors, ...), at first and at most.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What every connection shares: settings, the port table, counters.
#[derive(Debug)]
pub struct Shared {
    /// The settings.
    pub config: Config,
    /// The port table and Docker behind it.
    pub ports: Arc<Ports>,
    /// Counters for INFO.
    pub stats: ServerStats,
    /// When the server started.
    pub started: Instant,
    /// The address the server listens on.
    pub local_addr: SocketAddr,
    next_client_id: AtomicU64,
}

impl Shared {
    /// Everything a connection needs.
    pub fn new(config: Config, ports: Arc<Ports>, local_addr: SocketAddr) -> Arc<Self> {
        Arc::new(Shared {
            config,
            ports,
            stats: ServerStats::default(),
            started: Instant::now(),
            local_addr,
            next_client_id: AtomicU64::new(1),
        })
    }

    /// A fresh connection id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Server-wide counters.
#[derive(Debug)]
pub struct ServerStats {
    /// Connections accepted, rejected ones included.
    pub connections_received: AtomicU64,
    /// Connections refused for the client limit.
    pub rejected_connections: AtomicU64,
    /// Connections open now.
    pub connected_clients: AtomicUsize,
    /// Clients waiting in MEMBERS ... MIN.
    pub blocked_clients: AtomicUsize,
    /// Requests processed.
    pub commands_processed: AtomicU64,
    /// Connections closed for malformed input.
    pub protocol_errors: AtomicU64,
    /// Connections closed because they did not read their replies.
    pub output_limit_disconnections: AtomicU64,
    /// Connections closed for idleness or a request that never finished.
    pub timed_out_clients: AtomicU64,
    calls: Vec<(AtomicU64, AtomicU64)>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            connected_clients: AtomicUsize::new(0),
            blocked_clients: AtomicUsize::new(0),
            commands_processed: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            output_limit_disconnections: AtomicU64::new(0),
            timed_out_clients: AtomicU64::new(0),
            calls: COMMANDS.iter().map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
        }
    }
}

impl ServerStats {
    /// Counts one call of a command, and whether it answered an error.
    pub fn record(&self, name: &str, failed: bool) {
        self.commands_processed.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = COMMANDS.iter().position(|c| c.name == name) {
            self.calls[i].0.fetch_add(1, Ordering::Relaxed);
            if failed {
                self.calls[i].1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (name, calls, failed calls) of every command called at least once.
    pub fn command_counts(&self) -> Vec<(&'static str, u64, u64)> {
        COMMANDS
            .iter()
            .zip(&self.calls)
            .map(|(c, (calls, failed))| (c.name, calls.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
            .filter(|(_, calls, _)| *calls > 0)
            .collect()
    }
}

/// Serves clients on `listener` until `shutdown`, then waits for open connections to send their last replies.
/// The port table is kept current by whoever made it (see [`crate::docker::follow`]).
pub async fn run(
    listener: TcpListener,
    ports: Arc<Ports>,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let shared = Shared::new(config, ports, local_addr);
    let tasks = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(shared.config.max_clients));
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    tracing::info!(listen = %local_addr, announce_ip = %shared.config.announce_ip, "rediscover is serving");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                pair
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        shared.stats.connections_received.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            // A fresh socket's send buffer is empty, so this write does not block.
            let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("conn", peer = %peer);
        tasks.spawn(
            async move {
                connection::serve(stream, shared, Some(peer), shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    tasks.close();
    tasks.wait().await;
    tracing::info!("rediscover stopped");
    Ok(())
}
