//! What the criterion benchmarks share: a runtime and one instance of a
//! plugin, with a generous deadline so that a slow machine measures rather
//! than times out.

use std::sync::Arc;
use std::time::Duration;

use weir::metrics::Registry;
use weir::state::MemoryState;
use weir::wasm::{Instance, Runtime, RuntimeOptions, StageContext};

/// The runtime must outlive the instance; return both.
pub fn instance(plugin: &str, config_json: &str) -> (Runtime, Instance) {
    let runtime = Runtime::new(
        RuntimeOptions::default(),
        Arc::new(MemoryState::default()),
        Arc::new(Registry::default()),
    )
    .unwrap();
    let plugin = Arc::new(runtime.load("bench", plugin.as_ref()).unwrap());
    let ctx = StageContext {
        stage: "bench".into(),
        outputs: vec!["default".into()],
        config_json: config_json.into(),
        call_timeout: Duration::from_secs(10),
        memory_limit: 256 << 20,
        env: Vec::new(),
        clock: false,
        quotas: Default::default(),
    };
    let instance = runtime.instantiate(&plugin, &ctx).unwrap();
    (runtime, instance)
}
