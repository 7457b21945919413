//! weir's benchmark harness; `scripts/bench.sh` runs it against a fresh
//! broker. See BENCHMARKS.md for what each rung is.

mod broker;
mod child;
mod kafka;
mod latency;
mod load;
mod native;
mod produce;
mod report;
mod restore;
mod telemetry;
mod throughput;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::child::Processor;
use crate::kafka::Watermarks;
use crate::report::Results;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every rung, side by side; writes the results into BENCHMARKS.md.
    All(AllArgs),
    /// The native consume-transform-produce loop (B1, B2); runs until killed.
    Native {
        #[arg(long, value_enum)]
        mode: native::Mode,
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        input: String,
        #[arg(long)]
        output: String,
        #[arg(long)]
        dead_letter: String,
        #[arg(long)]
        group: String,
    },
}

#[derive(clap::Args)]
struct AllArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long, default_value = "scripts/kafka.sh")]
    kafka_sh: PathBuf,
    #[arg(long, default_value = "unknown")]
    kafka_version: String,
    #[arg(long, default_value = "target/release/weir")]
    weir: PathBuf,
    /// Where the plugins were built for wasm32-wasip2 (release).
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    plugins: PathBuf,
    /// A Python with confluent-kafka for B4; without it B4 is skipped.
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long, default_value = "bench/python/seed_consumer.py")]
    python_script: PathBuf,
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    #[arg(long, default_value_t = 50_000)]
    python_messages: u64,
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Input rates of the latency runs, as fractions of B1's median rate.
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.1])]
    latency_loads: Vec<f64>,
    /// Rounds of the throughput rungs (B4 runs in the first only).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    #[arg(long, default_value = "target/bench")]
    workdir: PathBuf,
    #[arg(long, default_value = "BENCHMARKS.md")]
    markdown: PathBuf,
    /// Keys the restore rung writes to a changelog and restores.
    #[arg(long, default_value_t = 1_000_000)]
    restore_keys: u64,
    /// Rungs to run (b0, b1, b2, b3-pass, b3-f1, b3-f1-dedup-mem, b3-f1-dedup,
    /// b3-f1-dedup-eos, b4, restore, latency, load); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

const PARTITIONS: i32 = 2;

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Native {
            mode,
            bootstrap,
            input,
            output,
            dead_letter,
            group,
        } => native::run(&bootstrap, &input, &output, &dead_letter, &group, mode),
        Cmd::All(args) => all(&args),
    }
}

