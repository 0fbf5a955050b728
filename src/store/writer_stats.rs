//! The writer's recent commits, readable back without locks: the console's overview shows batch
//! sizes and commit latency, and the Prometheus handle only renders text.
//!
//! The writer thread records each commit into a ring of the last [`RECENT_COMMITS`] slots, each
//! one `AtomicU64` packing the commit's latency (microseconds, high half) and its batch size
//! (low half), so a reader never waits for the writer and never sees half a slot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many recent commits the statistics describe.
pub const RECENT_COMMITS: usize = 256;

/// The ring the writer fills and readers summarise.
#[derive(Debug)]
pub struct WriterStats {
    commits: AtomicU64,
    slots: [AtomicU64; RECENT_COMMITS],
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            commits: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A summary of the recent commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterSnapshot {
    /// Commits since the daemon started.
    pub commits_total: u64,
    /// Commits summarised (at most [`RECENT_COMMITS`]).
    pub recent: u64,
    /// Mean commands per batch over the recent commits, rounded down.
    pub mean_batch_size: u64,
    /// Largest batch among the recent commits.
    pub max_batch_size: u64,
    /// Median commit latency, microseconds.
    pub commit_p50_us: u64,
    /// 99th percentile commit latency, microseconds.
    pub commit_p99_us: u64,
}

impl WriterStats {
    /// Records one commit (called by the writer thread only).
    pub fn record(&self, batch_size: usize, latency: Duration) {
        let latency_us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .min(u64::from(u32::MAX));
        let size = u64::try_from(batch_size)
            .unwrap_or(u64::MAX)
            .min(u64::from(u32::MAX));
        let n = self.commits.load(Ordering::Relaxed);
        let index = usize::try_from(n % RECENT_COMMITS as u64).unwrap_or(0);
        self.slots[index].store((latency_us << 32) | size, Ordering::Relaxed);
        // Publishes the slot: a reader that sees the new count sees the slot's value.
        self.commits.store(n.wrapping_add(1), Ordering::Release);
    }

    /// Summarises the recent commits (a reader may see one slot already overwritten by the
    /// next commit; the figures stay those of real recent commits).
    pub fn snapshot(&self) -> WriterSnapshot {
        let total = self.commits.load(Ordering::Acquire);
        let recent = usize::try_from(total.min(RECENT_COMMITS as u64)).unwrap_or(RECENT_COMMITS);
        let mut latencies = Vec::with_capacity(recent);
        let mut sizes_sum = 0u64;
        let mut max_size = 0u64;
        for slot in self.slots.iter().take(recent) {
            let packed = slot.load(Ordering::Relaxed);
            let size = packed & u64::from(u32::MAX);
            latencies.push(packed >> 32);
            sizes_sum = sizes_sum.saturating_add(size);
            max_size = max_size.max(size);
        }
        latencies.sort_unstable();
        let count = latencies.len() as u64;
        WriterSnapshot {
            commits_total: total,
            recent: count,
            mean_batch_size: sizes_sum.checked_div(count).unwrap_or(0),
            max_batch_size: max_size,
            commit_p50_us: percentile(&latencies, 50),
            commit_p99_us: percentile(&latencies, 99),
        }
    }
}

/// The value at or below which `percent` % of the sorted values lie (nearest rank).
fn percentile(sorted: &[u64], percent: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_writer_reports_zeros() {
        assert_eq!(WriterStats::default().snapshot(), WriterSnapshot::default());
    }

    #[test]
    fn recent_commits_are_summarised_and_old_ones_forgotten() {
        let stats = WriterStats::default();
        for i in 1..=100u64 {
            stats.record(2, Duration::from_micros(i));
        }
        let s = stats.snapshot();
        assert_eq!((s.commits_total, s.recent), (100, 100));
        assert_eq!((s.mean_batch_size, s.max_batch_size), (2, 2));
        assert_eq!((s.commit_p50_us, s.commit_p99_us), (50, 99));
        for _ in 0..RECENT_COMMITS {
            stats.record(10, Duration::from_millis(3));
        }
        let s = stats.snapshot();
        assert_eq!(s.commits_total, 100 + RECENT_COMMITS as u64);
        assert_eq!(s.recent, RECENT_COMMITS as u64);
        assert_eq!((s.mean_batch_size, s.max_batch_size), (10, 10));
        assert_eq!((s.commit_p50_us, s.commit_p99_us), (3000, 3000));
    }

    #[test]
    fn huge_values_saturate_instead_of_spilling_into_each_other() {
        let stats = WriterStats::default();
        stats.record(usize::MAX, Duration::from_secs(1_000_000));
        let s = stats.snapshot();
        assert_eq!(s.max_batch_size, u64::from(u32::MAX));
        assert_eq!(s.commit_p99_us, u64::from(u32::MAX));
    }
}
