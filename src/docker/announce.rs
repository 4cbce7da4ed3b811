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

    /// Writes `ip:port@bus_port` into `buf` and returns the bytes written, without allocating or going through
    /// `fmt` for an IPv4 address (DISCOVER's hot path).
    pub fn write_into(self, buf: &mut [u8; Announce::MAX_LEN]) -> &[u8] {
        let mut len = match self.ip {
            IpAddr::V4(ip) => {
                let mut len = 0;
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    len += write_decimal(&mut buf[len..], octet.into());
                }
                len
            }
            IpAddr::V6(ip) => {
                let mut rest = &mut buf[..];
                // The buffer is sized for the longest address, so the write cannot run out of room.
                let _ = write!(rest, "{ip}");
                Announce::MAX_LEN - rest.len()
            }
        };
        buf[len] = b':';
        len += 1;
        len += write_decimal(&mut buf[len..], self.port);
        buf[len] = b'@';
        len += 1;
        len += write_decimal(&mut buf[len..], self.bus_port);
        &buf[..len]
    }
}

/// Writes `n` in decimal at the start of `out`; returns how many bytes that took.
fn write_decimal(out: &mut [u8], n: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let written = digits.len() - i;
    out[..written].copy_from_slice(&digits[i..]);
    written
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
    fn writes_ipv4_addresses_and_ports_like_display() {
        for (ip, port, bus_port) in [("0.0.0.0", 0, 9), ("192.0.2.5", 34176, 34175), ("255.255.255.255", 65535, 10)] {
            let a = Announce { ip: ip.parse().unwrap(), port, bus_port };
            let mut buf = [0; Announce::MAX_LEN];
            assert_eq!(a.write_into(&mut buf), a.to_string().as_bytes());
        }
    }

    #[test]
    fn writes_the_longest_address_without_allocating() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        let a = Announce { ip, port: 65535, bus_port: 65535 };
        let mut buf = [0; Announce::MAX_LEN];
        assert_eq!(a.write_into(&mut buf), a.to_string().as_bytes());
    }
}
