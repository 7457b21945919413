//! The wasm runtime against the real plugin components, no Kafka.

use std::sync::Arc;
use std::time::Duration;

use weir::metrics::Registry;
use weir::state::MemoryState;
use weir::wasm::{BatchBuilder, Runtime, RuntimeOptions, StageContext, ValidatedResult, WasmError};

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

fn ctx(stage: &str, outputs: &[&str], config: &str) -> StageContext {
    StageContext {
        stage: stage.into(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        config_json: config.into(),
        call_timeout: Duration::from_secs(5),
        memory_limit: 64 << 20,
        env: Vec::new(),
        clock: false,
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
    let rt = Runtime::new(
        RuntimeOptions { cache_dir: None },
        state.clone(),
        Arc::new(Registry::default()),
    )
    .unwrap();
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
    assert!(inst.process(batch(&["a", "panic"]).batch()).is_err());
    assert_eq!(state.get(&scope, b"seen/a"), None);

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
