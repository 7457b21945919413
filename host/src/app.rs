//! Wiring for the `weir` binary: validate a pipeline, or run it until the
//! shutdown token fires.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::PipelineConfig;
use crate::config::{Env, ProcessEnv};
#[cfg(feature = "scenarios")]
use crate::control::{RunControl, StartRequest};
use crate::kafka::{KafkaClients, ensure_topics};
use crate::metrics::Registry;
use crate::state::MemoryState;
use crate::topology::StageControl;
use crate::topology::Topology;
use crate::topology::handle::{Command, ReloadHandle};
use crate::topology::reload::{Controller, ReloadOutcome};
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

/// How `run` runs a pipeline, beyond the pipeline itself.
#[derive(Clone)]
pub struct RunOptions {
    pub runtime: RuntimeOptions,
    /// The environment pipeline.toml was read with; a reload reads the file
    /// again with it.
    pub env: Arc<dyn Env + Send + Sync>,
    /// Reload when pipeline.toml or a plugin file changes.
    pub watch: bool,
    /// Requests to the admin API that change state need this bearer token.
    pub admin_token: Option<String>,
    /// Start consuming at once; otherwise wait for `POST /api/v1/start`.
    /// `false` here or in `[admin].autostart` starts paused.
    pub autostart: bool,
    /// A generator to start with the pipeline.
    #[cfg(feature = "scenarios")]
    pub generator: Option<StartRequest>,
    pub reload: ReloadHandle,
    /// On stop, how long stages wait for the broker to acknowledge what is
    /// in flight; what is not acknowledged by then is consumed again after
    /// a restart.
    pub drain_timeout: std::time::Duration,
    /// This process's static group membership id (`--instance-id`).
    pub instance_id: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runtime: RuntimeOptions::default(),
            env: Arc::new(ProcessEnv),
            watch: true,
            admin_token: None,
            autostart: true,
            #[cfg(feature = "scenarios")]
            generator: None,
            drain_timeout: crate::topology::DEFAULT_DRAIN_TIMEOUT,
            reload: ReloadHandle::default(),
            instance_id: None,
        }
    }
}

async fn reload_blocking(
    controller: &Arc<Mutex<Controller>>,
    trigger: &'static str,
    requested_at: Instant,
) -> ReloadOutcome {
    let controller = controller.clone();
    tokio::task::spawn_blocking(move || {
        controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reload(trigger, requested_at)
    })
    .await
    .unwrap_or_else(|e| ReloadOutcome {
        ok: false,
        trigger: trigger.to_string(),
        error: Some(format!("reload panicked: {e}")),
        generation: 0,
        at_ms: 0,
        duration_ms: 0,
        swapped: Vec::new(),
    })
}

/// Serves reload requests and, when watching, file changes (debounced),
/// one reload at a time, until `shutdown`.
fn spawn_reloader(
    controller: Controller,
    watch: bool,
    handle: &ReloadHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = handle.attach(controller.status());
    let (fs_tx, mut changes) = mpsc::unbounded_channel::<()>();
    let mut watched = controller.watched_files();
    let mut watcher = if watch {
        Some(
            crate::watch::watch(&watched, fs_tx.clone())
                .context("watching the pipeline's files")?,
        )
    } else {
        None
    };
    let controller = Arc::new(Mutex::new(controller));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(command) = requests.recv() => match command {
                    Command::Reload { trigger, reply } => {
                        let outcome = reload_blocking(&controller, trigger, Instant::now()).await;
                        let _ = reply.send(outcome);
                    }
                    Command::Replay { stage, reply } => {
                        let controller = controller.clone();
                        let outcome = tokio::task::spawn_blocking(move || {
                            controller.lock().unwrap_or_else(|e| e.into_inner()).replay(&stage)
                        })
                        .await;
                        // A panic drops `reply`: the caller sees no outcome.
                        if let Ok(outcome) = outcome {
                            let _ = reply.send(outcome);
                        }
                    }
                },
                Some(()) = changes.recv() => {
                    let first = Instant::now();
                    loop {
                        tokio::select! {
                            Some(()) = changes.recv() => continue,
                            _ = tokio::time::sleep(crate::watch::QUIET) => break,
                        }
                    }
                    reload_blocking(&controller, "watch", first).await;
                }
            }
            // A reload may point a stage at another plugin file.
            let now = controller
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .watched_files();
            if watcher.is_some() && now != watched {
                match crate::watch::watch(&now, fs_tx.clone()) {
                    Ok(w) => watcher = Some(w),
                    Err(e) => tracing::warn!(error = %e, "cannot watch the new plugin files"),
                }
                watched = now;
            }
        }
        drop(watcher);
    });
    Ok(())
}

