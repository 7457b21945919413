//! `processing = "exactly_once"` on the real broker: a stateful pipeline
//! killed with SIGKILL in the middle of its work, and restarted under the
//! same instance id, answers every order exactly once as a read_committed
//! consumer sees it, with its stock exact, and leaves no transaction open.
//! The chaos tests (`chaos.rs`) do the same with more processes and kills.

use std::time::Duration;

use rdkafka::Message;
use serde_json::Value;
use weir_integration_tests::*;

const READY: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(240);
const STOCK: usize = 450;
const ORDERS: usize = 600;

async fn stage_metrics(admin: std::net::SocketAddr, stage: &str) -> Value {
    let (code, body) = http(admin, "GET", &format!("/api/v1/stages/{stage}"), None).await;
    assert_eq!(code, 200, "{body}");
    body["metrics"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_exactly_once_pipeline_answers_each_order_once() {
    let prefix = unique_prefix("eos");
    let group = unique_prefix("eos-group");
    let mut env = test_env(&prefix, &group);
    // The same id after the restart: the new process fences the old one's
    // transactional producers at once.
    env.insert("WEIR_INSTANCE_ID".into(), "eos-a".into());
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        campus::inventory_pipeline("processing = \"exactly_once\"", STOCK, "state = \"none\""),
    )
    .unwrap();
    let t = |name: &str| format!("{prefix}.{name}");
    let (orders, requests, events, dlq) = (
        t("orders"),
        t("inventory.requests"),
        t("inventory-events"),
        t("dead-letter"),
    );

    let mut first = start_weir("first", &pipeline, &env, READY).await;
    topics_exist(&[(&orders, 3), (&requests, 1), (&events, 3)]).await;
    let all: Vec<_> = (0..ORDERS).map(campus::order).collect();
    produce(&orders, &all[..ORDERS / 2]).await;
    eventually("some answers committed", WAIT, || async {
        let n = campus::answers(&read_committed(&events)).len();
        if n >= 100 {
            Ok(())
        } else {
            Err(format!("{n} answered"))
        }
    })
    .await;
    let m = stage_metrics(first.admin, "inventory").await;
    assert!(m["transactions"].as_u64().unwrap_or(0) > 0, "{m}");
    // Killed with its work in flight: the rest of the first half, and the
    // second half as it arrives.
    produce(&orders, &all[ORDERS / 2..]).await;
    first.kill();
    let second = start_weir("second", &pipeline, &env, READY).await;

    eventually("every order answered", WAIT, || async {
        let a = campus::answers(&read_committed(&events));
        if a.len() == ORDERS {
            Ok(())
        } else {
            Err(format!("{} of {ORDERS} answered", a.len()))
        }
    })
    .await;
    // And later transactions of the same process go through too (each
    // commit's changelog records once left the buffer budget short, so
    // that the second transaction never got its records enqueued).
    let more: Vec<_> = (ORDERS..ORDERS + 100).map(campus::order).collect();
    produce(&orders, &more).await;
    let answered = eventually("the later orders answered", WAIT, || async {
        let a = campus::answers(&read_committed(&events));
        if a.len() == ORDERS + 100 {
            Ok(a)
        } else {
            Err(format!("{} of {} answered", a.len(), ORDERS + 100))
        }
    })
    .await;
    let inventory_group = format!("{group}.inventory");
    eventually(
        "inventory's offsets at the end of its input",
        WAIT,
        || async {
            match unconsumed(&inventory_group, &requests) {
                0 => Ok(()),
                n => Err(format!("{n} requests after the committed offsets")),
            }
        },
    )
    .await;
    let answered = {
        // Settled: read again, so nothing committed after the first full
        // read is missed.
        let again = campus::answers(&read_committed(&events));
        assert!(again.len() >= answered.len());
        again
    };
    let twice: Vec<_> = answered.iter().filter(|(_, k)| k.len() > 1).collect();
    let reserved = answered
        .values()
        .filter(|k| k.first().is_some_and(|k| k == "InventoryReserved"))
        .count();
    let requests_seen = read_committed(&requests).len();
    let m = stage_metrics(second.admin, "inventory").await;
    eprintln!(
        "exactly-once after a SIGKILL: {} orders answered, {} more than once, {reserved} reserved \
         of a stock of {STOCK}, {requests_seen} requests forwarded, metrics {m}",
        answered.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    assert_eq!(
        requests_seen,
        ORDERS + 100,
        "order-intake forwarded each order once"
    );
    assert!(m["transactions"].as_u64().unwrap_or(0) >= 2, "{m}");
    assert_eq!(reserved, STOCK, "the stock is exact");
    assert!(read_committed(&dlq).is_empty(), "nothing dead-lettered");
    for topic in [&requests, &events, &format!("{group}-inventory-changelog")] {
        assert_eq!(open_transactions(topic), vec![], "{topic}");
    }
    assert_eq!(unconsumed(&format!("{group}.order-intake"), &orders), 0);
}

/// Records of `topic` (committed ones) at or after `group`'s committed
/// offsets. A transactional topic ends with a commit marker, which no
/// consumer reads, so its end offset is one past where a group stops.
fn unconsumed(group: &str, topic: &str) -> usize {
    let offsets = committed(group, topic);
    read_committed(topic)
        .iter()
        .filter(|m| m.offset() >= offsets.get(&m.partition()).copied().unwrap_or(0))
        .count()
}
