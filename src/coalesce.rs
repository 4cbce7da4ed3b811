//! Input coalescing: under many busy clients, the event loop naps a few microseconds for more input instead of
//! sleeping until a client's write wakes it.
//!
//! A server faster than its clients runs out of input often and sleeps in `epoll_wait`; the next client's write
//! must then wake it, which costs that client several microseconds in the kernel (an inter-processor interrupt,
//! on a virtual machine a trip through the hypervisor), and a client that runs a whole core, as a benchmark or a
//! busy proxy does, loses that time from its own work. A nap ends on the server's own timer: nobody has to wake
//! it, and it finds several clients ready at once, where a wakeup found one or two. The nap is taken only when
//! it pays: when many clients are active and each round found few of them ready, so their requests are queued
//! on the client side; when a nap finds nearly every active client ready, they were waiting on the server, and
//! naps stop for a while.
//!
//! One task on a single-threaded runtime does it, by yielding to the event loop after a round that a nap may
//! follow (tokio then polls for events without waiting) and counting what the connections read meanwhile. It naps
//! on the runtime's thread on purpose: a nap is the event loop's own wait, taken when it has nothing ready to run,
//! bounded to a few short naps in a row, after which the loop sleeps as it would have. A nap lasts longer than it
//! asks: the kernel adds its timer slack (50 us by default) and the wakeup.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::command::Shared;

/// At least this many connections must have read within the last window for a nap.
const MIN_ACTIVE: u64 = 4;
/// Naps in a row that find nothing before the event loop sleeps.
const NAPS_IN_A_ROW: u32 = 3;
/// After a nap that found most active clients waiting, the event loop waits this many times before naps resume;
/// each further such nap in a row doubles the pause, up to [`PAUSE_MAX`].
const PAUSE_AFTER_MISS: u32 = 64;
/// The longest pause: clients that keep the server busy between them still get naps back within this many waits.
const PAUSE_MAX: u32 = 1024;
/// How long a connection counts as active after it read.
const ACTIVE_WINDOW: Duration = Duration::from_millis(1);

thread_local! {
    /// Reads that brought input, on this thread.
    static READS: Cell<u64> = const { Cell::new(0) };
    /// Connections that read in the current window, and the window's number.
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
    static WINDOW: Cell<u32> = const { Cell::new(1) };
    /// The coalescing task while it waits for a connection to read.
    static IDLE: Cell<Option<Waker>> = const { Cell::new(None) };
    /// Whether a coalescing task runs on this thread (two servers may share a runtime).
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// Notes that a connection read input; `window` is the connection's own note of the last window it read in (0
/// before its first read).
pub fn note_read(window: &mut u32) {
    READS.set(READS.get().wrapping_add(1));
    let current = WINDOW.get();
    if *window != current {
        *window = current;
        ACTIVE.set(ACTIVE.get().saturating_add(1));
    }
    if let Some(task) = IDLE.take() {
        task.wake();
    }
}

/// What the event loop does next, when it has run everything that was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Input arrived, and a nap may follow: poll for events again.
    Poll,
    /// Nothing arrived: nap, then poll again.
    Nap,
    /// Nothing arrived, or no nap would pay: wait until a client writes.
    Sleep,
}

/// When to nap, from what each round of the event loop read; the clock and the thread are the task's.
#[derive(Debug, Default)]
pub struct Policy {
    /// Connections read by the last round that read any.
    last_reads: u64,
    /// Whether the round now being counted began with a nap.
    after_nap: bool,
    /// Naps in a row that found nothing.
    naps: u32,
    /// Waits still to come before naps resume.
    paused: u32,
    /// The pause that the next nap finding most clients waiting brings (0: [`PAUSE_AFTER_MISS`]).
    next_pause: u32,
}

