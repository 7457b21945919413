//! Builds weir's plugins as wasm components and exports their paths as
//! constants, so tests never depend on a manual build or a binary in git
//! (the approach of wasmtime's `crates/test-programs`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant name, cargo package, artifact stem)
const PLUGINS: &[(&str, &str, &str)] = &[
    ("PASSTHROUGH", "weir-passthrough", "weir_passthrough"),
    (
        "F1_DEGRADATION",
        "weir-f1-degradation",
        "weir_f1_degradation",
    ),
    ("F1_ALERTS", "weir-f1-alerts", "weir_f1_alerts"),
    (
        "CAMPUS_INVENTORY",
        "weir-campus-inventory",
        "weir_campus_inventory",
    ),
    (
        "ORDER_ANALYTICS",
        "weir-order-analytics",
        "weir_order_analytics",
    ),
    (
        "FLEET_DECELERATION",
        "weir-fleet-deceleration",
        "weir_fleet_deceleration",
    ),
    (
        "ALERT_LIFECYCLE",
        "weir-alert-lifecycle",
        "weir_alert_lifecycle",
    ),
    ("CBAD", "weir-cbad", "weir_cbad"),
    ("HOSTILE", "weir-test-hostile", "weir_test_hostile"),
    // Built against weir:plugin@0.1.0, the previous compatible release:
    // the host must still run it.
    (
        "PREVIOUS_WIT",
        "weir-test-previous-wit",
        "weir_test_previous_wit",
    ),
    // Built against weir:plugin@0.0.9: the host must refuse it.
    ("WRONG_WIT", "weir-test-wrong-wit", "weir_test_wrong_wit"),
];

/// Fixtures the host must refuse to load; left out of `ALL`.
const REFUSED: &[&str] = &["WRONG_WIT"];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for dir in [
        "wit",
        "sdk",
        "time",
        "plugins",
        "test-programs/hostile",
        "test-programs/wrong-wit",
        "test-programs/previous-wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // The workspace manifest and lock file decide the plugins' dependencies
    // and their features.
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    // A target dir of its own: the outer cargo holds the lock on `target/`.
    let target_dir = env::var_os("WEIR_FIXTURES_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("fixtures"));

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in PLUGINS {
        cmd.arg("-p").arg(package);
    }
    // The outer build's flags are for the host, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the wasm plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins for {TARGET} failed ({status}); \
             is the target installed? `rustup target add {TARGET}` \
             (scripts/test.sh does this)"
        );
    }

    let mut out = String::new();
    let mut all = Vec::new();
    for (name, _, stem) in PLUGINS {
        let path = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{stem}.wasm"));
        assert!(path.is_file(), "expected {}", path.display());
        out.push_str(&format!(
            "/// The `{stem}` component.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
        if !REFUSED.contains(name) {
            all.push(format!("(\"{stem}\", {name})"));
        }
    }
    out.push_str(&format!(
        "/// Every plugin component the host loads: (name, path).\npub const ALL: &[(&str, &str)] = &[{}];\n",
        all.join(", ")
    ));
    let dest = Path::new(&env::var_os("OUT_DIR").unwrap()).join("fixtures.rs");
    std::fs::write(dest, out).unwrap();
}
