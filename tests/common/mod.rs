//! Start-up helpers shared by the integration tests: an in-process server, real containers, real clients.
#![allow(dead_code, reason = "each test file uses a different part of these helpers")]

pub mod cluster;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rediscover::docker::{Container, Ports};
use rediscover::{Config, DockerClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The Docker socket of this machine.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// A tiny image built offline from Debian's busybox-static.
pub const TEST_IMAGE: &str = "rediscover-test/busybox:latest";
/// The label every test container carries, so they can be found and removed.
pub const TEST_LABEL: &str = "io.rediscover.test";

/// How a test process holds the host's engine: see [`hold_engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Engine {
    /// Its servers follow the engine as a plain engine, beside other such tests and compose clusters.
    Shared,
    /// It makes the engine a swarm manager (or uses the swarm it manages): no server of another test may follow
    /// the engine meanwhile, since a manager's table reads the swarm and moves the counters tests assert on.
    Alone,
}

/// Holds the host's engine as `how` says until this process exits, waiting for other test processes (`cargo
/// nextest` runs each test as one) that hold it in a way that conflicts; a process that already holds it alone
/// keeps that. An flock, so a killed test never leaves it held.
pub fn hold_engine(how: Engine) {
    static HELD: std::sync::Mutex<Option<(std::fs::File, Engine)>> = std::sync::Mutex::new(None);
    let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.as_ref().is_some_and(|(_, had)| *had >= how) {
        return;
    }
    let path = std::env::temp_dir().join("rediscover-tests-engine.lock");
    let file = match held.take() {
        Some((file, _)) => file,
        None => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display())),
    };
    // On the same open file, flock turns a shared lock into an exclusive one.
    let operation = match how {
        Engine::Shared => libc::LOCK_SH,
        Engine::Alone => libc::LOCK_EX,
    };
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), operation) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert!(e.kind() == std::io::ErrorKind::Interrupted, "cannot lock {}: {e}", path.display());
    }
    *held = Some((file, how));
}

