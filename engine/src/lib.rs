//! weir's engine: it turns a validated config into running stage tasks
//! ([`topology`]), talks to Kafka ([`kafka`]), and watches the files a
//! pipeline is built from ([`watch`]). It depends on `weir-config` for what
//! to run and `weir-runtime` for running plugins; nothing here serves HTTP
//! or generates load.

// Inside the engine the layers keep the names they have in the host.
use weir_config as config;
use weir_runtime::{metrics, state, wasm};

pub mod bridge;
pub mod kafka;
pub mod topology;
pub mod watch;
