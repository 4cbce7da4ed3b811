//! One client connection: read requests, run them in order, write replies in batches, enforce the limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::command::{Command, Session, Shared};
use crate::protocol::{Reply, RequestDecoder};

/// Bytes asked of the socket per read (Redis: PROTO_IOBUF_LEN). The buffer lives only while the client is
/// active, so its size costs an idle client nothing.
const READ_CHUNK: usize = 16 * 1024;
/// The buffer a TLS client waits in while idle, and a blocked client's reads.
const READ_CHUNK_IDLE: usize = 512;
/// Reply buffers grown past this are given back after each write.
const OUTPUT_KEEP_MAX: usize = 64 * 1024;

/// Why a connection ended, for the log.
#[derive(Debug)]
#[allow(dead_code, reason = "the fields are read through Debug, in the close log")]
enum Close {
    Eof,
    Quit,
    Shutdown,
    Protocol,
    Idle,
    SlowRequest,
    SlowReader,
    Io(std::io::Error),
}

/// A client's stream, and how a connection waits on it for the next request.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Waits for input and reads it into `input`. This default waits in a read with a small buffer, which a quiet
    /// client holds while it is quiet.
    fn read_when_ready<'a>(
        &'a mut self,
        input: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        input.reserve(READ_CHUNK_IDLE);
        self.read_buf(input)
    }
}

/// TLS may hold decrypted bytes the socket no longer signals, so it waits in a read.
impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {}

/// An in-memory pipe (a connection served inside the process, as the session fuzz target does) waits in a read.
impl ClientStream for tokio::io::DuplexStream {}

/// A socket is waited on with no buffer at all; once it is readable, a whole chunk is read, so a pipelined batch
/// arrives in one call, as Redis reads it.
impl ClientStream for TcpStream {
    async fn read_when_ready(&mut self, input: &mut BytesMut) -> io::Result<usize> {
        // poll_read_ready, not readable(): it keeps the socket's single reader waker, where readable() joins a
        // locked waiter list on every wait.
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await?;
        input.reserve(READ_CHUNK);
        // A read, not a try_read: a short read tells the socket it is drained, so the next probe costs no call.
        self.read_buf(input).await
    }
}

/// Serves one client until it leaves, misbehaves, or the server shuts down.
pub async fn serve<S>(mut stream: S, shared: Arc<Shared>, peer: Option<SocketAddr>, shutdown: CancellationToken)
where
    S: ClientStream,
{
    shared.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(&shared, peer);
    tracing::debug!(id = session.id, "connection opened");
    let reason = drive(&mut stream, &shared, &mut session, &shutdown).await;
    let _ = stream.shutdown().await;
    shared.stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(id = session.id, reason = ?reason, "connection closed");
}

async fn drive<S>(stream: &mut S, shared: &Shared, session: &mut Session, shutdown: &CancellationToken) -> Close
where
    S: ClientStream,
{
    let config = &shared.config;
    let mut decoder = RequestDecoder::new(config.limits);
    decoder.set_unauthenticated(!session.authenticated);
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    // When the request now being read began to arrive.
    let mut request_started: Option<tokio::time::Instant> = None;
    let mut last_activity = tokio::time::Instant::now();
    // Made once: waiting on shutdown registers this connection with the token on the first wait, not on each.
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    loop {
        if !input.is_empty() {
            // Boxed, and only while there is work: a request may wait on Docker, whose call state is kilobytes,
            // and an idle connection's task should not keep room for it.
            let batch = run_batch(stream, shared, session, shutdown, &mut decoder, &mut input, &mut output);
            match Box::pin(batch).await {
                Ok(true) => request_started = None,
                Ok(false) => {}
                Err(close) => return close,
            }
        }
        let mid_request = !input.is_empty() || decoder.is_mid_request();
        if mid_request {
            request_started.get_or_insert_with(tokio::time::Instant::now);
        } else {
            // Blank lines and empty arrays end without a request.
            request_started = None;
        }
        input.reserve(READ_CHUNK);
        // Take what has already arrived without waiting; only when nothing has is the connection about to wait.
        // Unconstrained: this probe must not mistake a spent cooperative budget for an idle client.
        let read = match tokio::task::unconstrained(stream.read_buf(&mut input)).now_or_never() {
            Some(read) => read,
            None => {
                if !mid_request {
                    // Idle: give the buffers back, so what an idle connection holds does not depend on what it
                    // sent before (Redis too frees the query buffer of an idle client).
                    input = BytesMut::new();
                    output = BytesMut::new();
                }
                // A deadline beyond what the clock can hold is no deadline.
                let deadline = match request_started {
                    Some(started) => started.checked_add(config.request_timeout),
                    None => config.idle_timeout.and_then(|t| last_activity.checked_add(t)),
                };
                tokio::select! {
                    _ = &mut cancelled => return Close::Shutdown,
                    read = stream.read_when_ready(&mut input) => read,
                    _ = sleep_until(deadline) => {
                        shared.stats.timed_out_clients.fetch_add(1, Ordering::Relaxed);
                        if mid_request {
                            let ms = config.request_timeout.as_millis();
                            let error = Reply::error(format!("ERR request not completed within {ms} ms"));
                            error.encode(session.protocol, &mut output);
                            // Boxed, as this rare path's timer should not widen every connection's task.
                            let _ = Box::pin(write_out(stream, &mut output, shared)).await;
                            return Close::SlowRequest;
                        }
                        return Close::Idle;
                    }
                }
            }
        };
        match read {
            Ok(0) => return Close::Eof,
            Ok(_) => {
                // The clock is read only when a deadline needs it.
                if config.idle_timeout.is_some() {
                    last_activity = tokio::time::Instant::now();
                }
            }
            Err(e) => return Close::Io(e),
        }
    }
}

