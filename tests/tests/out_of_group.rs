//! A stage whose consumer stays out of its group for longer than a minute
//! replaces it with a new one (new connections, a fresh join), and loses
//! nothing doing so: the broker's JVM is stopped for 75 s in the middle of
//! 20,000 messages, every one comes out, and the replacement is counted.
//! A test binary of its own, so no other test shares the frozen broker.

use std::time::Duration;

use weir_integration_tests::*;

const MESSAGES: usize = 20_000;
/// Longer than the minute a consumer may stay out of its group, plus a
/// statistics interval.
const FROZEN: Duration = Duration::from_secs(75);

fn pipeline_toml(admin: std::net::SocketAddr) -> String {
    format!(
        r#"
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
async fn a_consumer_out_of_its_group_for_a_minute_is_replaced_and_nothing_is_lost() {
    init_tracing();
    let pid = broker_pid();
    let prefix = unique_prefix("outgroup");
    let group = unique_prefix("group");
    let admin = free_local_addr();
    let weir = Weir::start(test_pipeline(&pipeline_toml(admin), &prefix, &group));
    let (input, out) = (format!("{prefix}.in"), format!("{prefix}.out"));
    topics_exist(&[(&input, 3), (&out, 3)]).await;
    admin_up(admin, Duration::from_secs(60)).await;

    let records: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| (format!("m{i:06}"), format!("v{i}").into_bytes()))
        .collect();
    produce(&input, &records[..MESSAGES / 2]).await;
    start_stages(admin, "pass").await;
    assert_eq!(stage_metric(admin, "pass", "consumers_replaced").await, 0);

    signal(pid, "STOP");
    let resume = ResumeBroker(pid);
    tokio::time::sleep(FROZEN).await;
    drop(resume);
    produce(&input, &records[MESSAGES / 2..]).await;

    settled(
        &format!("{group}.pass"),
        &[&input],
        Duration::from_secs(240),
    )
    .await;
    let replaced = stage_metric(admin, "pass", "consumers_replaced").await;
    let seen = counts_by_key(&out);
    let missing = records
        .iter()
        .filter(|(k, _)| !seen.contains_key(k.as_bytes()))
        .count();
    eprintln!(
        "broker frozen for {FROZEN:?}: consumer replaced {replaced} times, {missing} of \
         {MESSAGES} missing"
    );
    assert_eq!(missing, 0, "messages lost");
    assert!(replaced >= 1, "the consumer was never replaced");
    weir.stop().await.expect("weir stayed up");
}
