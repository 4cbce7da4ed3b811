//! What the real binary logs: nothing per request at the default level, and a client's text only escaped.

mod common;

use std::time::Duration;

use common::{resp, test_label, ServerProcess, TestContainer};

/// Pipelined DISCOVERs sent at the default log level.
const REQUESTS: usize = 1000;

/// Waits until the server answered one more request, so that whatever the earlier ones logged is in.
async fn sync(client: &mut common::RawClient) {
    assert_eq!(client.request(&[b"PING"]).await, "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_level_logs_nothing_per_request() {
    let label = test_label("quiet");
    let container = {
        let label = label.clone();
        tokio::task::spawn_blocking(move || TestContainer::with_cluster_ports(&["--label", &label]))
            .await
            .expect("join")
    };
    let server = ServerProcess::start(&["--require-label", &label]);
    let mut client = server.connect().await;
    // Once an answer comes from the table, start-up has logged what it logs.
    let expected = container.expected_announce("127.0.0.1");
    for _ in 0..500 {
        if client.request(&[b"DISCOVER", container.name.as_bytes()]).await.contains(&expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = server.log();
    let mut batch = Vec::new();
    for i in 0..REQUESTS {
        let query = if i % 2 == 0 { container.name.clone() } else { format!("missing-{i}") };
        batch.extend_from_slice(&resp(&[b"DISCOVER", query.as_bytes()]));
    }
    client.send(&batch).await;
    for _ in 0..REQUESTS {
        client.read_reply().await;
    }
    sync(&mut client).await;
    let after = server.log();
    assert_eq!(after, before, "{REQUESTS} DISCOVERs logged at the default level");
    println!("{} log lines for start-up and {REQUESTS} requests", after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_a_newline_cannot_forge_a_log_line() {
    let server = ServerProcess::start_logging(&["--docker-host", "/nonexistent/docker.sock"], Some("debug"));
    let mut client = server.connect().await;
    let forged = "FORGED rediscover is serving listen=10.0.0.1:1";
    let query = format!("x\n{forged}");
    let reply = client.request(&[b"DISCOVER", query.as_bytes()]).await;
    assert!(reply.starts_with("-NOCONTAINER "), "{reply}");
    sync(&mut client).await;
    let log = server.log();
    assert!(log.iter().all(|line| !line.starts_with("FORGED")), "a forged line: {log:#?}");
    let escaped = format!("x\\n{forged}");
    assert!(log.iter().any(|line| line.contains(&escaped)), "the query, escaped, at debug level: {log:#?}");
}
