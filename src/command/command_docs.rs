//! The command table: name, arity, flags and docs of every command, served by COMMAND, COMMAND INFO and
//! COMMAND DOCS, and the arity every request is checked against.

use bytes::Bytes;

use super::{arg_str, CommandError};
use crate::protocol::Reply;

/// One argument as COMMAND DOCS describes it.
#[derive(Debug)]
pub struct ArgSpec {
    /// Its name.
    pub name: &'static str,
    /// `string`, `integer`, `pure-token`, `oneof` or `block`.
    pub kind: &'static str,
    /// The keyword that introduces it.
    pub token: Option<&'static str>,
    /// May be left out.
    pub optional: bool,
    /// May be repeated.
    pub multiple: bool,
    /// What a `oneof` or `block` holds.
    pub args: &'static [ArgSpec],
}

/// One command or subcommand.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name; `parent|sub` for subcommands.
    pub name: &'static str,
    /// Redis arity: exact count when positive, minimum count when negative, the name included.
    pub arity: i64,
    /// Redis command flags.
    pub flags: &'static [&'static str],
    /// ACL categories.
    pub acl: &'static [&'static str],
    /// The docs group.
    pub group: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// The version it first appeared in.
    pub since: &'static str,
    /// Its time complexity.
    pub complexity: &'static str,
    /// Its arguments.
    pub args: &'static [ArgSpec],
    /// Its subcommands.
    pub subcommands: &'static [CommandSpec],
}

const fn arg(name: &'static str, kind: &'static str) -> ArgSpec {
    ArgSpec { name, kind, token: None, optional: false, multiple: false, args: &[] }
}

const fn opt(name: &'static str, kind: &'static str, token: &'static str) -> ArgSpec {
    ArgSpec { name, kind, token: Some(token), optional: true, multiple: false, args: &[] }
}

const fn optional(a: ArgSpec) -> ArgSpec {
    ArgSpec { optional: true, ..a }
}

const fn multiple(a: ArgSpec) -> ArgSpec {
    ArgSpec { multiple: true, ..a }
}

const CONN: &[&str] = &["@fast", "@connection"];
const SLOW_CONN: &[&str] = &["@slow", "@connection"];
const FAST: &[&str] = &["fast"];
const NOSCRIPT: &[&str] = &["noscript", "loading", "stale", "fast", "no-auth", "allow-busy"];

const fn cmd(name: &'static str, arity: i64, summary: &'static str, args: &'static [ArgSpec]) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags: FAST,
        acl: CONN,
        group: "connection",
        summary,
        since: "1.0.0",
        complexity: "O(1)",
        args,
        subcommands: &[],
    }
}

const HELLO_ARGS: &[ArgSpec] = &[optional(ArgSpec {
    name: "arguments",
    kind: "block",
    token: None,
    optional: true,
    multiple: false,
    args: &[
        arg("protover", "integer"),
        ArgSpec {
            name: "auth",
            kind: "block",
            token: Some("AUTH"),
            optional: true,
            multiple: false,
            args: &[arg("username", "string"), arg("password", "string")],
        },
        opt("clientname", "string", "SETNAME"),
    ],
})];

const DISCOVER_ARGS: &[ArgSpec] = &[
    arg("container", "string"),
    opt("port", "integer", "PORT"),
    opt("busport", "integer", "BUSPORT"),
    opt("hostname", "pure-token", "HOSTNAME"),
];

const MEMBERS_ARGS: &[ArgSpec] = &[
    opt("label", "string", "LABEL"),
    opt("min", "integer", "MIN"),
    opt("timeout", "integer", "TIMEOUT"),
    opt("withnames", "pure-token", "WITHNAMES"),
];

const CLIENT_SUBCOMMANDS: &[CommandSpec] = &[
    cmd("client|getname", 2, "Returns the name of the connection.", &[]),
    cmd("client|help", 2, "Returns helpful text about the different subcommands.", &[]),
    cmd("client|id", 2, "Returns the unique client ID of the connection.", &[]),
    cmd("client|info", 2, "Returns information about the connection.", &[]),
    cmd(
        "client|setinfo",
        4,
        "Sets information specific to the client or connection.",
        &[ArgSpec {
            name: "attr",
            kind: "oneof",
            token: None,
            optional: false,
            multiple: false,
            args: &[opt("libname", "string", "LIB-NAME"), opt("libver", "string", "LIB-VER")],
        }],
    ),
    cmd("client|setname", 3, "Sets the connection name.", &[arg("connection-name", "string")]),
];

