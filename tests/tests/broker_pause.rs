//! The broker stops answering for 20 s in the middle of 50,000 messages
//! (its JVM is sent SIGSTOP, then SIGCONT): weir stays up, every message
//! comes out at least once, and memory stays bounded while the broker is
//! away. A test binary of its own, so no other test shares the frozen
//! broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use weir_integration_tests::*;

const MESSAGES: usize = 50_000;
const PAUSE: Duration = Duration::from_secs(20);

/// The broker's pid, as `scripts/test.sh` exports it.
fn broker_pid() -> i32 {
    let pid = std::env::var("WEIR_TEST_KAFKA_PID").unwrap_or_else(|_| {
        panic!("WEIR_TEST_KAFKA_PID is not set: run the tests with scripts/test.sh")
    });
    pid.trim().parse().expect("WEIR_TEST_KAFKA_PID is a pid")
}

fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Resumes the broker even if the test fails while it is stopped.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// This process's peak resident set (weir runs in it), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

fn pipeline_toml() -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.in"
partitions = 3
[[topic]]
name = "{{prefix}}.out"
partitions = 3
[[topic]]
name = "{{prefix}}.dlq"
partitions = 1

[[stage]]
name = "pass"
plugin = "{passthrough}"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dlq"
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_loses_nothing_and_weir_stays_up() {
    init_tracing();
    let pid = broker_pid();
    let prefix = unique_prefix("pause");
    let group = unique_prefix("group");
    let env = test_env(&prefix, &group);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let weir = Weir::start(pipeline(&pipeline_toml(), &env));
    let (input, out, dlq) = (
        format!("{prefix}.in"),
        format!("{prefix}.out"),
        format!("{prefix}.dlq"),
    );
    topics_exist(&[(&input, 3), (&out, 3)]).await;
    let rss_before = peak_rss();

    let records: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| (format!("k{}", i % 97), format!("m{i:06}").into_bytes()))
        .collect();
    // A third before the pause, the rest sent while the broker is frozen
    // (the test's producer queues them) and after.
    produce(&input, &records[..MESSAGES / 3]).await;
    let paused_at = Instant::now();
    signal(pid, "STOP");
    let resume = Resume(pid);
    let rest = {
        let input = input.clone();
        let rest = records[MESSAGES / 3..].to_vec();
        tokio::spawn(async move { produce(&input, &rest).await })
    };
    tokio::time::sleep(PAUSE).await;
    drop(resume);
    let paused_for = paused_at.elapsed();
    rest.await.unwrap();

    settled(
        &format!("{group}.pass"),
        &[&input],
        Duration::from_secs(240),
    )
    .await;
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for m in read_all(&out) {
        *seen.entry(m.payload().unwrap().to_vec()).or_default() += 1;
    }
    let missing = records
        .iter()
        .filter(|(_, v)| !seen.contains_key(v))
        .count();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let peak = peak_rss();
    eprintln!(
        "broker paused for {paused_for:?}: {MESSAGES} messages, {missing} missing, \
         {duplicates} duplicates; peak RSS of the test process {} MiB (before: {} MiB)",
        peak >> 20,
        rss_before >> 20
    );
    assert_eq!(missing, 0, "messages lost");
    assert_eq!(seen.len(), MESSAGES);
    assert!(read_all(&dlq).is_empty(), "nothing dead-lettered");
    assert!(
        peak < 1 << 30,
        "peak RSS {} MiB while the broker was away",
        peak >> 20
    );
    weir.stop().await.expect("weir stayed up");
}
