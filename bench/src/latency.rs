//! End-to-end latency at a fixed input rate: each input carries its send
//! time in a header, which every processor copies to its output; a consumer
//! of the output topic takes the difference on arrival.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::child::Processor;
use crate::produce::{Load, Sender, now_us, sent_us};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub rung: String,
    pub what: String,
    pub load: f64,
    pub rate: f64,
    /// The rate the load generator reached.
    pub sent_rate: f64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub struct Run<'a> {
    pub bootstrap: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub partitions: i32,
    pub rate: f64,
    pub duration: Duration,
    /// `rate` as a fraction of B1's.
    pub load: f64,
}

pub fn measure(mut processor: Processor, rung: &str, what: &str, run: &Run<'_>) -> Result<Latency> {
    // The collector reads the (fresh) output topic from its start: first
    // the warm-up messages, which show the processor has joined its group
    // and the collector is fetching, then the timed ones.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", run.bootstrap)
        .set("group.id", "weir-bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..run.partitions {
        tpl.add_partition_offset(run.output, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let warmup = 200u64;
    let count = (run.rate * run.duration.as_secs_f64()) as u64;
    let warmed = Arc::new(AtomicBool::new(false));
    let collector = {
        let warmed = warmed.clone();
        std::thread::spawn(move || -> Result<Vec<i64>> {
            let mut seen = 0u64;
            let mut samples = Vec::with_capacity(count as usize);
            let deadline = Instant::now() + Duration::from_secs(180);
            while (samples.len() as u64) < count && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                    let m = m?;
                    let at = now_us();
                    seen += 1;
                    if seen <= warmup {
                        warmed.store(seen == warmup, Ordering::Release);
                        continue;
                    }
                    samples
                        .push(at - sent_us(&m).context("an output without the send-time header")?);
                }
            }
            Ok(samples)
        })
    };
    let sender = Sender::new(run.bootstrap, true)?;
    sender.send(&Load {
        bootstrap: run.bootstrap,
        topic: run.input,
        partitions: run.partitions,
        count: warmup,
        rate: None,
        stamp: true,
        seed: 1,
    })?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !warmed.load(Ordering::Acquire) {
        processor.check_alive()?;
        if Instant::now() > deadline || collector.is_finished() {
            bail!("{rung}: the warm-up messages did not come through in 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = sender.send(&Load {
        bootstrap: run.bootstrap,
        topic: run.input,
        partitions: run.partitions,
        count,
        rate: Some(run.rate),
        stamp: true,
        seed: 2,
    })?;
    let mut samples = collector
        .join()
        .map_err(|_| anyhow::anyhow!("latency collector panicked"))??;
    processor.check_alive()?;
    processor.stop()?;
    if (samples.len() as u64) < count {
        bail!("{rung}: only {} of {count} messages arrived", samples.len());
    }
    samples.sort_unstable();
    let pct = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let result = Latency {
        rung: rung.into(),
        what: what.into(),
        load: run.load,
        rate: run.rate,
        sent_rate: count as f64 / took.as_secs_f64(),
        samples: samples.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    };
    eprintln!(
        "  {rung:<10} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms at {:.0} msg/s, sent at {:.0} ({what})",
        result.p50_ms, result.p99_ms, result.max_ms, result.rate, result.sent_rate
    );
    Ok(result)
}
