//! Paths of the wasm components built by this crate's build script, for
//! tests and benchmarks.

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The sources that test with the fixtures.
    const TEST_SOURCES: &[&str] = &[
        "tests/tests",
        "tests/src",
        "host/tests",
        "host/benches",
        "engine/tests",
    ];

    fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    /// Each fixture is used by a test: by its constant in a test source, or
    /// through the repo's `pipeline.toml`, which the scenario tests run with
    /// the fixtures' paths. A fixture found in `plugins/` or
    /// `test-programs/` but used by nothing fails here.
    #[test]
    fn every_fixture_has_a_test() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        for dir in TEST_SOURCES {
            rust_files(&root.join(dir), &mut files);
        }
        let sources: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        let pipeline = std::fs::read_to_string(root.join("pipeline.toml")).unwrap();
        let untested: Vec<&str> = super::FIXTURES
            .iter()
            .filter(|(constant, stem)| {
                let named = format!("weir_test_programs::{constant}");
                !sources.iter().any(|s| s.contains(&named))
                    && !pipeline.contains(&format!("/{stem}.wasm\""))
            })
            .map(|(constant, _)| *constant)
            .collect();
        assert!(
            untested.is_empty(),
            "fixtures no test uses: {untested:?} (use them by their constant in a test, \
             or remove them)"
        );
        assert!(super::FIXTURES.len() >= 11, "{:?}", super::FIXTURES);
    }
}