/// Logs one line every few seconds: rates per stage, alerts, dead-letters
/// and lag, so a running weir shows life without a dashboard.
async fn summarise(
    metrics: Arc<Registry>,
    generated: impl Fn() -> u64,
    shutdown: CancellationToken,
) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    let mut last = metrics.stages();
    let mut produced = generated();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let now = metrics.stages();
        let generated = generated();
        let per_sec = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / EVERY.as_secs_f64();
        let stages: Vec<String> = now
            .iter()
            .map(|(name, s)| {
                let before = last.get(name).cloned().unwrap_or_default();
                format!(
                    "{name} {:.0}/s in {:.0}/s out, {} dead-lettered, lag {}",
                    per_sec(s.consumed, before.consumed),
                    per_sec(s.emitted, before.emitted),
                    s.dead_lettered,
                    s.lag
                )
            })
            .collect();
        if now != last || generated != produced {
            tracing::info!(
                generated_per_sec = per_sec(generated, produced),
                stages = stages.join("; "),
                "summary"
            );
        }
        last = now;
        produced = generated;
    }
}

/// Runs a pipeline against `bootstrap` until `shutdown` is cancelled, then
/// stops every stage cleanly (in-flight batches finish, offsets commit).
pub async fn run(
    config: PipelineConfig,
    bootstrap: String,
    embedded: bool,
    options: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Either `[admin].autostart = false` or `--no-autostart` starts paused.
    let autostart = options.autostart && config.admin.autostart;
    if !autostart && !cfg!(feature = "scenarios") {
        anyhow::bail!(
            "the stages would start paused ([admin].autostart = false or --no-autostart), and \
             this weir is built without the scenarios feature, whose POST /api/v1/start \
             resumes them"
        );
    }
    let clients = KafkaClients::new(bootstrap.clone(), &config.kafka)
        .with_instance_id(options.instance_id.clone());
    ensure_topics(&clients, &config.topics)
        .await
        .context("preparing topics")?;
    crate::topology::changelog::ensure(&clients, &config, embedded)
        .await
        .context("preparing changelog topics")?;

    let metrics = Arc::new(Registry::default());
    let state: Arc<dyn crate::state::StateStore> = Arc::new(MemoryState::default());
    let runtime = Arc::new(Runtime::new(
        options.runtime.clone(),
        state.clone(),
        metrics.clone(),
    )?);
    let stage_control = Arc::new(StageControl::default());
    stage_control
        .budget
        .set_limit(config.kafka.max_buffered_bytes as u64);
    stage_control.drain_timeout_ms.store(
        (options.drain_timeout.as_millis() as u64).max(1),
        std::sync::atomic::Ordering::Relaxed,
    );
    stage_control
        .paused
        .store(!autostart, std::sync::atomic::Ordering::Relaxed);
    let topology = Topology::build(&config, &runtime, &clients, &stage_control)?;
    #[cfg(feature = "scenarios")]
    let control = RunControl::new(
        stage_control.clone(),
        clients.clone(),
        config.kafka.topic_prefix.clone(),
        config.topics.iter().map(|t| t.name.clone()).collect(),
    );

    let mut bridges = Vec::new();
    for bc in &config.bridges {
        let hub = crate::bridge::Hub::new(bc.clone());
        crate::bridge::start(hub.clone(), &clients, shutdown.clone())?;
        bridges.push(hub);
    }

    let listener = bind(config.admin.listen).await?;
    let admin_state = AdminState::new(bootstrap, embedded, metrics.clone())
        .with_reload(options.reload.clone())
        .with_token(options.admin_token.clone())
        .with_state(state.clone())
        .with_bridges(bridges)
        .with_owners({
            let (clients, kafka) = (clients.clone(), config.kafka.clone());
            std::sync::Arc::new(move |stage: &str, partition: i32| {
                let group = kafka.consumer_group(stage);
                match crate::kafka::partition_owner(&clients, &group, partition) {
                    Ok(owner) => owner,
                    Err(e) => {
                        tracing::debug!(stage, partition, error = %e, "cannot describe the group");
                        None
                    }
                }
            })
        })
        .with_listen(listener.local_addr()?);
    #[cfg(feature = "scenarios")]
    let admin_state = admin_state.with_control(control.clone());
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
    admin_state.set_running(running.running.clone());
    let controller = Controller::new(
        config.clone(),
        options.env.clone(),
        runtime.clone(),
        clients.clone(),
        running.running.clone(),
        stage_control.clone(),
        shutdown.clone(),
    );
    spawn_reloader(controller, options.watch, &options.reload, shutdown.clone())?;
    #[cfg(feature = "scenarios")]
    if let Some(start) = &options.generator
        && let Err(e) = control.start(start)
    {
        tracing::warn!(error = e, "cannot start the generator");
    }
    #[cfg(feature = "scenarios")]
    let generated = move || control.status().generator.produced;
    #[cfg(not(feature = "scenarios"))]
    let generated = || 0;
    tokio::spawn(summarise(metrics.clone(), generated, shutdown.clone()));
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