/// A server running in this process; stopped when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The port table it answers from.
    pub ports: Arc<Ports>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server on 127.0.0.1:0 with this config, its port table following the real Docker engine, as
    /// `rediscover` runs.
    pub async fn with_docker(config: Config) -> TestServer {
        Self::with_docker_host(config, DOCKER_SOCKET).await
    }

    /// A server whose port table follows Docker at `host` (which need not exist yet).
    pub async fn with_docker_host(config: Config, host: &str) -> TestServer {
        if host == DOCKER_SOCKET {
            hold_engine(Engine::Shared);
        }
        let ports = Ports::new(
            DockerClient::new(host, config.docker_timeout),
            config.require_label.clone(),
            config.swarm_read_every,
        );
        Self::start(config, ports, true).await
    }

    /// A server on the real Docker engine whose table follows nothing: every lookup asks Docker, as a lookup
    /// does while the table is stale.
    pub async fn cold(config: Config) -> TestServer {
        hold_engine(Engine::Shared);
        let ports = Ports::new(
            DockerClient::new(DOCKER_SOCKET, config.docker_timeout),
            config.require_label.clone(),
            config.swarm_read_every,
        );
        Self::start(config, ports, false).await
    }

    /// A server whose table holds these containers, installed as a resync installs Docker's list. What the
    /// table cannot answer goes to the real engine, which shows only containers with the config's required
    /// label, or, without one, a label no container carries.
    pub async fn in_memory(config: Config, containers: Vec<Container>) -> TestServer {
        hold_engine(Engine::Shared);
        let label = config
            .require_label
            .clone()
            .unwrap_or_else(|| format!("{TEST_LABEL}.nobody={}", unique()).parse().expect("a label filter"));
        let ports =
            Ports::new(DockerClient::new(DOCKER_SOCKET, config.docker_timeout), Some(label), config.swarm_read_every);
        ports.install(containers);
        Self::start(config, ports, false).await
    }

    /// A server with default settings and an empty table.
    pub async fn plain() -> TestServer {
        Self::in_memory(Config::default(), Vec::new()).await
    }

    async fn start(config: Config, ports: Arc<Ports>, follow: bool) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shutdown = CancellationToken::new();
        if follow {
            tokio::spawn(rediscover::follow(ports.clone(), shutdown.clone()));
        }
        let task = tokio::spawn(rediscover::run(listener, ports.clone(), config, shutdown.clone()));
        TestServer { addr, ports, shutdown, task: Some(task) }
    }

    /// Stops accepting, lets in-flight replies go out, and waits for the server to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("the server task is taken only once");
        task.await.expect("the server task does not panic")
    }

    /// A raw TCP client.
    pub async fn connect(&self) -> RawClient {
        RawClient { stream: TcpStream::connect(self.addr).await.expect("connect to the test server") }
    }

    /// INFO docker, whole.
    pub async fn info_docker(&self) -> String {
        self.connect().await.request(&[b"INFO", b"docker"]).await
    }

    /// Polls INFO docker until `ready` holds (10 s at most, else the test fails saying `what`); returns it.
    pub async fn wait_info(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut client = self.connect().await;
        loop {
            let info = client.request(&[b"INFO", b"docker"]).await;
            if ready(&info) {
                return info;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what} within 10 s: {info}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the port table follows Docker's events.
    pub async fn wait_fresh(&self) -> String {
        self.wait_info("the port table syncs with Docker", |info| info_number(info, "table_fresh") == 1).await
    }

    /// Waits until the table applied at least `events` events and read again every container they changed.
    pub async fn wait_settled(&self, events: u64) -> String {
        self.wait_info(&format!("the table settles after {events} events"), |info| {
            info_number(info, "docker_events") >= events && info_number(info, "table_changed") == 0
        })
        .await
    }
}

/// One `name:value` field of an INFO reply.
pub fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// The Docker calls an INFO docker reply counts, less the periodic reads of a swarm (three calls each) that a
/// swarm manager makes whatever the test does.
pub fn own_docker_calls(info: &str) -> u64 {
    info_number(info, "docker_calls") - 3 * info_number(info, "swarm_reads")
}

/// One numeric field of an INFO reply; the test fails when it is missing.
pub fn info_number(info: &str, field: &str) -> u64 {
    info_value(info, field).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no number {field} in {info}"))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How long any read waits before it fails the test: a guard against a server that never answers, never the way
/// a read ends.
const READ_GUARD: Duration = Duration::from_secs(5);

/// A client that sends bytes as given and reads replies as raw bytes.
///
/// Reads take exactly the bytes they return from the socket and never read ahead, so a test may mix them with
/// direct use of `stream`.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
}

/// How a read ended early.
enum Cut {
    /// The server closed (or reset) the connection.
    Closed,
}

impl RawClient {
    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send to the test server");
    }

    /// Reads exactly `n` bytes; fewer only when the server closes first. Fails the test when they have not arrived
    /// within the guard time.
    pub async fn read_exact_len(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + READ_GUARD;
        let mut out = Vec::with_capacity(n);
        let _ = self.read_into(&mut out, n, deadline).await;
        out
    }

    /// Sends a request and reads the expected replies back, one whole reply at a time, failing as soon as one
    /// differs.
    pub async fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request).await;
        let deadline = tokio::time::Instant::now() + READ_GUARD;
        let mut got = Vec::with_capacity(expected.len());
        while got.len() < expected.len() && expected.starts_with(&got) {
            if self.read_frame(&mut got, deadline).await.is_err() {
                break;
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Reads one whole reply (RESP2 or RESP3); what arrived when the server closes first. Fails the test when no
    /// whole reply arrives within the guard time.
    pub async fn read_reply(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + READ_GUARD;
        let mut got = Vec::new();
        let _ = self.read_frame(&mut got, deadline).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Sends one request and reads its whole reply.
    pub async fn request(&mut self, args: &[&[u8]]) -> String {
        self.send(&resp(args)).await;
        self.read_reply().await
    }

    /// Reads everything until the server closes the connection; the flag is always true, as the test fails when
    /// the server has not closed within the guard time.
    pub async fn read_to_close(&mut self) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + READ_GUARD;
        let mut out = Vec::new();
        while self.read_into(&mut out, 4096, deadline).await.is_ok() {}
        (out, true)
    }

    /// Appends up to `n` more bytes to `out`, all of them unless the server closes first.
    async fn read_into(&mut self, out: &mut Vec<u8>, n: usize, deadline: tokio::time::Instant) -> Result<(), Cut> {
        let end = out.len() + n;
        while out.len() < end {
            let start = out.len();
            out.resize(end, 0);
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut out[start..])).await;
            let got = match read {
                Ok(Ok(k)) => k,
                Ok(Err(_)) => 0,
                Err(_) => panic!(
                    "nothing more from the server within {READ_GUARD:?}; so far {:?}",
                    String::from_utf8_lossy(&out[..start])
                ),
            };
            out.truncate(start + got);
            if got == 0 {
                return Err(Cut::Closed);
            }
        }
        Ok(())
    }

    /// Appends one line, up to and including its `\n`, reading it byte by byte so nothing after it is taken.
    async fn read_line(&mut self, out: &mut Vec<u8>, deadline: tokio::time::Instant) -> Result<usize, Cut> {
        let start = out.len();
        while out.last() != Some(&b'\n') || out.len() == start {
            self.read_into(out, 1, deadline).await?;
        }
        Ok(start)
    }

    /// Appends exactly one whole reply, following its type bytes and lengths.
    async fn read_frame(&mut self, out: &mut Vec<u8>, deadline: tokio::time::Instant) -> Result<(), Cut> {
        // Replies still to read: an aggregate adds its elements, an attribute adds the reply it annotates.
        let mut pending = 1i64;
        while pending > 0 {
            pending -= 1;
            let start = self.read_line(out, deadline).await?;
            let line = &out[start..];
            let number = || -> i64 {
                let text = String::from_utf8_lossy(&line[1..]).trim_end().to_string();
                text.parse().unwrap_or_else(|_| panic!("bad length line {:?}", String::from_utf8_lossy(line)))
            };
            match line[0] {
                b'$' | b'=' | b'!' => {
                    let len = number();
                    if len >= 0 {
                        self.read_into(out, len as usize + 2, deadline).await?;
                    }
                }
                b'*' | b'~' | b'>' => pending += number().max(0),
                b'%' => pending += 2 * number(),
                b'|' => pending += 2 * number() + 1,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The RESP bulk string of `text`, as a reply reads.
pub fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

/// The RESP array of bulk strings of `items`, as a reply reads.
pub fn array(items: &[String]) -> String {
    items.iter().fold(format!("*{}\r\n", items.len()), |out, item| out + &bulk(item))
}

/// Encodes arguments as a RESP array of bulk strings.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs a command, returning its output; panics with a one-line hint when it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}; see .ci/run"))
}

/// Runs a command that must succeed, returning its trimmed standard output.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The last `lines` lines a container logged (`None`: all of them), standard output and error merged by the time
/// Docker took each line in (lines of the two streams a few microseconds apart may swap), that time before each.
pub fn container_log(id: &str, lines: Option<usize>) -> String {
    docker_log(&["logs"], id, lines)
}

/// As [`container_log`], for `docker <command>` on `name`: `logs` of a container, `service logs` of a service.
pub fn docker_log(command: &[&str], name: &str, lines: Option<usize>) -> String {
    let tail = lines.map_or("all".to_string(), |n| n.to_string());
    let out = run("docker", &[command, &["--timestamps", "--tail", &tail, name]].concat());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut all: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    // Docker's timestamps have a fixed width, so their text sorts as their time; the sort is stable.
    all.sort_by_key(|l| l.split_once(' ').map_or(*l, |(time, _)| time));
    all.join("\n")
}

/// The label that marks an image under [`TEST_IMAGE`] as built by [`ensure_test_image`], and by which recipe.
const TEST_IMAGE_RECIPE: (&str, &str) = ("io.rediscover.test-image", "1");

/// Builds the test image from Debian's busybox-static unless this recipe built the one there: an image of that
/// name from anything else (an older recipe, a hand-made one without `sh`) is replaced.
pub fn ensure_test_image() {
    let (key, recipe) = TEST_IMAGE_RECIPE;
    let format = format!("{{{{index .Config.Labels \"{key}\"}}}}");
    let there = run("docker", &["image", "inspect", "-f", &format, TEST_IMAGE]);
    if there.status.success() && String::from_utf8_lossy(&there.stdout).trim() == recipe {
        return;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox is missing: apt-get install busybox-static (.ci/run does)");
    let dir = tempdir("image");
    std::fs::create_dir_all(format!("{dir}/bin")).expect("create the image tree");
    std::fs::copy(busybox, format!("{dir}/bin/busybox")).expect("copy busybox");
    let script = format!(
        "cd {dir}/bin && for a in sh sleep true; do ln -sf busybox $a; done && \
         tar -C {dir} -c . | docker import --change 'CMD [\"/bin/sh\"]' --change 'LABEL {key}={recipe}' - {TEST_IMAGE} \
         >/dev/null"
    );
    run_ok("sh", &["-c", &script]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("rediscover-{tag}-{}-{}", std::process::id(), unique()));
    dir.to_string_lossy().into_owned()
}

/// A container for an in-memory table, labelled `app=redis`, with (container port, host port) pairs.
pub fn node(id: &str, name: &str, running: bool, ports: Vec<(u16, u16)>) -> Container {
    Container {
        id: id.into(),
        name: name.into(),
        labels: std::collections::HashMap::from([("app".to_string(), "redis".to_string())]),
        running,
        ports,
        ip: None,
        aliases: Vec::new(),
        from_swarm: false,
    }
}

/// A label `key=value` that no other test uses: a test's containers carry it, and a server that requires it
/// sees only them, whatever else runs on the host.
pub fn test_label(what: &str) -> String {
    format!("{TEST_LABEL}.{what}={}", unique())
}

/// A server's settings for a test: it announces 127.0.0.1 and sees only containers with `label`.
pub fn labelled_config(label: &str) -> Config {
    Config {
        announce_ip: "127.0.0.1".parse().expect("an address"),
        require_label: Some(label.parse().expect("a label filter")),
        ..Config::default()
    }
}

/// A number no other call in this process returns.
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t.wrapping_add(n)
}

/// A real container on the local engine, removed when dropped.
pub struct TestContainer {
    /// Its full id.
    pub id: String,
    /// Its name.
    pub name: String,
}

impl TestContainer {
    /// Starts a container of the test image with extra `docker run` flags, sleeping until removed.
    pub fn start(extra: &[&str]) -> TestContainer {
        ensure_test_image();
        let name = format!("rediscover-test-{}", unique());
        let mut args = vec!["run", "-d", "--name", &name, "--label", TEST_LABEL];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[TEST_IMAGE, "sleep", "3600"]);
        let id = run_ok("docker", &args);
        TestContainer { id, name }
    }

    /// Creates a container of the test image without starting it.
    pub fn create(extra: &[&str]) -> TestContainer {
        ensure_test_image();
        let name = format!("rediscover-test-{}", unique());
        let mut args = vec!["create", "--name", &name, "--label", TEST_LABEL];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[TEST_IMAGE, "sleep", "3600"]);
        let id = run_ok("docker", &args);
        TestContainer { id, name }
    }

    /// Starts a container publishing 6379 and 16379 on ephemeral host ports.
    pub fn with_cluster_ports(extra: &[&str]) -> TestContainer {
        let mut args = vec!["-p", "6379", "-p", "16379"];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// The host port Docker published for a container port, as `docker port` says.
    pub fn host_port(&self, port: u16) -> u16 {
        docker_host_port(&self.id, port)
    }

    /// The announce string this container must get for `ip`.
    pub fn expected_announce(&self, ip: &str) -> String {
        docker_announce(&self.id, ip)
    }
}

/// The host port Docker published for a container's port, as `docker port` says.
pub fn docker_host_port(id: &str, port: u16) -> u16 {
    let said = docker_port(id, port);
    host_port_in(&said).unwrap_or_else(|| panic!("{id} has no host port for {port}/tcp: {said}"))
}

/// The host port Docker publishes for a container's port now, if any: none while the container is not running
/// (stopped, or restarting, which `docker ps` lists among the running).
pub fn published_port(id: &str, port: u16) -> Option<u16> {
    host_port_in(&docker_port(id, port))
}

/// What `docker port` says of a container's port, its error included.
fn docker_port(id: &str, port: u16) -> String {
    let out = run("docker", &["port", id, &format!("{port}/tcp")]);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The port of the first binding `docker port` lists (`0.0.0.0:32768`), if it lists one.
fn host_port_in(said: &str) -> Option<u16> {
    said.lines().next()?.rsplit(':').next()?.trim().parse().ok()
}

/// The announce string of a container for `ip` while Docker publishes both its ports.
pub fn published_announce(id: &str, ip: &str) -> Option<String> {
    Some(format!("{ip}:{}@{}", published_port(id, 6379)?, published_port(id, 16379)?))
}

/// The announce string a container must get for `ip`, from `docker port`: it publishes both ports.
pub fn docker_announce(id: &str, ip: &str) -> String {
    published_announce(id, ip).unwrap_or_else(|| {
        panic!("{id} does not publish both 6379 and 16379: {} / {}", docker_port(id, 6379), docker_port(id, 16379))
    })
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.id]).output();
    }
}

