//! HELLO and AUTH: the handshake that picks RESP2 or RESP3, and the password check.

use bytes::Bytes;

use super::Session;
use super::Shared;
use super::{arg_str, is_keyword, parse_int, CommandError};
use crate::protocol::{Protocol, Reply};

/// The only user there is.
const DEFAULT_USER: &str = "default";

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol asked for; the current one when absent.
    pub protocol: Option<Protocol>,
    /// Credentials to check first.
    pub auth: Option<Auth>,
    /// A connection name to set.
    pub setname: Option<Bytes>,
}

/// `AUTH [username] password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user; `default` when absent.
    pub user: Option<Bytes>,
    /// The password.
    pub password: Bytes,
}

impl Hello {
    /// Parses the arguments after `HELLO`.
    pub fn parse(args: &[&[u8]]) -> Result<Self, CommandError> {
        let mut hello = Hello { protocol: None, auth: None, setname: None };
        let Some(version) = args.first() else {
            return Ok(hello);
        };
        hello.protocol = Some(match parse_int(version) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => return Err(CommandError::Invalid("NOPROTO unsupported protocol version".into())),
            Err(_) => {
                return Err(CommandError::Invalid("ERR Protocol version is not an integer or out of range".into()))
            }
        });
        let mut i = 1;
        while i < args.len() {
            let left = args.len() - i - 1;
            if is_keyword(args[i], "AUTH") && left >= 2 {
                hello.auth = Some(Auth {
                    user: Some(Bytes::copy_from_slice(args[i + 1])),
                    password: Bytes::copy_from_slice(args[i + 2]),
                });
                i += 3;
            } else if is_keyword(args[i], "SETNAME") && left >= 1 {
                hello.setname = Some(super::client::valid_name(args[i + 1])?);
                i += 2;
            } else {
                return Err(CommandError::Invalid(
                    format!("ERR Syntax error in HELLO option '{}'", arg_str(args[i])).into(),
                ));
            }
        }
        Ok(hello)
    }

    /// Authenticates if asked, switches protocol, and answers the server's description.
    pub fn apply(self, shared: &Shared, session: &mut Session) -> Reply {
        if let Some(auth) = &self.auth {
            if let Err(reply) = auth.check(shared) {
                return reply;
            }
            session.authenticated = true;
        } else if !session.authenticated {
            return Reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> \
                 AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
                 version at the same time",
            );
        }
        if let Some(p) = self.protocol {
            session.protocol = p;
        }
        if let Some(name) = self.setname {
            session.set_name(Some(&name));
        }
        Reply::Map(vec![
            (Reply::static_text("server"), Reply::static_text("rediscover")),
            (Reply::static_text("version"), Reply::static_text(super::REDIS_VERSION)),
            (Reply::static_text("proto"), Reply::Integer(session.protocol.version())),
            (Reply::static_text("id"), Reply::Integer(session.id as i64)),
            (Reply::static_text("mode"), Reply::static_text("standalone")),
            (Reply::static_text("role"), Reply::static_text("master")),
            (Reply::static_text("modules"), Reply::Array(Vec::new())),
        ])
    }
}

impl Auth {
    /// Parses the arguments after `AUTH`.
    pub fn parse(args: &[&[u8]]) -> Result<Self, CommandError> {
        match args {
            [password] => Ok(Auth { user: None, password: Bytes::copy_from_slice(password) }),
            [user, password] => {
                Ok(Auth { user: Some(Bytes::copy_from_slice(user)), password: Bytes::copy_from_slice(password) })
            }
            _ => Err(CommandError::Syntax),
        }
    }

    /// Checks the credentials and marks the connection authenticated.
    pub fn apply(self, shared: &Shared, session: &mut Session) -> Reply {
        match self.check(shared) {
            Ok(()) => {
                session.authenticated = true;
                Reply::ok()
            }
            Err(reply) => reply,
        }
    }

    fn check(&self, shared: &Shared) -> Result<(), Reply> {
        let user_ok = self.user.as_ref().is_none_or(|u| u.as_ref() == DEFAULT_USER.as_bytes());
        match &shared.config.requirepass {
            // With no password set, the default user takes any password, but AUTH <password> is a mistake.
            None if self.user.is_none() => Err(Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure \
                 your configuration is correct?",
            )),
            None if user_ok => Ok(()),
            Some(pass) if user_ok && constant_time_eq(pass.as_bytes(), &self.password) => Ok(()),
            _ => Err(Reply::error("WRONGPASS invalid username-password pair or user is disabled.")),
        }
    }
}

/// Compares two secrets in time that depends only on their lengths, not on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b<'a>(words: &[&'a str]) -> Vec<&'a [u8]> {
        words.iter().map(|w| w.as_bytes()).collect()
    }

    #[test]
    fn hello_parses_versions_and_options() {
        let h = Hello::parse(&b(&["3", "auth", "default", "pw", "setname", "me"])).unwrap();
        assert_eq!(h.protocol, Some(Protocol::Resp3));
        assert_eq!(h.auth.unwrap().password, Bytes::from_static(b"pw"));
        assert_eq!(h.setname, Some(Bytes::from_static(b"me")));
        assert_eq!(Hello::parse(&[]).unwrap().protocol, None);
        assert_eq!(Hello::parse(&b(&["4"])).unwrap_err().to_string(), "NOPROTO unsupported protocol version");
        assert!(Hello::parse(&b(&["x"])).unwrap_err().to_string().starts_with("ERR Protocol version"));
        assert_eq!(
            Hello::parse(&b(&["3", "AUTH", "u"])).unwrap_err().to_string(),
            "ERR Syntax error in HELLO option 'AUTH'"
        );
    }

    #[test]
    fn auth_takes_one_or_two_arguments() {
        assert_eq!(Auth::parse(&b(&["pw"])).unwrap().user, None);
        assert!(Auth::parse(&b(&["u", "pw"])).unwrap().user.is_some());
        assert_eq!(Auth::parse(&b(&["a", "b", "c"])).unwrap_err(), CommandError::Syntax);
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
