//! The broker stops answering for 20 s in the middle of 50,000 messages
//! (its JVM is sent SIGSTOP, then SIGCONT): weir stays up, every message
//! comes out at least once, and while the broker is away the stage waits
//! on the process's buffer budget instead of buffering without bound. A
//! test binary of its own, so no other test shares the frozen broker.

use std::time::{Duration, Instant};

use weir_integration_tests::*;

const MESSAGES: usize = 50_000;
const PAUSE: Duration = Duration::from_secs(20);

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

fn pipeline_toml(admin: std::net::SocketAddr) -> String {
    format!(
        r#"
[kafka]
max_buffered_mb = 1

[admin]
listen = "{admin}"
autostart = false

[[topic]]
name = "{{prefix}}.in"
partitions = 3
[[topic]]
name = "{{prefix}}.out"
partitions = 3
[[topic]]
name = "{{prefix}}.big"
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

# Turns each small input into a 1,000-byte record: what it owes the broker
# grows faster than what it fetches.
[[stage]]
name = "amplify"
plugin = "{hostile}"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.big" }}
dead_letter = "{{prefix}}.dlq"
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
        hostile = weir_test_programs::HOSTILE,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_loses_nothing_and_weir_stays_up() {
    init_tracing();
    let pid = broker_pid();
    let prefix = unique_prefix("pause");
    let group = unique_prefix("group");
    let admin = free_local_addr();
    let weir = Weir::start(test_pipeline(&pipeline_toml(admin), &prefix, &group));
    let (input, out, big, dlq) = (
        format!("{prefix}.in"),
        format!("{prefix}.out"),
        format!("{prefix}.big"),
        format!("{prefix}.dlq"),
    );
    topics_exist(&[(&input, 3), (&out, 3), (&big, 3)]).await;
    weir_integration_tests::admin_up(admin, Duration::from_secs(60)).await;
    let rss_before = peak_rss();

    // Each message its own key; the amplifier turns "big:1000" into 1,000
    // bytes under the same key.
    let records: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| (format!("m{i:06}"), b"big:1000".to_vec()))
        .collect();
    // A third is there when the stages start; the broker freezes while
    // they work through it. The rest is sent while the broker is frozen
    // (the test's producer queues it) and after.
    produce(&input, &records[..MESSAGES / 3]).await;
    start_stages(admin, "amplify").await;
    let paused_at = Instant::now();
    signal(pid, "STOP");
    let resume = ResumeBroker(pid);
    let rest = {
        let input = input.clone();
        let rest = records[MESSAGES / 3..].to_vec();
        tokio::spawn(async move { produce(&input, &rest).await })
    };
    tokio::time::sleep(PAUSE).await;
    drop(resume);
    let paused_for = paused_at.elapsed();
    rest.await.unwrap();

    for stage in ["pass", "amplify"] {
        settled(
            &format!("{group}.{stage}"),
            &[&input],
            Duration::from_secs(240),
        )
        .await;
    }
    let peak = peak_rss();
    let mut report = format!("broker paused for {paused_for:?}, {MESSAGES} messages:");
    for topic in [&out, &big] {
        let seen = counts_by_key(topic);
        let missing = records
            .iter()
            .filter(|(k, _)| !seen.contains_key(k.as_bytes()))
            .count();
        let duplicates: usize = seen.values().map(|n| n - 1).sum();
        report += &format!(" {topic}: {missing} missing, {duplicates} duplicates;");
        assert_eq!(missing, 0, "messages lost on {topic}");
        assert_eq!(seen.len(), MESSAGES, "{topic}");
    }
    assert!(read_all(&dlq).is_empty(), "nothing dead-lettered");
    // The amplifier owed the broker more than the 1 MiB budget while it
    // was away: it waited rather than buffer all of it.
    let waited = stage_metric(admin, "amplify", "backpressure_ms").await;
    eprintln!(
        "{report} peak RSS of the test process {} MiB (before: {} MiB); the amplifier \
         waited {waited} ms on the buffer budget",
        peak >> 20,
        rss_before >> 20
    );
    assert!(waited > 1_000, "waited {waited} ms");
    assert!(
        peak < 1 << 30,
        "peak RSS {} MiB while the broker was away",
        peak >> 20
    );
    weir.stop().await.expect("weir stayed up");
}
