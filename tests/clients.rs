//! Real clients against an in-process server: Debian's redis-cli, redis-py and the `redis` crate, over RESP2
//! and RESP3.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{node, TestContainer, TestServer, TEST_LABEL};
use rediscover::docker::Container;
use rediscover::Config;
use tokio::io::AsyncWriteExt;

const ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const NODE_1: &str = "127.0.0.1:30001@40001";
const NODE_2: &str = "127.0.0.1:30003@40003";
const NODE_2_EXTRA: &str = "127.0.0.1:30004@40004";
/// Every running container with both ports, sorted.
const MEMBERS: [&str; 4] = [NODE_1, NODE_2, "127.0.0.1:30005@40005", "127.0.0.1:30006@40006"];
/// How long one client run may take before the test fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// One container for each DISCOVER answer the table gives.
fn containers() -> Vec<Container> {
    vec![
        node(ID, "node-1", true, vec![(6379, 30001), (16379, 40001)]),
        node("dddd000011112222", "node-2", true, vec![(6379, 30003), (16379, 40003), (7000, 30004), (17000, 40004)]),
        node("abab000011112222", "twin-a", true, vec![(6379, 30005), (16379, 40005)]),
        node("abab000033334444", "twin-b", true, vec![(6379, 30006), (16379, 40006)]),
        node("eeee000011112222", "no-bus", true, vec![(6379, 30002)]),
    ]
}

/// A server whose table holds [`containers`]; the real engine behind it shows none.
async fn server() -> TestServer {
    TestServer::in_memory(Config::default(), containers()).await
}

/// The same server, and a stopped container of the real engine that only this server sees.
async fn server_with_stopped() -> (TestServer, TestContainer) {
    let label = format!("{TEST_LABEL}.clients={}", common::unique());
    let config = Config { require_label: Some(label.parse().expect("a label filter")), ..Config::default() };
    let stopped = tokio::task::spawn_blocking(move || {
        let c = TestContainer::start(&["--label", &label]);
        common::run_ok("docker", &["stop", "-t", "0", &c.id]);
        c
    })
    .await
    .expect("join");
    (TestServer::in_memory(config, containers()).await, stopped)
}

/// Runs a program to its end, feeding it `stdin`; fails the test when it cannot start or hangs.
async fn run_client(program: &str, args: &[String], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; see .ci/run"));
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.as_bytes()).await.expect("write the client's stdin");
    drop(input);
    tokio::time::timeout(CLIENT_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {CLIENT_DEADLINE:?}"))
        .expect("wait for the client")
}

