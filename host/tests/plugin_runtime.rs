//! The wasm runtime against the real plugin components, no Kafka.

use std::sync::Arc;
use std::time::Duration;

use weir::metrics::Registry;
use weir::state::MemoryState;
use weir::wasm::{
    BatchBuilder, CallError, CallErrorKind, Instance, Quotas, Runtime, RuntimeOptions,
    StageContext, ValidatedResult, WasmError,
};

fn runtime(cache: Option<&std::path::Path>) -> Runtime {
    Runtime::new(
        RuntimeOptions {
            cache_dir: cache.map(|p| p.to_path_buf()),
        },
        Arc::new(MemoryState::default()),
        Arc::new(Registry::default()),
    )
    .unwrap()
}

/// A runtime without an artifact cache, over this state and registry.
fn runtime_with(state: Arc<MemoryState>, metrics: Arc<Registry>) -> Runtime {
    Runtime::new(RuntimeOptions { cache_dir: None }, state, metrics).unwrap()
}

fn ctx(stage: &str, outputs: &[&str], config: &str) -> StageContext {
    StageContext {
        stage: stage.into(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        config_json: config.into(),
        call_timeout: Duration::from_secs(5),
        memory_limit: 64 << 20,
        env: Vec::new(),
        clock: false,
        quotas: Quotas::default(),
    }
}

#[test]
fn passthrough_round_trips_a_batch() {
    let rt = runtime(None);
    let plugin = Arc::new(
        rt.load("pass", weir_test_programs::PASSTHROUGH.as_ref())
            .unwrap(),
    );
    let mut inst = rt
        .instantiate(&plugin, &ctx("pass", &["default"], "{}"))
        .unwrap();
    let mut b = BatchBuilder::new("in", 0, 3, 256);
    for i in 0..3 {
        let value = format!("value-{i}");
        b.push(
            i,
            Some(1000 + i),
            Some(b"key"),
            Some(value.as_bytes()),
            [("trace", Some(&b"abc"[..]))].into_iter(),
        );
    }
    let result = inst.process(b.batch()).unwrap();
    let v = ValidatedResult::new(result, 3, 1);
    for i in 0..3 {
        let outs: Vec<_> = v.outcome(i).unwrap().collect();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].target, 0);
        assert_eq!(outs[0].key, Some(&b"key"[..]));
        assert_eq!(outs[0].value, Some(format!("value-{i}").as_bytes()));
        assert_eq!(
            outs[0].headers().collect::<Vec<_>>(),
            vec![("trace", &b"abc"[..])]
        );
    }
}

#[test]
fn degradation_scores_and_rejects_per_message() {
    let rt = runtime(None);
    let plugin = Arc::new(
        rt.load("deg", weir_test_programs::F1_DEGRADATION.as_ref())
            .unwrap(),
    );
    let mut inst = rt
        .instantiate(&plugin, &ctx("deg", &["default"], "{}"))
        .unwrap();
    let good = br#"{"car_id":"CAR-1","seq":1,"tire_temp_fl":100,"tire_temp_fr":100,"tire_temp_rl":100,"tire_temp_rr":100}"#;
    let mut b = BatchBuilder::new("raw", 0, 3, 256);
    b.push(0, None, Some(b"CAR-1"), Some(good), std::iter::empty());
    b.push(
        1,
        None,
        Some(b"CAR-1"),
        Some(b"not json"),
        std::iter::empty(),
    );
    b.push(2, None, Some(b"CAR-1"), Some(good), std::iter::empty());
    let v = ValidatedResult::new(inst.process(b.batch()).unwrap(), 3, 1);
    let out: serde_json::Value =
        serde_json::from_slice(v.outcome(0).unwrap().next().unwrap().value.unwrap()).unwrap();
    assert_eq!(out["degradation_score"], 0.571);
    assert!(
        v.outcome(1)
            .err()
            .unwrap()
            .contains("not a telemetry JSON object")
    );
    assert!(v.outcome(2).is_ok());
}

