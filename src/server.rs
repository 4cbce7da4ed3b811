//! The accept loop: the client limit, one task per connection, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::coalesce;
use crate::command::Shared;
use crate::config::Config;
use crate::connection;
use crate::docker::Ports;
use crate::tls::Tls;

/// Backoff after a failed accept (out of file descriptors, ...), at first and at most.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    // Coalescing counts the reads of its own thread's connections: on a single event loop only.
    let single_loop =
        tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
    let coalescing =
        shared.config.coalesce_nap.filter(|_| single_loop).map(|nap| tokio::spawn(coalesce::run(nap, shared.clone())));
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
            // A fresh socket's send buffer is empty, so this write does not block. A TLS client is just closed:
            // it could not read plain text.
            if shared.config.tls.is_none() {
                let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("conn", peer = %peer);
        // Two kinds of task: a plain connection's task holds no room for a TLS session it does not have.
        match shared.config.tls.clone() {
            None => spawn(&tasks, span, holding(permit, connection::serve(stream, shared, Some(peer), shutdown))),
            Some(tls) => spawn(&tasks, span, holding(permit, serve_tls(stream, tls, shared, peer, shutdown))),
        }
    }
    if let Some(coalescing) = coalescing {
        coalescing.abort();
    }
    tasks.close();
    tasks.wait().await;
    tracing::info!("rediscover stopped");
    Ok(())
}

/// A connection's task, which holds its client permit until it ends. The permit is dropped by a map on the
/// connection's future, not in a block awaiting it, which would keep that future twice.
fn holding<F: Future<Output = ()>>(permit: OwnedSemaphorePermit, task: F) -> impl Future<Output = ()> {
    task.map(move |()| drop(permit))
}

/// Spawns a connection's task, in its span when the span is logged: a span that is not (the default level logs
/// no connection) would still widen every connection's task by its size.
fn spawn<F: Future<Output = ()> + Send + 'static>(tasks: &TaskTracker, span: tracing::Span, task: F) {
    if span.is_disabled() {
        tasks.spawn(task);
    } else {
        tasks.spawn(task.instrument(span));
    }
}

/// Runs the TLS handshake, then serves the client over it.
async fn serve_tls(stream: TcpStream, tls: Tls, shared: Arc<Shared>, peer: SocketAddr, shutdown: CancellationToken) {
    // A handshake gets the time a started request gets; plain text on this port fails it.
    let limit = shared.config.request_timeout;
    match tokio::time::timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => connection::serve(stream, shared.clone(), Some(peer), shutdown).await,
        Ok(Err(e)) => {
            shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("TLS handshake timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::DockerClient;

    /// Tokio allocates a task as one cell: a 32-byte header, 16 bytes of scheduler and id, the future and 8 bytes
    /// of stage, a 48-byte trailer, rounded up to 128 bytes. Up to this size of future the cell takes 640 bytes,
    /// which musl's allocator serves from its 800-byte class; past it, 768 bytes or more, served from 1,024.
    const TASK_FUTURE_BUDGET: usize = 536;

    #[tokio::test]
    async fn a_plain_connections_task_fits_a_640_byte_cell() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind on loopback");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let _client = TcpStream::connect(addr).await.expect("connect on loopback");
        let (stream, peer) = listener.accept().await.expect("accept on loopback");
        let config = Config::default();
        let ports = Ports::new(DockerClient::new("/nonexistent", config.docker_timeout), None, config.swarm_read_every);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a fresh semaphore has a permit");
        let shared = Shared::new(config, ports, addr);
        let serve = connection::serve(stream, shared, Some(peer), CancellationToken::new());
        let task = TaskTracker::new().track_future(holding(permit, serve));
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= TASK_FUTURE_BUDGET,
            "a connection's task future takes {size} bytes, past {TASK_FUTURE_BUDGET}: every idle client would cost \
             a larger allocation (bench/run.sh shows it)"
        );
    }
}