/// Runs `redis-cli -h .. -p .. <args>` with `stdin`.
async fn redis_cli_with_stdin(server: &TestServer, args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["-h".to_string(), "127.0.0.1".to_string(), "-p".to_string(), server.addr.port().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_client("redis-cli", &all, stdin).await
}

/// Runs one redis-cli command; returns its exit code and its standard output and error together.
async fn redis_cli(server: &TestServer, args: &[&str]) -> (i32, String) {
    let out = redis_cli_with_stdin(server, args, "").await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Runs one redis-cli command that must exit 0; returns its standard output.
async fn redis_cli_ok(server: &TestServer, args: &[&str]) -> String {
    let (code, text) = redis_cli(server, args).await;
    assert_eq!(code, 0, "redis-cli {args:?} failed: {text}");
    text
}

#[tokio::test]
async fn redis_cli_discovers_pings_and_echoes() {
    let s = server().await;
    assert_eq!(redis_cli_ok(&s, &["DISCOVER", "node-1"]).await, format!("{NODE_1}\n"));
    assert_eq!(redis_cli_ok(&s, &["DISCOVER", &ID[..12]]).await, format!("{NODE_1}\n"));
    assert_eq!(
        redis_cli_ok(&s, &["DISCOVER", "node-2", "PORT", "7000", "BUSPORT", "17000"]).await,
        format!("{NODE_2_EXTRA}\n")
    );
    assert_eq!(redis_cli_ok(&s, &["PING"]).await, "PONG\n");
    assert_eq!(redis_cli_ok(&s, &["ECHO", "hello world"]).await, "hello world\n");
    assert_eq!(redis_cli_ok(&s, &["MEMBERS"]).await, format!("{}\n", MEMBERS.join("\n")));
}

#[tokio::test]
async fn redis_cli_info_docker_shows_only_the_docker_section() {
    let s = server().await;
    let info = redis_cli_ok(&s, &["INFO", "docker"]).await;
    let lines: Vec<&str> = info.lines().map(str::trim_end).collect();
    assert_eq!(lines.first(), Some(&"# Docker"), "{info}");
    assert!(lines.contains(&"table_size:5"), "{info}");
    assert!(lines.contains(&"table_fresh:1"), "{info}");
    assert!(lines.iter().all(|l| !l.starts_with("# ") || *l == "# Docker"), "{info}");
}

#[tokio::test]
async fn redis_cli_command_count_matches_command_list() {
    let s = server().await;
    let count: usize = redis_cli_ok(&s, &["COMMAND", "COUNT"]).await.trim().parse().expect("COMMAND COUNT is a number");
    let list = redis_cli_ok(&s, &["COMMAND", "LIST"]).await;
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(count, names.len(), "{list}");
    for name in ["discover", "members", "ping", "hello", "client", "command", "info"] {
        assert!(names.contains(&name), "COMMAND LIST lacks {name}: {list}");
    }
    assert_eq!(redis_cli_ok(&s, &["--no-raw", "COMMAND", "COUNT"]).await, format!("(integer) {count}\n"));
}

#[tokio::test]
async fn redis_cli_exits_nonzero_on_an_error_reply_only_with_e() {
    let (s, stopped) = server_with_stopped().await;
    let text = "NOCONTAINER no such container: 'nope'";
    let (code, out) = redis_cli(&s, &["-e", "DISCOVER", "nope"]).await;
    assert_ne!(code, 0, "-e makes an error reply fail: {out}");
    assert!(out.contains(text), "{out}");
    // Without -e redis-cli exits 0 on an error reply, as the README warns.
    let (code, out) = redis_cli(&s, &["DISCOVER", "nope"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(text), "{out}");
    let (code, out) = redis_cli(&s, &["-e", "DISCOVER", &stopped.name]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("NOTRUNNING container '{}' is not running", stopped.name)), "{out}");
    let (code, out) = redis_cli(&s, &["-e", "DISCOVER", "abab"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("AMBIGUOUS"), "{out}");
    let (code, out) = redis_cli(&s, &["-e", "DISCOVER", "node-1"]).await;
    assert_eq!((code, out), (0, format!("{NODE_1}\n")));
}

#[tokio::test]
async fn redis_cli_resp3_gets_the_hello_map_and_the_same_discover_answer() {
    let s = server().await;
    let hello = redis_cli_ok(&s, &["-3", "--no-raw", "HELLO", "3"]).await;
    for field in [r#""server" => "rediscover""#, r#""proto" => (integer) 3"#, r#""mode" => "standalone""#] {
        assert!(hello.contains(field), "HELLO 3 lacks {field}: {hello}");
    }
    assert_eq!(redis_cli_ok(&s, &["-3", "DISCOVER", "node-1"]).await, format!("{NODE_1}\n"));
    assert_eq!(redis_cli_ok(&s, &["-3", "--no-raw", "DISCOVER", "node-1"]).await, format!("\"{NODE_1}\"\n"));
    let (code, out) = redis_cli(&s, &["-3", "-e", "DISCOVER", "no-bus"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("NOPORT container 'no-bus' does not publish port 16379/tcp"), "{out}");
}

#[tokio::test]
async fn redis_cli_reads_commands_from_stdin_and_answers_each_in_order() {
    let s = server().await;
    let script = "PING\nECHO \"a b\"\nDISCOVER node-1\nDISCOVER nope\nCLIENT SETNAME from-stdin\nCLIENT GETNAME\n\
                  SELECT 0\nDISCOVER node-2\nMEMBERS LABEL app=redis MIN 4\n";
    let out = redis_cli_with_stdin(&s, &[], script).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // redis-cli prints an empty line after an error reply in raw mode; the replies are what matter.
    let replies: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    let mut expected =
        vec!["PONG", "a b", NODE_1, "NOCONTAINER no such container: 'nope'", "OK", "from-stdin", "OK", NODE_2];
    expected.extend(MEMBERS);
    assert_eq!(replies, expected, "{stdout}");
}

#[tokio::test]
async fn redis_cli_no_raw_quotes_strings_and_labels_errors_and_arrays() {
    let s = server().await;
    assert_eq!(redis_cli_ok(&s, &["--no-raw", "DISCOVER", "node-1"]).await, format!("\"{NODE_1}\"\n"));
    assert_eq!(
        redis_cli_ok(&s, &["--no-raw", "DISCOVER", "nope"]).await,
        "(error) NOCONTAINER no such container: 'nope'\n"
    );
    let members: String = MEMBERS.iter().enumerate().map(|(i, m)| format!("{}) \"{m}\"\n", i + 1)).collect();
    assert_eq!(redis_cli_ok(&s, &["--no-raw", "MEMBERS"]).await, members);
    assert_eq!(redis_cli_ok(&s, &["--no-raw", "MEMBERS", "LABEL", "app=other"]).await, "(empty array)\n");
    assert_eq!(redis_cli_ok(&s, &["--no-raw", "PING"]).await, "PONG\n");
    // --raw prints the same replies bare.
    assert_eq!(redis_cli_ok(&s, &["--raw", "DISCOVER", "node-1"]).await, format!("{NODE_1}\n"));
    assert_eq!(redis_cli_ok(&s, &["--raw", "MEMBERS"]).await, format!("{}\n", MEMBERS.join("\n")));
}

#[tokio::test]
async fn redis_py_passes_its_checks_over_resp2_and_resp3() {
    let (s, stopped) = server_with_stopped().await;
    let absent = std::env::temp_dir().join(format!("rediscover-absent-{}", common::unique())).join("docker.sock");
    let down = TestServer::with_docker_host(Config::default(), &absent.to_string_lossy()).await;
    let expected = format!(
        r#"{{"discover": {{"node-1": "{NODE_1}", "{short}": "{NODE_1}", "{ID}": "{NODE_1}", "node-2": "{NODE_2}"}},
            "errors": {{"nope": "NOCONTAINER", "{stopped}": "NOTRUNNING", "no-bus": "NOPORT", "abab": "AMBIGUOUS"}},
            "members": [{members}], "table_size": 5, "down_port": {down_port}}}"#,
        stopped = stopped.name,
        short = &ID[..12],
        members = MEMBERS.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "),
        down_port = down.addr.port(),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients.py");
    let args = [script.to_string(), "127.0.0.1".to_string(), s.addr.port().to_string(), expected];
    let out = run_client("python3", &args, "").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-py checks failed:\n{stdout}{stderr}");
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: usize = summary
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}{stderr}"));
    // 2 protocols x (11 common checks + 4 DISCOVERs + 4 errors) + HELLO over RESP3.
    assert_eq!(passed, 2 * 19 + 1, "{stdout}");
}

async fn connect(server: &TestServer, resp3: bool) -> redis::aio::MultiplexedConnection {
    let query = if resp3 { "?protocol=resp3" } else { "" };
    let client = redis::Client::open(format!("redis://{}/{query}", server.addr)).expect("a valid redis URL");
    client.get_multiplexed_async_connection().await.expect("connect with the redis crate")
}

#[tokio::test]
async fn redis_crate_discovers_over_resp2_and_resp3() {
    let s = server().await;
    for resp3 in [false, true] {
        let mut con = connect(&s, resp3).await;
        let answer: String = redis::cmd("DISCOVER").arg("node-1").query_async(&mut con).await.expect("DISCOVER");
        assert_eq!(answer, NODE_1, "resp3={resp3}");
        let answer: String = redis::cmd("DISCOVER")
            .arg("node-2")
            .arg("PORT")
            .arg(7000)
            .arg("BUSPORT")
            .arg(17000)
            .query_async(&mut con)
            .await
            .expect("DISCOVER with ports");
        assert_eq!(answer, NODE_2_EXTRA, "resp3={resp3}");
        let pong: String = redis::cmd("PING").query_async(&mut con).await.expect("PING");
        assert_eq!(pong, "PONG");
        let members: Vec<String> = redis::cmd("MEMBERS").query_async(&mut con).await.expect("MEMBERS");
        assert_eq!(members, MEMBERS);
        let info: String = redis::cmd("INFO").arg("docker").query_async(&mut con).await.expect("INFO docker");
        assert!(info.contains("table_size:5"), "resp3={resp3}: {info}");
    }
}

#[tokio::test]
async fn redis_crate_over_resp3_sees_a_hello_map() {
    let s = server().await;
    let mut con = connect(&s, true).await;
    let hello: redis::Value = redis::cmd("HELLO").arg(3).query_async(&mut con).await.expect("HELLO 3");
    let redis::Value::Map(fields) = hello else { panic!("HELLO 3 is not a map: {hello:?}") };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| redis::from_redis_value_ref::<String>(k).is_ok_and(|k| k == name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("HELLO lacks {name}: {fields:?}"))
    };
    assert_eq!(field("proto"), redis::Value::Int(3));
    assert_eq!(redis::from_redis_value_ref::<String>(&field("server")).expect("server is text"), "rediscover");
}

#[tokio::test]
async fn redis_crate_maps_discover_errors_to_their_codes() {
    let (s, stopped) = server_with_stopped().await;
    let not_running = format!("container '{}' is not running", stopped.name);
    for resp3 in [false, true] {
        let mut con = connect(&s, resp3).await;
        for (name, code, detail) in [
            ("nope", "NOCONTAINER", "no such container: 'nope'"),
            (stopped.name.as_str(), "NOTRUNNING", not_running.as_str()),
            ("no-bus", "NOPORT", "container 'no-bus' does not publish port 16379/tcp"),
            ("abab", "AMBIGUOUS", "more than one container matches 'abab'; use a longer id or the name"),
        ] {
            let err = redis::cmd("DISCOVER")
                .arg(name)
                .query_async::<String>(&mut con)
                .await
                .expect_err("DISCOVER of a container without an answer fails");
            assert_eq!(err.code(), Some(code), "resp3={resp3}: {err:?}");
            assert_eq!(err.detail(), Some(detail), "resp3={resp3}: {err:?}");
        }
        let answer: String = redis::cmd("DISCOVER").arg("node-1").query_async(&mut con).await.expect("DISCOVER");
        assert_eq!(answer, NODE_1, "the connection still serves after errors");
    }
}

#[tokio::test]
async fn redis_crate_pipelines_keep_order_and_errors_in_place() {
    let s = server().await;
    for resp3 in [false, true] {
        let mut con = connect(&s, resp3).await;
        let names = ["node-1", "node-2", "twin-a", "twin-b"];
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.cmd("DISCOVER").arg(names[i % names.len()]);
        }
        let answers: Vec<String> = pipe.query_async(&mut con).await.expect("a pipeline of DISCOVERs");
        let expected: Vec<&str> = (0..100).map(|i| MEMBERS[i % MEMBERS.len()]).collect();
        assert_eq!(answers, expected, "resp3={resp3}");

        let mut pipe = redis::pipe();
        pipe.cmd("DISCOVER").arg("node-1").cmd("DISCOVER").arg("nope").cmd("ECHO").arg("after");
        let results: Vec<redis::RedisResult<String>> =
            pipe.ignore_errors().query_async(&mut con).await.expect("the pipeline itself succeeds");
        assert_eq!(results[0].as_deref().ok(), Some(NODE_1));
        assert_eq!(results[1].as_ref().err().and_then(|e| e.code()), Some("NOCONTAINER"), "{results:?}");
        assert_eq!(results[2].as_deref().ok(), Some("after"));
    }
}

#[tokio::test]
async fn redis_crate_multiplexes_concurrent_discovers_on_one_connection() {
    let s = server().await;
    let con = connect(&s, false).await;
    let names = ["node-1", "node-2", "twin-a", "twin-b"];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut con = con.clone();
            tokio::spawn(async move {
                redis::cmd("DISCOVER").arg(names[i % names.len()]).query_async::<String>(&mut con).await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.expect("join").expect("DISCOVER");
        assert_eq!(answer, MEMBERS[i % MEMBERS.len()]);
    }
}
