//! Wiring for the `weir` binary: validate a pipeline, or run it until the
//! shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::PipelineConfig;
use crate::kafka::{KafkaClients, ensure_topics};
use crate::metrics::Registry;
use crate::state::MemoryState;
use crate::topology::Topology;
use crate::wasm::{Runtime, RuntimeOptions, StageContext, WasmError};

/// What `weir validate` learned about one stage's plugin.
#[derive(Debug)]
pub struct PluginReport {
    pub stage: String,
    pub digest: String,
    pub cached: bool,
}

/// Loads, links and initialises every stage's plugin, offline. Returns every
/// failure, not just the first.
pub fn validate_plugins(
    config: &PipelineConfig,
    options: RuntimeOptions,
) -> Result<Vec<PluginReport>, Vec<WasmError>> {
    let runtime = match Runtime::new(
        options,
        Arc::new(MemoryState::default()),
        Arc::new(Registry::default()),
    ) {
        Ok(r) => r,
        Err(e) => return Err(vec![e]),
    };
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for stage in &config.stages {
        let result = runtime.load(&stage.name, &stage.plugin).and_then(|plugin| {
            let plugin = Arc::new(plugin);
            runtime.instantiate(&plugin, &stage_context(stage))?;
            Ok(PluginReport {
                stage: stage.name.clone(),
                digest: plugin.digest.clone(),
                cached: plugin.cached,
            })
        });
        match result {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(reports)
    } else {
        Err(errors)
    }
}

fn stage_context(stage: &crate::config::StageConfig) -> StageContext {
    crate::topology::stage_context(stage)
}

/// Runs a pipeline against `bootstrap` until `shutdown` is cancelled, then
/// stops every stage cleanly (in-flight batches finish, offsets commit).
pub async fn run(
    config: PipelineConfig,
    bootstrap: String,
    embedded: bool,
    options: RuntimeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let clients = KafkaClients::new(bootstrap.clone(), &config.kafka);
    ensure_topics(&clients, &config.topics)
        .await
        .context("preparing topics")?;

    let metrics = Arc::new(Registry::default());
    let runtime = Arc::new(Runtime::new(
        options,
        Arc::new(MemoryState::default()),
        metrics.clone(),
    )?);
    let topology = Topology::build(&config, &runtime, &clients)?;

    let admin_state = AdminState::new(bootstrap, embedded, metrics);
    let listener = bind(config.admin.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "admin API listening");
    let server = {
        let shutdown = shutdown.clone();
        let app = admin::router(admin_state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        })
    };

    let running = topology.start(shutdown.clone())?;
    admin_state.set_stages(running.stages.clone());
    let result = running.wait().await;
    // A failed stage stops the whole pipeline, admin server included.
    shutdown.cancel();
    let _ = server.await;
    result?;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ([admin].listen)"))
}
