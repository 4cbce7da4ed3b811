//! Any bytes sent on a connection get well-formed RESP2 or RESP3 replies, and the connection always ends:
//! at the end of input, on a protocol error, on QUIT, or at a timeout when the client stays silent.
#![no_main]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rediscover::connection::serve;
use rediscover::protocol::DecodeLimits;
use rediscover::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Longer than any wait the configuration below allows; time is paused, so this costs nothing.
const HANG: Duration = Duration::from_secs(3600);

fuzz_target!(|input: &[u8]| {
    let config = Config {
        limits: DecodeLimits { max_bulk_len: 512, max_args: 16, max_inline_len: 512, max_request_len: 2048 },
        request_timeout: Duration::from_secs(2),
        idle_timeout: Some(Duration::from_secs(30)),
        max_output_bytes: 1024,
        max_members_wait: Duration::from_secs(60),
        ..Config::default()
    };
    let shared = common::shared(config);
    // An odd length keeps the client's side open: the server's timeouts must end the connection then.
    let close = input.len() % 2 == 0;
    let output = common::runtime().block_on(async {
        let (client, server) = tokio::io::duplex(256);
        let (mut reader, mut writer) = tokio::io::split(client);
        let write = async {
            // The server may close first, after a protocol error or QUIT.
            if writer.write_all(input).await.is_ok() && close {
                let _ = writer.shutdown().await;
            }
            writer
        };
        let read = async {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).await.expect("reading a duplex stream does not fail");
            out
        };
        let session =
            async { tokio::join!(serve(server, shared.clone(), None, CancellationToken::new()), write, read) };
        let ((), _writer, out) = tokio::time::timeout(HANG, session).await.expect("the connection hung");
        out
    });
    common::replies(&output);
    assert_eq!(shared.stats.connected_clients.load(Ordering::Relaxed), 0);
    assert_eq!(shared.stats.blocked_clients.load(Ordering::Relaxed), 0);
});
