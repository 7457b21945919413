//! Keys restored per second: a stage's changelog topic is filled with N
//! distinct keys (16-byte keys, 8-byte values), then `weir run` starts on
//! that group and stage and restores them before processing; the restore's
//! own duration comes from the stage's metrics (`last_restore_ms`, set
//! when the restore of the assignment is done, with
//! `state_restored_records`), read through the admin API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::child::Processor;

#[derive(Debug, Clone, Serialize)]
pub struct Restore {
    pub round: u32,
    pub keys: u64,
    pub partitions: i32,
    /// Changelog records read (`state_restored_records`).
    pub records: u64,
    /// Keys the stage holds afterwards (`state_keys`).
    pub state_keys: u64,
    /// `last_restore_ms`: from pausing the partitions to resuming them.
    pub restore_ms: u64,
    pub keys_per_sec: f64,
    /// From `weir run` to the metrics showing the restore done: process
    /// start, plugin compilation and the group join included.
    pub wall_s: f64,
    pub peak_rss_mib: f64,
    /// The rate the changelog was written at (rdkafka producer, batched).
    pub write_records_per_sec: f64,
}

/// The changelog topic's settings, as weir creates it.
pub const CHANGELOG_CONFIG: &[(&str, &str)] = &[
    ("cleanup.policy", "compact,delete"),
    ("retention.ms", "-1"),
    ("retention.bytes", "-1"),
];

pub struct Run<'a> {
    pub keys: u64,
    pub partitions: i32,
    /// `<group_id>-<stage>-changelog`.
    pub changelog: &'a str,
    /// `weir run PIPELINE`, to which `--admin-listen` is added.
    pub cmd: Command,
    pub stage: &'a str,
    pub workdir: &'a Path,
    pub round: u32,
}

#[derive(Default)]
struct Failures(AtomicU64);

impl rdkafka::ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes `keys` distinct keys round-robin over the partitions; returns
/// records per second.
pub fn write_changelog(bootstrap: &str, topic: &str, keys: u64, partitions: i32) -> Result<f64> {
    let producer: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "50")
        .set("batch.num.messages", "100000")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Failures::default())?;
    let started = Instant::now();
    let (mut key, mut value) = (String::new(), String::new());
    for i in 0..keys {
        use std::fmt::Write as _;
        key.clear();
        value.clear();
        let _ = write!(key, "key-{i:012}");
        let _ = write!(value, "v{i:07}");
        let partition = (i % partitions as u64) as i32;
        loop {
            let record = BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(key.as_str())
                .payload(value.as_str());
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
            }
        }
        if i % 50_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let failed = producer.context().0.load(Ordering::Relaxed);
    ensure!(failed == 0, "{failed} changelog records not delivered");
    Ok(keys as f64 / started.elapsed().as_secs_f64())
}

/// A loopback address nothing listens on now.
fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET path` on the admin API, the body as JSON.
fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    ensure!(head.contains(" 200 "), "GET {path}: {head}");
    Ok(serde_json::from_str(body)?)
}

/// Starts weir on the changelog `write_changelog` filled and waits for
/// its restore to show in the stage's metrics.
pub fn measure(run: Run<'_>, write_records_per_sec: f64) -> Result<Restore> {
    let admin = free_addr()?;
    let mut cmd = run.cmd;
    cmd.arg("--admin-listen")
        .arg(admin.to_string())
        .arg("--no-watch");
    let started = Instant::now();
    let mut p = Processor::spawn(&format!("restore-{}", run.round), cmd, run.workdir)?;
    let path = format!("/api/v1/stages/{}", run.stage);
    let deadline = started + Duration::from_secs(300);
    let metrics = loop {
        p.check_alive()?;
        if let Ok(status) = get_json(admin, &path) {
            let m = &status["metrics"];
            if m["state_restored_records"].as_u64().unwrap_or(0) >= run.keys {
                break m.clone();
            }
        }
        if Instant::now() > deadline {
            bail!("the restore of {} keys not done after 300 s", run.keys);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall_s = started.elapsed().as_secs_f64();
    let get = |k: &str| metrics[k].as_u64().unwrap_or(0);
    let result = Restore {
        round: run.round,
        keys: run.keys,
        partitions: run.partitions,
        records: get("state_restored_records"),
        state_keys: get("state_keys"),
        restore_ms: get("last_restore_ms"),
        keys_per_sec: run.keys as f64 / (get("last_restore_ms").max(1) as f64 / 1000.0),
        wall_s,
        peak_rss_mib: p.peak_rss_mib()?,
        write_records_per_sec,
    };
    p.stop()?;
    ensure!(
        result.records == run.keys && result.state_keys == run.keys,
        "restored {} records into {} keys, expected {} of each ({})",
        result.records,
        result.state_keys,
        run.keys,
        run.changelog
    );
    eprintln!(
        "  restore    {:>10.0} keys/s  {} keys in {} ms  {:.1} s from start  {:.1} MiB",
        result.keys_per_sec, result.keys, result.restore_ms, result.wall_s, result.peak_rss_mib
    );
    Ok(result)
}
