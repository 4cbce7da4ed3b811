//! Faults a real Docker engine cannot show on demand — a hang, a 500, a dropped event stream — from a fake
//! daemon on a unix socket. Everything else is tested against the real engine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{info_number, TestServer};
use rediscover::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answer like Docker.
    Serve,
    /// Accept and never answer.
    Hang,
    /// Answer every request with a 500.
    Fail,
    /// Answer like Docker, but refuse the event stream.
    NoEvents,
}

struct FakeState {
    mode: Mode,
    /// The host port published for 6379; 16379 gets this plus 10000.
    host_port: u16,
}

/// A fake Docker daemon; its event streams stay open until `drop_events` is notified.
struct FakeDocker {
    path: String,
    state: Arc<Mutex<FakeState>>,
    drop_events: Arc<Notify>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl FakeDocker {
    fn start(mode: Mode, host_port: u16) -> FakeDocker {
        let dir = std::env::temp_dir().join(format!("rediscover-fake-{}", common::unique()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        let path = dir.join("docker.sock").to_string_lossy().into_owned();
        let listener = UnixListener::bind(&path).expect("bind the fake socket");
        let state = Arc::new(Mutex::new(FakeState { mode, host_port }));
        let drop_events = Arc::new(Notify::new());
        let (s, d) = (state.clone(), drop_events.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, s.clone(), d.clone()));
            }
        });
        FakeDocker { path, state, drop_events, _dir: TempDir(dir) }
    }

    fn set(&self, mode: Mode, host_port: u16) {
        *self.state.lock().expect("fake state lock") = FakeState { mode, host_port };
    }
}

async fn answer(mut stream: UnixStream, state: Arc<Mutex<FakeState>>, drop_events: Arc<Notify>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
    let (mode, port) = {
        let s = state.lock().expect("fake state lock");
        (s.mode, s.host_port)
    };
    let body = match mode {
        Mode::Hang => return std::future::pending().await,
        Mode::Fail => {
            return respond(&mut stream, "500 Internal Server Error", r#"{"message":"injected failure"}"#).await
        }
        Mode::NoEvents if line.contains("/events") => {
            return respond(&mut stream, "500 Internal Server Error", r#"{"message":"no events today"}"#).await
        }
        Mode::Serve | Mode::NoEvents if line.contains("/info") => {
            r#"{"Swarm":{"LocalNodeState":"inactive","ControlAvailable":false}}"#.to_string()
        }
        Mode::Serve | Mode::NoEvents if line.contains("/version") => {
            r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#.to_string()
        }
        Mode::Serve if line.contains("/events") => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            drop_events.notified().await;
            return;
        }
        Mode::Serve | Mode::NoEvents if line.contains("/containers/json") => format!(
            r#"[{{"Id":"{ID}","Names":["/fake-1"],"State":"running","Labels":{{}},"Ports":[{{"PrivatePort":6379,"PublicPort":{port},"Type":"tcp"}},{{"PrivatePort":16379,"PublicPort":{},"Type":"tcp"}}]}}]"#,
            port + 10000
        ),
        Mode::Serve | Mode::NoEvents
            if line.contains("/containers/fake-1/json") || line.contains(&format!("/containers/{ID}/json")) =>
        {
            format!(
                r#"{{"Id":"{ID}","Name":"/fake-1","State":{{"Running":true}},"Config":{{"Labels":{{}}}},"NetworkSettings":{{"Ports":{{"6379/tcp":[{{"HostIp":"0.0.0.0","HostPort":"{port}"}}],"16379/tcp":[{{"HostIp":"0.0.0.0","HostPort":"{}"}}]}}}}}}"#,
                port + 10000
            )
        }
        Mode::Serve | Mode::NoEvents => {
            return respond(&mut stream, "404 Not Found", r#"{"message":"No such container"}"#).await
        }
    };
    respond(&mut stream, "200 OK", &body).await;
}

async fn respond(stream: &mut UnixStream, status: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

fn config() -> Config {
    Config { docker_timeout: Duration::from_millis(300), ..Config::default() }
}

async fn ask(server: &TestServer, request: &[&[u8]]) -> String {
    server.connect().await.request(request).await
}

#[tokio::test]
async fn a_hanging_docker_gives_dockertimeout_and_ping_still_answers() {
    let fake = FakeDocker::start(Mode::Hang, 30001);
    let server = TestServer::with_docker_host(config(), &fake.path).await;
    let started = std::time::Instant::now();
    let reply = ask(&server, &[b"DISCOVER", b"fake-1"]).await;
    assert_eq!(reply, "-DOCKERTIMEOUT Docker did not answer within 300 ms\r\n");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(ask(&server, &[b"PING"]).await, "+PONG\r\n");
}

#[tokio::test]
async fn a_docker_500_gives_dockererr_with_its_words() {
    let fake = FakeDocker::start(Mode::Fail, 30001);
    let server = TestServer::with_docker_host(config(), &fake.path).await;
    let reply = ask(&server, &[b"DISCOVER", b"fake-1"]).await;
    assert!(reply.starts_with("-DOCKERERR ") && reply.contains("500") && reply.contains("injected failure"), "{reply}");
    let reply = ask(&server, &[b"MEMBERS"]).await;
    assert!(reply.starts_with("-DOCKERERR "), "{reply}");
}

#[tokio::test]
async fn a_dropped_event_stream_sends_lookups_to_docker_until_the_table_resyncs() {
    let fake = FakeDocker::start(Mode::Serve, 30001);
    let server = TestServer::with_docker_host(config(), &fake.path).await;
    let info = server.wait_info("table_fresh becomes 1", |i| info_number(i, "table_fresh") == 1).await;
    let calls = info_number(&info, "docker_calls");
    assert_eq!(ask(&server, &[b"DISCOVER", b"fake-1"]).await, "$21\r\n127.0.0.1:30001@40001\r\n");
    let info = ask(&server, &[b"INFO", b"docker"]).await;
    assert_eq!(info_number(&info, "docker_calls"), calls, "a warm DISCOVER makes no Docker call");
    // The stream drops and cannot be followed again; meanwhile the ports change.
    fake.set(Mode::NoEvents, 30005);
    fake.drop_events.notify_waiters();
    server.wait_info("table_fresh becomes 0", |i| info_number(i, "table_fresh") == 0).await;
    for _ in 0..10 {
        assert_eq!(ask(&server, &[b"DISCOVER", b"fake-1"]).await, "$21\r\n127.0.0.1:30005@40005\r\n");
    }
    let stale_calls = info_number(&ask(&server, &[b"INFO", b"docker"]).await, "docker_calls");
    assert!(stale_calls >= calls + 10, "a stale table sends lookups to Docker: {calls} -> {stale_calls}");
    // Docker's events come back: the table resyncs and answers alone again.
    fake.set(Mode::Serve, 30005);
    let info = server.wait_info("table_fresh becomes 1", |i| info_number(i, "table_fresh") == 1).await;
    assert!(info_number(&info, "table_resyncs") >= 2, "{info}");
    let calls = info_number(&info, "docker_calls");
    assert_eq!(ask(&server, &[b"DISCOVER", b"fake-1"]).await, "$21\r\n127.0.0.1:30005@40005\r\n");
    assert_eq!(info_number(&ask(&server, &[b"INFO", b"docker"]).await, "docker_calls"), calls);
}
