//! One client connection: read requests, run them in order, write replies in batches, enforce the limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::command::{Command, Outcome, Session, Shared, Wait};
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
        std::future::poll_fn(|cx| {
            // poll_read_ready, not readable(): it keeps the socket's single reader waker, where readable() joins a
            // locked waiter list on every wait.
            std::task::ready!(self.poll_read_ready(cx))?;
            if input.capacity() == 0 {
                *input = SPARE_INPUT.take().unwrap_or_default();
            }
            input.reserve(READ_CHUNK);
            // A read, not a try_read: a short read tells the socket it is drained, so the next wait costs no call.
            let read = std::pin::pin!(self.read_buf(&mut *input)).poll(cx);
            // Readiness can be stale (a new socket's is): the buffer is not kept while the wait goes on.
            if read.is_pending() && input.is_empty() {
                give_back(&SPARE_INPUT, input);
            }
            read
        })
        .await
    }
}

thread_local! {
    /// The buffers of the last connection on this thread to fall quiet, for the next one to wake: a client that
    /// sends one request at a time costs no allocation per request, and a quiet client still holds none.
    static SPARE_INPUT: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
    static SPARE_OUTPUT: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

/// Gives a quiet connection's buffer back to this thread's spare, or to the allocator if the spare is taken.
fn give_back(spare: &'static std::thread::LocalKey<std::cell::Cell<Option<BytesMut>>>, buffer: &mut BytesMut) {
    let buffer = std::mem::take(buffer);
    if buffer.capacity() > 0 && buffer.capacity() <= OUTPUT_KEEP_MAX {
        spare.with(|s| {
            let kept = s.take();
            s.set(Some(kept.unwrap_or(buffer)));
        });
    }
}

/// Serves one client until it leaves, misbehaves, or the server shuts down.
pub fn serve<S>(
    mut stream: S,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: ClientStream,
{
    // A block, not an async fn: an async fn's task keeps its arguments twice, as given and as its own locals.
    let mut session = Session::new(&shared, peer);
    async move {
        shared.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id = session.id, "connection opened");
        let reason = drive(&mut stream, &shared, &mut session, &shutdown).await;
        let _ = stream.shutdown().await;
        shared.stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(id = session.id, reason = ?reason, "connection closed");
    }
}

/// A block, as [`serve`], so its task keeps one copy of its arguments.
#[allow(clippy::manual_async_fn, reason = "an async fn's task keeps its arguments twice")]
fn drive<'a, S>(
    stream: &'a mut S,
    shared: &'a Shared,
    session: &'a mut Session,
    shutdown: &'a CancellationToken,
) -> impl Future<Output = Close> + Send + 'a
where
    S: ClientStream,
{
    async move {
        let config = &shared.config;
        let mut decoder = RequestDecoder::new(config.limits);
        decoder.set_unauthenticated(!session.authenticated);
        let mut input = BytesMut::new();
        let mut output = BytesMut::new();
        // When the request now being read began to arrive.
        let mut request_started: Option<tokio::time::Instant> = None;
        let mut last_activity = tokio::time::Instant::now();
        // Whether the last read left the socket empty: then there is nothing to take without waiting.
        let mut drained = true;
        // Made once and polled once: its first poll registers this task's waker with the token, which wakes the
        // task when it is cancelled; later waits only read the token's flag (a poll takes the token's lock).
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        let mut registered = false;
        loop {
            if !input.is_empty() {
                if output.capacity() == 0 {
                    output = SPARE_OUTPUT.take().unwrap_or_default();
                }
                let mut ran = false;
                loop {
                    // Synchronous but for the rare request that waits, so a batch keeps no state of its own in the task.
                    let step = std::future::poll_fn(|cx| {
                        run_ready(cx, shared, session, &mut decoder, &mut input, &mut output, &mut ran)
                    });
                    // The match only sorts; what waits is awaited after it, so the step itself is not kept while it
                    // waits.
                    {
                        let (waiting, closing) = match step.await {
                            Ran::Done => break,
                            Ran::Full => (None, None),
                            // Boxed, and only while it waits: the wait may hold a Docker call's state, kilobytes that an
                            // idle connection's task should not keep room for.
                            Ran::Wait(wait, command) => {
                                (Some((Box::pin(wait_for(wait, shared, shutdown, stream, &mut input)), command)), None)
                            }
                            Ran::Close(close) => (None, Some(close)),
                        };
                        if let Some(close) = closing {
                            drop(waiting);
                            let _ = write_out(stream, &mut output, shared).await;
                            return close;
                        }
                        if let Some((waiting, command)) = waiting {
                            let reply = match waiting.await {
                                Ok(reply) => reply,
                                Err(close) => return close,
                            };
                            shared.stats.record(command, reply.is_error());
                            reply.encode(session.protocol, &mut output);
                        }
                    }
                    if output.len() >= config.max_output_bytes {
                        if let Err(close) = write_out(stream, &mut output, shared).await {
                            return close;
                        }
                    }
                }
                if let Err(close) = write_out(stream, &mut output, shared).await {
                    return close;
                }
                if ran {
                    request_started = None;
                }
            }
            let mid_request = !input.is_empty() || decoder.is_mid_request();
            if mid_request {
                request_started.get_or_insert_with(tokio::time::Instant::now);
            } else {
                // Blank lines and empty arrays end without a request.
                request_started = None;
            }
            // Take what has already arrived without waiting; only when nothing has is the connection about to wait.
            // After a short read the socket is known to be empty, and the probe is skipped. Unconstrained: this probe
            // must not mistake a spent cooperative budget for an idle client.
            let probe = if drained {
                None
            } else {
                input.reserve(READ_CHUNK);
                tokio::task::unconstrained(stream.read_buf(&mut input)).now_or_never()
            };
            let read = match probe {
                Some(read) => read,
                None => {
                    if !mid_request {
                        // Idle: give the buffers back, so what an idle connection holds does not depend on what it
                        // sent before (Redis too frees the query buffer of an idle client).
                        give_back(&SPARE_INPUT, &mut input);
                        give_back(&SPARE_OUTPUT, &mut output);
                    }
                    // A deadline beyond what the clock can hold is no deadline.
                    let deadline = match request_started {
                        Some(started) => started.checked_add(config.request_timeout),
                        None => config.idle_timeout.and_then(|t| last_activity.checked_add(t)),
                    };
                    // Biased, the socket first: a client that keeps sending is served without polling the rest.
                    tokio::select! {
                        biased;
                        read = stream.read_when_ready(&mut input) => read,
                        _ = std::future::poll_fn(|cx| {
                            if shutdown.is_cancelled() {
                                Poll::Ready(())
                            } else if registered {
                                Poll::Pending
                            } else {
                                registered = true;
                                cancelled.as_mut().poll(cx)
                            }
                        }) => return Close::Shutdown,
                        _ = sleep_until(deadline) => {
                            shared.stats.timed_out_clients.fetch_add(1, Ordering::Relaxed);
                            if mid_request {
                                let ms = config.request_timeout.as_millis();
                                let error = Reply::error(format!("ERR request not completed within {ms} ms"));
                                error.encode(session.protocol, &mut output);
                                let _ = write_out(stream, &mut output, shared).await;
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
                    // A read that did not fill the buffer took everything the socket held.
                    drained = input.len() < input.capacity();
                    // The clock is read only when a deadline needs it.
                    if config.idle_timeout.is_some() {
                        last_activity = tokio::time::Instant::now();
                    }
                }
                Err(e) => return Close::Io(e),
            }
        }
    }
}

/// Where [`run_ready`] stopped.
enum Ran {
    /// No complete request is left.
    Done,
    /// The replies reached the output limit: write them before running more.
    Full,
    /// A command must wait, with its [`Command::index`].
    Wait(Wait, usize),
    /// The connection closes once the replies are written.
    Close(Close),
}

/// Runs the complete requests already read and encodes their replies, until none is left, one must wait, or the
/// replies fill the output limit. Each request takes one unit of tokio's cooperative budget: a client that
/// pipelines without pause yields the thread every so many requests, as Redis moves on after each client's
/// batch (Pending then, with the task woken to go on).
fn run_ready(
    cx: &mut Context<'_>,
    shared: &Shared,
    session: &mut Session,
    decoder: &mut RequestDecoder,
    input: &mut BytesMut,
    output: &mut BytesMut,
    ran: &mut bool,
) -> Poll<Ran> {
    while output.len() < shared.config.max_output_bytes {
        let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let args = match decoder.decode_borrowed(input) {
            Ok(Some(args)) => args,
            Ok(None) => return Poll::Ready(Ran::Done),
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id = session.id, error = %e, "protocol error");
                // As Redis does: say what was wrong, then close this connection only.
                Reply::error(format!("ERR Protocol error: {e}")).encode(session.protocol, output);
                return Poll::Ready(Ran::Close(Close::Protocol));
            }
        };
        budget.made_progress();
        *ran = true;
        let (reply, quit) = match execute(args, shared, session) {
            Step::Done(reply, quit) => (reply, quit),
            Step::Wait(wait, command) => return Poll::Ready(Ran::Wait(wait, command)),
        };
        decoder.set_unauthenticated(!session.authenticated);
        reply.encode(session.protocol, output);
        if quit {
            return Poll::Ready(Ran::Close(Close::Quit));
        }
    }
    Poll::Ready(Ran::Full)
}

/// What one request came to.
enum Step {
    /// Its reply, and whether the connection closes after it.
    Done(Reply, bool),
    /// A command that must wait, with its [`Command::index`].
    Wait(Wait, usize),
}

/// Checks auth and runs one request, counting it unless it must wait.
fn execute(args: &[Bytes], shared: &Shared, session: &mut Session) -> Step {
    let command = match Command::parse(args) {
        Ok(c) => c,
        Err(e) => return Step::Done(e.reply(), false),
    };
    let index = command.index();
    if !session.authenticated && !command.allowed_before_auth() {
        shared.stats.record(index, true);
        return Step::Done(Reply::error("NOAUTH Authentication required."), false);
    }
    let quit = matches!(command, Command::Quit);
    match command.run(shared, session) {
        Outcome::Reply(reply) => {
            shared.stats.record(index, reply.is_error());
            Step::Done(reply, quit)
        }
        Outcome::Wait(wait) => Step::Wait(wait, index),
    }
}

/// Waits for a command's reply. Only a blocking MEMBERS waits on anything but a bounded Docker call; the others
/// finish before shutdown completes, so only it listens for shutdown (which costs a waiter registration per
/// call) and watches the client's socket, so the wait ends when the server shuts down or the client leaves.
async fn wait_for<S: AsyncRead + Unpin>(
    wait: Wait,
    shared: &Shared,
    shutdown: &CancellationToken,
    stream: &mut S,
    input: &mut BytesMut,
) -> Result<Reply, Close> {
    if !wait.blocks() {
        return Ok(wait.finish(shared).await);
    }
    shared.stats.blocked_clients.fetch_add(1, Ordering::Relaxed);
    let limit = shared.config.limits.max_request_len;
    let reply = tokio::select! {
        _ = shutdown.cancelled() => Err(Close::Shutdown),
        left = watch_client(stream, input, limit) => Err(left),
        reply = wait.finish(shared) => Ok(reply),
    };
    shared.stats.blocked_clients.fetch_sub(1, Ordering::Relaxed);
    reply
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
        // Boxed: a slow reader is rare, and its timer should not widen every connection's task.
        Box::pin(write_rest(stream, &output[written..], shared)).await?;
    }
    if output.capacity() > OUTPUT_KEEP_MAX {
        *output = BytesMut::new();
    } else {
        output.clear();
    }
    Ok(())
}

async fn write_rest<S: AsyncWrite + Unpin>(stream: &mut S, rest: &[u8], shared: &Shared) -> Result<(), Close> {
    match tokio::time::timeout(shared.config.request_timeout, stream.write_all(rest)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Close::Io(e)),
        Err(_) => {
            shared.stats.output_limit_disconnections.fetch_add(1, Ordering::Relaxed);
            Err(Close::SlowReader)
        }
    }
}

/// Boxed when there is a deadline: by default a quiet client has none, and its task keeps no room for a timer.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
        None => std::future::pending().await,
    }
}
