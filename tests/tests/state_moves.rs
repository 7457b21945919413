//! Keyed state and partitions moving between weir processes of one group:
//! F1's dedup window survives a SIGKILL and a move to other processes
//! (and a move back), a stateful stage's inputs stay co-partitioned under
//! the range assignor, and the state query names the member that holds a
//! partition it does not. weir runs as real child processes (`weir run`,
//! see [`WeirProcess`]) so they can be killed for real; the broker is the
//! real one `scripts/test.sh` starts.
//!
//! Each test runs its own pipeline on its own topics and consumer group,
//! and prints what it counted before asserting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{Value, json};
use weir_integration_tests::*;

/// How long a process may take to start (it compiles its plugins).
const READY: Duration = Duration::from_secs(180);
/// How long processing or a rebalance may take, one after a SIGKILL
/// included (the dead member holds its partitions until its session, 10 s,
/// times out).
const WAIT: Duration = Duration::from_secs(240);

/// `weir.error` of every record of a dead-letter topic.
fn dead_letters(topic: &str) -> Vec<String> {
    read_all(topic)
        .iter()
        .map(|m| header(m, "weir.error").unwrap_or("?").to_string())
        .collect()
}

/// The input partitions of `stage` a process says it holds
/// (`metrics.assigned_partitions` of its stage status).
async fn assigned(p: &WeirProcess, stage: &str) -> Result<BTreeSet<i32>, String> {
    let (status, v) = http(p.admin, "GET", &format!("/api/v1/stages/{stage}"), None).await;
    if status != 200 {
        return Err(format!("{}: status {status}: {v}", p.name));
    }
    v["metrics"]["assigned_partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_i64())
                .map(|p| p as i32)
                .collect()
        })
        .ok_or_else(|| format!("{}: no metrics.assigned_partitions in {v}", p.name))
}

/// Waits until the processes' assignments of `stage` are non-empty,
/// disjoint and together cover `0..partitions`; returns them in order.
async fn split(processes: &[&WeirProcess], stage: &str, partitions: i32) -> Vec<BTreeSet<i32>> {
    eventually(
        &format!("the partitions of {stage} split over the processes"),
        WAIT,
        || async {
            let mut sets = Vec::new();
            for p in processes {
                sets.push(assigned(p, stage).await?);
            }
            let total: usize = sets.iter().map(|s| s.len()).sum();
            let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
            let all: BTreeSet<i32> = (0..partitions).collect();
            if sets.iter().all(|s| !s.is_empty()) && total == union.len() && union == all {
                Ok(sets)
            } else {
                Err(format!("assignments {sets:?}"))
            }
        },
    )
    .await
}

/// The consumer-protocol assignment (version, then per topic its name and
/// partitions) as topic -> partitions; `None` if it is not one.
fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, BTreeSet<i32>>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    let i16_at = |b: &mut &[u8]| Some(i16::from_be_bytes(take(b, 2)?.try_into().ok()?));
    let i32_at = |b: &mut &[u8]| Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?));
    let mut b = bytes;
    let _version = i16_at(&mut b)?;
    let topics = i32_at(&mut b)?;
    let mut out: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for _ in 0..topics.max(0) {
        let len = i16_at(&mut b)?;
        let name = String::from_utf8(take(&mut b, len.max(0) as usize)?.to_vec()).ok()?;
        let n = i32_at(&mut b)?;
        let parts = out.entry(name).or_default();
        for _ in 0..n.max(0) {
            parts.insert(i32_at(&mut b)?);
        }
    }
    Some(out)
}

/// The group's state and its members as the coordinator describes them:
/// client id -> topic -> partitions assigned.
type Members = BTreeMap<String, BTreeMap<String, BTreeSet<i32>>>;

fn describe_group(group: &str) -> Result<(String, Members), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .map_err(|e| e.to_string())?;
    let list = consumer
        .client()
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .map_err(|e| format!("describing {group}: {e}"))?;
    let g = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .ok_or_else(|| format!("no group {group}"))?;
    let mut members = Members::new();
    for m in g.members() {
        let assignment = match m.assignment() {
            Some(bytes) if !bytes.is_empty() => decode_assignment(bytes)
                .ok_or_else(|| format!("undecodable assignment of {}", m.client_id()))?,
            _ => BTreeMap::new(),
        };
        members.insert(m.client_id().to_string(), assignment);
    }
    Ok((g.state().to_string(), members))
}

