//! The Redis protocol over TCP against an in-process server: every command, pipelining, split frames,
//! inline commands, and protocol errors that close only the offending connection.

mod common;

use common::{bulk, node, resp, TestServer};
use rediscover::Config;

const ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

async fn server() -> TestServer {
    let containers = vec![
        node(ID, "node-1", true, vec![(6379, 30001), (16379, 40001)]),
        node("ffff000011112222", "stopped", false, vec![]),
        node("eeee000011112222", "no-bus", true, vec![(6379, 30002)]),
        node("dddd000011112222", "node-2", true, vec![(6379, 30003), (16379, 40003), (7000, 30004), (17000, 40004)]),
    ];
    TestServer::in_memory(Config::default(), containers).await
}

#[tokio::test]
async fn ping_echo_select_and_quit_answer_like_redis() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    c.roundtrip(&resp(&[b"ping", b"hello"]), b"$5\r\nhello\r\n").await;
    c.roundtrip(&resp(&[b"ECHO", b"a\r\nb"]), b"$4\r\na\r\nb\r\n").await;
    c.roundtrip(&resp(&[b"SELECT", b"0"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"SELECT", b"1"]), b"-ERR DB index is out of range\r\n").await;
    c.roundtrip(&resp(&[b"SELECT", b"x"]), b"-ERR value is not an integer or out of range\r\n").await;
    c.send(&resp(&[b"QUIT"])).await;
    let (rest, closed) = c.read_to_close().await;
    assert_eq!(rest, b"+OK\r\n");
    assert!(closed, "QUIT closes the connection");
}

#[tokio::test]
async fn discover_answers_full_id_short_id_prefix_and_name() {
    let s = server().await;
    let mut c = s.connect().await;
    for q in [ID, &ID[..12], &ID[..6], "node-1", "/node-1"] {
        c.roundtrip(&resp(&[b"DISCOVER", q.as_bytes()]), b"$21\r\n127.0.0.1:30001@40001\r\n").await;
    }
    c.roundtrip(
        &resp(&[b"discover", b"node-2", b"PORT", b"7000", b"busport", b"17000"]),
        b"$21\r\n127.0.0.1:30004@40004\r\n",
    )
    .await;
}

#[tokio::test]
async fn discover_hostname_appends_the_announce_host_name_as_cluster_nodes_prints_it() {
    let config = Config { announce_hostname: Some("redis-1.example.test".into()), ..Config::default() };
    let s = TestServer::in_memory(config, vec![node(ID, "node-1", true, vec![(6379, 30001), (16379, 40001)])]).await;
    let mut c = s.connect().await;
    c.roundtrip(
        &resp(&[b"DISCOVER", b"node-1", b"HOSTNAME"]),
        b"$42\r\n127.0.0.1:30001@40001,redis-1.example.test\r\n",
    )
    .await;
    c.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"$21\r\n127.0.0.1:30001@40001\r\n").await;
    let plain = server().await;
    let mut c = plain.connect().await;
    c.roundtrip(
        &resp(&[b"DISCOVER", b"node-1", b"hostname"]),
        b"-NOHOSTNAME no announce host name is set (--announce-hostname)\r\n",
    )
    .await;
}

#[tokio::test]
async fn discover_errors_have_distinct_codes_and_keep_the_connection() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"DISCOVER", b"nope"]), b"-NOCONTAINER no such container: 'nope'\r\n").await;
    // A stopped entry is never trusted (it may have started since): Docker is asked, and shows no such container.
    c.roundtrip(&resp(&[b"DISCOVER", b"stopped"]), b"-NOCONTAINER no such container: 'stopped'\r\n").await;
    c.roundtrip(&resp(&[b"DISCOVER", b"no-bus"]), b"-NOPORT container 'no-bus' does not publish port 16379/tcp\r\n")
        .await;
    c.roundtrip(
        &resp(&[b"DISCOVER", b"node-1", b"PORT", b"7000"]),
        b"-NOPORT container 'node-1' does not publish port 7000/tcp\r\n",
    )
    .await;
    c.roundtrip(&resp(&[b"DISCOVER"]), b"-ERR wrong number of arguments for 'discover' command\r\n").await;
    c.roundtrip(&resp(&[b"DISCOVER", b"x", b"PORT"]), b"-ERR syntax error\r\n").await;
    c.roundtrip(&resp(&[b"DISCOVER", b"x", b"PORT", b"99999"]), b"-ERR port must be between 1 and 65535\r\n").await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
}

