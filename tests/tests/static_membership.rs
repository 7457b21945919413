//! `--instance-id` (static group membership): a weir process killed and
//! started again within the session timeout gets its partitions back
//! without a rebalance, so the other processes keep theirs and no state
//! moves.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weir_integration_tests::*;

const READY: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(120);

fn pipeline_toml() -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.in"
partitions = 4
[[topic]]
name = "{{prefix}}.out"
partitions = 4
[[topic]]
name = "{{prefix}}.dead-letter"
partitions = 1

[[stage]]
name = "pass"
plugin = "{passthrough}"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dead-letter"
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
    )
}

async fn start(
    name: &str,
    id: &str,
    pipeline: &Path,
    env: &HashMap<String, String>,
) -> WeirProcess {
    let mut env = env.clone();
    env.insert("WEIR_INSTANCE_ID".into(), id.into());
    let mut p = WeirProcess::spawn(name, pipeline, &env);
    p.ready(READY).await;
    p
}

async fn metrics(admin: std::net::SocketAddr) -> Value {
    let (code, body) = http(admin, "GET", "/api/v1/stages/pass", None).await;
    assert_eq!(code, 200, "{body}");
    body["metrics"].clone()
}

fn held(m: &Value) -> BTreeSet<i64> {
    m["assigned_partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// Waits until the two processes split the four partitions between them.
async fn split(a: std::net::SocketAddr, b: std::net::SocketAddr) -> (Value, Value) {
    eventually(
        "the two processes to share the partitions",
        WAIT,
        || async {
            let (ma, mb) = (metrics(a).await, metrics(b).await);
            let (ha, hb) = (held(&ma), held(&mb));
            let all: BTreeSet<i64> = ha.union(&hb).copied().collect();
            if !ha.is_empty() && !hb.is_empty() && ha.is_disjoint(&hb) && all.len() == 4 {
                Ok((ma, mb))
            } else {
                Err(format!("a holds {ha:?}, b holds {hb:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_restart_with_the_same_instance_id_moves_no_partition() {
    let prefix = unique_prefix("static");
    let group = unique_prefix("static-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml()).unwrap();

    let mut a = start("a", "static-a", &pipeline, &env).await;
    let b = start("b", "static-b", &pipeline, &env).await;
    let (before_a, before_b) = split(a.admin, b.admin).await;

    // Killed, and back within the session timeout (10 s).
    a.kill();
    let a = start("a-again", "static-a", &pipeline, &env).await;
    let (after_a, after_b) = split(a.admin, b.admin).await;
    eprintln!(
        "before: a {:?} b {:?} (b rebalanced {}); after: a {:?} b {:?} (b rebalanced {})",
        held(&before_a),
        held(&before_b),
        before_b["rebalances"],
        held(&after_a),
        held(&after_b),
        after_b["rebalances"],
    );
    assert_eq!(held(&after_a), held(&before_a), "a got its partitions back");
    assert_eq!(held(&after_b), held(&before_b), "b kept its partitions");
    assert_eq!(
        after_b["rebalances"], before_b["rebalances"],
        "b saw no rebalance"
    );
    assert_eq!(
        after_a["rebalances"], 1,
        "the new a joined once, as the old a"
    );

    // And the pipeline works on.
    let records: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("k{i}"), format!("v{i}").into_bytes()))
        .collect();
    let input = format!("{prefix}.in");
    produce(&input, &records).await;
    settled(&format!("{group}.pass"), &[&input], WAIT).await;
}