// --- F1 telemetry: the degradation stage and its dedup window --------------

const STAGE: &str = "degradation";
const CARS: usize = 12;

/// The degradation stage of the repo's pipeline.toml (its config, dedup
/// window 10,000 included), with `state` as given.
fn f1_toml(state: &str) -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.telemetry.raw"
partitions = 3
[[topic]]
name = "{{prefix}}.telemetry.analytics"
partitions = 3
[[topic]]
name = "{{prefix}}.telemetry.dead-letter"
partitions = 1

[[stage]]
name = "{STAGE}"
plugin = "{degradation}"
inputs = ["{{prefix}}.telemetry.raw"]
outputs = {{ default = "{{prefix}}.telemetry.analytics" }}
dead_letter = "{{prefix}}.telemetry.dead-letter"
state = "{state}"

[stage.batch]
max_messages = 256
max_wait_ms = 2

[stage.config]
baseline_temp_c = 80.0
temp_span_c = 35.0
tire_wear_threshold = 0.65
low_battery_soc = 0.4
dedup_window = 10000
"#,
        degradation = weir_test_programs::F1_DEGRADATION,
    )
}

fn car(c: usize) -> String {
    format!("CAR-{c:02}")
}

/// Telemetry of car `c` with sequence number `seq`, keyed by car id, as
/// the F1 Kafka demo sends it; the same `(c, seq)` is the same message (a re-send).
fn telemetry(c: usize, seq: u64) -> (String, Vec<u8>) {
    let t = 80.0 + (seq % 30) as f64;
    let value = json!({
        "car_id": car(c), "lap": seq / 50 + 1, "seq": seq, "speed_kph": 250.0, "gear": 7,
        "throttle": 0.9, "brake": 0.0, "tire_temp_fl": t, "tire_temp_fr": t + 1.0,
        "tire_temp_rl": t + 2.0, "tire_temp_rr": t + 3.0, "battery_soc": 0.8,
        "ers_mode": "balanced", "track_segment": "straight",
        "timestamp": "2026-11-23T10:00:00Z", "run_id": "state-moves"
    });
    (car(c), value.to_string().into_bytes())
}

/// Every car's messages with sequence numbers `seqs`.
fn batch(seqs: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    seqs.flat_map(|s| (1..=CARS).map(move |c| telemetry(c, s)))
        .collect()
}

