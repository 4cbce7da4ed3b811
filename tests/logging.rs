//! What the real binary logs: nothing per request at the default level, and a client's text only escaped.

mod common;

use std::time::Duration;

use common::{resp, run_ok, test_label, ServerProcess, TestContainer};

/// Pipelined DISCOVERs sent at the default log level.
const REQUESTS: usize = 1000;

/// Waits until the server answered one more request, so that whatever the earlier ones logged was written.
async fn sync(client: &mut common::RawClient) {
    assert_eq!(client.request(&[b"PING"]).await, "+PONG\r\n");
}

/// Waits until a line of the server's log contains `text` (the log is read by another thread); returns the log.
async fn wait_log(server: &ServerProcess, text: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if log.iter().any(|l| l.contains(text)) {
            return log;
        }
        assert!(tokio::time::Instant::now() < deadline, "no log line with {text:?} within 10 s: {log:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    // Start-up logs until the table synced; after that, nothing is due.
    wait_log(&server, "port table synced").await;
    let expected = container.expected_announce("127.0.0.1");
    assert!(client.request(&[b"DISCOVER", container.name.as_bytes()]).await.contains(&expected));
    sync(&mut client).await;
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
    // Stopped, it logs its last lines: once they are read, every line it wrote is.
    run_ok("kill", &["-TERM", &server.pid().to_string()]);
    let after = wait_log(&server, "rediscover stopped").await;
    let added: Vec<&String> = after[before.len()..].iter().collect();
    assert_eq!(added.len(), 2, "{REQUESTS} DISCOVERs logged at the default level: {added:#?}");
    assert!(added[0].contains("shutting down") && added[1].contains("rediscover stopped"), "{added:#?}");
    println!("{} log lines for start-up, {REQUESTS} requests and shutdown", after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_a_newline_cannot_forge_a_log_line() {
    let server = ServerProcess::start_logging(&["--docker-host", "/nonexistent/docker.sock"], Some("debug"));
    let mut client = server.connect().await;
    let forged = "FORGED rediscover is serving listen=10.0.0.1:1";
    let query = format!("x\n{forged}");
    let reply = client.request(&[b"DISCOVER", query.as_bytes()]).await;
    assert!(reply.starts_with("-NOCONTAINER "), "{reply}");
    let escaped = format!("x\\n{forged}");
    // The query is logged at debug level, escaped, on one line.
    let log = wait_log(&server, &escaped).await;
    assert!(log.iter().all(|line| !line.starts_with("FORGED")), "a forged line: {log:#?}");
}
