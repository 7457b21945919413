//! Hot reload against the real broker: a steady stream of 50,000
//! messages while the plugin file is replaced v1 -> v2 -> a broken v3 ->
//! v4, and pipeline.toml is broken and fixed. Every input gets its output
//! exactly once, keyed state carries across versions, the producing version
//! only moves forward in each partition, the broken files change nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use weir::topology::reload::ReloadStatus;
use weir_integration_tests::*;

const MESSAGES: usize = 50_000;
const KEYS: usize = 20;

/// The component with a custom section appended: the same code under
/// another digest, as a rebuild that changed a constant would be.
fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"weir-test-version";
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

fn sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Replaces `path` the way editors and build tools do: write aside, rename.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn pipeline_text(extra_config: &str) -> String {
    format!(
        r#"
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
name = "counter"
plugin = "plugin.wasm"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dlq"

[stage.config]
note = "v"
{extra_config}
"#
    )
}

async fn wait_for(weir: &Weir, what: &str, check: impl Fn(&ReloadStatus) -> bool) -> ReloadStatus {
    eventually(what, Duration::from_secs(60), || async {
        match weir.reload.status() {
            Some(s) if check(&s) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_swap_under_load_and_only_move_forward() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("reload");
    let group = unique_prefix("group");
    let env = test_env(&prefix, &group);
    let base = std::fs::read(weir_test_programs::HOSTILE).unwrap();
    let versions: Vec<Vec<u8>> = ["v1", "v2", "v4"]
        .iter()
        .map(|t| variant(&base, t))
        .collect();
    let digests: Vec<String> = versions.iter().map(|v| sha256(v)).collect();
    let broken = std::fs::read(weir_test_programs::WRONG_WIT).unwrap();
    let plugin = dir.path().join("plugin.wasm");
    let toml = dir.path().join("pipeline.toml");
    std::fs::write(&plugin, &versions[0]).unwrap();
    std::fs::write(&toml, pipeline_text("")).unwrap();
    let config = weir::config::load(&toml, &env).unwrap_or_else(|e| panic!("{e}"));
    let weir = Weir::start_with(
        config,
        weir::app::RunOptions {
            env: Arc::new(env.clone()),
            watch: true,
            ..weir::app::RunOptions::default()
        },
    );
    let (input, output, dlq) = (
        format!("{prefix}.in"),
        format!("{prefix}.out"),
        format!("{prefix}.dlq"),
    );
    topics_exist(&[(&input, 3)]).await;
    let started = wait_for(&weir, "the pipeline to run", |s| s.generation == 1).await;
    assert_eq!(started.digests["counter"], digests[0]);

    // A steady stream, 2,000 messages about every half second, while the
    // files change under it.
    let producer = {
        let input = input.clone();
        tokio::spawn(async move {
            for chunk in 0..25 {
                let records: Vec<(String, Vec<u8>)> = (chunk * 2_000..(chunk + 1) * 2_000)
                    .map(|i| {
                        let key = format!("k{}", i % KEYS);
                        (key.clone(), format!("count:{key}").into_bytes())
                    })
                    .collect();
                produce(&input, &records).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let mut change_to_ready = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t = Instant::now();
    replace(&plugin, &versions[1]);
    let s = wait_for(&weir, "v2 to be live", |s| s.generation == 2).await;
    assert_eq!(s.digests["counter"], digests[1]);
    change_to_ready.push(t.elapsed());

    // A component for another contract version is refused; v2 keeps going.
    replace(&plugin, &broken);
    let s = wait_for(&weir, "v3 to be refused", |s| {
        s.last.as_ref().is_some_and(|l| !l.ok)
    })
    .await;
    assert_eq!(s.generation, 2);
    let error = s.last.unwrap().error.unwrap();
    assert!(error.contains("weir:plugin@0.0.9"), "{error}");

    let t = Instant::now();
    replace(&plugin, &versions[2]);
    let s = wait_for(&weir, "v4 to be live", |s| s.generation == 3).await;
    assert_eq!(s.digests["counter"], digests[2]);
    change_to_ready.push(t.elapsed());

    // A broken pipeline.toml is reported with file and line, and changes
    // nothing; fixing it (with a new [stage.config]) re-runs init.
    std::fs::write(&toml, pipeline_text("oops = ")).unwrap();
    let s = wait_for(&weir, "the bad edit to be refused", |s| {
        s.last.as_ref().is_some_and(|l| {
            !l.ok
                && l.error
                    .as_deref()
                    .is_some_and(|e| e.contains("pipeline.toml:"))
        })
    })
    .await;
    assert_eq!(s.generation, 3);
    std::fs::write(&toml, pipeline_text("extra = 1")).unwrap();
    let s = wait_for(&weir, "the fixed edit to be live", |s| s.generation == 4).await;
    assert!(s.last.unwrap().ok);
    assert_eq!(s.digests["counter"], digests[2], "same plugin, new config");

    producer.await.unwrap();
    settled(
        &format!("{group}.counter"),
        &[&input],
        Duration::from_secs(120),
    )
    .await;
    weir.stop().await.expect("clean shutdown");

    // Every input has exactly one output, and each key counts 1, 2, 3, ...
    // across all versions: keyed state survived every swap.
    let out = read_all(&output);
    assert_eq!(out.len(), MESSAGES);
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let version_of: HashMap<&str, usize> = digests
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut by_partition: BTreeMap<i32, Vec<(i64, usize, u64)>> = BTreeMap::new();
    for m in &out {
        let text = std::str::from_utf8(m.payload().unwrap()).unwrap();
        let (key, n) = text.split_once('=').unwrap();
        counts
            .entry(key.to_string())
            .or_default()
            .push(n.parse().unwrap());
        let digest = header(m, "weir.plugin.digest").expect("digest header");
        let version = *version_of
            .get(digest)
            .unwrap_or_else(|| panic!("output from an unknown build {digest}"));
        let generation: u64 = header(m, "weir.generation").unwrap().parse().unwrap();
        by_partition
            .entry(m.partition())
            .or_default()
            .push((m.offset(), version, generation));
    }
    for (key, ns) in &counts {
        let expected: Vec<u64> = (1..=(MESSAGES / KEYS) as u64).collect();
        assert_eq!(ns, &expected, "counts of {key}");
    }
    let mut seen_versions = std::collections::BTreeSet::new();
    for (partition, mut records) in by_partition {
        records.sort();
        for pair in records.windows(2) {
            assert!(
                (pair[0].1, pair[0].2) <= (pair[1].1, pair[1].2),
                "partition {partition} went back from {:?} to {:?}",
                pair[0],
                pair[1]
            );
        }
        seen_versions.extend(records.iter().map(|r| r.1));
        let last = records.last().unwrap();
        assert_eq!(
            (last.1, last.2),
            (2, 4),
            "partition {partition} ends on v4, generation 4"
        );
    }
    assert_eq!(seen_versions.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(read_all(&dlq).is_empty());
    tracing::info!(?change_to_ready, "reload timings");
    println!("change to ready: {change_to_ready:?}");
}

fn two_stage_text(second: bool, counter_batch: usize) -> String {
    let mut text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[topic]]
name = "{{prefix}}.in"
partitions = 2
[[topic]]
name = "{{prefix}}.out"
partitions = 2
[[topic]]
name = "{{prefix}}.dlq"
partitions = 1

[[stage]]
name = "counter"
plugin = "plugin.wasm"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dlq"
batch = {{ max_messages = {counter_batch} }}
"#
    );
    if second {
        text.push_str(
            r#"
[[topic]]
name = "{prefix}.in2"
partitions = 1
[[topic]]
name = "{prefix}.out2"
partitions = 1

[[stage]]
name = "echo"
plugin = "plugin.wasm"
inputs = ["{prefix}.in2"]
outputs = { default = "{prefix}.out2" }
dead_letter = "{prefix}.dlq"
"#,
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_edits_add_remove_and_rebuild_stages() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("edits");
    let group = unique_prefix("group");
    let env = test_env(&prefix, &group);
    std::fs::copy(weir_test_programs::HOSTILE, dir.path().join("plugin.wasm")).unwrap();
    let toml = dir.path().join("pipeline.toml");
    std::fs::write(&toml, two_stage_text(false, 256)).unwrap();
    let config = weir::config::load(&toml, &env).unwrap_or_else(|e| panic!("{e}"));
    let weir = Weir::start_with(
        config,
        weir::app::RunOptions {
            env: Arc::new(env),
            watch: true,
            ..weir::app::RunOptions::default()
        },
    );
    let t = |name: &str| format!("{prefix}.{name}");
    wait_for(&weir, "the pipeline to run", |s| s.generation == 1).await;
    let counts = |n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|_| ("k".to_string(), b"count:k".to_vec()))
            .collect()
    };
    produce(&t("in"), &counts(10)).await;
    settled(
        &format!("{group}.counter"),
        &[&t("in")],
        Duration::from_secs(60),
    )
    .await;

    // Adding a stage (and its topics) starts it.
    std::fs::write(&toml, two_stage_text(true, 256)).unwrap();
    let s = wait_for(&weir, "echo to be added", |s| s.generation == 2).await;
    assert!(s.digests.contains_key("echo"), "{s:?}");
    assert_eq!(s.last.unwrap().swapped, vec!["added echo".to_string()]);
    produce(&t("in2"), &counts(100)).await;
    settled(
        &format!("{group}.echo"),
        &[&t("in2")],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(read_all(&t("out2")).len(), 100);

    // Removing it stops it, with its offsets committed.
    std::fs::write(&toml, two_stage_text(false, 256)).unwrap();
    let s = wait_for(&weir, "echo to be removed", |s| s.generation == 3).await;
    assert!(!s.digests.contains_key("echo"), "{s:?}");
    let committed: i64 = committed(&format!("{group}.echo"), &t("in2"))
        .values()
        .sum();
    assert_eq!(committed, 100);

    // A changed batch setting rebuilds the counter stage; it resumes from
    // its committed offsets and its keyed state.
    std::fs::write(&toml, two_stage_text(false, 32)).unwrap();
    let s = wait_for(&weir, "counter to be rebuilt", |s| s.generation == 4).await;
    assert_eq!(
        s.last.unwrap().swapped,
        vec!["restarted counter".to_string()]
    );
    produce(&t("in"), &counts(10)).await;
    settled(
        &format!("{group}.counter"),
        &[&t("in")],
        Duration::from_secs(60),
    )
    .await;
    let out: Vec<String> = read_all(&t("out"))
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap()).into_owned())
        .collect();
    let expected: Vec<String> = (1..=20).map(|n| format!("k={n}")).collect();
    assert_eq!(out, expected);

    // A [kafka] client setting rebuilds every stage's clients; the stages
    // resume from their offsets.
    std::fs::write(
        &toml,
        format!(
            "[kafka.options]\n\"linger.ms\" = \"1\"\n{}",
            two_stage_text(false, 32)
        ),
    )
    .unwrap();
    let s = wait_for(&weir, "the [kafka] edit to rebuild", |s| s.generation == 5).await;
    assert_eq!(
        s.last.unwrap().swapped,
        vec!["restarted counter".to_string()]
    );
    produce(&t("in"), &counts(5)).await;
    settled(
        &format!("{group}.counter"),
        &[&t("in")],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(read_all(&t("out")).len(), 25);
    weir.stop().await.expect("clean shutdown");
}