#[tokio::test]
async fn members_lists_sorted_announce_strings() {
    let s = server().await;
    let mut c = s.connect().await;
    let both = b"*2\r\n$21\r\n127.0.0.1:30001@40001\r\n$21\r\n127.0.0.1:30003@40003\r\n";
    c.roundtrip(&resp(&[b"MEMBERS"]), both).await;
    c.roundtrip(&resp(&[b"MEMBERS", b"LABEL", b"app=redis", b"MIN", b"2"]), both).await;
    c.roundtrip(&resp(&[b"MEMBERS", b"LABEL", b"app=other"]), b"*0\r\n").await;
    c.roundtrip(
        &resp(&[b"MEMBERS", b"MIN", b"3", b"TIMEOUT", b"50"]),
        b"-TIMEOUT only 2 of 3 members visible after 50 ms\r\n",
    )
    .await;
    c.roundtrip(&resp(&[b"MEMBERS", b"MIN"]), b"-ERR syntax error\r\n").await;
}

#[tokio::test]
async fn unknown_commands_and_wrong_arity_keep_the_connection_open() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"GET", b"k"]), b"-ERR unknown command 'GET', with args beginning with: 'k' \r\n").await;
    c.roundtrip(&resp(&[b"FLUSHALL"]), b"-ERR unknown command 'FLUSHALL', with args beginning with: \r\n").await;
    c.roundtrip(&resp(&[b"ECHO"]), b"-ERR wrong number of arguments for 'echo' command\r\n").await;
    c.roundtrip(&resp(&[b"ECHO", b"a", b"b"]), b"-ERR wrong number of arguments for 'echo' command\r\n").await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
}

#[tokio::test]
async fn hello_switches_to_resp3_and_reset_switches_back() {
    let s = server().await;
    let mut c = s.connect().await;
    let text = c.request(&[b"HELLO", b"3", b"SETNAME", b"me"]).await;
    assert!(text.starts_with("%7\r\n"), "HELLO 3 answers a RESP3 map of 7 fields: {text:?}");
    for field in
        ["$6\r\nserver\r\n$10\r\nrediscover\r\n", "$5\r\nproto\r\n:3\r\n", "$4\r\nmode\r\n$10\r\nstandalone\r\n"]
    {
        assert!(text.contains(field), "{field:?} in {text:?}");
    }
    c.roundtrip(&resp(&[b"CLIENT", b"GETNAME"]), b"$2\r\nme\r\n").await;
    let mut c = s.connect().await;
    assert!(c.request(&[b"HELLO", b"3"]).await.starts_with("%7\r\n"));
    c.roundtrip(&resp(&[b"CLIENT", b"GETNAME"]), b"_\r\n").await;
    c.roundtrip(&resp(&[b"RESET"]), b"+RESET\r\n").await;
    c.roundtrip(&resp(&[b"CLIENT", b"GETNAME"]), b"$-1\r\n").await;
    c.roundtrip(&resp(&[b"HELLO", b"4"]), b"-NOPROTO unsupported protocol version\r\n").await;
}

