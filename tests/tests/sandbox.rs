//! Fault isolation against the real broker, with the hostile test
//! plugin: whatever one message makes the plugin do, only that message
//! fails, with its kind in the dead-letter headers, and everything else
//! flows; `on_error` decides what a failure does.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use weir_integration_tests::*;

const SETTLE: Duration = Duration::from_secs(120);

fn pipeline_toml(on_error: &str) -> String {
    format!(
        r#"
[kafka]
topic_prefix = "unused"

[admin]
listen = "127.0.0.1:0"

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
name = "hostile"
plugin = "{plugin}"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dlq"
on_error = "{on_error}"
batch = {{ max_messages = 1000, max_wait_ms = 100 }}

[stage.limits]
memory_mb = 16
timeout_ms = 100
max_payload_bytes = 4096
max_outputs_per_message = 10
"#,
        plugin = weir_test_programs::HOSTILE,
    )
}

struct Run {
    weir: Weir,
    input: String,
    out: String,
    dlq: String,
    group: String,
}

async fn start(on_error: &str) -> Run {
    start_toml(&pipeline_toml(on_error)).await
}

async fn start_toml(toml: &str) -> Run {
    init_tracing();
    let prefix = unique_prefix("sandbox");
    let group = unique_prefix("group");
    let config = pipeline(
        toml,
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap()),
            ("KAFKA_TOPIC_PREFIX", &prefix),
            ("KAFKA_CONSUMER_GROUP", &group),
        ],
    );
    let run = Run {
        weir: Weir::start(config),
        input: format!("{prefix}.in"),
        out: format!("{prefix}.out"),
        dlq: format!("{prefix}.dlq"),
        group: format!("{group}.hostile"),
    };
    topics_exist(&[(&run.input, 3), (&run.dlq, 1)]).await;
    run
}

fn values(topic: &str) -> Vec<String> {
    read_all(topic)
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_message_fails_alone_and_the_rest_flows() {
    let run = start("dead_letter").await;
    // One key, so one partition and one batch: 999 good messages around a
    // panic. Other keys carry a loop, a memory bomb, an oversized message
    // and a flood of outputs, each between good messages.
    let mut records: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let v = if i == 500 {
                "panic".to_string()
            } else {
                format!("good-a-{i}")
            };
            ("a".to_string(), v.into_bytes())
        })
        .collect();
    let hostile = [
        ("loop", "timeout"),
        ("alloc", "memory"),
        ("many:50", "output_limit"),
    ];
    for (i, key) in ["b", "c", "d", "e", "f", "g"].iter().enumerate() {
        for j in 0..20 {
            records.push((key.to_string(), format!("good-{key}-{j}").into_bytes()));
            if j == 10 && i < hostile.len() {
                records.push((key.to_string(), hostile[i].0.as_bytes().to_vec()));
            }
        }
    }
    records.push(("h".to_string(), vec![b'x'; 5000]));
    produce(&run.input, &records).await;
    settled(&run.group, &[&run.input], SETTLE).await;

    // Every good message arrived, once.
    let mut out = values(&run.out);
    out.sort();
    let mut expected: Vec<String> = records
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with("good-"))
        .collect();
    expected.sort();
    assert_eq!(out.len(), expected.len());
    assert_eq!(out, expected);

    // Each hostile message is dead-lettered alone, with its kind.
    let dead: BTreeMap<String, (String, String)> = read_all(&run.dlq)
        .iter()
        .map(|m| {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            let v = if v.len() > 100 { "oversized".into() } else { v };
            let kind = header(m, "weir.error.kind").unwrap_or_default().to_string();
            let reason = header(m, "weir.error").unwrap_or_default().to_string();
            assert_eq!(header(m, "weir.stage"), Some("hostile"));
            assert!(header(m, "weir.source.offset").is_some());
            (v, (kind, reason))
        })
        .collect();
    let kinds: BTreeMap<&str, &str> = dead
        .iter()
        .map(|(v, (k, _))| (v.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("alloc", "memory"),
            ("loop", "timeout"),
            ("many:50", "output_limit"),
            ("oversized", "oversize"),
            ("panic", "trap"),
        ]),
        "{dead:#?}"
    );
    assert!(dead["panic"].1.contains("told to panic"), "{dead:#?}");
    assert!(!dead["panic"].1.contains('\n'), "one line: {dead:#?}");
    assert!(dead["many:50"].1.contains("max_outputs_per_message is 10"));
    assert!(dead["oversized"].1.contains("max_payload_bytes of 4096"));
    run.weir.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_skip_drops_the_message_and_halt_stops_before_it() {
    let batch = |n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let v = if i == 10 {
                    "panic".to_string()
                } else {
                    format!("good-{i}")
                };
                ("k".to_string(), v.into_bytes())
            })
            .collect()
    };

    let skip = start("skip").await;
    produce(&skip.input, &batch(21)).await;
    settled(&skip.group, &[&skip.input], SETTLE).await;
    assert_eq!(values(&skip.out).len(), 20);
    assert!(values(&skip.dlq).is_empty());
    skip.weir.stop().await.expect("clean shutdown");

    let halt = start("halt").await;
    produce(&halt.input, &batch(21)).await;
    let ended = halt.weir.ended(SETTLE).await;
    let err = format!(
        "{:#}",
        ended.expect_err("a halted stage stops the pipeline")
    );
    assert!(
        err.contains("on_error = \"halt\"") && err.contains("(trap)"),
        "{err}"
    );
    // Nothing is committed past the failed message (offset 10 of its
    // partition); what came before it was published.
    let committed: i64 = committed(&halt.group, &halt.input).values().sum();
    assert_eq!(committed, 10);
    assert_eq!(values(&halt.out).len(), 10);
    assert!(values(&halt.dlq).is_empty());
}

