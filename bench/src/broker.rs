//! B0: Apache Kafka's own performance tools, run from the jars
//! `scripts/kafka.sh` fetched.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub produce_msgs_per_sec: f64,
    pub consume_msgs_per_sec: f64,
}

fn tool(kafka_sh: &Path, class: &str, args: &[String]) -> Result<String> {
    let out = Command::new(kafka_sh)
        .arg("run")
        .arg(class)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", kafka_sh.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{class} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// ProducerPerformance with the producer settings of every rung, then
/// ConsumerPerformance over the preloaded input.
pub fn measure(
    kafka_sh: &Path,
    bootstrap: &str,
    produce_topic: &str,
    consume_topic: &str,
    count: u64,
    record_size: usize,
) -> Result<Ceiling> {
    let mut args: Vec<String> = [
        "--topic",
        produce_topic,
        "--num-records",
        &count.to_string(),
        "--record-size",
        &record_size.to_string(),
        "--throughput",
        "-1",
        "--producer-props",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("bootstrap.servers={bootstrap}"));
    // librdkafka's batch.num.messages has no Java twin; batch.size is its
    // byte-sized analogue (librdkafka's default, 1 MB).
    for p in [
        "acks=all",
        "enable.idempotence=true",
        "linger.ms=5",
        "batch.size=1000000",
    ] {
        args.push(p.into());
    }
    let out = tool(
        kafka_sh,
        "org.apache.kafka.tools.ProducerPerformance",
        &args,
    )?;
    // "... records sent, 123456.7 records/sec (37.6 MB/sec), ..."
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("records/sec"))
        .context("ProducerPerformance printed no summary")?;
    let produce =
        number_before(line, " records/sec").context("cannot parse the producer summary")?;

    let args: Vec<String> = [
        "--bootstrap-server",
        bootstrap,
        "--topic",
        consume_topic,
        "--num-records",
        &count.to_string(),
        "--group",
        &format!("weir-bench-b0-{}", std::process::id()),
        "--timeout",
        "60000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tool(
        kafka_sh,
        "org.apache.kafka.tools.ConsumerPerformance",
        &args,
    )?;
    // A CSV header, then: start.time, end.time, data.consumed.in.MB, MB.sec,
    // data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms,
    // fetch.MB.sec, fetch.nMsg.sec. fetch.nMsg.sec leaves out the group join.
    let row = out
        .lines()
        .rev()
        .find(|l| l.split(',').count() >= 10)
        .context("ConsumerPerformance printed no stats")?;
    let consume: f64 = row
        .split(',')
        .nth(9)
        .context("no fetch.nMsg.sec")?
        .trim()
        .parse()?;
    let c = Ceiling {
        produce_msgs_per_sec: produce,
        consume_msgs_per_sec: consume,
    };
    eprintln!(
        "  B0 broker  produce {:>10.0} msg/s  consume {:>10.0} msg/s",
        c.produce_msgs_per_sec, c.consume_msgs_per_sec
    );
    Ok(c)
}

fn number_before(line: &str, marker: &str) -> Option<f64> {
    let head = &line[..line.find(marker)?];
    head.rsplit([' ', ',']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_producer_summary() {
        let line = "500000 records sent, 123456.7 records/sec (37.68 MB/sec), 12.3 ms avg latency";
        assert_eq!(super::number_before(line, " records/sec"), Some(123456.7));
    }
}
