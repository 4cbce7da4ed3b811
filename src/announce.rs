//! The announce address a cluster node gives its peers: `ip:port@bus_port`, as `CLUSTER NODES` prints it.

use std::fmt;
use std::net::IpAddr;

/// Where clients and peers reach one Redis node from outside Docker's NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Announce {
    /// `cluster-announce-ip`.
    pub ip: IpAddr,
    /// `cluster-announce-port`: the host port published for the data port.
    pub port: u16,
    /// `cluster-announce-bus-port`: the host port published for the bus port.
    pub bus_port: u16,
}

impl fmt::Display for Announce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.ip, self.port, self.bus_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_cluster_nodes() {
        let a = Announce { ip: "192.0.2.5".parse().unwrap(), port: 34176, bus_port: 34175 };
        assert_eq!(a.to_string(), "192.0.2.5:34176@34175");
    }
}
