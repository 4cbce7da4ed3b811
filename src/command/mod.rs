//! Commands: the `Command` enum, its parsing from a request's arguments, and dispatch to each family.
//!
//! Every family file has the same three steps: parse from the arguments, apply, turn into a `Reply`.

pub mod client;
pub mod command_docs;
pub mod discover;
pub mod hello;
pub mod info;
pub mod members;
pub mod session;
pub mod shared;

use std::borrow::Cow;

use bytes::Bytes;

use crate::protocol::{string2ll, Reply};

pub use client::ClientCmd;
pub use command_docs::CommandCmd;
pub use discover::Discover;
pub use hello::{Auth, Hello};
pub use info::Info;
pub use members::Members;
pub use session::Session;
pub use shared::{ServerStats, Shared, Tally};

/// A parsed request, borrowing from the request what it needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `PING [message]`.
    Ping(Option<&'a [u8]>),
    /// `ECHO message`.
    Echo(&'a [u8]),
    /// `SELECT index`: only database 0 exists.
    Select(&'a [u8]),
    /// `QUIT`.
    Quit,
    /// `RESET`.
    Reset,
    /// `HELLO ...`.
    Hello(Hello),
    /// `AUTH ...`.
    Auth(Auth),
    /// `CLIENT ...`.
    Client(ClientCmd),
    /// `COMMAND ...`.
    Command(CommandCmd),
    /// `INFO [section ...]`.
    Info(Info),
    /// `DISCOVER container ...`.
    Discover(Discover<'a>),
    /// `MEMBERS ...`.
    Members(Members),
}

/// A request that is not a valid command; each variant is one Redis error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such command.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    Unknown {
        /// The name as sent, cut short.
        name: String,
        /// The first arguments, quoted, cut short.
        args: String,
    },
    /// Wrong number of arguments.
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    /// No such subcommand.
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The parent command, upper case.
        command: &'static str,
        /// The subcommand as sent.
        sub: String,
    },
    /// An option that does not belong.
    #[error("ERR syntax error")]
    Syntax,
    /// A number that does not parse or is out of range.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// Any other bad argument, with its own words.
    #[error("{0}")]
    Invalid(Cow<'static, str>),
}

impl CommandError {
    /// The error reply.
    pub fn reply(&self) -> Reply {
        Reply::error(self.to_string())
    }
}

/// The Redis version whose protocol rediscover speaks. HELLO's `version` and INFO's `redis_version` both answer
/// it, because clients compare them with Redis versions to choose features; INFO's `rediscover_version` says
/// which rediscover this is.
pub const REDIS_VERSION: &str = "7.0.0";

/// How much of a bad request an error reply quotes (Redis: 128 characters).
const QUOTE_LIMIT: usize = 128;

impl<'a> Command<'a> {
    /// Parses a request: looks the name up, checks the arity, then lets the family parse the rest.
    pub fn parse(args: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
        let Some(name) = args.first() else {
            return Err(CommandError::Syntax);
        };
        let Some(index) = Self::lookup(name) else {
            return Err(unknown(args[0], &args[1..]));
        };
        let spec = &command_docs::COMMANDS[index];
        if !command_docs::arity_fits(spec.arity, args.len()) {
            return Err(CommandError::Arity(spec.name.to_string()));
        }
        if !spec.subcommands.is_empty() && args.len() > 1 {
            let full = format!("{}|{}", spec.name, arg_str(args[1]).to_ascii_lowercase());
            if let Some(sub) = command_docs::find(&full) {
                if !command_docs::arity_fits(sub.arity, args.len()) {
                    return Err(CommandError::Arity(full));
                }
            }
        }
        let rest = &args[1..];
        // The table is in the order of NAMES (a test checks), so its index says which command it is, and the
        // name is compared once.
        Ok(match index {
            0 => Command::Auth(Auth::parse(rest)?),
            1 => Command::Client(ClientCmd::parse(rest)?),
            2 => Command::Command(CommandCmd::parse(rest)?),
            3 => Command::Discover(Discover::parse(rest)?),
            4 => Command::Echo(rest[0]),
            5 => Command::Hello(Hello::parse(rest)?),
            6 => Command::Info(Info::parse(rest)),
            7 => Command::Members(Members::parse(rest)?),
            8 if rest.len() > 1 => return Err(CommandError::Arity("ping".into())),
            8 => Command::Ping(rest.first().copied()),
            9 => Command::Quit,
            10 => Command::Reset,
            11 => Command::Select(rest[0]),
            _ => unreachable!("command table entry '{}' has no parser", spec.name),
        })
    }

    /// Every command's lower-case name, in the order of [`Command::index`].
    pub const NAMES: [&'static str; 12] = [
        "auth", "client", "command", "discover", "echo", "hello", "info", "members", "ping", "quit", "reset", "select",
    ];

    /// The place of a command name in [`Command::NAMES`], whatever its case. Every name is at most eight letters,
    /// so it is compared as one word: the name sent, packed the same way, against each.
    fn lookup(name: &[u8]) -> Option<usize> {
        let word = name_word(name)?;
        NAME_WORDS.iter().position(|&w| w == word)
    }

    /// Its place in [`Command::NAMES`]: where INFO counts its calls.
    pub fn index(&self) -> usize {
        match self {
            Command::Auth(_) => 0,
            Command::Client(_) => 1,
            Command::Command(_) => 2,
            Command::Discover(_) => 3,
            Command::Echo(_) => 4,
            Command::Hello(_) => 5,
            Command::Info(_) => 6,
            Command::Members(_) => 7,
            Command::Ping(_) => 8,
            Command::Quit => 9,
            Command::Reset => 10,
            Command::Select(_) => 11,
        }
    }

    /// The lower-case name, as INFO counts it.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Whether a client that has not authenticated may run it: the command table's `no-auth` flag says, so
    /// COMMAND INFO and the server cannot disagree.
    pub fn allowed_before_auth(&self) -> bool {
        command_docs::COMMANDS[self.index()].flags.contains(&"no-auth")
    }

    /// Runs the command for one connection: its reply, unless it must wait (on Docker, or for containers). A
    /// lookup answered from the port table is counted in `tally`.
    pub fn run(self, shared: &Shared, session: &mut Session, tally: &mut Tally<'_>) -> Outcome {
        Outcome::Reply(match self {
            Command::Ping(None) => Reply::Simple("PONG".into()),
            Command::Ping(Some(msg)) | Command::Echo(msg) => Reply::Bulk(Bytes::copy_from_slice(msg)),
            Command::Select(index) => match parse_int(index) {
                Ok(0) => Reply::ok(),
                Ok(_) => Reply::error("ERR DB index is out of range"),
                Err(e) => e.reply(),
            },
            Command::Quit => Reply::ok(),
            Command::Reset => {
                session.reset(shared.config.requirepass.is_none());
                Reply::Simple("RESET".into())
            }
            Command::Hello(h) => h.apply(shared, session),
            Command::Auth(a) => a.apply(shared, session),
            Command::Client(c) => c.apply(shared, session),
            Command::Command(c) => c.apply(),
            Command::Info(i) => i.apply(shared),
            Command::Discover(d) => match d.apply(shared, tally) {
                Ok(reply) => reply,
                Err(d) => return Outcome::Wait(Wait::Discover(d.into_owned())),
            },
            Command::Members(m) => return Outcome::Wait(Wait::Members(m)),
        })
    }

    /// Runs the command to its reply, waiting if it must: [`Command::run`], then [`Wait::finish`].
    pub async fn apply(self, shared: &Shared, session: &mut Session) -> Reply {
        let outcome = self.run(shared, session, &mut shared.tally());
        match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Wait(wait) => wait.finish(shared).await,
        }
    }
}