fn all(a: &AllArgs) -> Result<()> {
    let started = Instant::now();
    let wants = |r: &str| a.only.is_empty() || a.only.iter().any(|o| o == r);
    std::fs::create_dir_all(&a.workdir)?;
    let workdir = a.workdir.canonicalize()?;
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let topic = |s: &str| format!("bench.{run}.{s}");
    let input = topic("in");
    let dlq = topic("dead-letter");
    let b0_out = topic("out.b0");
    kafka::create_topics(
        &a.bootstrap,
        &[(&input, PARTITIONS), (&dlq, 1), (&b0_out, PARTITIONS)],
    )?;
    let watermarks = Watermarks::new(&a.bootstrap)?;

    eprintln!(
        "weir-bench: preloading {} messages into {input}",
        a.messages
    );
    let took = produce::produce(&produce::Load {
        bootstrap: &a.bootstrap,
        topic: &input,
        partitions: PARTITIONS,
        count: a.messages,
        rate: None,
        stamp: true,
        seed: 42,
    })?;
    eprintln!(
        "  preload    {:>10.0} msg/s (rdkafka producer)",
        a.messages as f64 / took.as_secs_f64()
    );

    let mut results = Results {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
        versions: versions(a),
        messages: a.messages,
        rounds: a.rounds,
        python_messages: a.python_messages,
        message_bytes: mean_message_bytes(),
        partitions: PARTITIONS,
        ceiling: None,
        throughput: Vec::new(),
        latency: Vec::new(),
        load: Vec::new(),
        micro: Vec::new(),
        restore: Vec::new(),
        notes: Vec::new(),
        seconds: 0.0,
    };

    if wants("b0") {
        results.ceiling = Some(broker::measure(
            &a.kafka_sh,
            &a.bootstrap,
            &b0_out,
            &input,
            a.messages,
            results.message_bytes,
        )?);
    }

    // Deduplication off: B2 runs the scoring alone, and so must B3 to compare
    // like with like.
    let f1_config = r#"{"baseline_temp_c":80.0,"temp_span_c":35.0,"tire_wear_threshold":0.65,"low_battery_soc":0.4,"dedup_window":0}"#;
    // The same with its (car_id, seq) deduplication on, as it ships: what
    // keyed state costs in the real pipeline, side by side with b3-f1.
    let f1_dedup_config = r#"{"baseline_temp_c":80.0,"temp_span_c":35.0,"tire_wear_threshold":0.65,"low_battery_soc":0.4}"#;
    let passthrough = a.plugins.join("weir_passthrough.wasm");
    let degradation = a.plugins.join("weir_f1_degradation.wasm");
    // Keyed state three ways, same plugin and input: in process memory
    // only, in a changelog topic at least once (the default), and in a
    // changelog with outputs, changelog and offsets in one transaction.
    let memory = Extra {
        stage: "state = \"memory\"\n",
        kafka: "",
    };
    let durable = Extra {
        stage: "state = \"changelog\"\n",
        kafka: "",
    };
    let exactly_once = Extra {
        stage: "state = \"changelog\"\n",
        kafka: "processing = \"exactly_once\"\n",
    };
    let none = Extra::default();
    let rungs: [(&str, &str, &Path, &str, Extra); 8] = [
        ("b1", "native rdkafka loop, copy", Path::new(""), "", none),
        (
            "b2",
            "native rdkafka loop, F1 degradation",
            Path::new(""),
            "",
            none,
        ),
        (
            "b3-pass",
            "weir, passthrough plugin",
            &passthrough,
            "{}",
            none,
        ),
        (
            "b3-f1",
            "weir, F1 degradation plugin",
            &degradation,
            f1_config,
            none,
        ),
        (
            "b3-f1-dedup-mem",
            "weir, F1 degradation plugin, deduplication on, state in memory only",
            &degradation,
            f1_dedup_config,
            memory,
        ),
        (
            "b3-f1-dedup",
            "weir, F1 degradation plugin, deduplication on, state in a changelog (at-least-once)",
            &degradation,
            f1_dedup_config,
            durable,
        ),
        (
            "b3-f1-dedup-eos",
            "weir, F1 degradation plugin, deduplication on, state in a changelog, exactly-once",
            &degradation,
            f1_dedup_config,
            exactly_once,
        ),
        (
            "b4",
            "Python confluent-kafka, the F1 demo's consumer",
            Path::new(""),
            "",
            none,
        ),
    ];
    // The exactly-once rung runs only once `weir validate` accepts
    // `[kafka] processing` (being added); until then it is skipped, with a
    // note in the results.
    let mut eos_skipped = false;
    if wants("b3-f1-dedup-eos") {
        let file = workdir.join("b3-f1-dedup-eos-validate.toml");
        std::fs::write(
            &file,
            weir_pipeline(
                &a.bootstrap,
                "validate",
                &input,
                &topic("validate-out"),
                &dlq,
                &degradation,
                f1_dedup_config,
                exactly_once,
            )?,
        )?;
        if let Err(why) = weir_validate(&a.weir, &file) {
            let note = format!(
                "B3-f1-dedup-eos (`[kafka] processing = \"exactly_once\"`) skipped: this weir does not accept the setting yet (`weir validate`: {why})."
            );
            eprintln!("  {note}");
            results.notes.push(note);
            eos_skipped = true;
        }
    }
    // Rounds interleave the rungs, so that a slow patch of this noisy
    // machine hits every rung alike; ratios are taken within a round.
    for round in 1..=a.rounds {
        eprintln!("round {round} of {}", a.rounds);
        for (rung, what, plugin, config, extra) in &rungs {
            if !wants(rung)
                || (*rung == "b4" && round > 1)
                || (*rung == "b3-f1-dedup-eos" && eos_skipped)
            {
                continue;
            }
            let output = topic(&format!("out.{rung}.{round}"));
            kafka::create_topics(&a.bootstrap, &[(&output, PARTITIONS)])?;
            let group = format!("bench-{run}-{rung}-{round}");
            let (cmd, target) = match *rung {
                "b1" | "b2" => {
                    let mode = if *rung == "b1" { "pass" } else { "f1" };
                    (
                        native_cmd(mode, &a.bootstrap, &input, &output, &dlq, &group)?,
                        a.messages,
                    )
                }
                "b4" => {
                    let Some(python) = &a.python else {
                        eprintln!("  B4 skipped: no --python");
                        continue;
                    };
                    let mut cmd = Command::new(python);
                    cmd.arg(&a.python_script)
                        .args([&a.bootstrap, &input, &output, &group]);
                    (cmd, a.python_messages)
                }
                _ => {
                    let toml = weir_pipeline(
                        &a.bootstrap,
                        &group,
                        &input,
                        &output,
                        &dlq,
                        plugin,
                        config,
                        *extra,
                    )?;
                    let file = workdir.join(format!("{rung}.toml"));
                    std::fs::write(&file, toml)?;
                    (weir_cmd(&a.weir, &file), a.messages)
                }
            };
            let p = Processor::spawn(rung, cmd, &workdir)?;
            let measured =
                throughput::measure(p, &label(rung), what, &watermarks, &output, target as i64);
            let mut t = match measured {
                // The exactly-once rung measures work in progress: a
                // failure is reported, and the rung left out from then on.
                Err(e) if *rung == "b3-f1-dedup-eos" => {
                    let note = format!(
                        "B3-f1-dedup-eos failed in round {round} and was left out of the later rounds: {e:#} (its log: {}).",
                        workdir.join(format!("{rung}.log")).display()
                    );
                    eprintln!("  {note}");
                    results.notes.push(note);
                    eos_skipped = true;
                    continue;
                }
                other => other?,
            };
            t.round = round;
            results.throughput.push(t);
            if extra.stage.contains("changelog") && round == 1 {
                // What the durable rungs wrote besides their outputs.
                let changelog = format!("{group}-bench-changelog");
                let written = watermarks.total(&changelog, watermarks.partitions(&changelog)?)?;
                let note = format!(
                    "{} wrote {written} changelog records (topic `{changelog}`) in round 1, for {} input messages.",
                    label(rung),
                    a.messages
                );
                eprintln!("  {note}");
                results.notes.push(note);
            }
            if *rung == "b3-f1-dedup-eos" && round == 1 {
                // Accepted is not yet implemented: a run that opened no
                // transaction on the broker is said to be one.
                match transactional_ids(&a.kafka_sh, &a.bootstrap) {
                    Ok(0) => {
                        let note = "B3-f1-dedup-eos ran, but the broker lists no transactional id afterwards: this weir accepted `processing = \"exactly_once\"` without using transactions, so the rung measured at-least-once.".to_string();
                        eprintln!("  {note}");
                        results.notes.push(note);
                    }
                    Ok(n) => eprintln!("  B3-f1-dedup-eos: {n} transactional id(s) on the broker"),
                    Err(e) => eprintln!("  cannot list transactions: {e:#}"),
                }
            }
        }
        if wants("restore") {
            let group = format!("bench-{run}-restore-{round}");
            let rin = topic(&format!("restore.in.{round}"));
            let rout = topic(&format!("restore.out.{round}"));
            let changelog = format!("{group}-bench-changelog");
            kafka::create_topics(&a.bootstrap, &[(&rin, PARTITIONS), (&rout, PARTITIONS)])?;
            kafka::create_topics_with(
                &a.bootstrap,
                &[(&changelog, PARTITIONS)],
                restore::CHANGELOG_CONFIG,
            )?;
            eprintln!("  writing {} keys into {changelog}", a.restore_keys);
            let wrote =
                restore::write_changelog(&a.bootstrap, &changelog, a.restore_keys, PARTITIONS)?;
            // The quotas must hold every key.
            let limits = format!(
                "state = \"changelog\"\n\n[stage.limits]\nstate_max_keys = {}\nstate_max_bytes = {}\n",
                a.restore_keys * 2,
                (a.restore_keys * 256).max(64 << 20)
            );
            let toml = weir_pipeline(
                &a.bootstrap,
                &group,
                &rin,
                &rout,
                &dlq,
                &degradation,
                f1_dedup_config,
                Extra {
                    stage: &limits,
                    kafka: "",
                },
            )?;
            let file = workdir.join("restore.toml");
            std::fs::write(&file, toml)?;
            results.restore.push(restore::measure(
                restore::Run {
                    keys: a.restore_keys,
                    partitions: PARTITIONS,
                    changelog: &changelog,
                    cmd: weir_cmd(&a.weir, &file),
                    stage: "bench",
                    workdir: &workdir,
                    round,
                },
                wrote,
            )?);
        }
    }

    if wants("latency") {
        let b1 = results
            .median_rate("B1")
            .context("the latency run needs B1's rate: include b1")?;
        for load in &a.latency_loads {
            let rate = (b1 * load).round();
            for (rung, what, plugin, config) in [
                ("b1", "native rdkafka loop, copy", Path::new(""), ""),
                (
                    "b3-pass",
                    "weir, passthrough plugin",
                    passthrough.as_path(),
                    "{}",
                ),
                (
                    "b3-f1",
                    "weir, F1 degradation plugin",
                    degradation.as_path(),
                    f1_config,
                ),
            ] {
                let lin = topic(&format!("lat.{rung}.{load}.in"));
                let lout = topic(&format!("lat.{rung}.{load}.out"));
                kafka::create_topics(&a.bootstrap, &[(&lin, PARTITIONS), (&lout, PARTITIONS)])?;
                let group = format!("bench-{run}-lat-{rung}-{load}");
                let cmd = if rung == "b1" {
                    native_cmd("pass", &a.bootstrap, &lin, &lout, &dlq, &group)?
                } else {
                    let file = workdir.join(format!("lat-{rung}-{load}.toml"));
                    std::fs::write(
                        &file,
                        weir_pipeline(
                            &a.bootstrap,
                            &group,
                            &lin,
                            &lout,
                            &dlq,
                            plugin,
                            config,
                            Extra::default(),
                        )?,
                    )?;
                    weir_cmd(&a.weir, &file)
                };
                let p = Processor::spawn(&format!("lat-{rung}"), cmd, &workdir)?;
                results.latency.push(latency::measure(
                    p,
                    &label(rung),
                    what,
                    &latency::Run {
                        bootstrap: &a.bootstrap,
                        input: &lin,
                        output: &lout,
                        partitions: PARTITIONS,
                        rate,
                        duration: Duration::from_secs(a.latency_secs),
                        load: *load,
                    },
                )?);
            }
        }
    }

    if wants("load") {
        results
            .load
            .push(load::measure("passthrough", &passthrough, "{}")?);
        results
            .load
            .push(load::measure("f1-degradation", &degradation, f1_config)?);
    }

    results.micro = report::criterion(
        &a.criterion,
        &[
            ("passthrough_boundary/1", 1),
            ("passthrough_boundary/16", 16),
            ("passthrough_boundary/64", 64),
            ("passthrough_boundary/256", 256),
            ("f1_degradation/wasm/256", 256),
            ("f1_degradation/native/256", 256),
            ("state_store/set/no_ttl", 100_000),
            ("state_store/set/ttl", 100_000),
            ("state_store/get/no_ttl", 100_000),
            ("state_store/get/ttl", 100_000),
        ],
    );
    results.seconds = started.elapsed().as_secs_f64();
    let markdown = results.markdown();
    println!("{markdown}");
    std::fs::write(
        workdir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    report::splice(&a.markdown, &markdown)?;
    eprintln!(
        "weir-bench: wrote {} and {}",
        a.markdown.display(),
        workdir.join("results.json").display()
    );
    Ok(())
}

fn native_cmd(
    mode: &str,
    bootstrap: &str,
    input: &str,
    output: &str,
    dlq: &str,
    group: &str,
) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "native",
        "--mode",
        mode,
        "--bootstrap",
        bootstrap,
        "--input",
        input,
    ])
    .args(["--output", output, "--dead-letter", dlq, "--group", group]);
    Ok(cmd)
}

