//! What every connection shares: the settings, the port table, the server's counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::Command;
use crate::config::Config;
use crate::docker::Ports;

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

    /// A tally of calls and table hits for one connection's batch of requests, added to the counters when it is
    /// dropped.
    pub fn tally(&self) -> Tally<'_> {
        Tally { stats: &self.stats, ports: &self.ports, command: 0, calls: 0, failed: 0, table_hits: 0 }
    }

    /// Counts one call of a command, by its [`Command::index`], and whether it answered an error.
    pub fn record(&self, command: usize, failed: bool) {
        self.tally().count(command, failed);
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
    /// Connections closed for malformed input.
    pub protocol_errors: AtomicU64,
    /// Connections closed because they did not read their replies.
    pub output_limit_disconnections: AtomicU64,
    /// Connections closed for idleness or a request that never finished.
    pub timed_out_clients: AtomicU64,
    /// Connections that never completed a TLS handshake (plain text on a TLS port, a refused certificate).
    pub tls_handshake_failures: AtomicU64,
    /// Naps the event loop took for more input under many busy clients ([`crate::coalesce`]).
    pub coalescing_naps: AtomicU64,
    /// Calls and failed calls, by [`Command::index`].
    calls: [(AtomicU64, AtomicU64); Command::NAMES.len()],
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            connected_clients: AtomicUsize::new(0),
            blocked_clients: AtomicUsize::new(0),
            protocol_errors: AtomicU64::new(0),
            output_limit_disconnections: AtomicU64::new(0),
            timed_out_clients: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            coalescing_naps: AtomicU64::new(0),
            calls: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
        }
    }
}

impl ServerStats {
    /// Requests processed: every command's calls, summed when asked rather than counted a second time on every
    /// request.
    pub fn commands_processed(&self) -> u64 {
        self.calls.iter().map(|(calls, _)| calls.load(Ordering::Relaxed)).sum()
    }

    /// (name, calls, failed calls) of every command called at least once.
    pub fn command_counts(&self) -> Vec<(&'static str, u64, u64)> {
        Command::NAMES
            .iter()
            .zip(&self.calls)
            .map(|(name, (calls, failed))| (*name, calls.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
            .filter(|(_, calls, _)| *calls > 0)
            .collect()
    }
}

/// Calls that a connection counts while it runs a batch of requests, added to the server's counters when another
/// command is counted, when asked, and when it is dropped: a pipeline of one command costs one atomic add per
/// batch, not one per request. Until then another thread's INFO does not see them (with one runtime thread, the
/// default, no INFO runs in the middle of a batch). The lookups answered from the port table are counted the
/// same way.
pub struct Tally<'a> {
    stats: &'a ServerStats,
    ports: &'a Ports,
    command: usize,
    calls: u64,
    failed: u64,
    table_hits: u64,
}

impl Tally<'_> {
    /// Counts one call of a command, by its [`Command::index`], and whether it answered an error.
    pub fn count(&mut self, command: usize, failed: bool) {
        if command != self.command {
            self.flush();
            self.command = command;
        }
        self.calls += 1;
        self.failed += u64::from(failed);
    }

    /// Counts one lookup answered from the port table.
    pub fn table_hit(&mut self) {
        self.table_hits += 1;
    }

    /// Adds what it holds to the server's counters.
    pub fn flush(&mut self) {
        if self.table_hits > 0 {
            self.ports.count_hits(self.table_hits);
            self.table_hits = 0;
        }
        if self.calls == 0 {
            return;
        }
        let (calls, failures) = &self.stats.calls[self.command];
        calls.fetch_add(self.calls, Ordering::Relaxed);
        if self.failed > 0 {
            failures.fetch_add(self.failed, Ordering::Relaxed);
        }
        self.calls = 0;
        self.failed = 0;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
