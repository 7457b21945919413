//! Running plugins: one wasmtime [`Engine`](wasmtime::Engine) and
//! [`Linker`](wasmtime::component::Linker) per process, an `InstancePre` per
//! plugin ([`Plugin`]), a `Store` per instance ([`Instance`]). Instances are
//! reused across batches and discarded after a trap.

pub mod batch;
mod bindings;
mod cache;
mod error;
mod host;
mod instance;
mod runtime;

pub use batch::{BatchBuilder, OutputRecord, ValidatedResult};
pub use bindings::weir::plugin::types::{Batch, BatchResult};
pub use error::{CallError, CallErrorKind, WasmError};
pub use instance::{Instance, StageContext};
pub use runtime::{Plugin, Runtime, RuntimeOptions};
