//! Messages per second of one processor over a preloaded input, watched
//! from outside through the output topic's end offsets, the same way for
//! every rung.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::child::Processor;
use crate::kafka::Watermarks;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub round: u32,
    pub rung: String,
    pub what: String,
    pub messages: i64,
    pub msgs_per_sec: f64,
    /// CPU seconds the processor used per million messages, over the window.
    pub cpu_s_per_million: f64,
    pub peak_rss_mib: f64,
}

/// Watches `output` until it holds `target` records. The rate is taken
/// between 5% and 95% of `target`, which leaves out start-up (plugin
/// loading, the consumer group join) and the tail.
pub fn measure(
    mut processor: Processor,
    rung: &str,
    what: &str,
    watermarks: &Watermarks,
    output: &str,
    target: i64,
) -> Result<Throughput> {
    let partitions = watermarks.partitions(output)?;
    let (lo, hi) = (target / 20, target - target / 20);
    let mut low_mark: Option<(Instant, i64, f64)> = None;
    let mut last_progress = (Instant::now(), 0);
    loop {
        processor.check_alive()?;
        let total = watermarks.total(output, partitions)?;
        let now = Instant::now();
        if total > last_progress.1 {
            last_progress = (now, total);
        } else if now - last_progress.0 > Duration::from_secs(90) {
            bail!("{rung}: no progress for 90 s at {total} of {target} records in {output}");
        }
        if low_mark.is_none() && total >= lo {
            low_mark = Some((now, total, processor.cpu_seconds()?));
        }
        if total >= hi
            && let Some((t0, n0, cpu0)) = low_mark
        {
            let secs = (now - t0).as_secs_f64();
            let n = (total - n0) as f64;
            let cpu = processor.cpu_seconds()? - cpu0;
            let result = Throughput {
                round: 0,
                rung: rung.into(),
                what: what.into(),
                messages: total - n0,
                msgs_per_sec: n / secs,
                cpu_s_per_million: cpu / n * 1e6,
                peak_rss_mib: processor.peak_rss_mib()?,
            };
            processor.stop()?;
            eprintln!(
                "  {rung:<10} {:>10.0} msg/s  {:>6.1} CPU-s/M  {:>6.1} MiB  ({what})",
                result.msgs_per_sec, result.cpu_s_per_million, result.peak_rss_mib
            );
            return Ok(result);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
