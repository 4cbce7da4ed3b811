//! Any argument vector parses into a Command or an error reply, and running it gives a reply both protocols
//! can carry.
#![no_main]

mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redis_protocol::{resp2, resp3};
use rediscover::command::Command;
use rediscover::command::Session;
use rediscover::protocol::{Protocol, Reply};
use rediscover::Config;

fuzz_target!(|input: &[u8]| {
    // Arguments are separated by NUL bytes, so that seeds stay readable.
    let args: Vec<&[u8]> = input.split(|&b| b == 0).collect();
    let reply = match Command::parse(&args) {
        Ok(command) => {
            let _ = (command.name(), command.allowed_before_auth());
            // With a password, so AUTH and HELLO AUTH check it; apply itself does not ask for authentication.
            let config = Config { requirepass: Some("secret".into()), ..Config::default() };
            let shared = common::shared(config);
            let mut session = Session::new(&shared, None);
            common::runtime().block_on(command.apply(&shared, &mut session))
        }
        Err(e) => {
            let reply = e.reply();
            assert!(reply.is_error(), "{e:?} answers {reply:?}");
            reply
        }
    };
    if let Reply::Error(text) = &reply {
        // Redis-style: a code in capitals first, never an empty string.
        let code = text.split(' ').next().unwrap_or_default();
        assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()), "error reply {text:?}");
    }
    let mut out = BytesMut::new();
    reply.encode(Protocol::Resp2, &mut out);
    assert_eq!(resp2::decode::decode(&out).map(|f| f.map(|(_, used)| used)).ok(), Some(Some(out.len())), "{reply:?}");
    out.clear();
    reply.encode(Protocol::Resp3, &mut out);
    let resp3 = resp3::decode::complete::decode(&out).map(|f| f.map(|(_, used)| used));
    assert_eq!(resp3.ok(), Some(Some(out.len())), "{reply:?}");
});