impl Policy {
    /// A round of the event loop read from `reads` connections, with `active` connections active in the last
    /// window: what comes next.
    pub fn next(&mut self, reads: u64, active: u64) -> Next {
        if reads > 0 {
            // A nap that found most clients ready kept them waiting on the server. Where every nap does (a few
            // clients that the server keeps up with), the pauses grow until naps are rare.
            if self.after_nap {
                if 2 * reads > active {
                    self.paused = self.next_pause.max(PAUSE_AFTER_MISS);
                    self.next_pause = (2 * self.paused).min(PAUSE_MAX);
                } else {
                    self.next_pause = PAUSE_AFTER_MISS;
                }
            }
            self.last_reads = reads;
            self.after_nap = false;
            self.naps = 0;
            // Polling once more pays only when a poll that finds nothing would be followed by a nap; otherwise
            // the loop waits as it would without naps (a wait that finds input ready returns at once), rather
            // than make a call that may find nothing before it.
            return if self.may_nap(active) { Next::Poll } else { self.sleep() };
        }
        if self.naps < NAPS_IN_A_ROW && self.may_nap(active) {
            self.naps += 1;
            self.after_nap = true;
            return Next::Nap;
        }
        self.sleep()
    }

    /// Whether running out of input now would be met with a nap: naps are not paused, and the last round that
    /// read found few of the active clients ready, so the others' requests are queued on their side.
    fn may_nap(&self, active: u64) -> bool {
        self.paused == 0 && active >= MIN_ACTIVE && 2 * self.last_reads <= active
    }

    fn sleep(&mut self) -> Next {
        self.paused = self.paused.saturating_sub(1);
        // The next round starts from a wait: what it finds says nothing of a nap.
        self.last_reads = 0;
        self.after_nap = false;
        self.naps = 0;
        Next::Sleep
    }
}

/// Coalesces input on this thread's event loop, with naps of `nap` counted in `shared`'s statistics, until
/// dropped. For a single-threaded runtime only: it counts the reads of the connections on its own thread, and
/// returns at once when another such task runs there.
pub async fn run(nap: Duration, shared: Arc<Shared>) {
    if RUNNING.replace(true) {
        return;
    }
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.set(false);
            IDLE.take();
        }
    }
    let _running = Running;
    let mut policy = Policy::default();
    let mut windows = Windows::new(Instant::now());
    let mut seen = READS.get();
    loop {
        idle().await;
        // From the round whose read woke this task on, each round's reads decide what comes next.
        loop {
            let now_read = READS.get();
            let reads = now_read.wrapping_sub(seen);
            seen = now_read;
            let active = windows.active(Instant::now());
            match policy.next(reads, active) {
                Next::Poll => {}
                Next::Nap => {
                    std::thread::sleep(nap);
                    shared.stats.coalescing_naps.fetch_add(1, Ordering::Relaxed);
                }
                Next::Sleep => break,
            }
            // Tokio polls for events without waiting before it runs this task again.
            tokio::task::yield_now().await;
        }
    }
}

/// The connections that read within the last window, from what [`note_read`] counts on this thread.
#[derive(Debug)]
struct Windows {
    /// When the current window began.
    start: Instant,
    /// The connections that read in the window before it.
    before: u64,
}

impl Windows {
    fn new(now: Instant) -> Windows {
        Windows { start: now, before: 0 }
    }

    /// The connections active in the current window or the one before, as of `now`.
    fn active(&mut self, now: Instant) -> u64 {
        let since = now.duration_since(self.start);
        if since >= ACTIVE_WINDOW {
            let counted: u64 = ACTIVE.replace(0).into();
            // After a quiet spell, what the window counted is old.
            self.before = if since < 2 * ACTIVE_WINDOW { counted } else { 0 };
            WINDOW.set(WINDOW.get().wrapping_add(1).max(1));
            self.start = now;
        }
        self.before.max(ACTIVE.get().into())
    }
}

