//! The `rediscover` command line: flags and environment to `Config`, logging, then the server.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use rediscover::config::{
    self, resolve_announce_ip, BUS_PORT_OFFSET, DEFAULT_COALESCE_NAP, DEFAULT_DATA_PORT, MAX_COALESCE_NAP, MAX_TIMEOUT,
};
use rediscover::docker::LabelFilter;
use rediscover::protocol::DecodeLimits;
use rediscover::tls::Tls;
use rediscover::{Config, DockerClient, Ports};
use tokio_util::sync::CancellationToken;

/// Tells each Redis Cluster node in Docker its announce address (ip:port@bus-port) over the Redis protocol.
///
/// Inside a container: redis-cli -e -h <gateway> -p 7379 DISCOVER $(hostname)
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "REDISCOVER_LISTEN", default_value_t = config::default_listen())]
    listen: SocketAddr,
    /// Address to announce [default: the IPv4 address of --interface; else, on a swarm node, the node's address
    /// (its label io.rediscover.announce-ip, else the address the swarm knows it by); else the IPv4 address of the
    /// default route's interface].
    #[arg(long, env = "REDISCOVER_ANNOUNCE_IP")]
    announce_ip: Option<IpAddr>,
    /// Host name handed out by DISCOVER ... HOSTNAME, for cluster-announce-hostname (Redis 7).
    #[arg(long, env = "REDISCOVER_ANNOUNCE_HOSTNAME", value_parser = config::valid_hostname)]
    announce_hostname: Option<String>,
    /// Announce the IPv4 address of this network interface.
    #[arg(long, env = "REDISCOVER_INTERFACE", conflicts_with = "announce_ip")]
    interface: Option<String>,
    /// Docker API endpoint: a unix socket path, unix:///path or tcp://host:port [default: DOCKER_HOST, else
    /// /var/run/docker.sock].
    #[arg(long, env = "REDISCOVER_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Seconds one Docker request may take.
    #[arg(long, env = "REDISCOVER_DOCKER_TIMEOUT", default_value = "5", value_parser = seconds, allow_negative_numbers = true)]
    docker_timeout: Duration,
    /// Seconds between reads of a swarm manager's tasks when no node or service event made them read; a task that
    /// fails and is rescheduled sends no event, so this bounds how long its old ports stay in the table.
    #[arg(long, env = "REDISCOVER_SWARM_READ_EVERY", default_value = "2", value_parser = seconds, allow_negative_numbers = true)]
    swarm_read_every: Duration,
    /// The container port Redis serves clients on.
    #[arg(long, env = "REDISCOVER_DATA_PORT", default_value_t = DEFAULT_DATA_PORT, allow_negative_numbers = true)]
    data_port: u16,
    /// The container port of the cluster bus [default: data port + 10000].
    #[arg(long, env = "REDISCOVER_BUS_PORT", allow_negative_numbers = true)]
    bus_port: Option<u16>,
    /// Only containers with this label (KEY or KEY=VALUE) can be discovered; others are answered as missing.
    #[arg(long, env = "REDISCOVER_REQUIRE_LABEL")]
    require_label: Option<LabelFilter>,
    /// Password clients must give with AUTH or HELLO ... AUTH (Redis: requirepass).
    #[arg(long, env = "REDISCOVER_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Serve TLS only, with this certificate chain (PEM) (Redis: tls-cert-file, with tls-port and port 0).
    #[arg(long, env = "REDISCOVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM) (Redis: tls-key-file).
    #[arg(long, env = "REDISCOVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Clients must present a certificate signed by a CA in this file (PEM) (Redis: tls-ca-cert-file with
    /// tls-auth-clients yes).
    #[arg(long, env = "REDISCOVER_TLS_CA_CERT", requires = "tls_cert")]
    tls_ca_cert: Option<std::path::PathBuf>,
    /// Most clients connected at once (Redis: maxclients).
    #[arg(long, env = "REDISCOVER_MAX_CLIENTS", default_value_t = 10_000, allow_negative_numbers = true)]
    max_clients: usize,
    /// Close clients idle for this many seconds; 0 never (Redis: timeout, at most 2147483647).
    #[arg(long, env = "REDISCOVER_TIMEOUT", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(..=MAX_TIMEOUT.as_secs()), allow_negative_numbers = true)]
    timeout: u64,
    /// Seconds a started request may take to arrive in full, and a client may leave replies unread.
    #[arg(long, env = "REDISCOVER_REQUEST_TIMEOUT", default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    request_timeout: Duration,
    /// Longest bulk string in a request, in bytes (Redis: proto-max-bulk-len).
    #[arg(long, env = "REDISCOVER_MAX_BULK_LEN", default_value_t = DecodeLimits::default().max_bulk_len, allow_negative_numbers = true)]
    max_bulk_len: usize,
    /// Most arguments in one request.
    #[arg(long, env = "REDISCOVER_MAX_ARGS", default_value_t = DecodeLimits::default().max_args, allow_negative_numbers = true)]
    max_args: usize,
    /// Longest inline request line, in bytes.
    #[arg(long, env = "REDISCOVER_MAX_INLINE_LEN", default_value_t = DecodeLimits::default().max_inline_len, allow_negative_numbers = true)]
    max_inline_len: usize,
    /// Largest request, in bytes (Redis: client-query-buffer-limit).
    #[arg(long, env = "REDISCOVER_MAX_REQUEST_LEN", default_value_t = DecodeLimits::default().max_request_len, allow_negative_numbers = true)]
    max_request_len: usize,
    /// Reply bytes held for one client before they must be written out (Redis: client-output-buffer-limit).
    #[arg(long, env = "REDISCOVER_MAX_OUTPUT", default_value_t = Config::default().max_output_bytes, allow_negative_numbers = true)]
    max_output: usize,
    /// Runtime threads serving clients; 1 is a single event loop, as Redis has, and fastest on small hosts.
    #[arg(long, env = "REDISCOVER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), allow_negative_numbers = true)]
    threads: u16,
    /// Microseconds the event loop naps for more input when many clients are busy and few were ready, instead of
    /// sleeping until one writes; 0 never. With --threads 1 only.
    #[arg(long, env = "REDISCOVER_COALESCE_US", default_value_t = DEFAULT_COALESCE_NAP.as_micros() as u64,
          value_parser = clap::value_parser!(u64).range(..=MAX_COALESCE_NAP.as_micros() as u64), allow_negative_numbers = true)]
    coalesce_us: u64,
    /// Log format.
    #[arg(long, env = "REDISCOVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Do not serve: send PING to the --listen address (127.0.0.1 when it is unspecified) and exit 0 on PONG. A
    /// healthcheck for images without redis-cli; with --tls-cert it speaks TLS and trusts exactly that
    /// certificate.
    #[arg(long)]
    ping: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.ping {
        return ping(&cli);
    }
    init_tracing(cli.log_format);
    // Without an address or interface given, the engine's own containers are announced at its swarm node address
    // while it is a swarm node; a host without a default route (a swarm worker on a private network) has no
    // other address, and answers for them once Docker has told that address.
    let chosen = cli.announce_ip.is_some() || cli.interface.is_some();
    let (announce_ip, node_ip_required) = match resolve_announce_ip(cli.announce_ip, cli.interface.as_deref()) {
        Ok(ip) => (ip, false),
        Err(config::AnnounceIpError::NoDefaultRoute) => {
            tracing::warn!("no default route: announcing the swarm node address Docker tells, when it tells one");
            (IpAddr::from([0, 0, 0, 0]), true)
        }
        Err(e) => return Err(e.into()),
    };
    let docker_host = cli
        .docker_host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::from_files(cert, key, cli.tls_ca_cert.as_deref())?),
        _ => None,
    };
    let config = Config {
        announce_ip,
        announce_hostname: cli.announce_hostname,
        tls,
        data_port: cli.data_port,
        bus_port: cli.bus_port.unwrap_or(cli.data_port.saturating_add(BUS_PORT_OFFSET)),
        require_label: cli.require_label,
        requirepass: cli.requirepass,
        docker_timeout: cli.docker_timeout,
        limits: DecodeLimits {
            max_bulk_len: cli.max_bulk_len,
            max_args: cli.max_args,
            max_inline_len: cli.max_inline_len,
            max_request_len: cli.max_request_len,
        },
        max_clients: cli.max_clients,
        idle_timeout: (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout)),
        request_timeout: cli.request_timeout,
        max_output_bytes: cli.max_output,
        swarm_read_every: cli.swarm_read_every,
        coalesce_nap: (cli.coalesce_us > 0).then(|| Duration::from_micros(cli.coalesce_us)),
        ..Config::default()
    };
    let runtime = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n.into()).enable_all().build()?,
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        let ports = Ports::new(
            DockerClient::new(docker_host, config.docker_timeout),
            config.require_label.clone(),
            config.swarm_read_every,
        );
        if !chosen {
            ports.announce_node_address(node_ip_required);
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let follower = tokio::spawn(rediscover::docker::follow(ports.clone(), shutdown.clone()));
        rediscover::run(listener, ports, config, shutdown).await?;
        let _ = follower.await;
        Ok(())
    })
}

