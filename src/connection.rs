//! One client connection: read requests, run them in order, write replies in batches, enforce the limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::command::{Command, Outcome, Session, Shared, Tally, Wait};
use crate::protocol::{Args, Reply, RequestDecoder};

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
    /// Polls for input and reads it into `input`. This default waits in a read with a small buffer, which a quiet
    /// client holds while it is quiet.
    fn poll_read_when_ready(&mut self, cx: &mut Context<'_>, input: &mut BytesMut) -> Poll<io::Result<usize>> {
        input.reserve(READ_CHUNK_IDLE);
        std::pin::pin!(self.read_buf(input)).poll(cx)
    }
}

/// TLS may hold decrypted bytes the socket no longer signals, so it waits in a read.
impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {}

/// An in-memory pipe (a connection served inside the process, as the session fuzz target does) waits in a read.
impl ClientStream for tokio::io::DuplexStream {}

/// A socket is waited on with no buffer at all; once it is readable, a whole chunk is read, so a pipelined batch
/// arrives in one call, as Redis reads it.
impl ClientStream for TcpStream {
    fn poll_read_when_ready(&mut self, cx: &mut Context<'_>, input: &mut BytesMut) -> Poll<io::Result<usize>> {
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
    stream: S,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: ClientStream,
{
    // Built here, and the loop written in the task's own block: what a task is given it keeps for its whole life,
    // and each async fn between it and the wait would keep its own copies of what it is given. So the task holds
    // the connection's state once, in one struct, and besides it only the wait of the moment.
    let session = Session::new(&shared, peer);
    let mut decoder = RequestDecoder::new(shared.config.limits);
    decoder.set_unauthenticated(!session.authenticated);
    let mut conn = Connection {
        stream,
        shared,
        session,
        decoder,
        input: BytesMut::new(),
        output: BytesMut::new(),
        since: Instant::now(),
        timing_request: false,
        drained: true,
        registered: false,
        window: 0,
    };
    async move {
        conn.shared.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id = conn.session.id, "connection opened");
        // Made once and polled once: its first poll registers this task's waker with the token, which wakes the
        // task when it is cancelled; later waits only read the token's flag (a poll takes the token's lock).
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        let reason = loop {
            if !conn.input.is_empty() {
                if let Err(close) = conn.run_batch(&shutdown).await {
                    break close;
                }
            }
            let mid_request = conn.start_clock();
            match conn.next_input(&shutdown, cancelled.as_mut(), mid_request).await {
                Woke::Read(Ok(0)) => break Close::Eof,
                // A read that did not fill the buffer took everything the socket held.
                Woke::Read(Ok(_)) => {
                    conn.drained = conn.input.len() < conn.input.capacity();
                    crate::coalesce::note_read(&mut conn.window);
                }
                Woke::Read(Err(e)) => break Close::Io(e),
                Woke::Shutdown => break Close::Shutdown,
                Woke::Timeout => {
                    conn.shared.stats.timed_out_clients.fetch_add(1, Ordering::Relaxed);
                    if !mid_request {
                        break Close::Idle;
                    }
                    conn.encode_timeout_error();
                    let _ = conn.write_out().await;
                    break Close::SlowRequest;
                }
            }
        };
        let _ = conn.stream.shutdown().await;
        conn.shared.stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(id = conn.session.id, reason = ?reason, "connection closed");
    }
}

/// One client's state, from its first request to its last.
struct Connection<S> {
    stream: S,
    shared: Arc<Shared>,
    session: Session,
    decoder: RequestDecoder,
    /// What was read and not yet run; empty, and with no buffer, while the client is quiet.
    input: BytesMut,
    /// The replies not yet written; as `input`, no buffer while the client is quiet.
    output: BytesMut,
    /// When the request now being read began to arrive; between requests, when the client was last heard from
    /// (kept only when there is an idle timeout).
    since: Instant,
    /// Whether `since` is when a request began to arrive.
    timing_request: bool,
    /// Whether the last read left the socket empty: then there is nothing to take without waiting.
    drained: bool,
    /// Whether this task's waker is registered with the shutdown token.
    registered: bool,
    /// The last window of [`crate::coalesce`] in which this connection read.
    window: u32,
}

/// What ended a wait for input.
enum Woke {
    Read(io::Result<usize>),
    Shutdown,
    Timeout,
}

impl<S: ClientStream> Connection<S> {
    /// Runs the requests read so far and writes their replies.
    async fn run_batch(&mut self, shutdown: &CancellationToken) -> Result<(), Close> {
        if self.output.capacity() == 0 {
            self.output = SPARE_OUTPUT.take().unwrap_or_default();
        }
        let mut ran = false;
        loop {
            // Synchronous but for the rare request that waits, so a batch keeps no state of its own in the task.
            let this = &mut *self;
            let ran = &mut ran;
            let step = std::future::poll_fn(move |cx| {
                let Connection { shared, session, decoder, input, output, .. } = this;
                run_ready(cx, shared, session, decoder, input, output, ran)
            });
            // The rare step that waits is boxed with all it holds, and handed over whole: a binding of its parts
            // would keep room for them in the task while the box is awaited.
            match step.await {
                Ran::Done => break,
                Ran::Full => {}
                step => Box::pin(self.settle(step, shutdown)).await?,
            }
            if self.output.len() >= self.shared.config.max_output_bytes {
                self.write_out().await?;
            }
        }
        self.write_out().await?;
        if ran {
            self.timing_request = false;
        }
        Ok(())
    }

