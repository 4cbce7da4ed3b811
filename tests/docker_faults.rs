//! Faults a real Docker engine cannot show on demand — a hang, a 500, a dropped event stream, a manager that
//! refuses its tasks — from a fake daemon on a unix socket, which can act as a swarm manager. Everything else is
//! tested against the real engine.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bulk, info_number, info_value, TestServer};
use rediscover::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, Notify};

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

/// How a swarm manager answers the list of tasks.
#[derive(Clone, Copy)]
enum Tasks {
    /// Answer like a manager.
    Serve,
    /// Answer as an engine that is no manager (any more) does.
    NotManager,
    /// Accept and never answer.
    Hang,
}

/// What Docker answers, with status 503, for the swarm's objects on an engine that does not manage a swarm.
const NOT_MANAGER: &str = concat!(
    r#"{"message":"This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to "#,
    r#"connect this node to swarm and try again."}"#
);

/// The swarm the fake manages, as a Docker 20.10 manager describes it: this engine is `node1` (it reports
/// itself at 0.0.0.0, its manager address says where it is), and service `rd_redis` runs one task, slot 1, on
/// `node2` at 198.18.0.11, publishing 6379 and 16379 in host mode.
#[derive(Clone, Copy)]
struct Swarm {
    tasks: Tasks,
    /// The host port task `rd_redis.1` publishes for 6379; 16379 gets this plus 10000.
    task_port: u16,
}

struct FakeState {
    mode: Mode,
    /// The host port published for 6379; 16379 gets this plus 10000.
    host_port: u16,
    /// Set while the engine manages a swarm.
    swarm: Option<Swarm>,
    /// Requests for the list of tasks.
    task_lists: u64,
    /// Event streams opened: containers', and the swarm's (type node and service).
    container_streams: u64,
    swarm_streams: u64,
}

/// The fake daemon's state and the handles that act on its open event streams.
struct Fake {
    state: Mutex<FakeState>,
    /// Ends every open container event stream.
    drop_container_events: Notify,
    /// Ends every open swarm event stream.
    drop_swarm_events: Notify,
    /// Events sent on every open swarm event stream; its receivers are those streams.
    swarm_events: broadcast::Sender<String>,
}