#[test]
fn init_error_names_the_stage() {
    let rt = runtime(None);
    let plugin = Arc::new(
        rt.load("deg", weir_test_programs::F1_DEGRADATION.as_ref())
            .unwrap(),
    );
    let err = rt
        .instantiate(&plugin, &ctx("deg", &["analytics"], "{}"))
        .err()
        .unwrap();
    assert!(matches!(err, WasmError::Init { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("stage deg") && msg.contains("no output \"default\""),
        "{msg}"
    );
    let err = rt
        .instantiate(&plugin, &ctx("deg", &["default"], r#"{"bogus":1}"#))
        .err()
        .unwrap();
    assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
}

#[test]
fn not_wasm_is_refused_with_the_stage_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.wasm");
    std::fs::write(&path, b"hello").unwrap();
    let err = runtime(None).load("bad-stage", &path).unwrap_err();
    assert!(matches!(err, WasmError::Compile { .. }));
    assert!(err.to_string().starts_with("stage bad-stage: "), "{err}");
}

#[test]
fn compiled_plugins_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(Some(dir.path()));
    let first = rt
        .load("p", weir_test_programs::PASSTHROUGH.as_ref())
        .unwrap();
    assert!(!first.cached);
    let second = rt
        .load("p", weir_test_programs::PASSTHROUGH.as_ref())
        .unwrap();
    assert!(second.cached);
    assert_eq!(first.digest, second.digest);
    // A new engine with the same settings reuses it, and it runs.
    let rt2 = runtime(Some(dir.path()));
    let plugin = Arc::new(
        rt2.load("p", weir_test_programs::PASSTHROUGH.as_ref())
            .unwrap(),
    );
    assert!(plugin.cached);
    let mut inst = rt2
        .instantiate(&plugin, &ctx("p", &["default"], "{}"))
        .unwrap();
    let mut b = BatchBuilder::new("in", 0, 1, 8);
    b.push(0, None, None, Some(b"x"), std::iter::empty());
    assert!(inst.process(b.batch()).is_ok());
}

#[test]
fn a_trapped_call_leaves_no_state_behind() {
    use weir::state::{Scope, StateStore};
    let state = Arc::new(MemoryState::default());
    let rt = runtime_with(state.clone(), Arc::new(Registry::default()));
    let plugin = Arc::new(
        rt.load("hostile", weir_test_programs::HOSTILE.as_ref())
            .unwrap(),
    );
    let stage = ctx("hostile", &["default"], "{}");
    let scope = Scope {
        stage: "hostile".into(),
        partition: 2,
    };
    let batch = |values: &[&str]| {
        let mut b = BatchBuilder::new("in", 2, values.len(), 64);
        for (i, v) in values.iter().enumerate() {
            b.push(i as i64, None, None, Some(v.as_bytes()), std::iter::empty());
        }
        b
    };

    // `a` is recorded before the panic, in the same call: the write must
    // not survive, or a retry would find `a` already done.
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    let err = inst.process(batch(&["a", "panic"]).batch()).unwrap_err();
    assert_eq!(state.get(&scope, b"seen/a"), None);
    // The dead-letter reason is one line: the trap and the panic message,
    // not wasmtime's multi-line backtrace.
    assert_eq!(err.kind, CallErrorKind::Trap);
    assert!(!err.message.contains('\n'), "{:?}", err.message);
    assert!(err.message.contains("unreachable"), "{}", err.message);
    assert!(err.message.contains("told to panic"), "{}", err.message);
    assert!(!err.message.contains("RUST_BACKTRACE"), "{}", err.message);

    // A call that returns applies its writes, to its partition only.
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    let v = ValidatedResult::new(inst.process(batch(&["a", "b"]).batch()).unwrap(), 2, 1);
    assert!(v.outcome(0).is_ok() && v.outcome(1).is_ok());
    assert_eq!(state.get(&scope, b"seen/a").as_deref(), Some(&b"1"[..]));
    assert_eq!(state.get(&scope, b"seen/b").as_deref(), Some(&b"1"[..]));
    let other = Scope {
        stage: "hostile".into(),
        partition: 0,
    };
    assert_eq!(state.get(&other, b"seen/a"), None);
}

// --- Sandboxing and fault isolation -------------------------------------

fn hostile(rt: &Runtime) -> Arc<weir::wasm::Plugin> {
    Arc::new(
        rt.load("hostile", weir_test_programs::HOSTILE.as_ref())
            .unwrap(),
    )
}

/// Sends one message with `value` and returns the values it emitted.
fn send(inst: &mut Instance, value: &str) -> Result<Vec<Vec<u8>>, CallError> {
    let mut b = BatchBuilder::new("in", 0, 1, value.len());
    b.push(0, None, None, Some(value.as_bytes()), std::iter::empty());
    let v = ValidatedResult::new(inst.process(b.batch())?, 1, 1);
    let records = v.outcome(0).expect("the message was not rejected");
    Ok(records
        .map(|r| r.value.unwrap_or_default().to_vec())
        .collect())
}

/// Sends one message with `value` at `offset`; returns the values emitted.
fn send_at(inst: &mut Instance, offset: i64, value: &str) -> Result<Vec<Vec<u8>>, CallError> {
    let mut b = BatchBuilder::new("in", 0, 1, value.len());
    b.push(
        offset,
        None,
        None,
        Some(value.as_bytes()),
        std::iter::empty(),
    );
    let v = ValidatedResult::new(inst.process(b.batch())?, 1, 1);
    let records = v.outcome(0).expect("the message was not rejected");
    Ok(records
        .map(|r| r.value.unwrap_or_default().to_vec())
        .collect())
}

/// Sends `value` and returns the one record emitted, as text.
fn reply(inst: &mut Instance, value: &str) -> String {
    let mut out = send(inst, value).unwrap();
    assert_eq!(out.len(), 1, "{value}: expected one record");
    String::from_utf8(out.pop().unwrap()).unwrap()
}

fn limited(timeout_ms: u64, memory: usize) -> StageContext {
    StageContext {
        call_timeout: Duration::from_millis(timeout_ms),
        memory_limit: memory,
        ..ctx("hostile", &["default"], "{}")
    }
}

#[test]
fn an_infinite_loop_is_interrupted_at_its_deadline() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let stage = limited(100, 64 << 20);
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    let start = std::time::Instant::now();
    let err = send(&mut inst, "loop").unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    assert_eq!(err.stage, "hostile");
    assert!(
        elapsed >= Duration::from_millis(80) && elapsed < Duration::from_millis(300),
        "interrupted after {elapsed:?}"
    );
    // A fresh instance works.
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    assert_eq!(send(&mut inst, "after").unwrap(), vec![b"after".to_vec()]);
}

#[test]
fn init_gets_more_time_than_a_call_and_calls_keep_their_deadline() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    // 300 ms of init under a 100 ms call timeout: init runs once per
    // instance and gets seconds, not the per-message deadline.
    let stage = StageContext {
        config_json: r#"{"init_sleep_ms": 300}"#.into(),
        ..limited(100, 64 << 20)
    };
    let start = std::time::Instant::now();
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    // The calls after it are held to 100 ms again.
    let start = std::time::Instant::now();
    let err = send(&mut inst, "loop").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_long_sleep_in_a_host_call_is_cut_at_the_deadline() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let mut inst = rt.instantiate(&plugin, &limited(100, 64 << 20)).unwrap();
    let start = std::time::Instant::now();
    let err = send(&mut inst, "sleep:10000").unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    assert!(elapsed < Duration::from_millis(300), "slept {elapsed:?}");
    // A short sleep within the deadline still sleeps, clock grant or not.
    let mut inst = rt.instantiate(&plugin, &limited(1000, 64 << 20)).unwrap();
    let start = std::time::Instant::now();
    assert_eq!(reply(&mut inst, "sleep:20"), "slept");
    assert!(start.elapsed() >= Duration::from_millis(20));
}

