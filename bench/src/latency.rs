//! End-to-end latency at a fixed input rate: each input carries its send
//! time in a header, which every processor copies to its output; a consumer
//! of the output topic takes the difference on arrival.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::child::Processor;
use crate::kafka::Watermarks;
use crate::produce::{Load, now_us, produce, sent_us};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub rung: String,
    pub what: String,
    pub rate: f64,
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
}

pub fn measure(mut processor: Processor, rung: &str, what: &str, run: &Run<'_>) -> Result<Latency> {
    let watermarks = Watermarks::new(run.bootstrap)?;
    // Warm up: wait until the processor has joined its group and answers.
    let warmup = 200;
    produce(&Load {
        bootstrap: run.bootstrap,
        topic: run.input,
        partitions: run.partitions,
        count: warmup,
        rate: None,
        stamp: true,
        seed: 1,
    })?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while watermarks.total(run.output, run.partitions)? < warmup as i64 {
        processor.check_alive()?;
        if Instant::now() > deadline {
            bail!("{rung}: the warm-up messages did not come through in 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", run.bootstrap)
        .set("group.id", "weir-bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..run.partitions {
        let (_, high) = consumer.fetch_watermarks(run.output, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(run.output, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    let count = (run.rate * run.duration.as_secs_f64()) as u64;
    let collector = std::thread::spawn(move || -> Result<Vec<i64>> {
        let mut samples = Vec::with_capacity(count as usize);
        let deadline = Instant::now() + Duration::from_secs(120);
        while (samples.len() as u64) < count && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m?;
                let at = now_us();
                samples.push(at - sent_us(&m).context("an output without the send-time header")?);
            }
        }
        Ok(samples)
    });
    produce(&Load {
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
        rate: run.rate,
        samples: samples.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    };
    eprintln!(
        "  {rung:<10} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms at {:.0} msg/s ({what})",
        result.p50_ms, result.p99_ms, result.max_ms, result.rate
    );
    Ok(result)
}