#[tokio::test]
async fn auth_without_a_password_follows_redis() {
    let s = server().await;
    let mut c = s.connect().await;
    let reply = b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n";
    c.roundtrip(&resp(&[b"AUTH", b"pw"]), reply).await;
    c.roundtrip(&resp(&[b"AUTH", b"default", b"anything"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"AUTH", b"bob", b"x"]), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        .await;
}

#[tokio::test]
async fn client_subcommands_track_this_connection() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"CLIENT", b"GETNAME"]), b"$-1\r\n").await;
    c.roundtrip(&resp(&[b"CLIENT", b"SETNAME", b"node-7"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"CLIENT", b"GETNAME"]), b"$6\r\nnode-7\r\n").await;
    c.roundtrip(
        &resp(&[b"CLIENT", b"SETNAME", b"a b"]),
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    )
    .await;
    c.roundtrip(&resp(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"test"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"CLIENT", b"NOPE"]), b"-ERR unknown subcommand 'nope'. Try CLIENT HELP.\r\n").await;
    let id = c.request(&[b"CLIENT", b"ID"]).await;
    let number = id.strip_prefix(':').and_then(|i| i.strip_suffix("\r\n")).and_then(|i| i.parse::<u64>().ok());
    assert!(number.is_some(), "CLIENT ID is an integer: {id:?}");
    let info = c.request(&[b"CLIENT", b"INFO"]).await;
    assert!(info.starts_with('$'), "CLIENT INFO is a bulk string in RESP2: {info:?}");
    assert!(info.contains("name=node-7") && info.contains("lib-name=test") && info.contains("resp=2"), "{info}");
}

#[tokio::test]
async fn command_count_info_and_docs_describe_the_table() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"COMMAND", b"COUNT"]), b":12\r\n").await;
    let got = c.request(&[b"COMMAND", b"INFO", b"discover", b"nosuch"]).await;
    assert!(got.starts_with("*2\r\n*10\r\n$8\r\ndiscover\r\n:-2\r\n"), "{got:?}");
    assert!(got.ends_with("$-1\r\n"), "an unknown command's info is null: {got:?}");
    let got = c.request(&[b"COMMAND", b"DOCS", b"members"]).await;
    assert!(got.starts_with("*2\r\n$7\r\nmembers\r\n"), "{got:?}");
    assert!(got.contains("$7\r\nsummary\r\n") && got.contains("$5\r\nLABEL\r\n"), "{got:?}");
}

#[tokio::test]
async fn info_reports_sections_and_counts_commands() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"$21\r\n127.0.0.1:30001@40001\r\n").await;
    let got = c.request(&[b"INFO"]).await;
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "# Clients\r\nconnected_clients:1\r\n",
        "# Stats\r\n",
        "cmdstat_discover:calls=1,failed_calls=0",
        "# Docker\r\n",
        "table_size:4",
    ] {
        assert!(got.contains(needle), "{needle:?} in {got}");
    }
    let mut c = s.connect().await;
    let got = c.request(&[b"INFO", b"clients"]).await;
    assert!(got.contains("# Clients") && !got.contains("# Server"), "{got}");
}

#[tokio::test]
async fn info_in_a_pipeline_counts_every_call_before_it() {
    let s = server().await;
    let mut c = s.connect().await;
    let mut pipeline = Vec::new();
    for args in [&[&b"PING"[..]][..], &[b"PING"], &[b"ECHO"], &[b"INFO", b"commandstats"], &[b"INFO", b"commandstats"]]
    {
        pipeline.extend(resp(args));
    }
    c.send(&pipeline).await;
    assert_eq!(c.read_reply().await, "+PONG\r\n");
    assert_eq!(c.read_reply().await, "+PONG\r\n");
    assert!(c.read_reply().await.starts_with("-ERR wrong number of arguments"));
    let first = c.read_reply().await;
    assert!(first.contains("cmdstat_ping:calls=2,failed_calls=0"), "{first}");
    assert!(!first.contains("cmdstat_info"), "INFO counts itself after it answers, as Redis does: {first}");
    let second = c.read_reply().await;
    assert!(second.contains("cmdstat_info:calls=1,failed_calls=0"), "{second}");
    // Another client sees the pipeline's calls once its batch has run.
    let mut other = s.connect().await;
    let info = other.request(&[b"INFO", b"stats"]).await;
    assert!(info.contains("total_commands_processed:4\r\n"), "{info}");
}

#[tokio::test]
async fn a_thousand_pipelined_commands_in_one_write_answer_in_order() {
    let s = server().await;
    let mut c = s.connect().await;
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let msg = format!("m{i}");
        request.extend(resp(&[b"ECHO", msg.as_bytes()]));
        expected.extend(bulk(&msg).into_bytes());
        if i % 10 == 0 {
            request.extend(resp(&[b"DISCOVER", b"node-1"]));
            expected.extend_from_slice(b"$21\r\n127.0.0.1:30001@40001\r\n");
        }
    }
    c.roundtrip(&request, &expected).await;
}

