//! Whether a stage's consumer is in its group, from librdkafka's
//! statistics.
//!
//! A consumer can fall out of its group (a broker that stopped answering
//! for longer than the session timeout, a coordinator that moved) and, in
//! rare cases, never get back in: librdkafka keeps the requests for the
//! coordinator queued on a connection that does not come back, and the
//! stage polls an empty assignment for good. A member that has no
//! partitions because the group has more members than partitions is still
//! *in* the group (`join_state` is `steady`), so this is told apart from a
//! small assignment. The stage replaces a consumer that stays out longer
//! than [`STUCK_AFTER`], as Kafka Streams replaces a stream thread whose
//! client failed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a consumer may stay out of a stable group membership before
/// the stage replaces it. A rebalance of a healthy group takes seconds; a
/// broker away for a while, up to its session timeout plus a rejoin.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Statistics {
    cgrp: Option<GroupStatistics>,
}

#[derive(Deserialize)]
struct GroupStatistics {
    state: String,
    join_state: String,
}

/// Since when a consumer has been seen out of its group, and in what state.
#[derive(Debug, Default)]
pub struct Membership {
    out_since: Mutex<Option<(Instant, String)>>,
}

impl Membership {
    /// Takes one statistics report (librdkafka's JSON).
    pub fn observe(&self, raw: &[u8]) {
        let Ok(Statistics { cgrp: Some(group) }) = serde_json::from_slice::<Statistics>(raw) else {
            return;
        };
        self.observe_state(&group.state, &group.join_state, Instant::now());
    }

    fn observe_state(&self, state: &str, join_state: &str, now: Instant) {
        let mut out = self.out_since.lock().unwrap_or_else(|e| e.into_inner());
        if state == "up" && join_state == "steady" {
            *out = None;
        } else {
            let what = format!("{state}/{join_state}");
            match &mut *out {
                Some((_, seen)) => *seen = what,
                None => *out = Some((now, what)),
            }
        }
    }

    /// How long the consumer has been out of its group, and its last state,
    /// if it has been out for `at_least`.
    pub fn out_for(&self, at_least: Duration) -> Option<(Duration, String)> {
        self.out_at(Instant::now(), at_least)
    }

    fn out_at(&self, now: Instant, at_least: Duration) -> Option<(Duration, String)> {
        let out = self.out_since.lock().unwrap_or_else(|e| e.into_inner());
        let (since, what) = out.as_ref()?;
        let gone = now.saturating_duration_since(*since);
        (gone >= at_least).then(|| (gone, what.clone()))
    }

    /// Forgets what was seen: a new consumer starts out of its group.
    pub fn reset(&self) {
        *self.out_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn out_of_the_group_counts_from_the_first_report_that_says_so() {
        let m = Membership::default();
        let t0 = Instant::now();
        m.observe_state("up", "steady", t0);
        assert!(m.out_at(t0 + 2 * MINUTE, Duration::ZERO).is_none());
        m.observe_state("up", "wait-join", t0 + MINUTE);
        m.observe_state("query-coord", "init", t0 + 2 * MINUTE);
        let (gone, what) = m.out_at(t0 + 3 * MINUTE, MINUTE).unwrap();
        assert_eq!(gone, 2 * MINUTE);
        assert_eq!(what, "query-coord/init");
        assert!(m.out_at(t0 + 3 * MINUTE, 3 * MINUTE).is_none());
    }

    #[test]
    fn back_in_the_group_clears_it() {
        let m = Membership::default();
        let t0 = Instant::now();
        m.observe_state("up", "wait-sync", t0);
        m.observe_state("up", "steady", t0 + MINUTE);
        assert!(m.out_at(t0 + 5 * MINUTE, Duration::ZERO).is_none());
    }

    #[test]
    fn reads_librdkafka_statistics_and_ignores_clients_without_a_group() {
        let m = Membership::default();
        m.observe(br#"{"name":"c","type":"consumer","brokers":{},"cgrp":{"state":"up","stateage":10,"join_state":"wait-join","rebalance_age":5,"rebalance_cnt":1,"rebalance_reason":"","assignment_size":0}}"#);
        assert_eq!(m.out_for(Duration::ZERO).unwrap().1, "up/wait-join");
        m.reset();
        m.observe(br#"{"name":"p","type":"producer"}"#);
        m.observe(b"not json");
        assert!(m.out_for(Duration::ZERO).is_none());
    }
}
