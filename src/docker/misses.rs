//! Lookups the table cannot answer ask Docker for the list of containers, and lookups that miss at the same
//! time share one list call.
//!
//! A lookup only takes the answer of a call that started after it arrived: an older call may predate a restart
//! and show ports the container no longer has.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::client::DockerError;
use super::table::{Container, PortTable};

type Snapshot = Result<Arc<PortTable>, DockerError>;

/// Shares Docker list calls between concurrent misses.
#[derive(Debug, Default)]
pub struct Misses {
    /// How many list calls have started.
    started: AtomicU64,
    /// The last call's number and answer. An async lock: misses queue here while one call is out, then take its
    /// answer or start the next call.
    last: tokio::sync::Mutex<Option<(u64, Snapshot)>>,
}

impl Misses {
    /// The containers as a list call answers them, from a call that started after this lookup arrived; `list`
    /// makes the call when no such call has finished.
    pub async fn snapshot<F, Fut>(&self, list: F) -> Snapshot
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Container>, DockerError>>,
    {
        let arrived = self.started.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if let Some((call, answer)) = last.as_ref() {
            if *call > arrived {
                return answer.clone();
            }
        }
        let call = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let answer = list().await.map(|containers| Arc::new(PortTable::from_containers(containers)));
        *last = Some((call, answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_misses_share_a_call_that_started_after_they_arrived() {
        let misses = Arc::new(Misses::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let ask = |misses: Arc<Misses>, calls: Arc<AtomicUsize>, mut wait: tokio::sync::watch::Receiver<bool>| async move {
            misses
                .snapshot(|| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _ = wait.wait_for(|open| *open).await;
                    Ok(Vec::new())
                })
                .await
        };
        // The first call is out; five lookups arrive while it is: they share the one call after it.
        let first = tokio::spawn(ask(misses.clone(), calls.clone(), wait.clone()));
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..5).map(|_| tokio::spawn(ask(misses.clone(), calls.clone(), wait.clone()))).collect();
        tokio::task::yield_now().await;
        release.send_replace(true);
        first.await.expect("join").expect("a snapshot");
        for l in later {
            l.await.expect("join").expect("a snapshot");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one call, then one shared by the lookups that came during it");
    }
}
