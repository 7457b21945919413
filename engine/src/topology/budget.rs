//! One memory budget for what every stage has handed its producer and the
//! broker has not acknowledged yet.
//!
//! Each stage has a producer of its own, so per-producer queue limits add
//! up: ten stages with librdkafka's defaults could hold gigabytes while the
//! broker is away. The budget is shared instead. A stage takes from it
//! before it enqueues a record and the producer's delivery callback gives
//! it back, so a stage whose records wait simply stops taking new batches
//! (backpressure); nothing is dropped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes (keys and values) enqueued and not yet acknowledged, across the
/// stages of one process.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
        }
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit. A record larger than the whole budget
    /// still goes through once nothing else is outstanding, so no record
    /// can be stuck for being large. One atomic add on the common path;
    /// stages racing past the limit together each take one record over it.
    pub fn try_take(&self, n: u64) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before > 0 && before.saturating_add(n) > self.limit() {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Takes `n` bytes whether or not they fit: for records that must go
    /// now (state flushed while partitions are revoked, a transaction's
    /// changelog), which are few and small next to the budget.
    pub fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Gives back what [`Budget::try_take`] took: every caller gives back
    /// exactly what it took, once.
    pub fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(crate::config::DEFAULT_MAX_BUFFERED_BYTES as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_budget_admits_nothing_until_bytes_come_back() {
        let b = Budget::new(100);
        assert!(b.try_take(60));
        assert!(b.try_take(40));
        assert!(!b.try_take(1), "full");
        b.give_back(40);
        assert!(b.try_take(30));
        assert!(!b.try_take(11));
        assert_eq!(b.used(), 90);
    }

    #[test]
    fn a_record_larger_than_the_budget_goes_alone() {
        let b = Budget::new(100);
        assert!(b.try_take(500), "nothing outstanding");
        assert!(!b.try_take(1));
        b.give_back(500);
        assert_eq!(b.used(), 0);
    }
}
