//! weir: a stream processor that runs sandboxed WebAssembly components on
//! Kafka.
//!
//! The crate is layered as Vector is: [`config`] parses and validates
//! `pipeline.toml` without touching the network; [`topology`] turns a config
//! into running stage tasks; [`kafka`] and [`wasm`] own the I/O and the
//! plugin runtime; [`admin`] serves the REST API.

pub mod app;
pub use weir_admin as admin;
pub use weir_config as config;
pub use weir_engine::{bridge, kafka, topology, watch};
pub use weir_runtime::{metrics, state, wasm};
#[cfg(feature = "scenarios")]
pub use weir_scenarios::{control, generate};
