//! CLIENT: the connection's id, name, library info and description.

use bytes::Bytes;

use super::{arg_str, is_keyword, CommandError};
use super::{Session, Shared};
use crate::protocol::Reply;

/// `CLIENT ID | GETNAME | SETNAME name | SETINFO attr value | INFO | HELP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCmd {
    /// The connection id.
    Id,
    /// The connection name, or null.
    GetName,
    /// Names the connection; an empty name clears it.
    SetName(Bytes),
    /// Records the client library's name.
    SetLibName(Bytes),
    /// Records the client library's version.
    SetLibVer(Bytes),
    /// One line describing the connection.
    Info,
    /// Usage text.
    Help,
}

impl ClientCmd {
    /// Parses the arguments after `CLIENT`.
    pub fn parse(args: &[&[u8]]) -> Result<Self, CommandError> {
        let sub = arg_str(args[0]).to_ascii_lowercase();
        Ok(match sub.as_str() {
            "id" => ClientCmd::Id,
            "getname" => ClientCmd::GetName,
            "setname" => ClientCmd::SetName(valid_name(args[1])?),
            "setinfo" if is_keyword(args[1], "LIB-NAME") => ClientCmd::SetLibName(valid_info(args[2])?),
            "setinfo" if is_keyword(args[1], "LIB-VER") => ClientCmd::SetLibVer(valid_info(args[2])?),
            "setinfo" => {
                return Err(CommandError::Invalid(format!("ERR Unrecognized option '{}'", arg_str(args[1])).into()))
            }
            "info" => ClientCmd::Info,
            "help" => ClientCmd::Help,
            _ => return Err(CommandError::UnknownSubcommand { command: "CLIENT", sub }),
        })
    }

    /// Runs it on this connection.
    pub fn apply(self, shared: &Shared, session: &mut Session) -> Reply {
        match self {
            ClientCmd::Id => Reply::Integer(session.id as i64),
            ClientCmd::GetName => session.name().cloned().map_or(Reply::Null, Reply::Bulk),
            ClientCmd::SetName(name) => {
                session.set_name(Some(&name).filter(|n| !n.is_empty()));
                Reply::ok()
            }
            ClientCmd::SetLibName(v) => {
                session.set_lib_name(&v);
                Reply::ok()
            }
            ClientCmd::SetLibVer(v) => {
                session.set_lib_ver(&v);
                Reply::ok()
            }
            ClientCmd::Info => Reply::Verbatim(session.describe(shared.local_addr)),
            ClientCmd::Help => super::help(
                "CLIENT",
                &[
                    "GETNAME",
                    "    Return the name of the current connection.",
                    "ID",
                    "    Return the ID of the current connection.",
                    "INFO",
                    "    Return information about the current client connection.",
                    "SETINFO <option> <value>",
                    "    Set client meta attr. Options are:",
                    "    * LIB-NAME: the client lib name.",
                    "    * LIB-VER: the client lib version.",
                    "SETNAME <name>",
                    "    Assign the name <name> to the current connection.",
                ],
            ),
        }
    }
}

/// A connection name: Redis refuses spaces, newlines and other special characters in it.
///
/// The name is copied: the argument is a slice of the connection's read buffer, and a stored slice would keep
/// that whole buffer alive for as long as the name is set.
pub fn valid_name(name: &[u8]) -> Result<Bytes, CommandError> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(Bytes::copy_from_slice(name))
    } else {
        Err(CommandError::Invalid("ERR Client names cannot contain spaces, newlines or special characters.".into()))
    }
}

/// A library name or version, copied for the same reason as a name.
fn valid_info(value: &[u8]) -> Result<Bytes, CommandError> {
    if value.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(Bytes::copy_from_slice(value))
    } else {
        Err(CommandError::Invalid(
            "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<ClientCmd, CommandError> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        ClientCmd::parse(&args)
    }

    #[test]
    fn subcommands_parse() {
        assert_eq!(parse(&["ID"]).unwrap(), ClientCmd::Id);
        assert_eq!(parse(&["setinfo", "lib-name", "redis-py"]).unwrap(), ClientCmd::SetLibName("redis-py".into()));
        assert_eq!(parse(&["SETINFO", "LIB-VER", "5.0"]).unwrap(), ClientCmd::SetLibVer("5.0".into()));
        assert_eq!(parse(&["setinfo", "color", "x"]).unwrap_err().to_string(), "ERR Unrecognized option 'color'");
        assert_eq!(parse(&["kill"]).unwrap_err().to_string(), "ERR unknown subcommand 'kill'. Try CLIENT HELP.");
    }

    #[test]
    fn names_with_spaces_are_refused() {
        assert!(parse(&["setname", "a b"]).is_err());
        assert!(parse(&["setname", "a\nb"]).is_err());
        assert_eq!(parse(&["setname", ""]).unwrap(), ClientCmd::SetName(Bytes::new()));
    }
}