#[test]
fn a_memory_bomb_traps_at_the_cap() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let cap = 16 << 20;
    let mut inst = rt.instantiate(&plugin, &limited(5000, cap)).unwrap();
    let before = inst.memory_high_water();
    assert!(before > 0 && before < cap, "{before}");
    let err = send(&mut inst, "alloc").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Memory, "{err}");
    assert!(err.message.contains("limit of 16777216 bytes"), "{err}");
    let high = inst.memory_high_water();
    assert!(high <= cap, "high-water mark {high} over the cap {cap}");
    assert!(
        high > cap - (2 << 20),
        "high-water mark {high} far below the cap"
    );
    // A fresh instance works, and starts low again.
    let mut inst = rt.instantiate(&plugin, &limited(5000, cap)).unwrap();
    assert_eq!(send(&mut inst, "ok").unwrap(), vec![b"ok".to_vec()]);
    assert_eq!(inst.memory_high_water(), before);
}

/// The resident set of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn memory_bombs_leave_the_host_rss_bounded() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let stage = limited(5000, 32 << 20);
    let bomb = || {
        let mut inst = rt.instantiate(&plugin, &stage).unwrap();
        let err = send(&mut inst, "alloc").unwrap_err();
        assert_eq!(err.kind, CallErrorKind::Memory, "{err}");
    };
    bomb(); // warm up: code, lazily made runtime structures
    let start = rss();
    for _ in 0..20 {
        bomb();
    }
    let growth = rss().saturating_sub(start);
    // 20 bombs of 32 MiB held on to would be 640 MiB.
    assert!(growth < 200 << 20, "RSS grew by {} MiB", growth >> 20);
}