/// The resident set of this process, in which weir runs, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_bomb_is_dead_lettered_as_state_limit_and_rss_stays_bounded() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // The default state quota, 64 MiB; a deadline that a call writing
    // 8 MiB of state meets on a busy machine.
    let toml = pipeline_toml("dead_letter").replace("timeout_ms = 100", "timeout_ms = 5000");
    let run = start_toml(&toml).await;
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // 8 MiB of keyed state per bomb, 64 bombs: 512 MiB without a quota.
    // Good messages share the bombs' partition and go around them.
    let mut records = Vec::new();
    for i in 0..64 {
        records.push(("bomb".to_string(), b"state-bomb:8".to_vec()));
        records.push(("bomb".to_string(), format!("good-bomb-{i}").into_bytes()));
        records.push(("other".to_string(), format!("good-other-{i}").into_bytes()));
    }
    produce(&run.input, &records).await;
    settled(&run.group, &[&run.input], SETTLE).await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();

    let out = values(&run.out);
    let good = out.iter().filter(|v| v.starts_with("good-")).count();
    assert_eq!(good, 128, "every good message flowed");
    let applied = out.iter().filter(|v| *v == "bombed 8").count();
    // Seven bombs of 8 MiB and their keys fit in 64 MiB; the eighth does not.
    assert_eq!(applied, 7, "{out:?}");
    let dead = read_all(&run.dlq);
    assert_eq!(dead.len(), 64 - applied);
    for m in &dead {
        assert_eq!(m.payload(), Some(&b"state-bomb:8"[..]));
        assert_eq!(header(m, "weir.error.kind"), Some("state_limit"));
        let reason = header(m, "weir.error").unwrap_or_default();
        assert!(reason.contains("state_max_bytes of 67108864"), "{reason}");
    }

    let peak = peak.load(Ordering::Relaxed);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "state bomb: RSS {} MiB before, peak {} MiB (+{} MiB)",
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    // 64 MiB of state and one call's 8 MiB buffer, with room for the
    // allocator and the other tests of this binary.
    assert!(growth < 256 << 20, "RSS grew by {} MiB", growth >> 20);
    run.weir.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_and_long_reasons_stay_bounded_end_to_end() {
    let admin = free_local_addr();
    let toml = pipeline_toml("dead_letter")
        .replace("127.0.0.1:0", &admin.to_string())
        .replace("timeout_ms = 100", "timeout_ms = 5000");
    let run = start_toml(&toml).await;
    let reason = 2 << 20;
    let records: Vec<(String, Vec<u8>)> = [
        "labels:10000".to_string(),
        "log-flood:1000".to_string(),
        format!("reason:{reason}"),
        "good-1".to_string(),
    ]
    .into_iter()
    .map(|v| ("k".to_string(), v.into_bytes()))
    .collect();
    produce(&run.input, &records).await;
    settled(&run.group, &[&run.input], SETTLE).await;

    let mut out = values(&run.out);
    out.sort();
    assert_eq!(out, ["good-1", "labelled 10000", "logged 1000"]);
    // The 2 MiB reason is dead-lettered, cut to about 1 KiB.
    let dead = read_all(&run.dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "weir.error.kind"), Some("plugin_error"));
    let error = header(&dead[0], "weir.error").unwrap_or_default();
    assert!(error.len() <= 1024, "{} bytes", error.len());
    let (kept, marker) = error
        .rsplit_once("… (")
        .unwrap_or_else(|| panic!("{error}"));
    let cut: usize = marker.strip_suffix(" bytes cut)").unwrap().parse().unwrap();
    assert!(kept.starts_with("rrrr"), "{kept}");
    assert_eq!(kept.len() + cut, reason, "cut once, by the host");

    // 10,000 label sets and invalid label names: /metrics is capped and
    // still reads strictly.
    let (code, text) = http_text(admin, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    let samples = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let labelled = samples
        .iter()
        .filter(|(name, labels, _)| name == "weir_plugin_labelled" && labels["stage"] == "hostile")
        .count();
    assert_eq!(labelled, 1_000);
    let dropped = samples
        .iter()
        .find(|(name, labels, _)| {
            name == "weir_stage_metric_series_dropped_total" && labels["stage"] == "hostile"
        })
        .map(|s| s.2);
    // 9,000 series past the limit, 3 invalid label names, 1 invalid name.
    assert_eq!(dropped, Some(9_004.0));
    run.weir.stop().await.expect("clean shutdown");
}

/// A failed message leaves no state behind, whoever fails it: the plugin
/// (a rejection, which the SDK keeps from the host) or the host (outputs
/// over `max_outputs_per_message`, whose result the host refuses with its
/// writes). Each message below adds 1 to the same counter before it fails,
/// so a write that leaked would show in the last count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_leaves_no_state_behind() {
    let run = start("dead_letter").await;
    // One key: one partition, in order, and often one batch.
    let records: Vec<(String, Vec<u8>)> =
        ["count:k", "count-reject:k", "count-many:k:50", "count:k"]
            .iter()
            .map(|v| ("k".to_string(), v.as_bytes().to_vec()))
            .collect();
    produce(&run.input, &records).await;
    settled(&run.group, &[&run.input], SETTLE).await;
    let out = values(&run.out);
    let dead: BTreeMap<String, String> = read_all(&run.dlq)
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                header(m, "weir.error.kind").unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(out, vec!["k=1", "k=2"], "dead letters: {dead:?}");
    assert_eq!(
        dead,
        BTreeMap::from([
            ("count-many:k:50".to_string(), "output_limit".to_string()),
            ("count-reject:k".to_string(), "plugin_error".to_string()),
        ])
    );
    run.weir.stop().await.expect("clean shutdown");
}
