//! The announce address a cluster node gives its peers: `ip:port@bus_port`, as `CLUSTER NODES` prints it.

use std::fmt;
use std::io::Write;
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

impl Announce {
    /// Room for the longest announce string: an IPv6 address (45), `:65535@65535` (12).
    pub const MAX_LEN: usize = 64;

    /// Writes `ip:port@bus_port` into `buf` and returns the bytes written, without allocating.
    pub fn write_into(self, buf: &mut [u8; Announce::MAX_LEN]) -> &[u8] {
        let mut rest = &mut buf[..];
        // The buffer is sized for the longest address, so the write cannot run out of room.
        let _ = write!(rest, "{self}");
        let written = Announce::MAX_LEN - rest.len();
        &buf[..written]
    }
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

    #[test]
    fn writes_the_longest_address_without_allocating() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        let a = Announce { ip, port: 65535, bus_port: 65535 };
        let mut buf = [0; Announce::MAX_LEN];
        assert_eq!(a.write_into(&mut buf), a.to_string().as_bytes());
    }
}