/// The real `rediscover` binary in a child process, killed by its PID when dropped.
pub struct ServerProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    child: std::process::Child,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary on a free loopback port with these extra flags, at the default log level, as users
    /// run it; waits until it serves.
    pub fn start(extra: &[&str]) -> ServerProcess {
        Self::start_logging(extra, None)
    }

    /// Starts the binary with `RUST_LOG` set to `filter` (unset for `None`).
    pub fn start_logging(extra: &[&str], filter: Option<&str>) -> ServerProcess {
        use std::io::BufRead;
        hold_engine(Engine::Shared);
        let mut command = Command::new(env!("CARGO_BIN_EXE_rediscover"));
        command.args(["--listen", "127.0.0.1:0", "--announce-ip", "127.0.0.1"]).args(extra);
        match filter {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.stderr(std::process::Stdio::piped()).spawn().expect("start the rediscover binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().and_then(Result::ok).unwrap_or_else(|| panic!("rediscover exited before serving"));
            if let Some(rest) = line.split("listen=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse().unwrap_or_else(|_| panic!("bad listen address in {line:?}"));
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        ServerProcess { addr, child, log }
    }

    /// The lines it logged after the one that said where it listens.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// A raw TCP client.
    pub async fn connect(&self) -> RawClient {
        RawClient { stream: TcpStream::connect(self.addr).await.expect("connect to the server process") }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        run_ok("kill", &["-TERM", &self.pid().to_string()]);
        self.child.wait().expect("wait for the server process")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