    /// Finishes a step that must wait: a command's reply, or the connection's end once the replies are written.
    async fn settle(&mut self, step: Ran, shutdown: &CancellationToken) -> Result<(), Close> {
        match step {
            Ran::Wait(wait, command) => {
                let Connection { stream, shared, input, .. } = self;
                let reply = wait_for(wait, shared, shutdown, stream, input).await?;
                self.shared.record(command, reply.is_error());
                reply.encode(self.session.protocol, &mut self.output);
                Ok(())
            }
            Ran::Close(close) => {
                let _ = self.write_out().await;
                Err(close)
            }
            // run_batch handles these itself.
            Ran::Done | Ran::Full => Ok(()),
        }
    }

    /// Starts or stops the clock of a request's or an idle client's deadline; returns whether a request has begun
    /// to arrive.
    fn start_clock(&mut self) -> bool {
        let mid_request = !self.input.is_empty() || self.decoder.is_mid_request();
        if mid_request {
            if !self.timing_request {
                self.timing_request = true;
                self.since = Instant::now();
            }
        } else {
            // Blank lines and empty arrays end without a request.
            self.timing_request = false;
            // The clock is read only when a deadline needs it.
            if self.shared.config.idle_timeout.is_some() {
                self.since = Instant::now();
            }
        }
        mid_request
    }

    /// Takes what has already arrived without waiting; only when nothing has does it wait, for input, the
    /// shutdown, or the deadline of a request begun or of an idle client.
    fn next_input<'a, 'b>(
        &'a mut self,
        shutdown: &'a CancellationToken,
        mut cancelled: Pin<&'a mut WaitForCancellationFuture<'b>>,
        mid_request: bool,
    ) -> impl Future<Output = Woke> + use<'a, 'b, S> {
        let this = self;
        let mut started = false;
        let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(move |cx| {
            if !started {
                started = true;
                if let Some(read) = this.probe() {
                    return Poll::Ready(Woke::Read(read));
                }
                if !mid_request {
                    // Idle: give the buffers back, so what an idle connection holds does not depend on what it
                    // sent before (Redis too frees the query buffer of an idle client).
                    give_back(&SPARE_INPUT, &mut this.input);
                    give_back(&SPARE_OUTPUT, &mut this.output);
                }
                // Boxed, and only when there is one: by default a quiet client has no deadline, and its task keeps
                // no room for a timer.
                deadline = this.deadline().map(|d| Box::pin(tokio::time::sleep_until(d)));
            }
            // The socket first: a client that keeps sending is served without polling the rest.
            if let Poll::Ready(read) = this.stream.poll_read_when_ready(cx, &mut this.input) {
                return Poll::Ready(Woke::Read(read));
            }
            if shutdown.is_cancelled() {
                return Poll::Ready(Woke::Shutdown);
            }
            if !this.registered {
                this.registered = true;
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Shutdown);
                }
            }
            match deadline.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Woke::Timeout),
                _ => Poll::Pending,
            }
        })
    }

    /// Reads what the socket already holds, unless the last read left it empty. Unconstrained: this probe must not
    /// mistake a spent cooperative budget for an idle client.
    fn probe(&mut self) -> Option<io::Result<usize>> {
        if self.drained {
            return None;
        }
        self.input.reserve(READ_CHUNK);
        tokio::task::unconstrained(self.stream.read_buf(&mut self.input)).now_or_never()
    }

    /// When the wait for input ends: the request timeout once a request has begun, else the idle timeout if set.
    /// A deadline beyond what the clock can hold is no deadline.
    fn deadline(&self) -> Option<Instant> {
        let config = &self.shared.config;
        let limit = if self.timing_request { Some(config.request_timeout) } else { config.idle_timeout };
        limit.and_then(|t| self.since.checked_add(t))
    }

    /// The reply to a request that took longer than the request timeout to arrive.
    fn encode_timeout_error(&mut self) {
        let ms = self.shared.config.request_timeout.as_millis();
        let error = Reply::error(format!("ERR request not completed within {ms} ms"));
        error.encode(self.session.protocol, &mut self.output);
    }

    /// Writes the pending replies; a client that leaves them unread past the request timeout is dropped.
    async fn write_out(&mut self) -> Result<(), Close> {
        if self.output.is_empty() {
            return Ok(());
        }
        // Most replies fit the socket's buffer at once: try once before arming the timer, which reads the clock.
        // Unconstrained, as the read probe: a spent cooperative budget is not a slow reader.
        let written = match tokio::task::unconstrained(self.stream.write(&self.output)).now_or_never() {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(Close::Io(e)),
            None => 0,
        };
        if written < self.output.len() {
            // Boxed: a slow reader is rare, and its timer should not widen every connection's task.
            Box::pin(write_rest(&mut self.stream, &self.output[written..], &self.shared)).await?;
        }
        if self.output.capacity() > OUTPUT_KEEP_MAX {
            self.output = BytesMut::new();
        } else {
            self.output.clear();
        }
        Ok(())
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
    let mut tally = shared.tally();
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
        let (reply, quit) = match execute(args, shared, session, &mut tally) {
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
fn execute(args: Args<'_>, shared: &Shared, session: &mut Session, tally: &mut Tally<'_>) -> Step {
    let command = match args.with_slice(Command::parse) {
        Ok(c) => c,
        Err(e) => return Step::Done(e.reply(), false),
    };
    let index = command.index();
    if !session.authenticated && !command.allowed_before_auth() {
        tally.count(index, true);
        return Step::Done(Reply::error("NOAUTH Authentication required."), false);
    }
    // INFO shows the calls before it, as Redis's does.
    if matches!(command, Command::Info(_)) {
        tally.flush();
    }
    let quit = matches!(command, Command::Quit);
    match command.run(shared, session, tally) {
        Outcome::Reply(reply) => {
            tally.count(index, reply.is_error());
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