#[test]
fn files_environment_and_sockets_are_denied() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let mut inst = rt
        .instantiate(&plugin, &ctx("hostile", &["default"], "{}"))
        .unwrap();

    let files = reply(&mut inst, "read-file");
    assert!(
        files.starts_with("file: denied: ") && files.contains("; dir: denied: "),
        "{files}"
    );
    assert!(
        !files.contains("LEAK") && !files.contains("root:"),
        "{files}"
    );

    let env = reply(&mut inst, "env");
    assert_eq!(env, "HOME: denied; PATH: denied; vars=0");
    for name in ["HOME", "PATH"] {
        if let Ok(value) = std::env::var(name) {
            assert!(!env.contains(&value), "{name} leaked: {env}");
        }
    }

    let sockets = reply(&mut inst, "socket");
    assert!(
        sockets.starts_with("tcp: denied: ") && sockets.contains("; udp: denied: "),
        "{sockets}"
    );
    assert!(!sockets.contains("LEAK"), "{sockets}");
}

#[test]
fn a_granted_environment_variable_is_visible_and_only_it() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let stage = StageContext {
        env: vec![("WEIR_TEST_GRANTED".into(), "granted-value".into())],
        ..ctx("hostile", &["default"], "{}")
    };
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    assert_eq!(
        reply(&mut inst, "env:WEIR_TEST_GRANTED"),
        "HOME: denied; PATH: denied; WEIR_TEST_GRANTED: value=granted-value; vars=1"
    );
}

#[test]
fn clocks_read_zero_without_the_grant() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let mut inst = rt
        .instantiate(&plugin, &ctx("hostile", &["default"], "{}"))
        .unwrap();
    assert_eq!(
        reply(&mut inst, "clock"),
        "wall_ms=0 instant_advances=false"
    );

    let granted = StageContext {
        clock: true,
        ..ctx("hostile", &["default"], "{}")
    };
    let mut inst = rt.instantiate(&plugin, &granted).unwrap();
    let seen = reply(&mut inst, "clock");
    let wall_ms: u128 = seen
        .strip_prefix("wall_ms=")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{seen}"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(now_ms.abs_diff(wall_ms) < 60_000, "{seen} vs now {now_ms}");
    assert!(seen.ends_with("instant_advances=true"), "{seen}");
}

#[test]
fn big_and_many_emit_what_they_say() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let mut inst = rt
        .instantiate(&plugin, &ctx("hostile", &["default"], "{}"))
        .unwrap();
    let big = send(&mut inst, "big:100000").unwrap();
    assert_eq!(big.len(), 1);
    assert!(big[0].len() == 100_000 && big[0].iter().all(|&b| b == b'x'));
    let many = send(&mut inst, "many:50").unwrap();
    assert_eq!(many.len(), 50);
    assert_eq!(many[49], b"49");
}

// Plugin stdout and stderr, captured with a tracing layer on this thread.

