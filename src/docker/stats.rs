//! Counters of the port table and its Docker calls, for INFO docker.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Lookups answered from the table.
    pub hits: AtomicU64,
    /// Lookups that had to ask Docker.
    pub misses: AtomicU64,
    /// Requests sent to Docker (info, list, inspect; tasks, nodes and services on a swarm manager).
    pub docker_calls: AtomicU64,
    /// Times the swarm's tasks were read (three of the calls each).
    pub swarm_reads: AtomicU64,
    /// What made the last of those reads, as a [`ReadCause`] number (0 before the first).
    swarm_last_cause: AtomicU8,
    /// Node and service events of the swarm applied.
    pub swarm_events: AtomicU64,
    /// Times the table was rebuilt from a full list.
    pub resyncs: AtomicU64,
    /// Container events applied.
    pub events: AtomicU64,
}

/// What made a read of the swarm's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCause {
    /// A resync: the table was rebuilt from a full list.
    Resync = 1,
    /// The periodic read.
    Timer,
    /// A node or service event, or one of the reads that follow it.
    Event,
    /// A lookup the table could not answer.
    Miss,
}

impl ReadCause {
    /// Its name in INFO.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadCause::Resync => "resync",
            ReadCause::Timer => "timer",
            ReadCause::Event => "event",
            ReadCause::Miss => "miss",
        }
    }
}

impl PortStats {
    /// Counts a read of the swarm's tasks and what made it.
    pub fn swarm_read(&self, cause: ReadCause) {
        self.swarm_reads.fetch_add(1, Ordering::Relaxed);
        self.swarm_last_cause.store(cause as u8, Ordering::Relaxed);
    }

    /// What made the last read of the swarm's tasks, if there was one.
    pub fn swarm_last_cause(&self) -> Option<ReadCause> {
        [ReadCause::Resync, ReadCause::Timer, ReadCause::Event, ReadCause::Miss]
            .into_iter()
            .find(|c| *c as u8 == self.swarm_last_cause.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_swarm_read_names_its_cause() {
        let stats = PortStats::default();
        assert_eq!(stats.swarm_last_cause(), None, "no read yet");
        for cause in [ReadCause::Resync, ReadCause::Event, ReadCause::Miss, ReadCause::Timer] {
            stats.swarm_read(cause);
            assert_eq!(stats.swarm_last_cause(), Some(cause));
        }
        assert_eq!(stats.swarm_reads.load(Ordering::Relaxed), 4);
    }
}
