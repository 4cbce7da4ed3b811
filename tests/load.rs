//! Load: a thousand concurrent clients asking DISCOVER of a real container; every reply correct.

mod common;

use std::time::Instant;

use common::{info_number, resp, test_label, TestContainer, TestServer};

const CLIENTS: usize = 1000;
const REQUESTS_EACH: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_discover_a_hundred_times_without_error() {
    let label = test_label("load");
    let config = common::labelled_config(&label);
    let container = tokio::task::spawn_blocking(move || TestContainer::with_cluster_ports(&["--label", &label]))
        .await
        .expect("join");
    let server = TestServer::with_docker(config).await;
    let name = container.name.clone();
    let expected = {
        let c = &container;
        let e = c.expected_announce("127.0.0.1");
        format!("${}\r\n{e}\r\n", e.len()).into_bytes()
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut client = server.connect().await;
        let (name, expected) = (name.clone(), expected.clone());
        tasks.push(tokio::spawn(async move {
            let request = resp(&[b"DISCOVER", name.as_bytes()]);
            let (mut ok, mut bad) = (0usize, 0usize);
            for _ in 0..REQUESTS_EACH {
                client.send(&request).await;
                if client.read_exact_len(expected.len()).await == expected {
                    ok += 1;
                } else {
                    bad += 1;
                }
            }
            (ok, bad)
        }));
    }
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (o, b) = t.await.expect("a client task does not panic");
        ok += o;
        bad += b;
    }
    let elapsed = started.elapsed();
    let calls = info_number(&server.info_docker().await, "docker_calls");
    println!(
        "load: {CLIENTS} clients x {REQUESTS_EACH} DISCOVER = {ok} ok, {bad} errors in {elapsed:?} ({:.0} req/s), {calls} Docker calls",
        ok as f64 / elapsed.as_secs_f64()
    );
    assert_eq!((ok, bad), (CLIENTS * REQUESTS_EACH, 0));
}
