//! weir's plugin runtime: the wasm components a stage runs (one wasmtime
//! engine, a sandboxed instance per stage), the keyed state they read and
//! write, and the metrics every part of weir updates. It knows nothing of
//! Kafka: the engine (`weir`'s topology) hands it batches and takes back
//! what a plugin returned.

pub use weir_config as config;

pub mod metrics;
pub mod state;
pub mod wasm;