const COMMAND_SUBCOMMANDS: &[CommandSpec] = &[
    cmd("command|count", 2, "Returns a count of commands.", &[]),
    cmd(
        "command|docs",
        -2,
        "Returns documentary information about one, multiple or all commands.",
        &[optional(multiple(arg("command-name", "string")))],
    ),
    cmd("command|help", 2, "Returns helpful text about the different subcommands.", &[]),
    cmd(
        "command|info",
        -2,
        "Returns information about one, multiple or all commands.",
        &[optional(multiple(arg("command-name", "string")))],
    ),
    cmd("command|list", -2, "Returns a list of command names.", &[]),
];

/// Every command rediscover answers, sorted by name.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        flags: NOSCRIPT,
        ..cmd("auth", -2, "Authenticates the connection.", &[
            optional(arg("username", "string")),
            arg("password", "string"),
        ])
    },
    CommandSpec {
        flags: &[],
        acl: SLOW_CONN,
        subcommands: CLIENT_SUBCOMMANDS,
        ..cmd("client", -2, "A container for client connection commands.", &[])
    },
    CommandSpec {
        flags: &["loading", "stale"],
        acl: &["@slow", "@connection"],
        group: "server",
        subcommands: COMMAND_SUBCOMMANDS,
        ..cmd("command", -1, "Returns detailed information about all commands.", &[])
    },
    CommandSpec {
        group: "docker",
        flags: &["readonly"],
        acl: &["@slow", "@read"],
        summary: "Returns a container's announce address, ip:port@bus-port, from its published ports.",
        ..cmd("discover", -2, "", DISCOVER_ARGS)
    },
    cmd("echo", 2, "Returns the given string.", &[arg("message", "string")]),
    CommandSpec { flags: NOSCRIPT, ..cmd("hello", -1, "Handshakes with the server.", HELLO_ARGS) },
    CommandSpec {
        flags: &["loading", "stale"],
        acl: &["@slow", "@dangerous"],
        group: "server",
        ..cmd("info", -1, "Returns information and statistics about the server.", &[optional(multiple(arg(
            "section", "string",
        )))])
    },
    CommandSpec {
        group: "docker",
        flags: &["readonly"],
        acl: &["@slow", "@read", "@blocking"],
        summary: "Returns the announce addresses (and container names) of every running container with a label, optionally waiting for a minimum count.",
        complexity: "O(N) where N is the number of containers",
        ..cmd("members", -1, "", MEMBERS_ARGS)
    },
    // Unlike Redis, PING answers before AUTH: the --ping healthcheck knows no password.
    CommandSpec {
        flags: &["fast", "no-auth"],
        ..cmd("ping", -1, "Returns the server's liveliness response.", &[optional(arg("message", "string"))])
    },
    CommandSpec {
        flags: &["loading", "stale", "fast", "no-auth", "allow-busy"],
        ..cmd("quit", -1, "Closes the connection.", &[])
    },
    CommandSpec {
        flags: &["loading", "stale", "fast", "no-auth", "allow-busy"],
        ..cmd("reset", 1, "Resets the connection.", &[])
    },
    cmd("select", 2, "Changes the selected database.", &[arg("index", "integer")]),
];

/// The spec of a command or subcommand by lower-case name.
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    let (parent, sub) = match name.split_once('|') {
        Some((p, s)) => (p, Some(s)),
        None => (name, None),
    };
    let spec = COMMANDS.iter().find(|c| c.name == parent)?;
    match sub {
        None => Some(spec),
        Some(_) => spec.subcommands.iter().find(|s| s.name == name),
    }
}

/// Whether `argc` arguments (the name included) fit this arity.
pub fn arity_fits(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// `COMMAND [COUNT | DOCS | INFO | LIST | HELP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandCmd {
    /// Every command's info.
    All,
    /// How many commands.
    Count,
    /// Docs of these commands, or all.
    Docs(Vec<Bytes>),
    /// Info of these commands, or all.
    Info(Vec<Bytes>),
    /// Every command name.
    List,
    /// Usage text.
    Help,
}

impl CommandCmd {
    /// Parses the arguments after `COMMAND`.
    pub fn parse(args: &[&[u8]]) -> Result<Self, CommandError> {
        let Some(sub) = args.first() else {
            return Ok(CommandCmd::All);
        };
        let sub = arg_str(sub).to_ascii_lowercase();
        let rest = args[1..].iter().map(|a| Bytes::copy_from_slice(a)).collect();
        Ok(match sub.as_str() {
            "count" => CommandCmd::Count,
            "docs" => CommandCmd::Docs(rest),
            "info" => CommandCmd::Info(rest),
            "list" => CommandCmd::List,
            "help" => CommandCmd::Help,
            _ => return Err(CommandError::UnknownSubcommand { command: "COMMAND", sub }),
        })
    }

