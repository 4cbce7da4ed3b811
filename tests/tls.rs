//! TLS: redis-cli talks to rediscover over TLS, with and without client certificates; plain text on the TLS
//! port gets nothing, and the server goes on serving.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{node, run, run_ok, TestServer};
use rediscover::tls::Tls;
use rediscover::Config;

const ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const NODE_1: &str = "127.0.0.1:30001@40001";

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in a directory removed
/// when dropped.
struct Certs(PathBuf);

impl Certs {
    fn new() -> Certs {
        let dir = std::env::temp_dir().join(format!("rediscover-tls-{}", common::unique()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        let d = dir.to_string_lossy();
        let script = format!(
            "set -e; cd {d}
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rediscover-test-ca -keyout ca.key -out ca.crt
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext
            openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
              -out server.crt
            printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
            openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr
            openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext \
              -out client.crt"
        );
        let out = run("sh", &["-c", &script]);
        assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
        Certs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn tls(&self, client_ca: bool) -> Tls {
        let ca = self.path("ca.crt");
        Tls::from_files(&self.path("server.crt"), &self.path("server.key"), client_ca.then_some(ca.as_path()))
            .expect("the server certificate loads")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn server(tls: Tls) -> TestServer {
    let config = Config { tls: Some(tls), ..Config::default() };
    TestServer::in_memory(config, vec![node(ID, "node-1", true, vec![(6379, 30001), (16379, 40001)])]).await
}

/// redis-cli over TLS, trusting the test CA, with extra arguments.
async fn redis_cli_tls(server: &TestServer, ca: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--tls".to_string(), "--cacert".to_string(), ca.to_string_lossy().into_owned()];
    all.extend(["-h", "127.0.0.1", "-p"].map(String::from));
    all.push(server.addr.port().to_string());
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run("redis-cli", &refs)
    })
    .await
    .expect("join")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_discovers_over_tls_and_plain_text_gets_nothing() {
    let certs = tokio::task::spawn_blocking(Certs::new).await.expect("join");
    let s = server(certs.tls(false)).await;
    let ca = certs.path("ca.crt");
    let out = redis_cli_tls(&s, &ca, &["-e", "DISCOVER", "node-1"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), NODE_1);

    // Plain text on the TLS port: no reply, the connection closes, and TLS clients are still served.
    let mut plain = s.connect().await;
    plain.send(b"PING\r\n").await;
    let (got, closed) = plain.read_to_close().await;
    assert!(closed, "a plain-text client is disconnected");
    assert!(!String::from_utf8_lossy(&got).contains("PONG"), "plain text was answered: {got:?}");
    let plain_cli = run("redis-cli", &["-h", "127.0.0.1", "-p", &s.addr.port().to_string(), "-e", "PING"]);
    assert!(!plain_cli.status.success() || !stdout(&plain_cli).contains("PONG"), "{plain_cli:?}");

    let out = redis_cli_tls(&s, &ca, &["INFO", "stats"]).await;
    let failures = stdout(&out)
        .lines()
        .find_map(|l| l.trim().strip_prefix("tls_handshake_failures:")?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("INFO stats has tls_handshake_failures: {out:?}"));
    assert!(failures >= 2, "both plain-text clients failed the handshake: {failures}");
    // A client that trusts another CA refuses the server.
    let other = format!(
        "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other -keyout other.key \
         -out other.crt 2>/dev/null",
        certs.0.display()
    );
    run_ok("sh", &["-c", &other]);
    let out = redis_cli_tls(&s, &certs.path("other.crt"), &["-e", "PING"]).await;
    assert!(!stdout(&out).contains("PONG"), "a certificate from an unknown CA was accepted: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_makes_client_certificates_required() {
    let certs = tokio::task::spawn_blocking(Certs::new).await.expect("join");
    let s = server(certs.tls(true)).await;
    let ca = certs.path("ca.crt");
    let without = redis_cli_tls(&s, &ca, &["-e", "PING"]).await;
    assert!(!stdout(&without).contains("PONG"), "no client certificate, yet answered: {without:?}");
    let (cert, key) = (certs.path("client.crt"), certs.path("client.key"));
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let with = redis_cli_tls(&s, &ca, &["--cert", &cert, "--key", &key, "-e", "DISCOVER", "node-1"]).await;
    assert!(with.status.success(), "{with:?}");
    assert_eq!(stdout(&with), NODE_1);
}

/// `rediscover --ping` against `addr` with these extra flags; true when it exited 0.
fn ping(addr: std::net::SocketAddr, extra: &[&str]) -> bool {
    let listen = addr.to_string();
    let mut args = vec!["--ping", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    run(env!("CARGO_BIN_EXE_rediscover"), &args).status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_pings_over_tls_with_the_servers_own_certificate() {
    let certs = tokio::task::spawn_blocking(Certs::new).await.expect("join");
    let (cert, key, ca) = (certs.path("server.crt"), certs.path("server.key"), certs.path("ca.crt"));
    let (cert, key, ca) = (cert.to_string_lossy(), key.to_string_lossy(), ca.to_string_lossy());
    let tls_flags = ["--tls-cert", cert.as_ref(), "--tls-key", key.as_ref()];
    let mut flags = vec!["--docker-host", "/nonexistent/docker.sock"];
    flags.extend_from_slice(&tls_flags);
    let server = common::ServerProcess::start(&flags);
    assert!(ping(server.addr, &tls_flags), "--ping with the server's certificate");
    assert!(!ping(server.addr, &[]), "a plain-text --ping gets no PONG from a TLS port");
    let (other_cert, other_key) = (certs.path("client.crt"), certs.path("client.key"));
    let other = [
        "--tls-cert",
        other_cert.to_str().expect("a UTF-8 path"),
        "--tls-key",
        other_key.to_str().expect("a UTF-8 path"),
    ];
    assert!(!ping(server.addr, &other), "--ping trusts only the certificate it was given");

    let with_clients = common::ServerProcess::start(&[
        "--docker-host",
        "/nonexistent/docker.sock",
        "--tls-cert",
        cert.as_ref(),
        "--tls-key",
        key.as_ref(),
        "--tls-ca-cert",
        ca.as_ref(),
    ]);
    let mut with_ca = tls_flags.to_vec();
    with_ca.extend(["--tls-ca-cert", ca.as_ref()]);
    assert!(ping(with_clients.addr, &with_ca), "--ping presents the server's certificate when clients need one");
    assert!(!ping(with_clients.addr, &tls_flags), "without --tls-ca-cert it presents none and is refused");
}
