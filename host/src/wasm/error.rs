use std::path::PathBuf;

/// Why a plugin could not be loaded or started. Every variant names the stage.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("stage {stage}: cannot read plugin {path}: {source}")]
    Read {
        stage: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stage {stage}: {path} is not a valid WebAssembly component: {reason}")]
    Compile {
        stage: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "stage {stage}: {path} does not match the weir:plugin@{version} `processor` world: {reason}"
    )]
    Incompatible {
        stage: String,
        path: PathBuf,
        version: &'static str,
        reason: String,
    },
    #[error("stage {stage}: cannot instantiate plugin: {reason}")]
    Instantiate { stage: String, reason: String },
    #[error("stage {stage}: plugin init failed: {reason}")]
    Init { stage: String, reason: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// How a call into a plugin failed. After any of these the instance is
/// discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The plugin trapped: a panic, an out-of-bounds access, unreachable.
    Trap,
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The plugin tried to grow memory past its limit.
    Memory,
}

impl CallErrorKind {
    /// The value of the `weir.error.kind` dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorKind::Trap => "trap",
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("stage {stage}: plugin {}: {message}", kind.as_str())]
pub struct CallError {
    pub stage: String,
    pub kind: CallErrorKind,
    pub message: String,
}
