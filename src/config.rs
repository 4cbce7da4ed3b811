//! Config: every setting and limit with its default, and how the announce address is chosen.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::docker::ports::DEFAULT_SWARM_READ_EVERY;
use crate::docker::LabelFilter;
use crate::protocol::DecodeLimits;
use crate::tls::Tls;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address announced to clients and peers (`cluster-announce-ip`).
    pub announce_ip: IpAddr,
    /// The host name `DISCOVER ... HOSTNAME` hands out (`cluster-announce-hostname`, Redis 7).
    pub announce_hostname: Option<String>,
    /// The container port Redis serves clients on.
    pub data_port: u16,
    /// The container port of the cluster bus.
    pub bus_port: u16,
    /// Only containers with this label can be discovered.
    pub require_label: Option<LabelFilter>,
    /// The password clients must give with AUTH or HELLO (Redis: requirepass).
    pub requirepass: Option<String>,
    /// How long one Docker request may take.
    pub docker_timeout: Duration,
    /// Request size limits.
    pub limits: DecodeLimits,
    /// Most clients connected at once (Redis: maxclients).
    pub max_clients: usize,
    /// Close a client idle this long; `None` never (Redis: timeout).
    pub idle_timeout: Option<Duration>,
    /// Close a client whose started request is not complete after this long (a slow-loris guard).
    pub request_timeout: Duration,
    /// Bytes of replies a client may leave unread before it is disconnected
    /// (Redis: client-output-buffer-limit normal).
    pub max_output_bytes: usize,
    /// The longest MEMBERS ... MIN may wait.
    pub max_members_wait: Duration,
    /// Serve TLS only, with this certificate (Redis: tls-port with port 0).
    pub tls: Option<Tls>,
    /// How often a swarm manager's tasks are read again when no node or service event made them read.
    pub swarm_read_every: Duration,
    /// How long the event loop naps for more input under many busy clients ([`crate::coalesce`]); `None` never.
    pub coalesce_nap: Option<Duration>,
}

/// The longest any timeout may be: Redis takes at most INT_MAX seconds for `timeout`, and a deadline that far
/// ahead still fits the clock, where a larger one would overflow it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(i32::MAX as u64);

/// The data port Redis listens on inside each container.
pub const DEFAULT_DATA_PORT: u16 = 6379;
/// Redis puts the cluster bus at the data port plus this.
pub const BUS_PORT_OFFSET: u16 = 10000;
/// How long the event loop naps for more input under many busy clients, by default.
pub const DEFAULT_COALESCE_NAP: Duration = Duration::from_micros(20);
/// The longest nap `--coalesce-us` takes.
pub const MAX_COALESCE_NAP: Duration = Duration::from_millis(1);

impl Default for Config {
    fn default() -> Self {
        Config {
            announce_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            announce_hostname: None,
            data_port: DEFAULT_DATA_PORT,
            bus_port: DEFAULT_DATA_PORT + BUS_PORT_OFFSET,
            require_label: None,
            requirepass: None,
            docker_timeout: Duration::from_secs(5),
            limits: DecodeLimits::default(),
            max_clients: 10_000,
            idle_timeout: None,
            request_timeout: Duration::from_secs(10),
            max_output_bytes: 1024 * 1024,
            max_members_wait: Duration::from_secs(600),
            tls: None,
            swarm_read_every: DEFAULT_SWARM_READ_EVERY,
            coalesce_nap: Some(DEFAULT_COALESCE_NAP),
        }
    }
}

/// Why no announce address could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceIpError {
    /// The named interface does not exist or has no IPv4 address.
    #[error("interface {0} has no IPv4 address")]
    NoAddress(String),
    /// The interfaces could not be listed.
    #[error("cannot list network interfaces: {0}")]
    Interfaces(std::io::Error),
    /// No default route in /proc/net/route.
    #[error("no default route found in /proc/net/route; pass --announce-ip or --interface")]
    NoDefaultRoute,
}

/// Chooses the announce address: the given address, else the IPv4 address of `interface`, else that of the
/// interface holding the default route (read from /proc/net/route, no packet sent).
pub fn resolve_announce_ip(ip: Option<IpAddr>, interface: Option<&str>) -> Result<IpAddr, AnnounceIpError> {
    if let Some(ip) = ip {
        return Ok(ip);
    }
    let owned;
    let interface = match interface {
        Some(i) => i,
        None => {
            let routes = std::fs::read_to_string("/proc/net/route").map_err(AnnounceIpError::Interfaces)?;
            owned = default_route_interface(&routes).ok_or(AnnounceIpError::NoDefaultRoute)?;
            &owned
        }
    };
    interface_ipv4(interface)
}

/// The IPv4 address of a network interface.
pub fn interface_ipv4(name: &str) -> Result<IpAddr, AnnounceIpError> {
    if_addrs::get_if_addrs()
        .map_err(AnnounceIpError::Interfaces)?
        .into_iter()
        .find(|i| i.name == name && i.ip().is_ipv4())
        .map(|i| i.ip())
        .ok_or_else(|| AnnounceIpError::NoAddress(name.to_string()))
}

/// The interface of the default route (destination and mask 0) with the lowest metric, from the text of
/// /proc/net/route.
pub fn default_route_interface(routes: &str) -> Option<String> {
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, metric, mask) = (f.first()?, f.get(1)?, f.get(6)?, f.get(7)?);
            let metric: u32 = metric.parse().ok()?;
            (*dest == "00000000" && *mask == "00000000").then(|| (metric, iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// Checks a host name to announce: letters, digits, `-` and `.`, as Redis's `cluster-announce-hostname`
/// requires, at most 253 characters.
pub fn valid_hostname(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!("'{name}' is not a host name: use letters, digits, '-' and '.'"))
    }
}

/// Where `--listen` binds by default.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7379))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        wlan0\t00000000\t010200C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";

    #[test]
    fn default_route_picks_lowest_metric() {
        assert_eq!(default_route_interface(ROUTES).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn explicit_address_wins_and_loopback_resolves() {
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(resolve_announce_ip(Some(ip), Some("nope")).unwrap(), ip);
        assert_eq!(resolve_announce_ip(None, Some("lo")).unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(matches!(resolve_announce_ip(None, Some("no-such-if0")), Err(AnnounceIpError::NoAddress(_))));
    }
}