fn weir_cmd(weir: &Path, pipeline: &Path) -> Command {
    weir_subcommand(weir, "run", pipeline)
}

fn weir_subcommand(weir: &Path, sub: &str, pipeline: &Path) -> Command {
    let mut cmd = Command::new(weir);
    cmd.arg(sub).arg(pipeline).env("RUST_LOG", "warn");
    // The file says everything; none of the KAFKA_* overrides may leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("KAFKA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Lines added to a weir rung's pipeline: to `[kafka]`, and to its stage
/// (before `[stage.config]`; tables such as `[stage.limits]` may follow).
#[derive(Clone, Copy, Default)]
struct Extra<'a> {
    kafka: &'a str,
    stage: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn weir_pipeline(
    bootstrap: &str,
    group: &str,
    input: &str,
    output: &str,
    dlq: &str,
    plugin: &Path,
    config_json: &str,
    extra: Extra<'_>,
) -> Result<String> {
    let plugin = plugin.canonicalize().with_context(|| {
        format!(
            "plugin {} (build it with scripts/build-plugins.sh)",
            plugin.display()
        )
    })?;
    let config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(config_json)?;
    let config: String = config.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    Ok(format!(
        r#"[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
{kafka}
[admin]
listen = "127.0.0.1:0"

[[topic]]
name = "{input}"

[[topic]]
name = "{output}"

[[topic]]
name = "{dlq}"

[[stage]]
name = "bench"
plugin = "{}"
inputs = ["{input}"]
outputs = {{ default = "{output}" }}
dead_letter = "{dlq}"
{stage}
[stage.config]
{config}"#,
        plugin.display(),
        kafka = extra.kafka,
        stage = extra.stage,
    ))
}

/// `weir validate FILE`: the first lines of what it said if it refused.
fn weir_validate(weir: &Path, pipeline: &Path) -> std::result::Result<(), String> {
    let out = weir_subcommand(weir, "validate", pipeline)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // The line about `processing` if there is one, else the first lines.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(match lines.iter().find(|l| l.contains("processing")) {
        Some(l) => l
            .split(", expected one of")
            .next()
            .unwrap_or(l)
            .trim()
            .to_string(),
        None => lines[..lines.len().min(3)].join(" / "),
    })
}