#[tokio::test]
async fn every_split_of_a_request_stream_gives_the_same_replies() {
    let s = server().await;
    let mut stream = Vec::new();
    stream.extend(resp(&[b"PING"]));
    stream.extend(resp(&[b"DISCOVER", b"node-1"]));
    stream.extend_from_slice(b"ECHO \"a b\"\r\n");
    stream.extend(resp(&[b"ECHO", b""]));
    let expected = b"+PONG\r\n$21\r\n127.0.0.1:30001@40001\r\n$3\r\na b\r\n$0\r\n\r\n";
    for cut in 1..stream.len() {
        let mut c = s.connect().await;
        c.send(&stream[..cut]).await;
        tokio::task::yield_now().await;
        c.send(&stream[cut..]).await;
        let got = c.read_exact_len(expected.len()).await;
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected), "cut at {cut}");
    }
}

#[tokio::test]
async fn inline_commands_follow_redis_quoting() {
    let s = server().await;
    let mut c = s.connect().await;
    c.roundtrip(b"PING\r\n", b"+PONG\r\n").await;
    c.roundtrip(b"ping\n", b"+PONG\r\n").await;
    c.roundtrip(b"ECHO \"a b\"\r\n", b"$3\r\na b\r\n").await;
    c.roundtrip(b"ECHO 'it''s'\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n").await;
    let mut c = s.connect().await;
    c.roundtrip(b"ECHO \"\\x41\\n\"\r\n", b"$2\r\nA\n\r\n").await;
    c.roundtrip(b"ECHO 'x y'\r\n", b"$3\r\nx y\r\n").await;
    c.roundtrip(b"\r\n   \r\nDISCOVER node-1\r\n", b"$21\r\n127.0.0.1:30001@40001\r\n").await;
}

#[tokio::test]
async fn a_protocol_error_closes_only_that_connection() {
    let s = server().await;
    let mut good = s.connect().await;
    good.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "-ERR Protocol error: expected '$', got '*'\r\n"),
        (b"*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$1073741824\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"ECHO \"abc\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
    ];
    for (input, reply) in cases {
        let mut bad = s.connect().await;
        bad.send(input).await;
        let (got, closed) = bad.read_to_close().await;
        assert_eq!(String::from_utf8_lossy(&got), *reply, "input {:?}", String::from_utf8_lossy(input));
        assert!(closed, "the server closes after {:?}", String::from_utf8_lossy(input));
        good.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"$21\r\n127.0.0.1:30001@40001\r\n").await;
    }
}

#[tokio::test]
async fn graceful_stop_returns_and_refuses_new_clients() {
    let s = server().await;
    let addr = s.addr;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    tokio::time::timeout(std::time::Duration::from_secs(5), s.stop())
        .await
        .expect("stops in time")
        .expect("stops cleanly");
    let (_, closed) = c.read_to_close().await;
    assert!(closed, "open connections are closed on shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn requirepass_gates_every_command_but_auth_hello_ping_and_quit() {
    let config = Config { requirepass: Some("s3cret-pw".into()), ..Config::default() };
    let s = TestServer::in_memory(config, vec![node(ID, "node-1", true, vec![(6379, 30001), (16379, 40001)])]).await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"-NOAUTH Authentication required.\r\n").await;
    c.roundtrip(&resp(&[b"INFO"]), b"-NOAUTH Authentication required.\r\n").await;
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n").await;
    c.roundtrip(&resp(&[b"NOSUCH"]), b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n").await;
    let got = c.request(&[b"HELLO", b"3"]).await;
    assert!(got.starts_with("-NOAUTH H"), "HELLO without AUTH is refused: {got:?}");
    c.roundtrip(&resp(&[b"AUTH", b"wrong"]), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        .await;
    c.roundtrip(
        &resp(&[b"AUTH", b"bob", b"s3cret-pw"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    c.roundtrip(&resp(&[b"AUTH", b"s3cret-pw"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"$21\r\n127.0.0.1:30001@40001\r\n").await;
    let info = c.request(&[b"INFO"]).await;
    assert!(info.contains("# Server") && !info.contains("s3cret"), "INFO never shows the password");
    let mut c = s.connect().await;
    let got = c.request(&[b"HELLO", b"3", b"AUTH", b"default", b"s3cret-pw"]).await;
    assert!(got.starts_with("%7\r\n"), "HELLO with AUTH signs in and answers the map: {got:?}");
    c.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"$21\r\n127.0.0.1:30001@40001\r\n").await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"AUTH", b"default", b"s3cret-pw"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"RESET"]), b"+RESET\r\n").await;
    c.roundtrip(&resp(&[b"DISCOVER", b"node-1"]), b"-NOAUTH Authentication required.\r\n").await;
}

#[tokio::test]
async fn reset_before_auth_is_answered_and_leaves_the_client_signed_out() {
    let config = Config { requirepass: Some("s3cret-pw".into()), ..Config::default() };
    let s = TestServer::in_memory(config, vec![]).await;
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"RESET"]), b"+RESET\r\n").await;
    c.roundtrip(&resp(&[b"INFO"]), b"-NOAUTH Authentication required.\r\n").await;
    c.roundtrip(&resp(&[b"AUTH", b"s3cret-pw"]), b"+OK\r\n").await;
    let flags = c.request(&[b"COMMAND", b"INFO", b"reset"]).await;
    assert!(flags.contains("+no-auth\r\n"), "the table says RESET needs no AUTH: {flags:?}");
}

