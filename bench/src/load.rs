//! How long a plugin takes to load: compiled from scratch, and from the
//! on-disk artifact cache as on a restart (a new `Engine`, as in a new
//! process).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, ensure};
use serde::Serialize;
use weir::metrics::Registry;
use weir::state::MemoryState;
use weir::wasm::{Runtime, RuntimeOptions};

#[derive(Debug, Clone, Serialize)]
pub struct LoadTime {
    pub plugin: String,
    pub compile_ms: f64,
    pub cached_ms: f64,
    pub instantiate_ms: f64,
}

pub fn measure(name: &str, path: &Path, config_json: &str) -> Result<LoadTime> {
    let cache = std::env::temp_dir().join(format!("weir-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let runtime = || {
        Runtime::new(
            RuntimeOptions {
                cache_dir: Some(cache.clone()),
            },
            Arc::new(MemoryState::default()),
            Arc::new(Registry::default()),
        )
    };
    let cold = runtime()?.load(name, path)?;
    ensure!(!cold.cached, "the cache directory was not empty");
    // Best of three restarts: the page cache is warm after the first.
    let mut cached_ms = f64::MAX;
    let mut instantiate_ms = f64::MAX;
    for _ in 0..3 {
        let rt = runtime()?;
        let plugin = Arc::new(rt.load(name, path)?);
        ensure!(plugin.cached, "the restart compiled {name} again");
        cached_ms = cached_ms.min(plugin.load_time.as_secs_f64() * 1e3);
        let ctx = weir::wasm::StageContext {
            stage: name.into(),
            outputs: vec!["default".into()],
            config_json: config_json.into(),
            call_timeout: std::time::Duration::from_secs(1),
            memory_limit: 64 << 20,
            env: Vec::new(),
            clock: false,
            quotas: Default::default(),
        };
        let t = Instant::now();
        let _instance = rt.instantiate(&plugin, &ctx)?;
        instantiate_ms = instantiate_ms.min(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&cache);
    let result = LoadTime {
        plugin: name.into(),
        compile_ms: cold.load_time.as_secs_f64() * 1e3,
        cached_ms,
        instantiate_ms,
    };
    eprintln!(
        "  {name:<16} compile {:>7.1} ms  from cache {:>5.1} ms  instantiate+init {:>5.2} ms",
        result.compile_ms, result.cached_ms, result.instantiate_ms
    );
    Ok(result)
}