/// How many analytics records each `(car_id, seq)` got.
fn outputs(topic: &str) -> BTreeMap<(String, u64), usize> {
    let mut counts = BTreeMap::new();
    for m in read_all(topic) {
        let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
        let id = (
            v["car_id"].as_str().unwrap_or("?").to_string(),
            v["seq"].as_u64().unwrap_or(u64::MAX),
        );
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// Which input partition each car's messages are in, read back from the
/// input topic.
fn car_partitions(topic: &str) -> BTreeMap<String, i32> {
    read_all(topic)
        .iter()
        .filter_map(|m| Some((String::from_utf8(m.key()?.to_vec()).ok()?, m.partition())))
        .collect()
}

struct F1 {
    prefix: String,
    group: String,
    env: HashMap<String, String>,
    _dir: tempfile::TempDir,
    pipeline: PathBuf,
    input: String,
    output: String,
    dlq: String,
}

impl F1 {
    fn new(name: &str, state: &str) -> F1 {
        let prefix = unique_prefix(name);
        let group = unique_prefix(&format!("{name}-group"));
        let env = test_env(&prefix, &group);
        let dir = tempfile::tempdir().unwrap();
        let pipeline = write_pipeline(dir.path(), &f1_toml(state));
        F1 {
            input: format!("{prefix}.telemetry.raw"),
            output: format!("{prefix}.telemetry.analytics"),
            dlq: format!("{prefix}.telemetry.dead-letter"),
            prefix,
            group,
            env,
            _dir: dir,
            pipeline,
        }
    }

    async fn start(&self, name: &str) -> WeirProcess {
        start_weir(name, &self.pipeline, &self.env, READY).await
    }

    async fn settle(&self) {
        settled(&format!("{}.{STAGE}", self.group), &[&self.input], WAIT).await;
    }

    /// Records per input partition, so a test can say every partition (and
    /// so every process) had some.
    fn per_partition(&self) -> BTreeMap<i32, i64> {
        end_offsets(&self.input)
    }
}

/// Counts, for the ids of `ids`, how many got no output, one, or more.
fn tally(counts: &BTreeMap<(String, u64), usize>, ids: &[(String, u64)]) -> (usize, usize, usize) {
    let mut t = (0, 0, 0);
    for id in ids {
        match counts.get(id).copied().unwrap_or(0) {
            0 => t.0 += 1,
            1 => t.1 += 1,
            _ => t.2 += 1,
        }
    }
    t
}

fn ids(seqs: std::ops::Range<u64>) -> Vec<(String, u64)> {
    seqs.flat_map(|s| (1..=CARS).map(move |c| (car(c), s)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_dedup_windows_survive_restart_and_partition_move() {
    let f1 = F1::new("moves-f1", "changelog");
    eprintln!("topics under {}, group {}", f1.prefix, f1.group);

    // (a) One process sees seqs 0..50 of every car; everything processed,
    // its state flushed and its offsets committed.
    let mut first = f1.start("first").await;
    topics_exist(&[(&f1.input, 3), (&f1.output, 3)]).await;
    produce(&f1.input, &batch(0..50)).await;
    f1.settle().await;
    let before = outputs(&f1.output);
    let spread = f1.per_partition();
    eprintln!(
        "before the kill: {} distinct ids analysed of {}, input per partition {spread:?}",
        before.len(),
        50 * CARS
    );
    assert_eq!(before.len(), 50 * CARS, "analysed before the kill");
    assert!(
        spread.values().all(|n| *n > 0),
        "every input partition must carry cars, so every process restores some: {spread:?}"
    );

    // (b) SIGKILL, then two processes: the partitions (and their dedup
    // windows) move to processes that never saw them.
    first.kill();
    eprintln!("killed weir first");
    let mut second = f1.start("second").await;
    let mut third = f1.start("third").await;
    let sets = split(&[&second, &third], STAGE, 3).await;
    eprintln!(
        "after the kill: second holds {:?}, third {:?}",
        sets[0], sets[1]
    );

    // (c) seqs 20..50 again (already seen) and 50..80 (new).
    let mut again = batch(20..50);
    again.extend(batch(50..80));
    produce(&f1.input, &again).await;
    f1.settle().await;
    assert_running(&mut [&mut second, &mut third]);

    let after = outputs(&f1.output);
    let resent = ids(20..50);
    let new = ids(50..80);
    let untouched = ids(0..20);
    let (resent_none, resent_once, resent_twice) = tally(&after, &resent);
    let (new_none, new_once, new_twice) = tally(&after, &new);
    let (old_none, old_once, old_twice) = tally(&after, &untouched);
    let strangers = after.len() - tally_total(&after, &[&resent, &new, &untouched]);
    let dead = dead_letters(&f1.dlq);
    eprintln!(
        "after SIGKILL + 2 processes: {} re-sent ids: {resent_twice} analysed again, \
         {resent_once} once, {resent_none} never; {} new ids: {new_once} analysed once, \
         {new_twice} more than once, {new_none} never; {} untouched ids: {old_once} once, \
         {old_twice} more, {old_none} never; {strangers} unknown ids; {} dead-lettered",
        resent.len(),
        new.len(),
        untouched.len(),
        dead.len()
    );
    assert!(
        dead.is_empty(),
        "dead letters: {:?}",
        &dead[..dead.len().min(3)]
    );
    assert_eq!(strangers, 0, "outputs for ids never sent");
    assert_eq!(
        resent_twice, 0,
        "re-sent ids analysed a second time: the dedup window was not restored with its \
         partitions"
    );
    assert_eq!(
        resent_once,
        resent.len(),
        "re-sent ids analysed once in all"
    );
    assert_eq!(new_once, new.len(), "new ids analysed exactly once");
    assert_eq!(old_once, untouched.len(), "ids sent once analysed once");
}

/// How many of `counts`' ids are in one of `groups`.
fn tally_total(counts: &BTreeMap<(String, u64), usize>, groups: &[&Vec<(String, u64)>]) -> usize {
    let known: BTreeSet<&(String, u64)> = groups.iter().flat_map(|g| g.iter()).collect();
    counts.keys().filter(|id| known.contains(id)).count()
}

/// A partition that moves away and comes back after its new owner wrote
/// to it: the state restored must be what the other process left, not
/// what this process remembered of it before — in the store, and in the
/// plugin's own cache of it (the host starts a fresh instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_dedup_holds_when_a_partition_comes_back() {
    let f1 = F1::new("moves-f1-back", "changelog");
    eprintln!("topics under {}, group {}", f1.prefix, f1.group);

    // (a) `second` alone holds every partition and sees seqs 0..30.
    let mut second = f1.start("second").await;
    topics_exist(&[(&f1.input, 3), (&f1.output, 3)]).await;
    produce(&f1.input, &batch(0..30)).await;
    f1.settle().await;

    // (b) `third` joins and takes some partitions; seqs 30..60 are
    // analysed, those of third's partitions by third.
    let mut third = f1.start("third").await;
    let sets = split(&[&second, &third], STAGE, 3).await;
    eprintln!("second holds {:?}, third {:?}", sets[0], sets[1]);
    produce(&f1.input, &batch(30..60)).await;
    f1.settle().await;
    let third_partitions = sets[1].clone();

    // (c) SIGKILL third: its partitions come back to second.
    third.kill();
    eprintln!("killed weir third");
    eventually("second to hold every partition again", WAIT, || async {
        let s = assigned(&second, STAGE).await?;
        if s == (0..3).collect() {
            Ok(())
        } else {
            Err(format!("second holds {s:?}"))
        }
    })
    .await;
    // The host restored what third left: each of its cars' highest number
    // is 59 in the state second now serves.
    let cars = car_partitions(&f1.input);
    let hi = String::from_utf8(59u64.to_le_bytes().to_vec()).unwrap();
    for (c, p) in cars.iter().filter(|(_, p)| third_partitions.contains(p)) {
        let path = format!("/api/v1/stages/{STAGE}/state/dedup%2F{c}%2Fhi?partition={p}");
        let (status, v) = http(second.admin, "GET", &path, None).await;
        eprintln!("state of {c} (partition {p}) in second after the move back: {status} {v}");
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["values"][0]["value"],
            Value::String(hi.clone()),
            "restored state of {c}"
        );
    }

    // (d) seqs 30..60 again (analysed by third, already seen) and 60..80.
    let mut again = batch(30..60);
    again.extend(batch(60..80));
    produce(&f1.input, &again).await;
    f1.settle().await;
    assert_running(&mut [&mut second]);

    let after = outputs(&f1.output);
    let on_third = |id: &(String, u64)| {
        cars.get(&id.0)
            .is_some_and(|p| third_partitions.contains(p))
    };
    let resent = ids(30..60);
    let (resent_third, resent_second): (Vec<_>, Vec<_>) = resent.into_iter().partition(on_third);
    let new = ids(60..80);
    let (_, once_t, twice_t) = tally(&after, &resent_third);
    let (_, once_s, twice_s) = tally(&after, &resent_second);
    let (new_none, new_once, new_twice) = tally(&after, &new);
    let (first_none, first_once, first_twice) = tally(&after, &ids(0..30));
    let dead = dead_letters(&f1.dlq);
    eprintln!(
        "partitions {third_partitions:?} back from third: {} re-sent ids of them: \
         {twice_t} analysed again, {once_t} once; {} re-sent ids of second's own partitions: \
         {twice_s} again, {once_s} once; {} new ids: {new_once} once, {new_twice} more, \
         {new_none} never; first ids: {first_once} once, {first_twice} more, {first_none} \
         never; {} dead-lettered",
        resent_third.len(),
        resent_second.len(),
        new.len(),
        dead.len()
    );
    assert!(
        dead.is_empty(),
        "dead letters: {:?}",
        &dead[..dead.len().min(3)]
    );
    assert!(!resent_third.is_empty(), "third held partitions with cars");
    assert_eq!(twice_s, 0, "re-sent ids of partitions that never moved");
    assert_eq!(
        twice_t, 0,
        "ids that third analysed, re-sent after its partitions came back to second, were \
         analysed again"
    );
    assert_eq!(new_once, new.len(), "new ids analysed exactly once");
    assert_eq!(first_once + first_twice + first_none, 30 * CARS);
    assert_eq!(first_once, 30 * CARS, "ids sent once analysed once");
}

// --- Co-partitioning: the range assignor keeps partition p together ---------

fn two_input_toml() -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.left"
partitions = 3
[[topic]]
name = "{{prefix}}.right"
partitions = 3
[[topic]]
name = "{{prefix}}.joined"
partitions = 3
[[topic]]
name = "{{prefix}}.dead-letter"
partitions = 1

[[stage]]
name = "join"
plugin = "{passthrough}"
inputs = ["{{prefix}}.left", "{{prefix}}.right"]
outputs = {{ default = "{{prefix}}.joined" }}
dead_letter = "{{prefix}}.dead-letter"
state = "changelog"
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_inputs_stay_co_partitioned_across_processes() {
    let prefix = unique_prefix("moves-copart");
    let group = unique_prefix("moves-copart-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), &two_input_toml());
    let (left, right, joined) = (
        format!("{prefix}.left"),
        format!("{prefix}.right"),
        format!("{prefix}.joined"),
    );
    let stage_group = format!("{group}.join");

    let mut one = start_weir("one", &pipeline, &env, READY).await;
    let mut two = start_weir("two", &pipeline, &env, READY).await;
    topics_exist(&[(&left, 3), (&right, 3), (&joined, 3)]).await;

    // The group's own description: every member's partitions of `left`
    // are its partitions of `right`.
    let all: BTreeSet<i32> = (0..3).collect();
    let (state, members) = eventually("the group to describe two members", WAIT, || async {
        let (state, members) = describe_group(&stage_group)?;
        let assigned = members.values().filter(|a| !a.is_empty()).count();
        if state == "Stable" && members.len() == 2 && assigned == 2 {
            Ok((state, members))
        } else {
            Err(format!("{state}: {members:?}"))
        }
    })
    .await;
    eprintln!("group {stage_group} ({state}):");
    for (member, assignment) in &members {
        eprintln!("  {member}: {assignment:?}");
    }
    let empty = BTreeSet::new();
    let of = |a: &BTreeMap<String, BTreeSet<i32>>, t: &str| a.get(t).unwrap_or(&empty).clone();
    for (member, assignment) in &members {
        assert_eq!(
            of(assignment, &left),
            of(assignment, &right),
            "member {member} holds different partitions of the two inputs of a stateful stage: \
             {assignment:?}"
        );
        assert!(
            !of(assignment, &left).is_empty(),
            "member {member} holds nothing"
        );
    }
    for topic in [&left, &right] {
        let mut union = BTreeSet::new();
        let mut total = 0;
        for a in members.values() {
            total += of(a, topic).len();
            union.extend(of(a, topic));
        }
        assert_eq!(union, all, "partitions of {topic} held by the members");
        assert_eq!(total, 3, "a partition of {topic} held twice: {members:?}");
    }
    // Each process's status says what the group says it holds.
    let pid_member = |p: &WeirProcess| format!("weir-join-pid{}", p.pid().unwrap());
    let sets = split(&[&one, &two], "join", 3).await;
    eprintln!("status: one holds {:?}, two {:?}", sets[0], sets[1]);
    for (p, set) in [(&one, &sets[0]), (&two, &sets[1])] {
        let member = &members[&pid_member(p)];
        assert_eq!(
            &of(member, &left),
            set,
            "{}'s status and the group disagree",
            p.name
        );
    }

    // SIGKILL one: after its session times out, the survivor holds all.
    let (killed, survivor) = (&mut one, &mut two);
    killed.kill();
    eprintln!("killed weir {}", killed.name);
    let survivor_member = pid_member(survivor);
    let members = eventually("the survivor to hold every partition", WAIT, || async {
        let (state, members) = describe_group(&stage_group)?;
        let status = assigned(survivor, "join").await?;
        let holds = members.get(&survivor_member).cloned().unwrap_or_default();
        if state == "Stable"
            && members.len() == 1
            && of(&holds, &left) == all
            && of(&holds, &right) == all
            && status == all
        {
            Ok(members)
        } else {
            Err(format!("{state}: {members:?}; status {status:?}"))
        }
    })
    .await;
    eprintln!("after the kill: {members:?}");

    // And it processes both inputs' partitions.
    let records = |n: usize, side: &str| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| (format!("{side}-{i}"), format!("{side}-{i}").into_bytes()))
            .collect()
    };
    produce(&left, &records(60, "left")).await;
    produce(&right, &records(60, "right")).await;
    settled(&stage_group, &[&left, &right], WAIT).await;
    assert_running(&mut [survivor]);
    let out: BTreeSet<Vec<u8>> = read_all(&joined)
        .iter()
        .filter_map(|m| m.payload().map(|p| p.to_vec()))
        .collect();
    eprintln!("the survivor passed {} distinct records of 120", out.len());
    assert_eq!(out.len(), 120);
}

// --- The state query names the member holding a partition ------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_query_names_the_owner() {
    let f1 = F1::new("moves-query", "changelog");
    let env = |id: &str| {
        let mut env = f1.env.clone();
        env.insert("WEIR_INSTANCE_ID".into(), id.into());
        env
    };
    let alpha = start_weir("alpha", &f1.pipeline, &env("alpha"), READY).await;
    let beta = start_weir("beta", &f1.pipeline, &env("beta"), READY).await;
    topics_exist(&[(&f1.input, 3), (&f1.output, 3)]).await;
    let sets = split(&[&alpha, &beta], STAGE, 3).await;
    eprintln!("alpha holds {:?}, beta {:?}", sets[0], sets[1]);

    // Every car's window in keyed state: `dedup/<car>/hi` is its highest
    // sequence number (u64, little-endian), in the car's partition.
    const SEQS: u64 = 20;
    produce(&f1.input, &batch(0..SEQS)).await;
    f1.settle().await;
    let cars = car_partitions(&f1.input);
    let by_partition: BTreeMap<i32, &String> = cars.iter().map(|(c, p)| (*p, c)).collect();
    eprintln!("a car per partition: {by_partition:?}");
    assert_eq!(by_partition.len(), 3, "cars in every partition: {cars:?}");
    let hi = String::from_utf8((SEQS - 1).to_le_bytes().to_vec()).unwrap();

    let processes = [("alpha", &alpha, &sets[0]), ("beta", &beta, &sets[1])];
    for p in 0..3 {
        let (holder, holder_proc, _) = processes.iter().find(|(_, _, s)| s.contains(&p)).unwrap();
        let (other, other_proc, _) = processes.iter().find(|(_, _, s)| !s.contains(&p)).unwrap();
        let car = by_partition[&p];
        let path = format!("/api/v1/stages/{STAGE}/state/dedup%2F{car}%2Fhi?partition={p}");
        let want = format!("weir-{STAGE}-{holder}");
        let wrong = format!("weir-{STAGE}-{other}");

        // The process that does not hold it names the one that does.
        let (status, body) = eventually(
            &format!("{other} to name {want} for partition {p}"),
            Duration::from_secs(30),
            || async {
                let (status, body) = http(other_proc.admin, "GET", &path, None).await;
                let text = body.to_string();
                if status == 404 && text.contains(&want) {
                    Ok((status, text))
                } else {
                    Err(format!("{status}: {text}"))
                }
            },
        )
        .await;
        eprintln!("partition {p} asked of {other}: {status} {body}");
        assert_eq!(status, 404);
        assert!(body.contains(&want), "{body}");
        assert!(!body.contains(&wrong), "names itself: {body}");

        // The holder answers with the car's window.
        let (status, v) = http(holder_proc.admin, "GET", &path, None).await;
        eprintln!("partition {p} asked of {holder}: {status} {v}");
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["values"][0]["partition"], p, "{v}");
        assert_eq!(v["values"][0]["value"], Value::String(hi.clone()), "{v}");
        assert_eq!(
            v["values"].as_array().map(|a| a.len()),
            Some(1),
            "one partition asked for: {v}"
        );
    }
}
