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
    #[error("cannot set up the wasm engine: {source}")]
    Engine {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    /// A keyed-state write would have taken the stage past its state quota
    /// (`state_max_bytes` or `state_max_keys`); the write traps the call.
    StateLimit,
    /// The call returned outputs over the stage's limits for a message
    /// (`max_outputs_per_message`, `max_output_bytes_per_message`); the
    /// host refused the result and its state writes.
    OutputLimit,
}

impl CallErrorKind {
    /// The value of the `weir.error.kind` dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorKind::Trap => "trap",
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::Memory => "memory",
            CallErrorKind::StateLimit => "state_limit",
            CallErrorKind::OutputLimit => "output_limit",
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

/// The most bytes of a plugin's rejection reason or a trap message that are
/// kept, marker included: they go into the `weir.error` header of a
/// dead-letter record and into log lines, and a plugin chooses their size.
pub const MAX_REASON_BYTES: usize = 1024;

/// `reason`, cut to at most [`MAX_REASON_BYTES`] on a char boundary, ending
/// with a marker saying how much was cut.
pub fn cap_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.len() <= MAX_REASON_BYTES {
        return std::borrow::Cow::Borrowed(reason);
    }
    // The marker for the whole length is at least as long as the real one.
    let marker = |cut: usize| format!("… ({cut} bytes cut)");
    let mut end = MAX_REASON_BYTES - marker(reason.len()).len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{}", &reason[..end], marker(reason.len() - end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_are_kept_whole() {
        let r = "x".repeat(MAX_REASON_BYTES);
        assert!(matches!(cap_reason(&r), std::borrow::Cow::Borrowed(_)));
        assert_eq!(cap_reason(""), "");
    }

    /// The bytes kept and the count in the marker of a cut reason.
    fn kept_and_cut(capped: &str) -> (&str, usize) {
        let (kept, marker) = capped.rsplit_once("… (").unwrap();
        let cut = marker.strip_suffix(" bytes cut)").unwrap().parse().unwrap();
        (kept, cut)
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary_with_a_marker() {
        let r = "x".repeat(2 << 20);
        let capped = cap_reason(&r);
        assert!(capped.len() <= MAX_REASON_BYTES, "{}", capped.len());
        let (kept, cut) = kept_and_cut(&capped);
        assert!(kept.len() > MAX_REASON_BYTES - 40, "{}", kept.len());
        assert_eq!(kept.len() + cut, r.len());
        // A two-byte char straddling the cut is dropped whole.
        for shift in 0..2 {
            let r = format!("{}{}", "a".repeat(shift), "é".repeat(1000));
            let capped = cap_reason(&r);
            assert!(capped.len() <= MAX_REASON_BYTES, "{}", capped.len());
            let (kept, cut) = kept_and_cut(&capped);
            assert!(kept.ends_with('é'), "{kept}");
            assert_eq!(kept.len() + cut, r.len());
        }
        let just_over = cap_reason(&r[..MAX_REASON_BYTES + 1]);
        assert!(just_over.len() <= MAX_REASON_BYTES, "{just_over}");
    }
}