/// Runs every complete request already read, then writes the replies together; true if any request ran.
async fn run_batch<S>(
    stream: &mut S,
    shared: &Shared,
    session: &mut Session,
    shutdown: &CancellationToken,
    decoder: &mut RequestDecoder,
    input: &mut BytesMut,
    output: &mut BytesMut,
) -> Result<bool, Close>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ran = false;
    loop {
        let args = match decoder.decode(input) {
            Ok(Some(args)) => args,
            Ok(None) => break,
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id = session.id, error = %e, "protocol error");
                // As Redis does: say what was wrong, then close this connection only.
                Reply::error(format!("ERR Protocol error: {e}")).encode(session.protocol, output);
                let _ = write_out(stream, output, shared).await;
                return Err(Close::Protocol);
            }
        };
        ran = true;
        // One unit of tokio's cooperative budget per request: a client that pipelines without pause yields
        // the thread every so many requests, as Redis moves on after each client's batch.
        tokio::task::consume_budget().await;
        let (reply, quit) = execute(args, shared, session, shutdown, stream, input).await?;
        decoder.set_unauthenticated(!session.authenticated);
        reply.encode(session.protocol, output);
        if quit {
            let _ = write_out(stream, output, shared).await;
            return Err(Close::Quit);
        }
        if output.len() >= shared.config.max_output_bytes {
            write_out(stream, output, shared).await?;
        }
    }
    write_out(stream, output, shared).await?;
    Ok(ran)
}

/// Checks auth, runs one request, counts it; the flag says the connection is to close after the reply. While a
/// command blocks, the client's socket is watched, so the wait ends when the server shuts down or the client
/// leaves.
async fn execute<S: AsyncRead + Unpin>(
    args: Vec<Bytes>,
    shared: &Shared,
    session: &mut Session,
    shutdown: &CancellationToken,
    stream: &mut S,
    input: &mut BytesMut,
) -> Result<(Reply, bool), Close> {
    let command = match Command::parse(&args) {
        Ok(c) => c,
        Err(e) => return Ok((e.reply(), false)),
    };
    let index = command.index();
    if !session.authenticated && !command.allowed_before_auth() {
        shared.stats.record(index, true);
        return Ok((Reply::error("NOAUTH Authentication required."), false));
    }
    let quit = matches!(command, Command::Quit);
    // Only a blocking MEMBERS waits on anything but a bounded Docker call; the others finish before shutdown
    // completes, so only it listens for shutdown (which costs a waiter registration per call) and the client.
    let reply = if matches!(&command, Command::Members(m) if m.min > 0) {
        shared.stats.blocked_clients.fetch_add(1, Ordering::Relaxed);
        let limit = shared.config.limits.max_request_len;
        let reply = tokio::select! {
            _ = shutdown.cancelled() => Err(Close::Shutdown),
            left = watch_client(stream, input, limit) => Err(left),
            reply = command.apply(shared, session) => Ok(reply),
        };
        shared.stats.blocked_clients.fetch_sub(1, Ordering::Relaxed);
        reply?
    } else {
        command.apply(shared, session).await
    };
    shared.stats.record(index, reply.is_error());
    Ok((reply, quit))
}

/// Reads what a blocked client sends, so that its leaving is noticed, as Redis frees a blocked client whose
/// socket closes. What arrives is kept in `input` for after the reply, up to `limit` bytes; past that the socket
/// is no longer read until the wait ends. Returns only when the client left.
async fn watch_client<S: AsyncRead + Unpin>(stream: &mut S, input: &mut BytesMut, limit: usize) -> Close {
    while input.len() < limit {
        let room = limit - input.len();
        input.reserve(room.min(READ_CHUNK_IDLE));
        match (&mut *stream).take(room as u64).read_buf(input).await {
            Ok(0) => return Close::Eof,
            Ok(_) => {}
            Err(e) => return Close::Io(e),
        }
    }
    std::future::pending().await
}

/// Writes the pending replies; a client that leaves them unread past the request timeout is dropped.
async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, output: &mut BytesMut, shared: &Shared) -> Result<(), Close> {
    if output.is_empty() {
        return Ok(());
    }
    // Most replies fit the socket's buffer at once: try once before arming the timer, which reads the clock.
    // Unconstrained, as the read probe: a spent cooperative budget is not a slow reader.
    let written = match tokio::task::unconstrained(stream.write(output)).now_or_never() {
        Some(Ok(n)) => n,
        Some(Err(e)) => return Err(Close::Io(e)),
        None => 0,
    };
    if written < output.len() {
        let limit = shared.config.request_timeout;
        match tokio::time::timeout(limit, stream.write_all(&output[written..])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Close::Io(e)),
            Err(_) => {
                shared.stats.output_limit_disconnections.fetch_add(1, Ordering::Relaxed);
                return Err(Close::SlowReader);
            }
        }
    }
    if output.capacity() > OUTPUT_KEEP_MAX {
        *output = BytesMut::new();
    } else {
        output.clear();
    }
    Ok(())
}

/// Boxed when there is a deadline: by default a quiet client has none, and its task keeps no room for a timer.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
        None => std::future::pending().await,
    }
}