/// What running a command gives.
#[derive(Debug)]
pub enum Outcome {
    /// Its reply, ready now.
    Reply(Reply),
    /// A command that must wait for its reply.
    Wait(Wait),
}

/// A command that cannot answer at once.
#[derive(Debug)]
pub enum Wait {
    /// A DISCOVER the port table could not answer: Docker must.
    Discover(Discover<'static>),
    /// MEMBERS, which reads Docker or the table and may wait for enough containers.
    Members(Members),
}

impl Wait {
    /// Whether it may wait on more than a bounded Docker call: a MEMBERS waiting for a minimum count.
    pub fn blocks(&self) -> bool {
        matches!(self, Wait::Members(m) if m.min > 0)
    }

    /// Waits for the reply.
    pub async fn finish(self, shared: &Shared) -> Reply {
        match self {
            Wait::Discover(d) => d.ask_docker(shared).await,
            Wait::Members(m) => m.apply(shared).await,
        }
    }
}

/// A name of up to eight bytes as one little-endian word, each byte with its 0x20 bit set: for a letter, the
/// lower case, so two names are the same letters in any case exactly when their words are equal (no byte of a
/// word is zero, so the lengths are equal too).
const fn name_word(name: &[u8]) -> Option<u64> {
    let len = name.len();
    let word = if len > 8 {
        return None;
    } else if len >= 4 {
        // Two four-byte reads that overlap in the middle, where both hold the same bytes: no loop over the name.
        let low = u32::from_le_bytes([name[0], name[1], name[2], name[3]]);
        let high = u32::from_le_bytes([name[len - 4], name[len - 3], name[len - 2], name[len - 1]]);
        low as u64 | (high as u64) << (8 * (len - 4))
    } else {
        let mut word = 0u64;
        let mut i = 0;
        while i < len {
            word |= (name[i] as u64) << (8 * i);
            i += 1;
        }
        word
    };
    // The 0x20 bit of each byte the name fills; none for an empty name.
    let case = match 0x2020_2020_2020_2020u64.checked_shr(8 * (8 - len as u32)) {
        Some(bits) => bits,
        None => 0,
    };
    Some(word | case)
}

/// [`Command::NAMES`] as [`name_word`]s.
const NAME_WORDS: [u64; Command::NAMES.len()] = {
    let mut words = [0u64; Command::NAMES.len()];
    let mut i = 0;
    while i < words.len() {
        let name = Command::NAMES[i].as_bytes();
        let mut j = 0;
        while j < name.len() {
            assert!(name[j].is_ascii_lowercase(), "a command name is lower-case letters");
            j += 1;
        }
        words[i] = match name_word(name) {
            Some(word) => word,
            None => panic!("a command name is at most eight letters"),
        };
        i += 1;
    }
    words
};

fn unknown(name: &[u8], rest: &[&[u8]]) -> CommandError {
    let mut args = String::new();
    for a in rest {
        if args.len() >= QUOTE_LIMIT {
            break;
        }
        let room = QUOTE_LIMIT - args.len();
        args.push('\'');
        args.extend(arg_str(a).chars().take(room));
        args.push_str("' ");
    }
    CommandError::Unknown { name: arg_str(name).chars().take(QUOTE_LIMIT).collect(), args }
}

/// An argument as text, with invalid UTF-8 replaced.
pub fn arg_str(arg: &[u8]) -> Cow<'_, str> {
    // What clients send is nearly always valid: the plain check costs a fraction of the lossy walk.
    match std::str::from_utf8(arg) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(arg),
    }
}

