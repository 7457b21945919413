//! Paths of the wasm components built by this crate's build script, for
//! tests and benchmarks.

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