/// `--ping`: one PING to the --listen address, over TLS with the server's own certificate when it serves TLS.
fn ping(cli: &Cli) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut addr = cli.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::from([127, 0, 0, 1]));
    }
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reply = [0u8; 7];
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        let config = rediscover::tls::self_check_client(cert, key, cli.tls_ca_cert.is_some())?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = tokio_rustls::rustls::ClientConnection::new(std::sync::Arc::new(config), name)
            .context("start a TLS session")?;
        let mut tls = tokio_rustls::rustls::StreamOwned::new(conn, stream);
        tls.write_all(b"PING\r\n").with_context(|| format!("TLS with {addr}"))?;
        tls.read_exact(&mut reply).with_context(|| format!("no reply from {addr}"))?;
    } else {
        stream.write_all(b"PING\r\n")?;
        stream.read_exact(&mut reply).with_context(|| format!("no reply from {addr}"))?;
    }
    anyhow::ensure!(&reply == b"+PONG\r\n", "{addr} answered {:?}", String::from_utf8_lossy(&reply));
    Ok(())
}

/// Reads a timeout flag in seconds when the flags are parsed, so a bad value stops the start with a message
/// naming the flag: more than 0 (a zero timeout would fail every request) and at most `MAX_TIMEOUT`, beyond
/// which a deadline would overflow the clock.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|_| "not a number of seconds".to_string())?;
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
        .ok_or_else(|| format!("must be more than 0 and at most {} seconds", MAX_TIMEOUT.as_secs()))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
