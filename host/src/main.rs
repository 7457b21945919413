use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use weir::config::{self, Brokers, ProcessEnv};
use weir::kafka::EmbeddedBroker;
use weir::wasm::RuntimeOptions;

/// weir: run sandboxed WebAssembly components on Kafka.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline offline: config, plugin files, and that every plugin
    /// loads, matches the WIT world and initialises.
    Validate {
        #[arg(default_value = "pipeline.toml")]
        path: PathBuf,
    },
    /// Run a pipeline until Ctrl-C or SIGTERM.
    Run {
        #[arg(default_value = "pipeline.toml")]
        path: PathBuf,
        /// Overrides `[admin].listen`.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<std::net::SocketAddr>,
        /// Do not reload when pipeline.toml or a plugin file changes
        /// (`POST /api/v1/reload` and SIGHUP still reload).
        #[arg(long)]
        no_watch: bool,
        /// Start with the stages paused, until `POST /api/v1/start`
        /// (overrides `[admin].autostart`).
        #[arg(long)]
        no_autostart: bool,
        /// The F1 generator rate on the embedded broker (0 turns it off;
        /// with a real broker it is off unless `--generator-rate` is given).
        #[arg(long, value_name = "PER_SEC")]
        generator_rate: Option<f64>,
        /// On Ctrl-C or SIGTERM, how long to wait for the broker to
        /// acknowledge what is in flight before exiting; the rest is
        /// consumed again after a restart. Keep it under the stop grace
        /// period of whatever runs weir.
        #[arg(long, value_name = "MS", default_value_t = 8000)]
        drain_timeout_ms: u64,
        /// Join the stages' consumer groups as a static member with this id
        /// (unique per process; also `WEIR_INSTANCE_ID`): a restart within
        /// the session timeout gets the same partitions back with no
        /// rebalance, and so no state moves.
        #[arg(long, value_name = "ID")]
        instance_id: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Run {
            path,
            admin_listen,
            no_watch,
            no_autostart,
            generator_rate,
            drain_timeout_ms,
            instance_id,
        } => run(
            &path,
            admin_listen,
            RunFlags {
                watch: !no_watch,
                autostart: !no_autostart,
                generator_rate,
                drain_timeout: std::time::Duration::from_millis(drain_timeout_ms),
                instance_id: instance_id
                    .or_else(|| std::env::var("WEIR_INSTANCE_ID").ok())
                    .filter(|id| !id.is_empty()),
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::load(path, &ProcessEnv)?;
    match weir::app::validate_plugins(&config, RuntimeOptions::from_env()) {
        Ok(reports) => {
            println!("{}: valid", path.display());
            for r in reports {
                println!("  stage {}: plugin sha256:{}", r.stage, &r.digest[..16]);
                if let Some(stage) = config.stage(&r.stage) {
                    println!("    {}", describe_limits(stage));
                    println!("    grants: {}", describe_grants(stage));
                }
            }
            Ok(())
        }
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::bail!(
                "{}: {} plugin error(s)\n{}",
                path.display(),
                errors.len(),
                lines.join("\n")
            )
        }
    }
}

/// A stage's limits and failure policy, as `weir validate` shows them.
fn describe_limits(stage: &config::StageConfig) -> String {
    let l = &stage.limits;
    format!(
        "limits: memory {} MiB, {} ms per call, messages up to {} bytes, up to {} records \
         and {} bytes out per message, keyed state up to {} bytes and {} keys, {} metric \
         series; on_error = {}",
        l.memory_bytes >> 20,
        l.timeout.as_millis(),
        l.max_payload_bytes,
        l.max_outputs_per_message,
        l.max_output_bytes_per_message,
        l.state_max_bytes,
        l.state_max_keys,
        l.max_metric_series,
        stage.on_error.as_str()
    )
}

/// What a stage's plugin is granted beyond nothing, so an operator sees
/// every privilege before the pipeline runs.
fn describe_grants(stage: &config::StageConfig) -> String {
    let g = &stage.grants;
    let mut parts: Vec<String> = g
        .env
        .iter()
        .map(|name| match std::env::var_os(name) {
            Some(_) => format!("env {name}"),
            None => format!("env {name} (not set here, so not passed)"),
        })
        .collect();
    if g.clock {
        parts.push("clock".into());
    }
    if parts.is_empty() {
        "none (no files, network, environment or clock)".into()
    } else {
        parts.join(", ")
    }
}

struct RunFlags {
    watch: bool,
    autostart: bool,
    generator_rate: Option<f64>,
    drain_timeout: std::time::Duration,
    instance_id: Option<String>,
}

/// The first run shows life: on the embedded broker the F1 generator
/// starts at a gentle rate.
#[cfg(feature = "scenarios")]
const DEFAULT_EMBEDDED_RATE: f64 = 20.0;

fn run(
    path: &std::path::Path,
    admin_listen: Option<std::net::SocketAddr>,
    flags: RunFlags,
) -> anyhow::Result<()> {
    let mut config = config::load(path, &ProcessEnv)?;
    if let Some(listen) = admin_listen {
        config.admin.listen = listen;
    }
    check_admin_exposure(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The embedded broker lives on this thread, outliving the pipeline.
    let (embedded, bootstrap) = match &config.kafka.brokers {
        Brokers::Embedded => {
            let broker = EmbeddedBroker::start()?;
            broker.create_topics(&config.topics)?;
            // Changelogs get the partition counts of the stages' inputs.
            broker.create_topics(&weir::topology::changelog::topics(&config, &|t| {
                let declared = config.topic(t).and_then(|t| t.partitions);
                Some((declared.unwrap_or(1), 1))
            }))?;
            let bootstrap = broker.bootstrap_servers();
            tracing::warn!(
                bootstrap_servers = bootstrap,
                "using the embedded development broker: in-memory, NOT durable; \
                 other Kafka clients can connect to it at this address"
            );
            (Some(broker), bootstrap)
        }
        Brokers::Bootstrap(b) => (None, b.clone()),
    };
    let shutdown = CancellationToken::new();
    rt.spawn(signal(shutdown.clone()));
    #[cfg(feature = "scenarios")]
    let generator = {
        let rate = flags.generator_rate.unwrap_or(if embedded.is_some() {
            DEFAULT_EMBEDDED_RATE
        } else {
            0.0
        });
        (rate > 0.0).then(|| weir::control::StartRequest {
            bootstrap_servers: None,
            rate_per_sec: rate,
            max_messages: None,
            scenario: "f1".into(),
            topic_prefix: None,
            fault: None,
            skus: None,
            sessions: None,
            lap_seconds: None,
        })
    };
    #[cfg(not(feature = "scenarios"))]
    if flags.generator_rate.is_some_and(|rate| rate > 0.0) {
        anyhow::bail!("--generator-rate needs a weir built with the scenarios feature");
    }
    let options = weir::app::RunOptions {
        runtime: RuntimeOptions::from_env(),
        env: std::sync::Arc::new(ProcessEnv),
        watch: flags.watch,
        autostart: flags.autostart,
        #[cfg(feature = "scenarios")]
        generator,
        admin_token: std::env::var("WEIR_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        reload: weir::topology::handle::ReloadHandle::default(),
        drain_timeout: flags.drain_timeout,
        instance_id: flags.instance_id,
    };
    #[cfg(unix)]
    rt.spawn(reload_on_sighup(options.reload.clone()));
    let result = rt.block_on(weir::app::run(
        config,
        bootstrap,
        embedded.is_some(),
        options,
        shutdown,
    ));
    drop(embedded);
    result
}

/// The admin API can change what runs; off loopback it needs a token.
fn check_admin_exposure(config: &config::PipelineConfig) -> anyhow::Result<()> {
    let listen = config.admin.listen;
    let token = std::env::var("WEIR_ADMIN_TOKEN").unwrap_or_default();
    if !listen.ip().is_loopback() && token.is_empty() {
        anyhow::bail!(
            "{}: [admin].listen = {listen} is not a loopback address; set WEIR_ADMIN_TOKEN \
             so that requests that change state need `Authorization: Bearer <token>`",
            config.source.display()
        );
    }
    Ok(())
}

/// SIGHUP reloads, as it does for most daemons.
#[cfg(unix)]
async fn reload_on_sighup(handle: weir::topology::handle::ReloadHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP");
            return;
        }
    };
    while hup.recv().await.is_some() {
        handle.reload("signal").await;
    }
}

async fn signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight batches and committing offsets");
    shutdown.cancel();
}
