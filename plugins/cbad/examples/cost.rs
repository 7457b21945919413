//! What the cbad stage costs, natively:
//! `cargo run --release -p weir-cbad --example cost`.
//!
//! 1. One analysis of a stable window (the permutation test is skipped) and
//!    one of a changed window (a full 200-shuffle test), per compressor, at
//!    the spec's sizes (B = 400, W = 50).
//! 2. Change detection end to end through the plugin: 4,000 events of a stable
//!    log stream, then the same stream with its template changed after
//!    event 2,000, in events per second.

use std::time::{Duration, Instant};

use serde_json::json;
use weir_cbad::Cbad;
use weir_cbad::compress::Algorithm;
use weir_cbad::detect::{TestPlan, Thresholds, analyse};
use weir_cbad::metrics::Measure;
use weir_cbad::preprocess::preprocess;
use weir_cbad::synthetic::LogStream;
use weir_plugin::testing::{Harness, TestMessage};

fn events(change_at: Option<usize>, n: usize) -> Vec<Vec<u8>> {
    let mut s = LogStream::new(2024, change_at);
    (0..n).map(|i| preprocess(s.event(i).as_bytes())).collect()
}

fn time<T>(reps: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let started = Instant::now();
    let mut last = None;
    for _ in 0..reps {
        last = Some(f());
    }
    (started.elapsed() / reps, last.expect("reps > 0"))
}

fn main() {
    let t = Thresholds::default();
    let stable = events(None, 450);
    let changed = events(Some(400), 450);
    let bytes: usize = stable.iter().map(Vec::len).sum();
    println!(
        "B = 400, W = 50, N = 200; {:.0} bytes per preprocessed event",
        bytes as f64 / 450.0
    );
    for algorithm in [Algorithm::Zstd, Algorithm::Lz4, Algorithm::Deflate] {
        let mut m = Measure::new(algorithm.compressor());
        let plan = TestPlan {
            permutations: 200,
            budget_bytes: 64 << 20,
            seed: 1,
        };
        let (quiet, v) = time(50, || {
            analyse(&mut m, &stable[..400], &stable[400..], &plan, &t)
        });
        assert!(v.permutations.is_none() && !v.decision.anomaly);
        let (full, v) = time(3, || {
            analyse(&mut m, &changed[..400], &changed[400..], &plan, &t)
        });
        assert!(v.decision.anomaly && v.p_value().is_some());
        println!(
            "{:8} analysis without permutations {:>9.2?}   with 200 permutations {:>9.2?}",
            algorithm.name(),
            quiet,
            full
        );
    }

    // Each run on its own partition: the harness's state is per thread.
    for (partition, name, change_at) in [(0, "stable", None), (1, "changed at 2000", Some(2000))] {
        let mut h = Harness::<Cbad>::new(&["default"], json!({})).expect("defaults are valid");
        let mut s = LogStream::new(2024, change_at);
        let messages: Vec<TestMessage> = (0..4000)
            .map(|i| {
                TestMessage::new(s.event(i))
                    .offset(i as i64)
                    .partition(partition)
            })
            .collect();
        let started = Instant::now();
        let mut anomalies = Vec::new();
        for batch in messages.chunks(100) {
            for out in h.process(batch).into_iter().flatten().flatten() {
                anomalies.push(out.json());
            }
        }
        let took = started.elapsed();
        let first = anomalies
            .first()
            .map(|a| {
                format!(
                    "first window {}..={}",
                    a["window_start_offset"], a["window_end_offset"]
                )
            })
            .unwrap_or_default();
        println!(
            "{name:16} 4000 events in {took:>9.2?} = {:>6.0} events/s; {} anomalies {first}",
            4000.0 / took.as_secs_f64(),
            anomalies.len()
        );
    }
}