/// How many transactional ids the broker knows
/// (`kafka-transactions.sh list`).
fn transactional_ids(kafka_sh: &Path, bootstrap: &str) -> Result<usize> {
    let out = Command::new(kafka_sh)
        .args([
            "run",
            "org.apache.kafka.tools.TransactionsCommand",
            "--bootstrap-server",
            bootstrap,
            "list",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "TransactionsCommand list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A header line, then one line per transactional id.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
        .saturating_sub(1))
}

fn mean_message_bytes() -> usize {
    let mut g = telemetry::Generator::new(42, "bench");
    let mut buf = Vec::new();
    let total: usize = (0..1000)
        .map(|_| {
            g.next_message(&mut buf);
            buf.len()
        })
        .sum();
    total / 1000
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{model}, {} cores, {mem_gib:.0} GiB, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        command_line("uname", &["-r"])
    )
}

fn versions(a: &AllArgs) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let locked = |name: &str| {
        let needle = format!("name = \"{name}\"\nversion = \"");
        lock.find(&needle)
            .map(|i| {
                lock[i + needle.len()..]
                    .split('"')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_else(|| "unknown".into())
    };
    let mut v = vec![
        (
            "weir".into(),
            command_line("git", &["describe", "--always", "--dirty"]),
        ),
        ("rustc".into(), command_line("rustc", &["--version"])),
        ("wasmtime".into(), locked("wasmtime")),
        (
            "rdkafka (Rust) / librdkafka".into(),
            format!("{} / {}", locked("rdkafka"), locked("rdkafka-sys")),
        ),
        ("Apache Kafka".into(), a.kafka_version.clone()),
        (
            "Java".into(),
            command_line("sh", &["-c", "java -version 2>&1 | head -n 1"]),
        ),
    ];
    if let Some(python) = &a.python {
        v.push((
            "Python / confluent-kafka / its librdkafka".into(),
            command_line(
                &python.display().to_string(),
                &["-c", "import sys, confluent_kafka as c; print(sys.version.split()[0], '/', c.version()[0] if isinstance(c.version(), tuple) else c.version(), '/', c.libversion()[0])"],
            ),
        ));
    }
    v
}

/// `b3-pass` -> `B3-pass`.
fn label(rung: &str) -> String {
    format!("B{}", &rung[1..])
}
