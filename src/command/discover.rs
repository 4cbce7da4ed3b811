//! DISCOVER: a container's announce address, `ip:port@bus`, from the host ports Docker published for it.

use std::borrow::Cow;
use std::sync::Arc;

use super::{arg_str, is_keyword, parse_int, CommandError};
use super::{Shared, Tally};
use crate::announce::Announce;
use crate::docker::{Container, DockerError, Found};
use crate::protocol::Reply;

/// `DISCOVER container [PORT n] [BUSPORT n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover<'a> {
    /// Full id, unique id prefix, or name: borrowed from the request while the table answers, a copy of its own
    /// when Docker must.
    pub container: Cow<'a, [u8]>,
    /// The container's data port, when not the configured one.
    pub port: Option<u16>,
    /// The container's bus port, when not the configured one.
    pub bus_port: Option<u16>,
    /// Append the announce host name, as `CLUSTER NODES` does in Redis 7: `ip:port@bus,hostname`.
    pub hostname: bool,
}

/// Why a container has no announce address; each variant is one error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// No container (that this server may show) has that name, id or prefix; one without the required label is
    /// never seen, so it is answered the same.
    #[error("NOCONTAINER no such container: '{0}'")]
    NoContainer(String),
    /// Several containers share that id prefix.
    #[error("AMBIGUOUS more than one container matches '{0}'; use a longer id or the name")]
    Ambiguous(String),
    /// It exists but is not running, so it publishes no ports.
    #[error("NOTRUNNING container '{0}' is not running")]
    NotRunning(String),
    /// It runs but does not publish this port.
    #[error("NOPORT container '{0}' does not publish port {1}/tcp")]
    NoPort(String, u16),
    /// HOSTNAME was asked for, but no announce host name is set.
    #[error("NOHOSTNAME no announce host name is set (--announce-hostname)")]
    NoHostname,
    /// Docker could not be reached.
    #[error("DOCKERDOWN {0}")]
    Unreachable(String),
    /// Docker did not answer in time.
    #[error("DOCKERTIMEOUT Docker did not answer within {0} ms")]
    Timeout(u128),
    /// Docker answered with an error.
    #[error("DOCKERERR {0}")]
    Api(String),
}

impl DiscoverError {
    /// The error for a failed Docker request; `timeout` is the configured Docker timeout.
    pub fn from_docker(e: DockerError, timeout: std::time::Duration) -> Self {
        match e {
            DockerError::Unreachable(_) => DiscoverError::Unreachable(e.to_string()),
            DockerError::Timeout(_) => DiscoverError::Timeout(timeout.as_millis()),
            DockerError::Api(_) => DiscoverError::Api(e.to_string()),
        }
    }

    /// The error reply.
    pub fn reply(&self) -> Reply {
        Reply::error(self.to_string())
    }
}

impl<'a> Discover<'a> {
    /// Parses the arguments after `DISCOVER`.
    pub fn parse(args: &[&'a [u8]]) -> Result<Self, CommandError> {
        let mut d = Discover { container: Cow::Borrowed(args[0]), port: None, bus_port: None, hostname: false };
        let mut rest = args[1..].iter();
        while let Some(option) = rest.next() {
            if is_keyword(option, "HOSTNAME") {
                d.hostname = true;
                continue;
            }
            let value = rest.next().ok_or(CommandError::Syntax)?;
            if is_keyword(option, "PORT") {
                d.port = Some(parse_port(value)?);
            } else if is_keyword(option, "BUSPORT") {
                d.bus_port = Some(parse_port(value)?);
            } else {
                return Err(CommandError::Syntax);
            }
        }
        Ok(d)
    }

    /// Answers from the port table, or gives itself back when only Docker can answer ([`Discover::ask_docker`]).
    pub fn apply(self, shared: &Shared, tally: &mut Tally<'_>) -> Result<Reply, Self> {
        match shared.ports.find_in_table(&self.container, |found| self.answer(shared, found)) {
            Some(reply) => {
                tally.table_hit();
                Ok(reply)
            }
            None => Err(self),
        }
    }

    /// The same request, with a copy of the container's name of its own, to wait for Docker with.
    pub fn into_owned(self) -> Discover<'static> {
        Discover { container: Cow::Owned(self.container.into_owned()), ..self }
    }