#[tokio::test]
async fn hello_and_info_report_the_same_redis_version() {
    let s = TestServer::plain().await;
    let mut c = s.connect().await;
    let hello = c.request(&[b"HELLO", b"3"]).await;
    assert!(hello.contains("$7\r\nversion\r\n$5\r\n7.0.0\r\n"), "HELLO answers the Redis protocol level: {hello:?}");
    let info = c.request(&[b"INFO", b"server"]).await;
    assert!(info.contains("redis_version:7.0.0\r\n"), "{info}");
    let own = format!("rediscover_version:{}\r\n", env!("CARGO_PKG_VERSION"));
    assert!(info.contains(&own), "{own:?} in {info}");
}

#[tokio::test]
async fn an_unauthenticated_client_gets_redis_smaller_request_limits() {
    let config = Config { requirepass: Some("s3cret-pw".into()), ..Config::default() };
    let s = TestServer::in_memory(config, vec![]).await;
    let ten: Vec<&[u8]> = std::iter::once(&b"NOSUCH"[..]).chain(std::iter::repeat_n(&b"x"[..], 9)).collect();
    let eleven: Vec<&[u8]> = std::iter::once(&b"NOSUCH"[..]).chain(std::iter::repeat_n(&b"x"[..], 10)).collect();
    let mut c = s.connect().await;
    let got = c.request(&ten).await;
    assert!(got.starts_with("-ERR unknown command 'NOSUCH'"), "ten arguments are read: {got:?}");
    c.roundtrip(
        &resp(&[b"AUTH", &[b'p'; 16384]]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    c.send(&resp(&eleven)).await;
    let (got, closed) = c.read_to_close().await;
    assert_eq!(String::from_utf8_lossy(&got), "-ERR Protocol error: unauthenticated multibulk length\r\n");
    assert!(closed);
    let mut c = s.connect().await;
    c.send(&resp(&[b"AUTH", &[b'p'; 16385]])).await;
    let (got, closed) = c.read_to_close().await;
    assert_eq!(String::from_utf8_lossy(&got), "-ERR Protocol error: unauthenticated bulk length\r\n");
    assert!(closed);
    // Signed in, and signed out again by RESET.
    let mut c = s.connect().await;
    c.roundtrip(&resp(&[b"AUTH", b"s3cret-pw"]), b"+OK\r\n").await;
    let got = c.request(&eleven).await;
    assert!(got.starts_with("-ERR unknown command 'NOSUCH'"), "{got:?}");
    c.roundtrip(&resp(&[b"ECHO", &[b'e'; 20000]]), &[&b"$20000\r\n"[..], &[b'e'; 20000], b"\r\n"].concat()).await;
    c.roundtrip(&resp(&[b"RESET"]), b"+RESET\r\n").await;
    c.send(&resp(&eleven)).await;
    let (got, _) = c.read_to_close().await;
    assert_eq!(String::from_utf8_lossy(&got), "-ERR Protocol error: unauthenticated multibulk length\r\n");
    // Without a password nobody is unauthenticated.
    let open = TestServer::plain().await;
    let mut c = open.connect().await;
    let got = c.request(&eleven).await;
    assert!(got.starts_with("-ERR unknown command 'NOSUCH'"), "{got:?}");
}

#[tokio::test]
async fn integer_arguments_follow_the_same_rules_as_request_lengths() {
    let s = TestServer::plain().await;
    let mut c = s.connect().await;
    for bad in [&b"01"[..], b"-0", b"+0", b" 0", b"0x0", b""] {
        c.roundtrip(&resp(&[b"SELECT", bad]), b"-ERR value is not an integer or out of range\r\n").await;
    }
    c.roundtrip(&resp(&[b"SELECT", b"-9223372036854775808"]), b"-ERR DB index is out of range\r\n").await;
    c.roundtrip(&resp(&[b"SELECT", b"0"]), b"+OK\r\n").await;
    c.roundtrip(&resp(&[b"HELLO", b"03"]), b"-ERR Protocol version is not an integer or out of range\r\n").await;
}

#[tokio::test]
async fn clients_that_leave_a_blocking_members_free_their_slots_at_once() {
    let s = TestServer::in_memory(Config { max_clients: 3, ..Config::default() }, vec![]).await;
    for _ in 0..3 {
        let mut c = s.connect().await;
        c.send(&resp(&[b"MEMBERS", b"MIN", b"5"])).await;
    }
    // All three are gone; the server must notice although it is waiting for containers on their behalf.
    let left = std::time::Instant::now();
    let deadline = left + std::time::Duration::from_secs(5);
    let mut fourth = loop {
        let mut c = s.connect().await;
        // A refused client is told so and closed, perhaps before the PING is even sent.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, &resp(&[b"PING"])).await;
        match c.read_reply().await.as_str() {
            "+PONG\r\n" => break c,
            "-ERR max number of clients reached\r\n" => {}
            other => panic!("unexpected reply {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "no slot was freed within 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    println!("a fourth client was served {:?} after the blocked three left", left.elapsed());
    let info = fourth.request(&[b"INFO", b"clients"]).await;
    assert!(info.contains("connected_clients:1\r\n") && info.contains("blocked_clients:0\r\n"), "{info}");
}

#[tokio::test]
async fn requests_sent_during_a_blocking_members_are_answered_after_it() {
    let s = TestServer::plain().await;
    let mut c = s.connect().await;
    c.send(&resp(&[b"MEMBERS", b"MIN", b"1", b"TIMEOUT", b"300"])).await;
    // Sent while MEMBERS waits: read by the server meanwhile, and answered in order afterwards.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut more = resp(&[b"PING"]);
    more.extend(resp(&[b"ECHO", b"kept"]));
    more.extend_from_slice(b"*1\r\n$4\r\nPI");
    c.send(&more).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    c.send(b"NG\r\n").await;
    c.roundtrip(b"", b"-TIMEOUT only 0 of 1 members visible after 300 ms\r\n+PONG\r\n$4\r\nkept\r\n+PONG\r\n").await;
}

#[tokio::test]
async fn more_pipelined_than_a_request_may_hold_during_a_blocking_members_is_all_answered() {
    let limits = rediscover::protocol::DecodeLimits { max_request_len: 1024, ..Default::default() };
    let s = TestServer::in_memory(Config { limits, ..Config::default() }, vec![]).await;
    let mut c = s.connect().await;
    c.send(&resp(&[b"MEMBERS", b"MIN", b"1", b"TIMEOUT", b"200"])).await;
    // Four times what the server reads while MEMBERS waits: the rest waits in the socket, nothing is lost.
    let pings = resp(&[b"PING"]).repeat(4096 / 14);
    c.send(&pings).await;
    let mut expected = b"-TIMEOUT only 0 of 1 members visible after 200 ms\r\n".to_vec();
    expected.extend(b"+PONG\r\n".repeat(4096 / 14));
    c.roundtrip(b"", &expected).await;
}