mod capture {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    #[derive(Debug, Clone)]
    pub struct Event {
        pub level: tracing::Level,
        pub fields: BTreeMap<String, String>,
    }

    impl Event {
        pub fn field(&self, name: &str) -> Option<&str> {
            self.fields.get(name).map(String::as_str)
        }
    }

    #[derive(Debug, Clone, Default)]
    pub struct Events(Arc<Mutex<Vec<Event>>>);

    impl Events {
        pub fn take(&self) -> Vec<Event> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    struct Fields(BTreeMap<String, String>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().into(), value.into());
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().into(), format!("{value:?}"));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Events {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(BTreeMap::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(Event {
                level: *event.metadata().level(),
                fields: fields.0,
            });
        }
    }

    /// Runs `f` with every tracing event on this thread captured.
    pub fn events<R>(f: impl FnOnce(&Events) -> R) -> R {
        let events = Events::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        tracing::subscriber::with_default(subscriber, || f(&events))
    }
}

/// The plugin's lines of `stream`, in order.
fn lines<'a>(events: &'a [capture::Event], stream: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.field("stream") == Some(stream) && e.field("dropped").is_none())
        .map(|e| e.field("message").unwrap())
        .collect()
}

#[test]
fn stdout_and_stderr_go_to_tracing_with_the_stage() {
    capture::events(|events| {
        let rt = runtime(None);
        let plugin = hostile(&rt);
        let mut inst = rt
            .instantiate(&plugin, &ctx("printer", &["default"], "{}"))
            .unwrap();
        events.take();
        assert_eq!(reply(&mut inst, "print:3"), "printed 3");
        let seen = events.take();
        assert_eq!(
            lines(&seen, "stdout"),
            ["stdout line 0", "stdout line 1", "stdout line 2"]
        );
        assert_eq!(
            lines(&seen, "stderr"),
            ["stderr line 0", "stderr line 1", "stderr line 2"]
        );
        for e in seen.iter().filter(|e| e.field("stream").is_some()) {
            assert_eq!(e.field("stage"), Some("printer"), "{e:?}");
            let expected = match e.field("stream") {
                Some("stdout") => tracing::Level::INFO,
                _ => tracing::Level::WARN,
            };
            assert_eq!(e.level, expected, "{e:?}");
        }
        assert_eq!(inst.stdio_lines_dropped(), 0);
    });
}

