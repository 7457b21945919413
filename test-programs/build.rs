//! Builds weir's plugins as wasm components and exports their paths as
//! constants, so tests never depend on a manual build or a binary in git
//! (the approach of wasmtime's `crates/test-programs`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where fixtures live: every `cdylib` crate directly under these is one.
const FIXTURE_DIRS: &[&str] = &["plugins", "test-programs"];

/// A wasm component this crate builds.
struct Fixture {
    /// The constant: the package name without `weir-` or `weir-test-`,
    /// upper-cased (`weir-f1-alerts` is `F1_ALERTS`).
    constant: String,
    package: String,
    /// The artifact's file stem.
    stem: String,
    description: String,
    /// `[package.metadata.weir] refused = true`: the host must refuse it,
    /// so it is left out of `ALL`.
    refused: bool,
}

/// Every fixture, found from the manifests, so none is left out of the
/// list by hand.
fn fixtures(root: &Path) -> Vec<Fixture> {
    let mut found = Vec::new();
    for dir in FIXTURE_DIRS {
        let mut manifests: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .filter_map(|e| Some(e.ok()?.path().join("Cargo.toml")))
            .filter(|m| m.is_file())
            .collect();
        manifests.sort();
        for manifest in manifests {
            let text = std::fs::read_to_string(&manifest).unwrap();
            if !text.contains("\"cdylib\"") {
                continue;
            }
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(key)?
                            .trim()
                            .strip_prefix('=')?
                            .trim()
                            .strip_prefix('"')?
                            .strip_suffix('"')
                            .map(str::to_string)
                    })
                    .unwrap_or_default()
            };
            let package = field("name");
            assert!(
                !package.is_empty(),
                "no package name in {}",
                manifest.display()
            );
            let short = package
                .strip_prefix("weir-test-")
                .or_else(|| package.strip_prefix("weir-"))
                .unwrap_or(&package);
            found.push(Fixture {
                constant: short.replace('-', "_").to_uppercase(),
                stem: package.replace('-', "_"),
                description: field("description"),
                refused: text.lines().any(|l| l.replace(' ', "") == "refused=true"),
                package,
            });
        }
    }
    found
}

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for dir in ["wit", "sdk", "time", "plugins", "schemas", "test-programs"] {
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
    let fixtures = fixtures(&root);
    for f in &fixtures {
        cmd.arg("-p").arg(&f.package);
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
    let mut every = Vec::new();
    for f in &fixtures {
        let path = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", f.stem));
        assert!(path.is_file(), "expected {}", path.display());
        let about = match f.description.as_str() {
            "" => format!("The `{}` package's component.", f.package),
            d => format!("{d}."),
        };
        out.push_str(&format!(
            "/// {about}\npub const {}: &str = {:?};\n",
            f.constant,
            path.display().to_string()
        ));
        if !f.refused {
            all.push(format!("(\"{}\", {})", f.stem, f.constant));
        }
        every.push(format!("(\"{}\", \"{}\")", f.constant, f.stem));
    }
    out.push_str(&format!(
        "/// Every plugin component the host loads: (name, path).\npub const ALL: &[(&str, &str)] = &[{}];\n",
        all.join(", ")
    ));
    out.push_str(&format!(
        "/// Every fixture, refused ones included: (constant, artifact stem).\npub const FIXTURES: &[(&str, &str)] = &[{}];\n",
        every.join(", ")
    ));
    let dest = Path::new(&env::var_os("OUT_DIR").unwrap()).join("fixtures.rs");
    std::fs::write(dest, out).unwrap();
}