/// An argument as a signed integer, read as the decoder reads request lengths (Redis's string2ll).
pub fn parse_int(arg: &[u8]) -> Result<i64, CommandError> {
    string2ll(arg).ok_or(CommandError::NotInteger)
}

/// Whether an argument equals a keyword, ignoring case.
pub fn is_keyword(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

/// The `HELP` reply of a command with subcommands, in Redis's layout.
pub fn help(command: &str, lines: &[&str]) -> Reply {
    let mut out =
        vec![Reply::Simple(format!("{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:").into())];
    out.extend(lines.iter().map(|l| Reply::Simple((*l).to_string().into())));
    out.push(Reply::Simple("HELP".into()));
    out.push(Reply::Simple("    Print this help.".into()));
    Reply::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(words: &[&'a str]) -> Result<Command<'a>, CommandError> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        Command::parse(&args)
    }

    #[test]
    fn a_name_word_is_its_bytes_with_the_case_bit_set() {
        let byte_by_byte = |name: &[u8]| {
            (name.len() <= 8)
                .then(|| name.iter().enumerate().fold(0u64, |w, (i, &b)| w | u64::from(b | 0x20) << (8 * i)))
        };
        let mut names: Vec<Vec<u8>> = vec![Vec::new()];
        let mut all = names.clone();
        for len in 1..=9 {
            // Every byte that matters up to five, two beyond, where the reads overlap and past eight.
            let alphabet: &[u8] = if len <= 5 { b"aZ|\0\xff\x20" } else { b"Z\xff" };
            names = names.iter().flat_map(|n| alphabet.iter().map(move |&b| [n.as_slice(), &[b]].concat())).collect();
            all.extend(names.iter().cloned());
        }
        for name in &all {
            assert_eq!(name_word(name), byte_by_byte(name), "{name:?}");
        }
    }

    #[test]
    fn unknown_command_quotes_like_redis() {
        let e = parse(&["foo", "a", "b"]).unwrap_err();
        assert_eq!(e.to_string(), "ERR unknown command 'foo', with args beginning with: 'a' 'b' ");
        let e = parse(&["foo"]).unwrap_err();
        assert_eq!(e.to_string(), "ERR unknown command 'foo', with args beginning with: ");
        let long = "x".repeat(500);
        let e = parse(&["foo", &long, "y"]).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
        assert!(parse(&["client|id"]).is_err());
    }

    #[test]
    fn arity_errors_name_the_command() {
        assert_eq!(
            parse(&["DISCOVER"]).unwrap_err().to_string(),
            "ERR wrong number of arguments for 'discover' command"
        );
        assert_eq!(parse(&["echo"]).unwrap_err(), CommandError::Arity("echo".into()));
        assert_eq!(parse(&["ping", "a", "b"]).unwrap_err(), CommandError::Arity("ping".into()));
        assert_eq!(
            parse(&["client", "setname"]).unwrap_err().to_string(),
            "ERR wrong number of arguments for 'client|setname' command"
        );
    }

    #[test]
    fn the_command_table_is_in_the_order_of_names() {
        let table: Vec<&str> = command_docs::COMMANDS.iter().map(|c| c.name).collect();
        assert_eq!(table, Command::NAMES);
        assert_eq!(parse(&["DISCOVER", "c1"]).unwrap().name(), "discover");
        assert_eq!(parse(&["select", "0"]).unwrap().name(), "select");
    }

    #[test]
    fn a_name_is_found_in_any_case_and_only_as_a_whole() {
        for (i, name) in Command::NAMES.iter().enumerate() {
            assert_eq!(Command::lookup(name.as_bytes()), Some(i));
            assert_eq!(Command::lookup(name.to_ascii_uppercase().as_bytes()), Some(i));
            assert_eq!(Command::lookup(&name.as_bytes()[..name.len() - 1]), None, "{name}");
            assert_eq!(Command::lookup(format!("{name}s").as_bytes()), None, "{name}");
            assert_eq!(Command::lookup(format!("{name}\0").as_bytes()), None, "{name}");
        }
        // Bytes that share a letter's bits but for 0x20 and are not that letter in upper case.
        for near in [&b"pi\x0eg"[..], b"p\x09ng", b"PING ", b"\x10ing", b"ping\x00", b"", b"discovery"] {
            assert_eq!(Command::lookup(near), None, "{near:?}");
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(parse(&["PiNg"]).unwrap(), Command::Ping(None));
        assert_eq!(parse(&["ping", "hi"]).unwrap(), Command::Ping(Some(&b"hi"[..])));
        assert_eq!(parse(&["QUIT"]).unwrap().name(), "quit");
    }

    #[test]
    fn only_commands_flagged_no_auth_run_before_auth() {
        for (words, allowed) in [
            (&["AUTH", "pw"][..], true),
            (&["HELLO"], true),
            (&["PING"], true),
            (&["QUIT"], true),
            (&["RESET"], true),
            (&["INFO"], false),
            (&["CLIENT", "ID"], false),
            (&["DISCOVER", "x"], false),
        ] {
            assert_eq!(parse(words).unwrap().allowed_before_auth(), allowed, "{words:?}");
        }
    }

    #[test]
    fn integers_parse_like_string2ll() {
        assert_eq!(parse_int(b"-12"), Ok(-12));
        for bad in ["", "+1", "1.0", " 1", "99999999999999999999", "x", "01", "-0"] {
            assert_eq!(parse_int(bad.as_bytes()), Err(CommandError::NotInteger), "{bad}");
        }
    }
}