#[test]
fn plugin_output_is_rate_limited() {
    capture::events(|events| {
        let rt = runtime(None);
        let plugin = hostile(&rt);
        let mut inst = rt
            .instantiate(&plugin, &ctx("chatty", &["default"], "{}"))
            .unwrap();
        events.take();
        // 1,000 lines at once: the burst of 100 gets through, plus 100 a
        // second of refill while the call runs.
        let start = std::time::Instant::now();
        assert_eq!(reply(&mut inst, "print:500"), "printed 500");
        let refill = (start.elapsed().as_secs_f64() * 100.0) as usize;
        let logged = events.take();
        let n = lines(&logged, "stdout").len() + lines(&logged, "stderr").len();
        assert!(n >= 100 && n <= 101 + refill, "{n} lines logged");
        assert!(n < 1000, "nothing was dropped");
        let dropped = inst.stdio_lines_dropped();
        assert_eq!(dropped as usize, 1000 - n);
        // Logging resumes once the bucket refills. What was dropped is
        // summarised when logging resumes (at most once a second) and when
        // the instance goes.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(reply(&mut inst, "print:1"), "printed 1");
        drop(inst);
        let after = events.take();
        let summaries: Vec<_> = logged
            .iter()
            .chain(&after)
            .filter(|e| e.field("dropped").is_some())
            .collect();
        assert!((1..=4).contains(&summaries.len()), "{summaries:?}");
        for e in &summaries {
            assert_eq!(e.level, tracing::Level::WARN);
            assert_eq!(e.field("stage"), Some("chatty"));
        }
        let summarised: u64 = summaries
            .iter()
            .map(|e| e.field("dropped").unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(summarised, dropped);
        assert_eq!(lines(&after, "stdout"), ["stdout line 0"]);
    });
}

#[test]
fn a_plugin_built_against_another_wit_version_is_refused() {
    let err = runtime(None)
        .load("old-stage", weir_test_programs::WRONG_WIT.as_ref())
        .unwrap_err();
    assert!(matches!(err, WasmError::Incompatible { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("stage old-stage: "), "{msg}");
    assert!(
        msg.contains("targets another version of the contract, weir:plugin@0.0.9")
            && msg.contains(&format!(
                "this host implements weir:plugin@{}",
                weir::wasm::WIT_VERSION
            )),
        "{msg}"
    );
}

#[test]
fn a_plugin_built_against_the_previous_patch_release_still_runs() {
    use weir::state::{Scope, StateStore};
    let state = Arc::new(MemoryState::default());
    let metrics = Arc::new(Registry::default());
    let rt = runtime_with(state.clone(), metrics.clone());
    let plugin = Arc::new(
        rt.load("old", weir_test_programs::PREVIOUS_WIT.as_ref())
            .unwrap(),
    );
    let mut inst = rt
        .instantiate(&plugin, &ctx("old", &["default"], "{}"))
        .unwrap();
    let mut b = BatchBuilder::new("in", 1, 3, 64);
    for i in 0..3 {
        b.push(i, None, None, Some(b"v"), std::iter::empty());
    }
    let v = ValidatedResult::new(inst.process(b.batch()).unwrap(), 3, 1);
    assert!((0..3).all(|i| v.outcome(i).unwrap().count() == 1));
    // Its 0.1.0 imports of `state` and `metrics` reached this host.
    let scope = Scope {
        stage: "old".into(),
        partition: 1,
    };
    assert_eq!(
        state.get(&scope, b"seen").as_deref(),
        Some(&3u64.to_le_bytes()[..])
    );
    let forwarded = metrics
        .plugin_metrics()
        .into_iter()
        .find(|(k, _)| k.stage == "old" && k.name == "forwarded")
        .map(|(_, v)| v);
    assert_eq!(
        forwarded,
        Some(weir::metrics::PluginMetricValue::Counter(3))
    );
}

#[test]
fn state_written_with_a_ttl_expires_on_the_host_clock() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;
    use weir::state::StateStore;
    let base = Instant::now();
    let offset_ms = Arc::new(AtomicU64::new(0));
    let clock_offset = offset_ms.clone();
    let state = Arc::new(MemoryState::with_clock(Arc::new(move || {
        base + Duration::from_millis(clock_offset.load(Ordering::SeqCst))
    })));
    let rt = runtime_with(state.clone(), Arc::new(Registry::default()));
    let plugin = Arc::new(
        rt.load("analytics", weir_test_programs::ORDER_ANALYTICS.as_ref())
            .unwrap(),
    );
    let mut inst = rt
        .instantiate(
            &plugin,
            &ctx("analytics", &["default"], r#"{"dedup_ttl_ms": 60000}"#),
        )
        .unwrap();
    let event =
        br#"{"eventId": "e1", "eventType": "OrderPlaced", "createdAt": "2026-11-23T10:00:00Z"}"#;
    let mut send = |offset: i64| {
        let mut b = BatchBuilder::new("in", 0, 1, 256);
        b.push(offset, None, None, Some(&event[..]), std::iter::empty());
        let v = ValidatedResult::new(inst.process(b.batch()).unwrap(), 1, 1);
        v.outcome(0).unwrap().count()
    };
    // Counted: the totals record and the minute record.
    assert_eq!(send(0), 2);
    // `event/e1`, `totals` and one minute bucket.
    assert_eq!(state.len("analytics"), 3);
    offset_ms.store(59_999, Ordering::SeqCst);
    assert_eq!(send(1), 0, "a duplicate inside the window");
    offset_ms.store(60_000, Ordering::SeqCst);
    assert_eq!(state.len("analytics"), 2, "the id has expired");
    assert_eq!(state.expired("analytics"), 1);
    assert_eq!(send(2), 2, "counted again once forgotten");
}

// --- Quotas on what a plugin holds in the host ---------------------------

fn with_quotas(quotas: Quotas) -> StageContext {
    StageContext {
        quotas,
        ..ctx("hostile", &["default"], "{}")
    }
}

#[test]
fn a_state_bomb_fails_as_state_limit_and_the_store_stays_under_the_quota() {
    use weir::state::{StateStore, Usage};
    let state = Arc::new(MemoryState::default());
    let rt = runtime_with(state.clone(), Arc::new(Registry::default()));
    let plugin = hostile(&rt);
    let quota = 16 << 20;
    let stage = with_quotas(Quotas {
        state_max_bytes: quota,
        ..Quotas::default()
    });
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    // One call over the quota: refused as it writes, nothing applied.
    let err = send(&mut inst, "state-bomb:32").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::StateLimit, "{err}");
    assert_eq!(err.kind.as_str(), "state_limit");
    assert!(err.message.contains("state_max_bytes of 16777216"), "{err}");
    assert_eq!(state.usage("hostile"), Usage::default());

    // Calls within it apply, until the stage as a whole would pass it.
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    let mut applied = 0;
    for offset in 0..8 {
        match send_at(&mut inst, offset, "state-bomb:4") {
            Ok(_) => applied += 1,
            Err(e) => {
                assert_eq!(e.kind, CallErrorKind::StateLimit, "{e}");
                inst = rt.instantiate(&plugin, &stage).unwrap();
            }
        }
        let usage = state.usage("hostile");
        assert!(usage.bytes <= quota as u64, "{usage:?}");
    }
    // 4 MiB of values plus their keys: three calls fit in 16 MiB, not four.
    assert_eq!(applied, 3);
    assert_eq!(state.usage("hostile").keys, 3 * 64);
    // Other writes still go through while there is room.
    assert_eq!(send(&mut inst, "small").unwrap(), vec![b"small".to_vec()]);

    // The key quota, likewise.
    let stage = with_quotas(Quotas {
        state_max_keys: 3 * 64 + 100,
        ..Quotas::default()
    });
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    let err = send_at(&mut inst, 100, "state-bomb:8").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::StateLimit, "{err}");
    assert!(err.message.contains("state_max_keys of 292"), "{err}");
    assert_eq!(state.usage("hostile").keys, 3 * 64 + 1);
}

#[test]
fn state_bombs_leave_the_host_rss_bounded() {
    use weir::state::StateStore;
    let state = Arc::new(MemoryState::default());
    let rt = runtime_with(state.clone(), Arc::new(Registry::default()));
    let plugin = hostile(&rt);
    // The default quota, 64 MiB.
    let stage = with_quotas(Quotas::default());
    let mut inst = rt.instantiate(&plugin, &stage).unwrap();
    send(&mut inst, "warm-up").unwrap();
    let start = rss();
    let mut refused = 0;
    // 8 MiB per call, 64 calls: 512 MiB if nothing stopped it.
    for offset in 0..64 {
        if let Err(e) = send_at(&mut inst, offset, "state-bomb:8") {
            assert_eq!(e.kind, CallErrorKind::StateLimit, "{e}");
            refused += 1;
            inst = rt.instantiate(&plugin, &stage).unwrap();
        }
    }
    assert!(refused >= 56, "{refused} of 64 refused");
    let held = state.usage("hostile").bytes;
    assert!(held <= 64 << 20, "{held} bytes held");
    let growth = rss().saturating_sub(start);
    assert!(growth < 200 << 20, "RSS grew by {} MiB", growth >> 20);
}

#[test]
fn a_long_rejection_reason_is_cut() {
    let rt = runtime(None);
    let plugin = hostile(&rt);
    let mut inst = rt
        .instantiate(&plugin, &ctx("hostile", &["default"], "{}"))
        .unwrap();
    let mut b = BatchBuilder::new("in", 0, 1, 32);
    let value = format!("reason:{}", 2 << 20);
    b.push(0, None, None, Some(value.as_bytes()), std::iter::empty());
    let v = ValidatedResult::new(inst.process(b.batch()).unwrap(), 1, 1);
    let reason = v.outcome(0).err().unwrap();
    assert!(
        reason.len() <= weir::wasm::MAX_REASON_BYTES,
        "{} bytes",
        reason.len()
    );
    let (kept, marker) = reason.rsplit_once("… (").unwrap();
    let cut: usize = marker.strip_suffix(" bytes cut)").unwrap().parse().unwrap();
    assert!(kept.starts_with("rrrr") && kept.len() > 900, "{kept}");
    assert_eq!(kept.len() + cut, 2 << 20);
}

/// `GET /metrics` of an admin API over `metrics`.
fn scrape(metrics: Arc<Registry>) -> String {
    use tower::ServiceExt;
    let router = weir::admin::router(weir::admin::AdminState::new(
        "localhost:9092".into(),
        false,
        metrics,
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let request = axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    })
}

#[path = "../../tests/src/exposition.rs"]
mod exposition;

#[test]
fn metric_series_are_capped_and_metrics_still_parse() {
    let metrics = Arc::new(Registry::default());
    let rt = runtime_with(Arc::new(MemoryState::default()), metrics.clone());
    let plugin = hostile(&rt);
    let mut inst = rt
        .instantiate(&plugin, &ctx("hostile", &["default"], "{}"))
        .unwrap();
    let warned = capture::events(|events| {
        assert_eq!(reply(&mut inst, "labels:10000"), "labelled 10000");
        assert_eq!(reply(&mut inst, "labels:10"), "labelled 10");
        events
            .take()
            .into_iter()
            .filter(|e| e.field("stage") == Some("hostile") && e.field("reason").is_some())
            .count()
    });
    // Once for the limit and once for the invalid names, however often.
    assert_eq!(warned, 2);
    let series = metrics.plugin_metrics();
    assert_eq!(series.len(), Quotas::default().max_metric_series);
    let stage = metrics.stage("hostile").snapshot();
    // 9,000 series past the limit, then 3 invalid label names and an
    // invalid metric name, twice (the known series of the second call
    // update).
    assert_eq!(stage.metric_series_dropped, 9_000 + 2 * 4);

    let text = scrape(metrics);
    let samples = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let labelled: Vec<_> = samples
        .iter()
        .filter(|(name, _, _)| name == "weir_plugin_labelled")
        .collect();
    assert_eq!(labelled.len(), 1_000);
    for (_, labels, _) in &labelled {
        assert_eq!(labels["stage"], "hostile");
        assert_eq!(labels["text"], "a\\b\"c\nd", "escaped and read back");
    }
    assert!(
        samples.iter().any(|(name, labels, value)| name
            == "weir_stage_metric_series_dropped_total"
            && labels["stage"] == "hostile"
            && *value == 9_008.0),
        "{text}"
    );
}

#[test]
fn the_log_import_is_rate_limited_and_cut() {
    capture::events(|events| {
        let rt = runtime(None);
        let plugin = hostile(&rt);
        let mut inst = rt
            .instantiate(&plugin, &ctx("logger", &["default"], "{}"))
            .unwrap();
        events.take();
        let start = std::time::Instant::now();
        assert_eq!(reply(&mut inst, "log-flood:1000"), "logged 1000");
        let refill = (start.elapsed().as_secs_f64() * 100.0) as usize;
        let logged = events.take();
        let lines: Vec<_> = logged
            .iter()
            .filter(|e| e.field("stage") == Some("logger") && e.field("dropped").is_none())
            .collect();
        let n = lines.len();
        assert!(n >= 100 && n <= 101 + refill, "{n} log lines");
        assert_eq!(inst.stdio_lines_dropped() as usize, 1000 - n);
        // The first message, 10,000 bytes, is cut at 4 KiB.
        let first = lines[0];
        assert_eq!(first.field("message").map(str::len), Some(4096));
        assert_eq!(first.field("truncated"), Some("true"));
        assert_eq!(first.field("partition"), Some("0"));
        assert_eq!(lines[1].field("message"), Some("flood 1"));
        drop(inst);
        let summarised: u64 = logged
            .iter()
            .chain(&events.take())
            .filter(|e| e.field("stream") == Some("log"))
            .filter_map(|e| e.field("dropped")?.parse::<u64>().ok())
            .sum();
        assert_eq!(summarised as usize, 1000 - n);
    });
}
