use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::bindings::ProcessorPre;
use super::cache::ArtifactCache;
use super::error::WasmError;
use super::host::HostState;
use crate::metrics::Registry;
use crate::state::StateStore;

/// The version of the WIT package this host implements.
pub const WIT_VERSION: &str = "0.1.1";

pub(crate) use super::clocks::EPOCH_TICK;

#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled plugins are kept; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl RuntimeOptions {
    /// `$WEIR_CACHE_DIR`, else `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("WEIR_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("weir")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")));
        RuntimeOptions {
            cache_dir: dir.map(|d| d.join("components")),
        }
    }
}

/// The process-wide wasm engine and everything plugins share.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) metrics: Arc<Registry>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled plugin, ready to instantiate (wasmtime's `InstancePre`).
pub struct Plugin {
    pub path: PathBuf,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    pub(crate) pre: ProcessorPre<HostState>,
    /// Whether the compiled code came from the on-disk cache.
    pub cached: bool,
    pub load_time: Duration,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish()
    }
}

impl Runtime {
    /// The keyed state the plugins read and write.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// The metrics the plugins and stages update.
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.metrics
    }

    pub fn new(
        options: RuntimeOptions,
        state: Arc<dyn StateStore>,
        metrics: Arc<Registry>,
    ) -> Result<Self, WasmError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Deadlines by epoch, not fuel: a tick costs the hot path a load
            // and a compare per loop header instead of a counter per block.
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        super::timers::bound_timers(&mut linker).map_err(engine_err)?;
        super::bindings::Processor::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s: &mut HostState| s,
        )
        .map_err(engine_err)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.weak();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("weir-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(engine_err)?;
        }

        Ok(Runtime {
            engine,
            linker,
            cache: options.cache_dir.map(ArtifactCache::new),
            state,
            metrics,
            ticker_stop,
        })
    }

    /// Reads, compiles (or loads from the cache) and links a plugin, checking
    /// that it targets the `processor` world of this host's WIT version.
    pub fn load(&self, stage: &str, path: &Path) -> Result<Plugin, WasmError> {
        let start = Instant::now();
        let wasm = std::fs::read(path).map_err(|source| WasmError::Read {
            stage: stage.into(),
            path: path.into(),
            source,
        })?;
        let compile_err = |reason: String| WasmError::Compile {
            stage: stage.into(),
            path: path.into(),
            reason,
        };
        if !wasm.starts_with(b"\0asm") {
            return Err(compile_err(
                "the file does not start with the wasm magic number".into(),
            ));
        }
        let digest = hex::encode(Sha256::digest(&wasm));
        let (component, cached) = match &self.cache {
            Some(cache) => cache.load(&self.engine, &digest, &wasm),
            None => Component::new(&self.engine, &wasm).map(|c| (c, false)),
        }
        .map_err(|e| compile_err(format!("{e:#}")))?;

        let incompatible = |linker_error: wasmtime::Error| WasmError::Incompatible {
            stage: stage.into(),
            path: path.into(),
            version: WIT_VERSION,
            reason: mismatch_reason(&self.engine, &component, &linker_error),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(incompatible)?;
        let pre = ProcessorPre::new(pre).map_err(incompatible)?;
        let load_time = start.elapsed();
        tracing::info!(
            stage,
            plugin = %path.display(),
            digest = &digest[..12],
            cached,
            load_ms = load_time.as_millis() as u64,
            "plugin loaded"
        );
        Ok(Plugin {
            path: path.into(),
            digest,
            pre,
            cached,
            load_time,
        })
    }
}

/// Why a component does not link, for someone who has to fix it: which
/// version of `weir:plugin` it targets if not this host's, what it imports
/// and exports, and what the linker said.
fn mismatch_reason(
    engine: &Engine,
    component: &Component,
    linker_error: &wasmtime::Error,
) -> String {
    let ty = component.component_type();
    let imports: Vec<&str> = ty.imports(engine).map(|(name, _)| name).collect();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let versions: BTreeSet<&str> = imports
        .iter()
        .chain(&exports)
        .filter_map(|name| name.strip_prefix("weir:plugin/"))
        .filter_map(|name| name.split_once('@').map(|(_, version)| version))
        .filter(|&version| !runs_on_this_host(version))
        .collect();
    let what = if !versions.is_empty() {
        let found: Vec<String> = versions
            .iter()
            .map(|v| format!("weir:plugin@{v}"))
            .collect();
        format!(
            "the plugin targets another version of the contract, {}, but this host \
             implements weir:plugin@{WIT_VERSION}; rebuild it against this version \
             (the weir-plugin SDK of this weir release)",
            found.join(" and ")
        )
    } else if !imports
        .iter()
        .chain(&exports)
        .any(|name| name.starts_with("weir:plugin/"))
    {
        "the component uses no weir:plugin interface: is it a weir plugin?".to_string()
    } else {
        "its imports or exports do not have the types this host expects".to_string()
    };
    format!(
        "{what} (it imports {}; it exports {}; the linker says: {linker_error:#})",
        list(&imports),
        list(&exports),
    )
}

/// Whether a component built against `version` of the contract links here:
/// the same minor release, at this patch or an earlier one (wasmtime's
/// linker resolves `weir:plugin/state@0.1.0` to this host's 0.1.1).
fn runs_on_this_host(version: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        let v = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }
    match (parse(version), parse(WIT_VERSION)) {
        (Some((major, minor, patch)), Some((h_major, h_minor, h_patch))) => {
            major == h_major && minor == h_minor && (major, minor) != (0, 0) && patch <= h_patch
        }
        _ => false,
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "nothing".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn engine_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> WasmError {
    WasmError::Engine { source: e.into() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn earlier_patch_releases_run_on_this_host() {
        assert!(super::runs_on_this_host("0.1.0"));
        assert!(super::runs_on_this_host(super::WIT_VERSION));
        for other in ["0.1.2", "0.2.0", "0.0.9", "1.1.0", "0.1", "0.1.0-rc1", "x"] {
            assert!(!super::runs_on_this_host(other), "{other}");
        }
    }

    #[test]
    fn wit_version_matches_the_contract() {
        let wit = include_str!("../../../wit/plugin.wit");
        let package = format!("package weir:plugin@{};", super::WIT_VERSION);
        assert!(wit.lines().any(|l| l.trim() == package), "{package}");
    }
}
