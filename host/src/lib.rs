pub mod metrics;
pub mod state;
pub mod wasm;
