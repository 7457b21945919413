//! Write [weir](https://example.invalid/weir) stream-processing plugins in Rust.
//!
//! A plugin is a type that implements [`Processor`], exported with
//! [`export_processor!`]:
//!
//! ```
//! use weir_plugin::{export_processor, Emitter, InitContext, Message, OutputId, Processor};
//!
//! struct Upper { out: OutputId }
//!
//! impl Processor for Upper {
//!     fn init(ctx: &InitContext) -> Result<Self, String> {
//!         Ok(Upper { out: ctx.output("default")? })
//!     }
//!     fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
//!         let value = msg.value().ok_or("null value")?.to_ascii_uppercase();
//!         out.emit(self.out, &value);
//!         Ok(())
//!     }
//! }
//!
//! export_processor!(Upper);
//! ```
//!
//! Build it as a component with `cargo build --target wasm32-wasip2 --release`
//! (or `cargo component build --release`). The same code compiles natively,
//! where the host imports are backed by in-memory fakes, so plugin logic can
//! be unit-tested with plain `cargo test` through [`testing`].

// The generated bindings name the crate by its absolute path, which must
// also resolve inside the crate itself.
extern crate self as weir_plugin;

mod emit;
mod host;
mod message;
#[doc(hidden)]
pub mod runtime;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub use weir_time as time;

pub use emit::{Emitted, Emitter};
pub use host::{log, metrics, state};
pub use message::Message;
pub use serde_json;

/// The generated bindings of the `weir:plugin` WIT package. Plugin code does
/// not need them; they are public for the [`export_processor!`] macro.
#[doc(hidden)]
#[allow(unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "processor",
        pub_export_macro: true,
        export_macro_name: "__export_processor_world",
        default_bindings_module: "::weir_plugin::bindings",
        runtime_path: "::weir_plugin::bindings::__rt_reexport",
    });

    pub use wit_bindgen::rt as __rt_reexport;
}

/// A handle to one of the stage's logical outputs (`default`, `alerts`, ...),
/// resolved once in [`Processor::init`] with [`InitContext::output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutputId(pub(crate) u32);

/// What a plugin learns when its stage starts.
#[derive(Debug, Clone)]
pub struct InitContext {
    /// The stage's name in pipeline.toml.
    pub stage: String,
    /// The stage's logical outputs, sorted.
    pub outputs: Vec<String>,
    /// The stage's `[stage.config]` table as JSON text.
    pub config_json: String,
}

impl InitContext {
    /// Deserialises the stage's `[stage.config]` table.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.config_json)
            .map_err(|e| format!("invalid [stage.config] for stage {}: {e}", self.stage))
    }

    /// Resolves a logical output by name; an error names the outputs the
    /// stage declares, so a mismatch with pipeline.toml fails at start-up.
    pub fn output(&self, name: &str) -> Result<OutputId, String> {
        self.outputs
            .iter()
            .position(|o| o == name)
            .map(|i| OutputId(i as u32))
            .ok_or_else(|| {
                format!(
                    "stage {} declares no output {name:?} (it declares: {})",
                    self.stage,
                    self.outputs.join(", ")
                )
            })
    }

    /// Like [`InitContext::output`], but `None` when the stage does not
    /// declare the output, for plugins whose outputs are optional.
    pub fn optional_output(&self, name: &str) -> Option<OutputId> {
        self.output(name).ok()
    }
}

/// A stream-processing plugin.
///
/// The host makes one instance per worker and calls [`Processor::process`]
/// for every message of every batch, in offset order within a partition.
pub trait Processor: Sized + 'static {
    /// Builds the plugin from the stage's settings. An error stops the stage
    /// from starting.
    ///
    /// State written here is stage-wide (not per partition) and kept in
    /// memory only; it reaches the host only if `init` returns `Ok` (see
    /// [`state`]).
    fn init(ctx: &InitContext) -> Result<Self, String>;

    /// Handles one message: emit zero or more records through `out`, or
    /// return an error to send the message to the dead-letter topic.
    ///
    /// On an error, anything emitted for the message is discarded, and so is
    /// every state write made while handling it: the SDK holds a message's
    /// writes until this returns `Ok` (see [`state`]), so a rejected message
    /// leaves no state behind and is not taken for a duplicate when it is
    /// re-driven. Logs and metrics are not held back.
    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String>;
}

/// Exports a [`Processor`] as the component's `processor` world.
#[macro_export]
macro_rules! export_processor {
    ($ty:ty) => {
        // Exports exist only in the component; a native build (unit tests)
        // drives the plugin through `weir_plugin::testing` instead.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __WeirExports;

            impl $crate::bindings::Guest for __WeirExports {
                fn init(
                    ctx: $crate::bindings::weir::plugin::types::InitContext,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::runtime::init::<$ty>(ctx)
                }

                fn process(
                    batch: $crate::bindings::weir::plugin::types::Batch,
                ) -> $crate::bindings::weir::plugin::types::BatchResult {
                    $crate::runtime::process::<$ty>(batch)
                }
            }

            $crate::bindings::__export_processor_world!(__WeirExports with_types_in $crate::bindings);
        };
    };
}