/// A fake Docker daemon; its event streams stay open until dropped through [`Fake`].
struct FakeDocker {
    path: String,
    fake: Arc<Fake>,
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
        let fake = Arc::new(Fake {
            state: Mutex::new(FakeState {
                mode,
                host_port,
                swarm: None,
                task_lists: 0,
                container_streams: 0,
                swarm_streams: 0,
            }),
            drop_container_events: Notify::new(),
            drop_swarm_events: Notify::new(),
            swarm_events: broadcast::channel(16).0,
        });
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, f.clone()));
            }
        });
        FakeDocker { path, fake, _dir: TempDir(dir) }
    }

    /// A fake that manages a swarm whose task `rd_redis.1` publishes `task_port`.
    fn manager(task_port: u16) -> FakeDocker {
        let fake = FakeDocker::start(Mode::Serve, 30001);
        fake.set_tasks(Tasks::Serve, task_port);
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.fake.state.lock().expect("fake state lock")
    }

    fn set(&self, mode: Mode, host_port: u16) {
        let mut s = self.state();
        s.mode = mode;
        s.host_port = host_port;
    }

    fn set_tasks(&self, tasks: Tasks, task_port: u16) {
        self.state().swarm = Some(Swarm { tasks, task_port });
    }

    /// How many swarm event streams are open now.
    fn swarm_streams_open(&self) -> usize {
        self.fake.swarm_events.receiver_count()
    }

    /// Sends a node event on every open swarm event stream.
    fn send_node_event(&self, node: &str) {
        let event = format!(
            r#"{{"Type":"node","Action":"update","Actor":{{"ID":"{node}","Attributes":{{"name":"{node}"}}}},"scope":"swarm","time":1700000000,"timeNano":1700000000000000000}}"#
        );
        self.fake.swarm_events.send(event).expect("a swarm event stream is open");
    }

    /// Polls the fake until `ready` holds (5 s at most, else the test fails saying `what`).
    async fn wait(&self, what: &str, ready: impl Fn(&FakeDocker) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !ready(self) {
            assert!(tokio::time::Instant::now() < deadline, "{what} within 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A request's path without the API version, and its `filters` parameter (Docker's JSON map of lists).
fn parse_target(target: &str) -> (String, HashMap<String, Vec<String>>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = match path.strip_prefix("/v").and_then(|p| p.find('/').map(|i| &p[i..])) {
        Some(unversioned) => unversioned,
        None => path,
    };
    let filters = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("filters="))
        .find_map(|v| serde_json::from_str(&percent_decode(v)).ok())
        .unwrap_or_default();
    (path.to_string(), filters)
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn answer(mut stream: UnixStream, fake: Arc<Fake>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
    let (path, filters) = parse_target(line.split(' ').nth(1).unwrap_or_default());
    let (mode, port, swarm) = {
        let mut s = fake.state.lock().expect("fake state lock");
        if path == "/tasks" {
            s.task_lists += 1;
        }
        (s.mode, s.host_port, s.swarm)
    };
    let body = match (mode, path.as_str()) {
        (Mode::Hang, _) => return std::future::pending().await,
        (Mode::Fail, _) => {
            return respond(&mut stream, "500 Internal Server Error", r#"{"message":"injected failure"}"#).await
        }
        (Mode::NoEvents, "/events") => {
            return respond(&mut stream, "500 Internal Server Error", r#"{"message":"no events today"}"#).await
        }
        (_, "/info") if swarm.is_some() => {
            r#"{"Swarm":{"NodeID":"node1","NodeAddr":"198.18.0.10","LocalNodeState":"active","ControlAvailable":true}}"#
                .to_string()
        }
        (_, "/info") => r#"{"Swarm":{"LocalNodeState":"inactive","ControlAvailable":false}}"#.to_string(),
        (_, "/version") => r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#.to_string(),
        (_, "/events") => {
            let swarm_stream = filters.get("type").is_some_and(|t| t.iter().any(|t| t == "node" || t == "service"));
            return follow_events(stream, &fake, swarm_stream).await;
        }
        (_, "/containers/json") => format!(
            r#"[{{"Id":"{ID}","Names":["/fake-1"],"State":"running","Labels":{{}},"Ports":[{{"PrivatePort":6379,"PublicPort":{port},"Type":"tcp"}},{{"PrivatePort":16379,"PublicPort":{},"Type":"tcp"}}]}}]"#,
            port + 10000
        ),
        (_, p) if p == "/containers/fake-1/json" || p == format!("/containers/{ID}/json") => format!(
            r#"{{"Id":"{ID}","Name":"/fake-1","State":{{"Running":true}},"Config":{{"Labels":{{}}}},"NetworkSettings":{{"Ports":{{"6379/tcp":[{{"HostIp":"0.0.0.0","HostPort":"{port}"}}],"16379/tcp":[{{"HostIp":"0.0.0.0","HostPort":"{}"}}]}}}}}}"#,
            port + 10000
        ),
        (_, "/nodes" | "/nodes/node1" | "/services" | "/tasks") => {
            let Some(swarm) = swarm else {
                return respond(&mut stream, "503 Service Unavailable", NOT_MANAGER).await;
            };
            match (path.as_str(), swarm.tasks) {
                ("/tasks", Tasks::NotManager) => {
                    return respond(&mut stream, "503 Service Unavailable", NOT_MANAGER).await
                }
                ("/tasks", Tasks::Hang) => return std::future::pending().await,
                ("/tasks", Tasks::Serve) => tasks_json(swarm.task_port),
                ("/nodes", _) => format!("[{NODE1},{NODE2}]"),
                ("/nodes/node1", _) => NODE1.to_string(),
                _ => r#"[{"ID":"svc1","Spec":{"Name":"rd_redis"}}]"#.to_string(),
            }
        }
        _ => return respond(&mut stream, "404 Not Found", r#"{"message":"No such container"}"#).await,
    };
    respond(&mut stream, "200 OK", &body).await;
}

/// The manager itself, which reports 0.0.0.0 and is found at its manager address.
const NODE1: &str = r#"{"ID":"node1","Status":{"State":"ready","Addr":"0.0.0.0"},"ManagerStatus":{"Leader":true,"Addr":"198.18.0.10:2377"}}"#;
/// A worker.
const NODE2: &str = r#"{"ID":"node2","Status":{"State":"ready","Addr":"198.18.0.11"}}"#;

/// The one task of `rd_redis`, running on node2, each port listed once for IPv4 and once for IPv6.
fn tasks_json(port: u16) -> String {
    let bus = port + 10000;
    format!(
        r#"[{{"ID":"kj5pxsvv3mxbbswwg44qohbpp","ServiceID":"svc1","Slot":1,"NodeID":"node2","DesiredState":"running",
            "Spec":{{"ContainerSpec":{{"Image":"x","Labels":{{}}}}}},
            "Status":{{"State":"running","ContainerStatus":{{"ContainerID":"7766575e3b52a13e3a45ce06da035938f98d0886d048471742618e6c41e48675"}},
              "PortStatus":{{"Ports":[
                {{"Protocol":"tcp","TargetPort":6379,"PublishedPort":{port},"PublishMode":"host"}},
                {{"Protocol":"tcp","TargetPort":6379,"PublishedPort":{port},"PublishMode":"host"}},
                {{"Protocol":"tcp","TargetPort":16379,"PublishedPort":{bus},"PublishMode":"host"}},
                {{"Protocol":"tcp","TargetPort":16379,"PublishedPort":{bus},"PublishMode":"host"}}]}}}}}}]"#
    )
}

/// An event stream: containers' (events never sent), or the swarm's, which sends what the test sends. It ends
/// when the test drops streams of its kind, or when the client goes away.
async fn follow_events(mut stream: UnixStream, fake: &Fake, swarm: bool) {
    let drop = if swarm { &fake.drop_swarm_events } else { &fake.drop_container_events };
    let dropped = drop.notified();
    tokio::pin!(dropped);
    dropped.as_mut().enable();
    // Only a swarm stream counts among the receivers, which are the swarm streams open.
    let mut events = swarm.then(|| fake.swarm_events.subscribe());
    {
        let mut s = fake.state.lock().expect("fake state lock");
        if swarm {
            s.swarm_streams += 1;
        } else {
            s.container_streams += 1;
        }
    }
    let (mut reader, mut writer) = stream.split();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if writer.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = &mut dropped => return,
            _ = reader.read(&mut buf) => return,
            event = async { events.as_mut()?.recv().await.ok() }, if swarm => {
                let Some(event) = event else { return };
                let chunk = format!("{:x}\r\n{event}\n\r\n", event.len() + 1);
                if writer.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
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

/// The fake swarm's task, by the `service.slot` name the table gives it.
const TASK: &[u8] = b"rd_redis.1";
/// The engine's own container, as the fake publishes it.
const LOCAL: &str = "127.0.0.1:30001@40001";

/// Polls DISCOVER `name` until it answers `want` (5 s at most, else the test fails).
async fn wait_discover(server: &TestServer, name: &[u8], want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut client = server.connect().await;
    loop {
        let reply = client.request(&[b"DISCOVER", name]).await;
        if reply == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "DISCOVER answers {want:?} within 5 s: {reply:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the table follows Docker and holds the swarm's task.
async fn wait_swarm_synced(server: &TestServer) -> String {
    wait_synced(server, 1, "the table syncs with the swarm").await
}

/// Waits until the table follows Docker and holds `tasks` swarm tasks.
async fn wait_synced(server: &TestServer, tasks: u64, what: &str) -> String {
    server.wait_info(what, |i| info_number(i, "table_fresh") == 1 && info_number(i, "swarm_tasks") == tasks).await
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
    fake.fake.drop_container_events.notify_waiters();
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

#[tokio::test]
async fn a_dropped_swarm_event_stream_resyncs_the_table_and_a_node_event_after_it_reads_the_tasks_again() {
    let fake = FakeDocker::manager(32771);
    // No periodic read: only a resync, a miss or an event reads the tasks.
    let config = Config { swarm_read_every: Duration::from_secs(600), ..config() };
    let server = TestServer::with_docker_host(config, &fake.path).await;
    let info = wait_swarm_synced(&server).await;
    fake.wait("the swarm's event stream opens", |f| f.swarm_streams_open() == 1).await;
    let resyncs = info_number(&info, "table_resyncs");
    assert_eq!(ask(&server, &[b"DISCOVER", TASK]).await, bulk("198.18.0.11:32771@42771"));
    // Lookups go on while the swarm's stream drops alone: the containers' stays open.
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = server.connect().await;
    let lookups = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(client.request(&[b"DISCOVER", TASK]).await, bulk("198.18.0.11:32771@42771"));
                assert_eq!(client.request(&[b"DISCOVER", b"fake-1"]).await, bulk(LOCAL));
                rounds += 1;
            }
            rounds
        }
    });
    fake.fake.drop_swarm_events.notify_waiters();
    // The follower starts again from a full list, following both streams anew.
    server
        .wait_info("the table resyncs", |i| {
            info_number(i, "table_resyncs") > resyncs && info_number(i, "table_fresh") == 1
        })
        .await;
    fake.wait("both streams are followed again", |f| {
        let s = f.state();
        f.swarm_streams_open() == 1 && s.swarm_streams == 2 && s.container_streams == 2
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    assert!(lookups.await.expect("every lookup answered right") > 0);
    let info = server.info_docker().await;
    assert_eq!(info_number(&info, "table_resyncs"), resyncs + 1, "one resync: {info}");
    // The swarm moves the task's ports, and a node event on the new stream makes the follower read them.
    fake.set_tasks(Tasks::Serve, 32781);
    fake.send_node_event("node2");
    wait_discover(&server, TASK, &bulk("198.18.0.11:32781@42781")).await;
    let info = server.info_docker().await;
    assert_eq!(info_number(&info, "swarm_events"), 1, "{info}");
    assert_eq!(info_value(&info, "swarm_last_read_cause").as_deref(), Some("event"), "{info}");
}

#[tokio::test]
async fn a_manager_refusing_its_tasks_still_answers_for_its_own_containers_until_the_tasks_come_back() {
    let (fake, server, _) = manager_that_refuses_its_tasks().await;
    // Over a few periodic reads, each refused: the engine's own container answers, the task is gone.
    for _ in 0..20 {
        assert_eq!(ask(&server, &[b"DISCOVER", b"fake-1"]).await, bulk(LOCAL));
        assert_eq!(ask(&server, &[b"DISCOVER", TASK]).await, "-NOCONTAINER no such container: 'rd_redis.1'\r\n");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // It manages the swarm again: the follower's next look brings the task back.
    fake.set_tasks(Tasks::Serve, 32771);
    wait_swarm_synced(&server).await;
    assert_eq!(ask(&server, &[b"DISCOVER", TASK]).await, bulk("198.18.0.11:32771@42771"));
}

#[tokio::test]
async fn a_manager_whose_tasks_come_back_at_a_periodic_read_counts_as_a_manager_again() {
    let (fake, server, info) = manager_that_refuses_its_tasks().await;
    // Just after a resync, so that the follower's next look is its periodic read.
    let resyncs = info_number(&info, "table_resyncs");
    let info = server
        .wait_info("the follower resyncs once more", |i| {
            info_number(i, "table_resyncs") > resyncs && info_number(i, "table_fresh") == 1
        })
        .await;
    fake.set_tasks(Tasks::Serve, 32771);
    let back = wait_swarm_synced(&server).await;
    assert_eq!(info_number(&back, "table_resyncs"), info_number(&info, "table_resyncs"), "{back}");
    assert_eq!(info_value(&back, "swarm_last_read_cause").as_deref(), Some("timer"), "{back}");
    server
        .wait_info("the engine counts as a manager again, so a lookup that misses sees the swarm", |i| {
            info_number(i, "swarm_manager") == 1
        })
        .await;
}

/// A server that synced with a swarm manager whose engine then refuses its tasks (a manager no more, though its
/// /info, read before, said it was), once the follower follows the engine's own containers alone; and its INFO.
async fn manager_that_refuses_its_tasks() -> (FakeDocker, TestServer, String) {
    let fake = FakeDocker::manager(32771);
    let config = Config { swarm_read_every: Duration::from_millis(200), ..config() };
    let server = TestServer::with_docker_host(config, &fake.path).await;
    wait_swarm_synced(&server).await;
    fake.set_tasks(Tasks::NotManager, 32771);
    let info = wait_synced(&server, 0, "the follower finds the tasks refused and keeps the local containers").await;
    (fake, server, info)
}

#[tokio::test]
async fn a_hanging_task_list_times_out_missing_lookups_that_share_it_while_the_table_and_ping_answer() {
    let fake = FakeDocker::manager(32771);
    // Not a whole second: the client's own limit, in whole seconds, would hide a call left without ours.
    let timeout = Duration::from_millis(600);
    let config = Config { docker_timeout: timeout, swarm_read_every: Duration::from_secs(600), ..config() };
    let server = TestServer::with_docker_host(config, &fake.path).await;
    wait_swarm_synced(&server).await;
    fake.set_tasks(Tasks::Hang, 32771);
    let timed_out = "-DOCKERTIMEOUT Docker did not answer within 600 ms\r\n";
    let started = std::time::Instant::now();
    assert_eq!(ask(&server, &[b"DISCOVER", b"rd_redis.2"]).await, timed_out);
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout + Duration::from_millis(250), "{took:?}");
    // Five lookups miss together: they share the hanging call while the table and PING answer at once.
    let lists = fake.state().task_lists;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.connect().await);
    }
    let lookups: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.request(&[b"DISCOVER", b"rd_redis.2"]).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(ask(&server, &[b"PING"]).await, "+PONG\r\n");
    assert_eq!(ask(&server, &[b"DISCOVER", TASK]).await, bulk("198.18.0.11:32771@42771"));
    assert!(lookups.iter().all(|l| !l.is_finished()), "the missing lookups still wait for Docker");
    for lookup in lookups {
        assert_eq!(lookup.await.expect("a lookup"), timed_out);
    }
    let calls = fake.state().task_lists - lists;
    assert!((1..=2).contains(&calls), "five missing lookups asked for the tasks {calls} times");
}
