//! Running plugins: one wasmtime [`Engine`](wasmtime::Engine) and
//! [`Linker`](wasmtime::component::Linker) per process, an `InstancePre` per
//! plugin ([`Plugin`]), a `Store` per instance ([`Instance`]). Instances are
//! reused across batches and discarded after a trap.
//!
//! The sandbox of an instance (see [`Runtime::instantiate`]):
//! - WASI gives it no files, arguments, sockets or name lookups, and no
//!   environment but the variables the stage is granted; stdin is closed;
//!   stdout and stderr go to `tracing`, rate limited ([`stdio`]); clocks
//!   read zero unless the stage is granted the clock; random bytes stay.
//! - Its linear memory is capped by a resource limiter that makes a refused
//!   growth trap and records the high-water mark
//!   ([`Instance::memory_high_water`]).
//! - Each call has a deadline, enforced by epoch interruption in wasm code
//!   and by bounding the timers it waits on in host calls.
//! - What it keeps in the host is bounded too ([`Quotas`]): its stage's
//!   keyed state (a write past the quota traps the call, which fails as
//!   [`CallErrorKind::StateLimit`]), its metric series (see
//!   [`crate::metrics::PluginSeries`]), and its `log` messages, rate limited
//!   with stdout and stderr. Rejection reasons and trap messages are cut at
//!   [`MAX_REASON_BYTES`].

pub mod batch;
mod bindings;
mod cache;
mod clocks;
mod error;
mod host;
mod instance;
mod limiter;
mod runtime;
pub mod stdio;
mod timers;

pub use batch::{BatchBuilder, OutputRecord, ValidatedResult};
pub use bindings::weir::plugin::types::{Batch, BatchResult};
pub use error::{CallError, CallErrorKind, MAX_REASON_BYTES, WasmError, cap_reason};
pub use host::Quotas;
pub use instance::{Instance, StageContext};
pub use runtime::{Plugin, Runtime, RuntimeOptions, WIT_VERSION};