/// Waits until a connection reads.
async fn idle() {
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if registered {
            return Poll::Ready(());
        }
        registered = true;
        IDLE.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_as_active_for_one_to_two_windows() {
        let start = Instant::now();
        let mut windows = Windows::new(start);
        let mut connections = [0u32; 9];
        for window in &mut connections[..8] {
            note_read(window);
            note_read(window);
        }
        assert_eq!(windows.active(start), 8, "each connection once, however often it read");
        let next = start + ACTIVE_WINDOW + ACTIVE_WINDOW / 2;
        assert_eq!(windows.active(next), 8, "the window before counts");
        note_read(&mut connections[8]);
        note_read(&mut connections[0]);
        assert_eq!(windows.active(next), 8, "the window before, while the new one counts fewer");
        assert_eq!(windows.active(next + ACTIVE_WINDOW), 2, "two windows on, only the last one counts");
        note_read(&mut connections[1]);
        assert_eq!(windows.active(next + 10 * ACTIVE_WINDOW), 0, "after a quiet spell, what was counted is old");
    }

    #[test]
    fn naps_when_few_of_many_active_clients_were_ready() {
        let mut policy = Policy::default();
        assert_eq!(policy.next(5, 50), Next::Poll);
        assert_eq!(policy.next(3, 50), Next::Poll);
        // Naps that find nothing, up to the limit, then the loop waits.
        for _ in 0..NAPS_IN_A_ROW {
            assert_eq!(policy.next(0, 50), Next::Nap);
        }
        assert_eq!(policy.next(0, 50), Next::Sleep);
    }

    #[test]
    fn a_nap_that_finds_input_is_followed_by_more() {
        let mut policy = Policy::default();
        for reads in [4, 6, 2, 7] {
            assert_eq!(policy.next(reads, 50), Next::Poll);
            assert_eq!(policy.next(0, 50), Next::Nap);
        }
    }

    #[test]
    fn waits_at_once_when_few_clients_are_active() {
        let mut policy = Policy::default();
        for active in 0..MIN_ACTIVE {
            assert_eq!(policy.next(1, active), Next::Sleep, "{active} active");
        }
    }

    #[test]
    fn waits_when_most_active_clients_were_ready() {
        let mut policy = Policy::default();
        // No nap could follow, so the loop waits rather than poll once more.
        assert_eq!(policy.next(5, 8), Next::Sleep);
        assert_eq!(policy.next(8, 8), Next::Sleep);
        assert_eq!(policy.next(4, 8), Next::Poll);
        assert_eq!(policy.next(0, 8), Next::Nap, "half of them is still few");
    }

    #[test]
    fn a_nap_that_finds_most_clients_waiting_stops_the_naps_for_a_while() {
        let mut policy = Policy::default();
        assert_eq!(policy.next(2, 8), Next::Poll);
        assert_eq!(policy.next(0, 8), Next::Nap);
        // The nap found 7 of the 8 ready: they were waiting on the server.
        assert_eq!(policy.next(7, 8), Next::Sleep);
        for n in 1..PAUSE_AFTER_MISS {
            assert_eq!(policy.next(1, 8), Next::Sleep, "round #{n} after the miss");
        }
        assert_eq!(policy.next(1, 8), Next::Poll);
        assert_eq!(policy.next(0, 8), Next::Nap);
    }

    #[test]
    fn naps_that_keep_finding_most_clients_waiting_pause_longer_each_time() {
        // A nap finds 7 of 8 clients ready: the waits until naps resume, and the nap that resumes them.
        fn miss(policy: &mut Policy) -> u32 {
            assert_eq!(policy.next(7, 8), Next::Sleep);
            let mut waits = 1;
            while policy.next(1, 8) == Next::Sleep {
                waits += 1;
                assert!(waits <= PAUSE_MAX, "naps never resumed");
            }
            assert_eq!(policy.next(0, 8), Next::Nap, "naps resume after the pause");
            waits
        }
        let mut policy = Policy::default();
        assert_eq!(policy.next(1, 8), Next::Poll);
        assert_eq!(policy.next(0, 8), Next::Nap);
        let pauses: Vec<u32> = (0..6).map(|_| miss(&mut policy)).collect();
        assert_eq!(pauses, [64, 128, 256, 512, 1024, 1024]);
        // A nap that found few clients ready paid: the next miss pauses for the shortest time again.
        assert_eq!(policy.next(2, 8), Next::Poll);
        assert_eq!(policy.next(0, 8), Next::Nap);
        assert_eq!(miss(&mut policy), PAUSE_AFTER_MISS);
    }

    #[test]
    fn a_wait_forgets_the_rounds_before_it() {
        let mut policy = Policy::default();
        assert_eq!(policy.next(1, 50), Next::Poll);
        for _ in 0..NAPS_IN_A_ROW {
            assert_eq!(policy.next(0, 50), Next::Nap);
        }
        assert_eq!(policy.next(0, 50), Next::Sleep);
        // Woken by a client after the wait, a round that finds them all ready is no nap's doing: no pause.
        assert_eq!(policy.next(50, 50), Next::Sleep);
        assert_eq!(policy.next(1, 50), Next::Poll, "no pause");
        assert_eq!(policy.next(0, 50), Next::Nap);
    }
}
