//! A connection's own state, as commands read and change it: its id, name, protocol, authentication.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::Shared;
use crate::protocol::Protocol;

/// The state of one connection that commands read and change.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its CLIENT ID.
    pub id: u64,
    /// Its CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// The reply protocol.
    pub protocol: Protocol,
    /// Whether it passed AUTH (always, when no password is set).
    pub authenticated: bool,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Our address.
    pub local: SocketAddr,
    /// When it connected.
    pub created: Instant,
}

impl Session {
    /// A new connection's state.
    pub fn new(shared: &Shared, peer: Option<SocketAddr>) -> Self {
        Session {
            id: shared.next_client_id(),
            name: None,
            protocol: Protocol::Resp2,
            authenticated: shared.config.requirepass.is_none(),
            lib_name: None,
            lib_ver: None,
            peer,
            local: shared.local_addr,
            created: Instant::now(),
        }
    }

    /// RESET: back to RESP2, no name, and signed out when a password is set.
    pub fn reset(&mut self, authenticated: bool) {
        self.protocol = Protocol::Resp2;
        self.name = None;
        self.authenticated = authenticated;
    }

    /// The CLIENT INFO line.
    pub fn describe(&self) -> String {
        let text = |b: &Option<Bytes>| b.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        format!(
            "id={} addr={} laddr={} name={} age={} db=0 user=default resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer.map(|p| p.to_string()).unwrap_or_default(),
            self.local,
            text(&self.name),
            self.created.elapsed().as_secs(),
            self.protocol.version(),
            text(&self.lib_name),
            text(&self.lib_ver),
        )
    }
}
