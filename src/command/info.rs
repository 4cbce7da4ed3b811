//! INFO: the server, clients, stats and docker sections, as `name:value` lines.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::arg_str;
use super::Shared;
use crate::protocol::Reply;

/// The sections INFO knows, in the order it prints them.
const SECTIONS: &[&str] = &["server", "clients", "stats", "commandstats", "docker"];

/// `INFO [section ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Lower-case section names; empty means the default set.
    pub sections: Vec<String>,
}

impl Info {
    /// Parses the arguments after `INFO`.
    pub fn parse(args: &[&[u8]]) -> Self {
        Info { sections: args.iter().map(|a| arg_str(a).to_ascii_lowercase()).collect() }
    }

    /// The report.
    pub fn apply(&self, shared: &Shared) -> Reply {
        let all = self.sections.is_empty()
            || self.sections.iter().any(|s| matches!(s.as_str(), "all" | "default" | "everything"));
        let mut out = String::new();
        for section in SECTIONS {
            if all || self.sections.iter().any(|s| s == section) {
                if !out.is_empty() {
                    out.push_str("\r\n");
                }
                write_section(&mut out, section, shared);
            }
        }
        Reply::Verbatim(out)
    }
}

fn write_section(out: &mut String, section: &str, shared: &Shared) {
    let stats = &shared.stats;
    let ports = &shared.ports;
    let mut title = section.to_string();
    title[..1].make_ascii_uppercase();
    let _ = write!(out, "# {title}\r\n");
    // Writing to a String cannot fail.
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "{name}:{value}\r\n");
    };
    match section {
        "server" => {
            line("redis_version", &super::REDIS_VERSION);
            line("rediscover_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("process_id", &std::process::id());
            line("tcp_port", &shared.local_addr.port());
            line("uptime_in_seconds", &shared.started.elapsed().as_secs());
            line("announce_ip", &shared.config.announce_ip);
            line("data_port", &shared.config.data_port);
            line("bus_port", &shared.config.bus_port);
            line("require_label", &shared.config.require_label.as_ref().map(|l| l.to_string()).unwrap_or_default());
        }
        "clients" => {
            line("connected_clients", &stats.connected_clients.load(Ordering::Relaxed));
            line("maxclients", &shared.config.max_clients);
            line("blocked_clients", &stats.blocked_clients.load(Ordering::Relaxed));
        }
        "stats" => {
            line("total_connections_received", &stats.connections_received.load(Ordering::Relaxed));
            line("total_commands_processed", &stats.commands_processed());
            line("rejected_connections", &stats.rejected_connections.load(Ordering::Relaxed));
            line("protocol_errors", &stats.protocol_errors.load(Ordering::Relaxed));
            line("client_output_limit_disconnections", &stats.output_limit_disconnections.load(Ordering::Relaxed));
            line("timedout_clients", &stats.timed_out_clients.load(Ordering::Relaxed));
            line("tls_handshake_failures", &stats.tls_handshake_failures.load(Ordering::Relaxed));
            line("coalescing_naps", &stats.coalescing_naps.load(Ordering::Relaxed));
        }
        "commandstats" => {
            for (name, calls, failed) in stats.command_counts() {
                line(&format!("cmdstat_{name}"), &format!("calls={calls},failed_calls={failed}"));
            }
        }
        "docker" => {
            let client = ports.client();
            line("docker_host", &client.host());
            line("docker_connected", &u8::from(client.is_connected()));
            line("docker_api_version", &client.api_version().unwrap_or_default());
            line("docker_last_error", &ports.last_error().unwrap_or_default());
            line("table_fresh", &u8::from(ports.is_fresh()));
            line("table_size", &ports.table_len());
            line("table_changed", &ports.changed_len());
            let (tasks, age) = ports.swarm_status();
            line("swarm_manager", &u8::from(ports.is_swarm()));
            line("swarm_tasks", &tasks);
            line("swarm_reads", &ports.stats.swarm_reads.load(Ordering::Relaxed));
            line("swarm_read_ms_ago", &age.map(|a| a.as_millis().to_string()).unwrap_or_default());
            line("swarm_last_read_cause", &ports.stats.swarm_last_cause().map(|c| c.as_str()).unwrap_or_default());
            line("swarm_events", &ports.stats.swarm_events.load(Ordering::Relaxed));
            line("table_hits", &ports.stats.hits.load(Ordering::Relaxed));
            line("table_misses", &ports.stats.misses.load(Ordering::Relaxed));
            line("docker_calls", &ports.stats.docker_calls.load(Ordering::Relaxed));
            line("table_resyncs", &ports.stats.resyncs.load(Ordering::Relaxed));
            line("docker_events", &ports.stats.events.load(Ordering::Relaxed));
        }
        _ => {}
    }
}
