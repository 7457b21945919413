//! Golden tests for `pipeline.toml` diagnostics.
//!
//! Each `tests/ui/NAME.toml` must fail to load, and the error's Display must equal
//! `tests/ui/NAME.err`. Run with `WEIR_BLESS=1` to (re)write the `.err` files after an
//! intended change, then review the diff.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use weir_config as config;

const UI_DIR: &str = "tests/ui";

#[test]
fn ui() {
    let bless = std::env::var_os("WEIR_BLESS").is_some_and(|v| v == "1");
    let cases = cases();
    assert!(!cases.is_empty(), "no cases found in {UI_DIR}");

    let mut failures = Vec::new();
    for case in &cases {
        if let Err(failure) = check(case, bless) {
            failures.push(format!("{}: {failure}", case.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} ui cases failed (WEIR_BLESS=1 rewrites the .err files):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Every `.toml` in the ui directory, by a path relative to the package (cargo runs
/// integration tests from the package directory), so the expected output does not depend on
/// where the repository is checked out.
fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(UI_DIR)
        .unwrap_or_else(|e| panic!("cannot read {UI_DIR}: {e}"))
        .map(|entry| entry.expect("readable directory entry").file_name())
        .map(|name| Path::new(UI_DIR).join(name))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    cases.sort();
    cases
}

fn check(case: &Path, bless: bool) -> Result<(), String> {
    // An empty environment: the process's own KAFKA_* variables must not leak into the cases.
    let env: HashMap<String, String> = HashMap::new();
    let actual = match config::load(case, &env) {
        Ok(config) => return Err(format!("expected an error, but it loaded:\n{config:#?}")),
        Err(error) => format!("{error}\n"),
    };
    let expected_path = case.with_extension("err");
    if bless {
        return fs::write(&expected_path, &actual)
            .map_err(|e| format!("cannot write {}: {e}", expected_path.display()));
    }
    let expected = fs::read_to_string(&expected_path).map_err(|e| {
        format!(
            "cannot read {} ({e}); actual output:\n{actual}",
            expected_path.display()
        )
    })?;
    if expected.replace("\r\n", "\n") == actual {
        Ok(())
    } else {
        Err(format!("expected:\n{expected}\nactual:\n{actual}"))
    }
}
