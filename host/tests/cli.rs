//! The `weir` binary as a user runs it: `validate`, and `run` on the
//! embedded broker (the README's first command), stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

fn weir() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.env("NO_COLOR", "1")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS");
    cmd
}

fn write_pipeline(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn f1_pipeline(brokers: &str, admin: &str) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
topic_prefix = "f1"

[admin]
listen = "{admin}"

[[topic]]
name = "{{prefix}}.telemetry.raw"
partitions = 2
[[topic]]
name = "{{prefix}}.telemetry.analytics"
partitions = 2
[[topic]]
name = "{{prefix}}.telemetry.dead-letter"
partitions = 1

[[stage]]
name = "degradation"
plugin = "{plugin}"
inputs = ["{{prefix}}.telemetry.raw"]
outputs = {{ default = "{{prefix}}.telemetry.analytics" }}
dead_letter = "{{prefix}}.telemetry.dead-letter"
"#,
        plugin = weir_test_programs::F1_DEGRADATION
    )
}

#[test]
fn validate_accepts_a_good_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), &f1_pipeline("embedded", "127.0.0.1:0"));
    let out = weir()
        .arg("validate")
        .arg(&path)
        .env("WEIR_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid") && stdout.contains("stage degradation: plugin sha256:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("memory 64 MiB, 100 ms per call")
            && stdout.contains("on_error = dead_letter")
            && stdout.contains("grants: none"),
        "{stdout}"
    );
}

#[test]
fn validate_shows_every_grant() {
    let dir = tempfile::tempdir().unwrap();
    let body = f1_pipeline("embedded", "127.0.0.1:0")
        + "[stage.grants]\nenv = [\"WEIR_TEST_GRANT\", \"WEIR_TEST_UNSET\"]\nclock = true\n";
    let path = write_pipeline(dir.path(), &body);
    let out = weir()
        .arg("validate")
        .arg(&path)
        .env("WEIR_CACHE_DIR", dir.path().join("cache"))
        .env("WEIR_TEST_GRANT", "1")
        .env_remove("WEIR_TEST_UNSET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "grants: env WEIR_TEST_GRANT, env WEIR_TEST_UNSET (not set here, so not passed), clock"
        ),
        "{stdout}"
    );
}

#[test]
fn validate_reports_config_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let body = f1_pipeline("embedded", "127.0.0.1:0")
        .replace("topic_prefix", "topic_prefx")
        .replace("{prefix}.telemetry.analytics\" }", "nowhere\" }");
    let path = write_pipeline(dir.path(), &body);
    let out = weir().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:3:1: kafka.topic_prefx: unknown field")),
        "{stderr}"
    );
    assert!(
        stderr.contains("stage[0].outputs.default: topic \"nowhere\" is not declared"),
        "{stderr}"
    );
}

#[test]
fn validate_refuses_a_file_that_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"definitely not wasm").unwrap();
    let body = f1_pipeline("embedded", "127.0.0.1:0")
        .replace(weir_test_programs::F1_DEGRADATION, fake.to_str().unwrap());
    let path = write_pipeline(dir.path(), &body);
    let out = weir().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stage degradation:")
            && stderr.contains("is not a valid WebAssembly component"),
        "{stderr}"
    );
}

#[test]
fn validate_and_run_refuse_a_plugin_built_for_another_contract_version() {
    let dir = tempfile::tempdir().unwrap();
    let body = f1_pipeline("embedded", "127.0.0.1:0").replace(
        weir_test_programs::F1_DEGRADATION,
        weir_test_programs::WRONG_WIT,
    );
    let path = write_pipeline(dir.path(), &body);
    for command in ["validate", "run"] {
        let out = weir()
            .arg(command)
            .arg(&path)
            .env("WEIR_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command} accepted it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("stage degradation:")
                && stderr.contains("weir:plugin@0.0.9")
                && stderr.contains("weir:plugin@0.1.1"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn run_refuses_a_public_admin_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), &f1_pipeline("embedded", "0.0.0.0:0"));
    let out = weir()
        .arg("run")
        .arg(&path)
        .env_remove("WEIR_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address; set WEIR_ADMIN_TOKEN"),
        "{stderr}"
    );
}

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn run_on_the_embedded_broker_processes_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), &f1_pipeline("embedded", "127.0.0.1:0"));
    let mut child = Child(
        weir()
            .arg("run")
            .arg(&path)
            // Only this test's messages: no F1 generator.
            .arg("--generator-rate")
            .arg("0")
            .env("WEIR_CACHE_DIR", dir.path().join("cache"))
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // weir prints the embedded broker's address so other clients can use it.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let mut bootstrap = None;
    let mut running = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(running && bootstrap.is_some()) {
        assert!(
            Instant::now() < deadline,
            "weir did not start:\n{}",
            log.join("\n")
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("NOT durable") {
                let start = line.find("bootstrap_servers=").unwrap() + "bootstrap_servers=".len();
                bootstrap = Some(
                    line[start..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_matches('"')
                        .to_string(),
                );
            }
            running |= line.contains("stage running");
            log.push(line);
        }
    }
    let bootstrap = bootstrap.unwrap();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..20 {
        let value = format!(
            r#"{{"car_id":"CAR-{}","seq":{i},"tire_temp_fl":100,"tire_temp_fr":100,"tire_temp_rl":100,"tire_temp_rr":100}}"#,
            i % 4 + 1
        );
        producer
            .send(BaseRecord::to("f1.telemetry.raw").key("k").payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "cli-test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["f1.telemetry.analytics"]).unwrap();
    let mut scored = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while scored < 20 {
        assert!(Instant::now() < deadline, "only {scored} of 20 scored");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value =
                serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap();
            assert_eq!(v["degradation_score"], 0.571);
            scored += 1;
        }
    }

    // SIGTERM: a clean stop with exit status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "weir did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push(line);
    }
    assert!(exit.success(), "exit {exit:?}\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("stage stopped")),
        "{}",
        log.join("\n")
    );
}
