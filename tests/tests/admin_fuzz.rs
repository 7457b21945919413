//! The admin API fuzzed from its own OpenAPI document: schemathesis
//! (PyPI) reads `/api-docs/openapi.json` from a weir running against the
//! real broker, generates valid and invalid requests for every operation
//! and runs all of its checks on the answers: no 5xx, every status code
//! documented, bodies and content types as documented, invalid requests
//! refused, valid ones accepted, the bearer token enforced where declared.
//! Once with a token set, once on loopback without one, since the document
//! says different things in the two modes.
//!
//! `scripts/schemathesis.sh` installs the pinned version into
//! `~/.cache/weir/venv` (`scripts/test.sh` runs it); `WEIR_SCHEMATHESIS`
//! names another executable. `WEIR_FUZZ_EXAMPLES` and `WEIR_FUZZ_SEED`
//! change how many cases per operation and which ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weir_integration_tests::*;

const TOKEN: &str = "fuzz-token";

/// The most cases per operation and phase: with the document's 19
/// operations, about 850 cases and 30 s per mode on two cores.
const EXAMPLES: &str = "25";
/// Fixed so that a failure shows up again on the next run; change it (or
/// set `WEIR_FUZZ_SEED`) to explore other inputs.
const SEED: &str = "1714";

/// One passthrough stage reading the orders topic, and the topics each
/// scenario's generator writes to declared (and so created), so generated
/// records land in this run's own topics and nothing else consumes them.
fn pipeline_toml() -> String {
    format!(
        r#"
[kafka]
topic_prefix = "unused"

[admin]
listen = "127.0.0.1:0"

[[topic]]
name = "{{prefix}}.telemetry.raw"
partitions = 1
[[topic]]
name = "{{prefix}}.orders"
partitions = 1
[[topic]]
name = "{{prefix}}.raw_telemetry"
partitions = 1
[[topic]]
name = "{{prefix}}.driftlock-events"
partitions = 1
[[topic]]
name = "{{prefix}}.telemetry"
partitions = 1
[[topic]]
name = "{{prefix}}.out"
partitions = 1
[[topic]]
name = "{{prefix}}.dlq"
partitions = 1

[[stage]]
name = "passthrough"
plugin = "{plugin}"
inputs = ["{{prefix}}.orders"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dlq"
"#,
        plugin = weir_test_programs::PASSTHROUGH,
    )
}

/// The schemathesis to run, or a panic that says how to get one.
fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let path = Path::new(&home).join(".cache/weir/venv/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run scripts/test.sh, or \
         scripts/schemathesis.sh to install only it (or set WEIR_SCHEMATHESIS)",
        path.display()
    );
    path
}

/// What one schemathesis run found.
struct Outcome {
    /// Test cases it generated and sent.
    cases: u64,
    /// JUnit test cases (one per operation) that failed or errored.
    failed_operations: Vec<String>,
    success: bool,
    output: String,
}

/// The names of the JUnit test cases with a `<failure` or `<error`.
fn failed_in(xml: &str) -> Vec<String> {
    xml.split("<testcase ")
        .skip(1)
        .filter(|case| {
            let body = case.split("</testcase>").next().unwrap_or(case);
            body.contains("<failure") || body.contains("<error")
        })
        .map(|case| {
            case.split("name=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// The N of schemathesis's summary, `Test cases:` then `N generated, ...`.
fn generated_in(output: &str) -> u64 {
    let Some((_, rest)) = output.split_once("Test cases:") else {
        return 0;
    };
    let mut words = rest.split_whitespace();
    match (words.next(), words.next()) {
        (Some(n), Some(w)) if w.starts_with("generated") => n.parse().unwrap_or(0),
        _ => 0,
    }
}

fn fuzz(exe: &Path, admin: std::net::SocketAddr, token: Option<String>, dir: &Path) -> Outcome {
    let junit = dir.join("junit.xml");
    let examples = std::env::var("WEIR_FUZZ_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
    let seed = std::env::var("WEIR_FUZZ_SEED").unwrap_or_else(|_| SEED.into());
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(format!("http://{admin}/api-docs/openapi.json"))
        .args(["--checks", "all"])
        .args(["--max-examples", &examples])
        .args(["--seed", &seed])
        // One request at a time: the machine is shared, and a generator
        // started by one case and stopped by another is easier to follow.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--report", "junit"])
        .arg("--report-junit-path")
        .arg(&junit)
        .args(["--warnings", "off"])
        // Brings valid values that would take minutes down to small valid
        // ones; see the file.
        .env(
            "SCHEMATHESIS_HOOKS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis_hooks.py"),
        )
        .env("NO_COLOR", "1")
        .current_dir(dir);
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", command.get_program()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    Outcome {
        cases: generated_in(&output),
        failed_operations: failed_in(&xml),
        success: out.status.success(),
        output,
    }
}

/// Starts weir (with `token` for its admin API, if any), fuzzes it and
/// asserts nothing failed.
async fn fuzz_mode(name: &str, token: Option<&str>) {
    init_tracing();
    let exe = schemathesis();
    let prefix = unique_prefix(name);
    let group = unique_prefix("group");
    // A file on disk, as `weir run` has: `POST /reload` reads it again.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("pipeline.toml");
    std::fs::write(&toml, pipeline_toml()).unwrap();
    let env = test_env(&prefix, &group);
    let mut config = weir::config::load(&toml, &env).unwrap_or_else(|e| panic!("{e}"));
    let admin = free_local_addr();
    config.admin.listen = admin;
    let weir = Weir::start_with(
        config,
        weir::app::RunOptions {
            watch: false,
            admin_token: token.map(str::to_string),
            env: std::sync::Arc::new(env),
            ..weir::app::RunOptions::default()
        },
    );
    eventually("the stage to run", Duration::from_secs(120), || async {
        if let Err(e) = tokio::net::TcpStream::connect(admin).await {
            return Err(e.to_string());
        }
        match http_text(admin, "GET", "/readyz", None).await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let token = token.map(str::to_string);
    let outcome = tokio::task::spawn_blocking(move || fuzz(&exe, admin, token, &path))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "schemathesis ({name}): {} cases in {:.1} s; failed operations: {:?}",
        outcome.cases,
        elapsed.as_secs_f64(),
        outcome.failed_operations
    );
    tokio::time::timeout(Duration::from_secs(60), weir.stop())
        .await
        .expect("weir did not stop within 60 s of the fuzzing")
        .unwrap();
    assert!(
        outcome.success && outcome.failed_operations.is_empty(),
        "schemathesis found problems ({name}) in {:?}:\n{}",
        outcome.failed_operations,
        outcome.output
    );
    assert!(
        outcome.cases >= 100,
        "schemathesis generated only {} cases ({name}):\n{}",
        outcome.cases,
        outcome.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_matches_its_document_with_a_token() {
    fuzz_mode("fuzz-token", Some(TOKEN)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_matches_its_document_on_loopback_without_a_token() {
    fuzz_mode("fuzz-open", None).await;
}