    /// Answers what the port table could not, from Docker.
    pub async fn ask_docker(self, shared: &Shared) -> Reply {
        match shared.ports.find_in_docker(&self.container).await {
            Ok(found) => self.answer(shared, Ok(found.as_ref())),
            Err(e) => self.answer(shared, Err(e)),
        }
    }

    fn answer(&self, shared: &Shared, found: Result<Found<&Arc<Container>>, DockerError>) -> Reply {
        // As Redis, nothing per request at the default level; the client's text is logged escaped. The name is
        // looked up as the bytes it came as, and read as text only for an error or the log.
        match self.resolve(shared, found) {
            Ok(announce) => {
                tracing::debug!(container = ?arg_str(&self.container), answer = %announce, "discover");
                match (self.hostname, &shared.config.announce_hostname) {
                    (false, _) => Reply::Announce(announce),
                    (true, Some(hostname)) => Reply::text(format!("{announce},{hostname}")),
                    (true, None) => DiscoverError::NoHostname.reply(),
                }
            }
            Err(e) => {
                tracing::debug!(container = ?arg_str(&self.container), error = ?e.to_string(), "discover");
                e.reply()
            }
        }
    }

    fn resolve(
        &self,
        shared: &Shared,
        found: Result<Found<&Arc<Container>>, DockerError>,
    ) -> Result<Announce, DiscoverError> {
        let found = found.map_err(|e| DiscoverError::from_docker(e, shared.config.docker_timeout))?;
        let quoted = || arg_str(&self.container).chars().take(64).collect::<String>();
        let container = match found {
            Found::One(c) if c.running => c,
            Found::One(_) => return Err(DiscoverError::NotRunning(quoted())),
            Found::Ambiguous => return Err(DiscoverError::Ambiguous(quoted())),
            Found::None => return Err(DiscoverError::NoContainer(quoted())),
        };
        announce(container, shared, self.port, self.bus_port)
            .map_err(|port| DiscoverError::NoPort(arg_str(&self.container).into_owned(), port))
    }
}

/// The announce address of a running container, or the container port it does not publish.
pub fn announce(
    container: &Container,
    shared: &Shared,
    port: Option<u16>,
    bus_port: Option<u16>,
) -> Result<Announce, u16> {
    let data = port.unwrap_or(shared.config.data_port);
    let bus = bus_port.unwrap_or(shared.config.bus_port);
    let host_data = container.host_port(data).ok_or(data)?;
    let host_bus = container.host_port(bus).ok_or(bus)?;
    // A swarm task announces its node's address; a local container, the server's.
    let ip = container.ip.unwrap_or(shared.config.announce_ip);
    Ok(Announce { ip, port: host_data, bus_port: host_bus })
}

fn parse_port(arg: &[u8]) -> Result<u16, CommandError> {
    match parse_int(arg)? {
        p @ 1..=65535 => Ok(p as u16),
        _ => Err(CommandError::Invalid("ERR port must be between 1 and 65535".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(words: &[&'a str]) -> Result<Discover<'a>, CommandError> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        Discover::parse(&args)
    }

    #[test]
    fn options_override_the_ports() {
        let d = parse(&["c1", "port", "7000", "BUSPORT", "17000"]).unwrap();
        assert_eq!((d.port, d.bus_port, d.hostname), (Some(7000), Some(17000), false));
        let d = parse(&["c1", "hostname", "PORT", "7000"]).unwrap();
        assert_eq!((d.port, d.hostname), (Some(7000), true));
        assert_eq!(parse(&["c1"]).unwrap().port, None);
    }

    #[test]
    fn bad_options_are_errors() {
        assert_eq!(parse(&["c1", "PORT"]).unwrap_err(), CommandError::Syntax);
        assert_eq!(parse(&["c1", "COLOR", "red"]).unwrap_err(), CommandError::Syntax);
        assert_eq!(parse(&["c1", "PORT", "x"]).unwrap_err(), CommandError::NotInteger);
        assert!(matches!(parse(&["c1", "PORT", "0"]).unwrap_err(), CommandError::Invalid(_)));
        assert!(matches!(parse(&["c1", "PORT", "65536"]).unwrap_err(), CommandError::Invalid(_)));
    }
}