    /// The reply.
    pub fn apply(&self) -> Reply {
        match self {
            CommandCmd::All => Reply::Array(COMMANDS.iter().map(info_reply).collect()),
            CommandCmd::Count => Reply::Integer(COMMANDS.len() as i64),
            CommandCmd::List => Reply::Array(COMMANDS.iter().map(|c| Reply::static_text(c.name)).collect()),
            CommandCmd::Info(names) if names.is_empty() => CommandCmd::All.apply(),
            CommandCmd::Info(names) => {
                Reply::Array(names.iter().map(|n| lookup(n).map_or(Reply::Null, info_reply)).collect())
            }
            CommandCmd::Docs(names) => {
                let specs: Vec<&CommandSpec> = if names.is_empty() {
                    COMMANDS.iter().collect()
                } else {
                    names.iter().filter_map(|n| lookup(n)).collect()
                };
                Reply::Map(specs.into_iter().map(|c| (Reply::static_text(c.name), docs_reply(c))).collect())
            }
            CommandCmd::Help => super::help(
                "COMMAND",
                &[
                    "(no subcommand)",
                    "    Return details about all commands.",
                    "COUNT",
                    "    Return the total number of commands.",
                    "DOCS [<command-name> ...]",
                    "    Return documentation details about multiple commands.",
                    "INFO [<command-name> ...]",
                    "    Return details about multiple commands.",
                    "LIST",
                    "    Return a list of all commands.",
                ],
            ),
        }
    }
}

fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    find(&arg_str(name).to_ascii_lowercase())
}

fn statuses(items: &[&'static str]) -> Reply {
    Reply::Set(items.iter().map(|s| Reply::Simple((*s).into())).collect())
}

fn info_reply(c: &CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::static_text(c.name),
        Reply::Integer(c.arity),
        statuses(c.flags),
        Reply::Integer(0),
        Reply::Integer(0),
        Reply::Integer(0),
        statuses(c.acl),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(c.subcommands.iter().map(info_reply).collect()),
    ])
}

fn docs_reply(c: &CommandSpec) -> Reply {
    let mut doc = vec![
        (Reply::static_text("summary"), Reply::static_text(c.summary)),
        (Reply::static_text("since"), Reply::static_text(c.since)),
        (Reply::static_text("group"), Reply::static_text(c.group)),
        (Reply::static_text("complexity"), Reply::static_text(c.complexity)),
    ];
    if !c.args.is_empty() {
        doc.push((Reply::static_text("arguments"), Reply::Array(c.args.iter().map(arg_reply).collect())));
    }
    if !c.subcommands.is_empty() {
        let subs = c.subcommands.iter().map(|s| (Reply::static_text(s.name), docs_reply(s))).collect();
        doc.push((Reply::static_text("subcommands"), Reply::Map(subs)));
    }
    Reply::Map(doc)
}

fn arg_reply(a: &ArgSpec) -> Reply {
    let mut m = vec![
        (Reply::static_text("name"), Reply::static_text(a.name)),
        (Reply::static_text("type"), Reply::static_text(a.kind)),
    ];
    if a.kind != "oneof" && a.kind != "block" {
        m.push((Reply::static_text("display_text"), Reply::static_text(a.name)));
    }
    if let Some(t) = a.token {
        m.push((Reply::static_text("token"), Reply::static_text(t)));
    }
    let flags: Vec<&'static str> = [(a.optional, "optional"), (a.multiple, "multiple")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| f)
        .collect();
    if !flags.is_empty() {
        m.push((Reply::static_text("flags"), statuses(&flags)));
    }
    if !a.args.is_empty() {
        m.push((Reply::static_text("arguments"), Reply::Array(a.args.iter().map(arg_reply).collect())));
    }
    Reply::Map(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_subcommands_are_prefixed() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        for c in COMMANDS {
            assert!(!c.summary.is_empty(), "{}", c.name);
            for s in c.subcommands {
                assert!(s.name.starts_with(&format!("{}|", c.name)), "{}", s.name);
            }
        }
        assert_eq!(find("client|setname").map(|c| c.arity), Some(3));
        assert!(find("client|nope").is_none());
    }

    #[test]
    fn arity_rules_match_redis() {
        assert!(arity_fits(2, 2) && !arity_fits(2, 3));
        assert!(arity_fits(-2, 2) && arity_fits(-2, 5) && !arity_fits(-2, 1));
    }
}
