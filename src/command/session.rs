//! A connection's own state, as commands read and change it: its id, name, protocol, authentication.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::Shared;
use crate::protocol::Protocol;

/// The state of one connection that commands read and change. Every open connection holds one, so what few
/// clients set is kept apart, and only when set.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its CLIENT ID.
    pub id: u64,
    /// The reply protocol.
    pub protocol: Protocol,
    /// Whether it passed AUTH (always, when no password is set).
    pub authenticated: bool,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// When it connected.
    pub created: Instant,
    names: Option<Box<Names>>,
}

/// What a client may call itself: CLIENT SETNAME and SETINFO.
#[derive(Debug, Clone, Default)]
struct Names {
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
}

impl Session {
    /// A new connection's state.
    pub fn new(shared: &Shared, peer: Option<SocketAddr>) -> Self {
        Session {
            id: shared.next_client_id(),
            protocol: Protocol::Resp2,
            authenticated: shared.config.requirepass.is_none(),
            peer,
            created: Instant::now(),
            names: None,
        }
    }

    /// Its CLIENT SETNAME.
    pub fn name(&self) -> Option<&Bytes> {
        self.names.as_ref()?.name.as_ref()
    }

    /// Sets or clears its name.
    pub fn set_name(&mut self, name: Option<&Bytes>) {
        self.names_mut().name = name.map(owned);
    }

    /// Records CLIENT SETINFO LIB-NAME.
    pub fn set_lib_name(&mut self, lib_name: &Bytes) {
        self.names_mut().lib_name = Some(owned(lib_name));
    }

    /// Records CLIENT SETINFO LIB-VER.
    pub fn set_lib_ver(&mut self, lib_ver: &Bytes) {
        self.names_mut().lib_ver = Some(owned(lib_ver));
    }

    fn names_mut(&mut self) -> &mut Names {
        self.names.get_or_insert_with(Box::default)
    }

    /// RESET: back to RESP2, no name, and signed out when a password is set.
    pub fn reset(&mut self, authenticated: bool) {
        self.protocol = Protocol::Resp2;
        if let Some(names) = &mut self.names {
            names.name = None;
        }
        self.authenticated = authenticated;
    }

    /// The CLIENT INFO line; `local` is the server's address.
    pub fn describe(&self, local: SocketAddr) -> String {
        let text = |b: Option<&Bytes>| b.map(|b| String::from_utf8_lossy(b)).unwrap_or_default().into_owned();
        let names = self.names.as_deref();
        format!(
            "id={} addr={} laddr={} name={} age={} db=0 user=default resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer.map(|p| p.to_string()).unwrap_or_default(),
            local,
            text(self.name()),
            self.created.elapsed().as_secs(),
            self.protocol.version(),
            text(names.and_then(|n| n.lib_name.as_ref())),
            text(names.and_then(|n| n.lib_ver.as_ref())),
        )
    }
}

/// A copy of an argument: the argument itself shares the connection's whole read buffer, which a name kept for
/// the connection's life would hold on to.
fn owned(arg: &Bytes) -> Bytes {
    Bytes::copy_from_slice(arg)
}
