//! A stage's sandbox settings: `on_error`, `[stage.limits]`, `[stage.grants]`.

use std::collections::HashSet;
use std::time::Duration;

use super::diagnostic::{Report, in_range};
use super::keypath::KeyPath;
use super::model::{Grants, Limits, OnError};
use super::raw::{RawGrants, RawLimits, RawOnError};

const MAX_MEMORY_MB: i64 = 4096;
const MAX_TIMEOUT_MS: i64 = 600_000;
const MAX_PAYLOAD_BYTES: i64 = 256 << 20;
const MAX_OUTPUTS: i64 = 1_000_000;
const MAX_OUTPUT_BYTES: i64 = 1 << 30;
const MAX_STATE_BYTES: i64 = 1 << 40;
const MAX_STATE_KEYS: i64 = 1 << 32;
const MAX_METRIC_SERIES: i64 = 1_000_000;

pub(super) fn on_error(raw: Option<RawOnError>) -> OnError {
    match raw {
        None | Some(RawOnError::DeadLetter) => OnError::DeadLetter,
        Some(RawOnError::Skip) => OnError::Skip,
        Some(RawOnError::Halt) => OnError::Halt,
    }
}

pub(super) fn limits(raw: Option<RawLimits>, path: &KeyPath, report: &mut Report<'_>) -> Limits {
    let defaults = Limits::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let mut get = |value: Option<serde_spanned::Spanned<i64>>, key: &str, min: i64, max: i64| {
        value.and_then(|v| in_range(&v, min, max, &path.key(key), report))
    };
    let memory_mb = get(raw.memory_mb, "memory_mb", 1, MAX_MEMORY_MB);
    let timeout_ms = get(raw.timeout_ms, "timeout_ms", 1, MAX_TIMEOUT_MS);
    let payload = get(
        raw.max_payload_bytes,
        "max_payload_bytes",
        1,
        MAX_PAYLOAD_BYTES,
    );
    let outputs = get(
        raw.max_outputs_per_message,
        "max_outputs_per_message",
        1,
        MAX_OUTPUTS,
    );
    let output_bytes = get(
        raw.max_output_bytes_per_message,
        "max_output_bytes_per_message",
        1,
        MAX_OUTPUT_BYTES,
    );
    // Zero is allowed for the quotas: a stage that must keep no state, or
    // report no metrics of its own.
    let state_bytes = get(raw.state_max_bytes, "state_max_bytes", 0, MAX_STATE_BYTES);
    let state_keys = get(raw.state_max_keys, "state_max_keys", 0, MAX_STATE_KEYS);
    let series = get(
        raw.max_metric_series,
        "max_metric_series",
        0,
        MAX_METRIC_SERIES,
    );
    // In range, so the conversions cannot fail.
    let size = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
    Limits {
        memory_bytes: memory_mb.map_or(defaults.memory_bytes, |mb| size(mb) << 20),
        timeout: timeout_ms.map_or(defaults.timeout, |ms| Duration::from_millis(ms as u64)),
        max_payload_bytes: payload.map_or(defaults.max_payload_bytes, size),
        max_outputs_per_message: outputs.map_or(defaults.max_outputs_per_message, size),
        max_output_bytes_per_message: output_bytes
            .map_or(defaults.max_output_bytes_per_message, size),
        state_max_bytes: state_bytes.map_or(defaults.state_max_bytes, size),
        state_max_keys: state_keys.map_or(defaults.state_max_keys, size),
        max_metric_series: series.map_or(defaults.max_metric_series, size),
    }
}

pub(super) fn grants(raw: Option<RawGrants>, path: &KeyPath, report: &mut Report<'_>) -> Grants {
    let Some(raw) = raw else {
        return Grants::default();
    };
    let mut env = Vec::new();
    let mut seen = HashSet::new();
    for (i, name) in raw.env.into_iter().flatten().enumerate() {
        let at = path.key("env").index(i);
        let text = name.get_ref();
        if text.is_empty() || text.contains(['=', '\0']) {
            report.at(
                &name.span(),
                Some(&at),
                format!("{text:?} is not an environment variable name"),
            );
        } else if !seen.insert(text.clone()) {
            report.at(
                &name.span(),
                Some(&at),
                format!("{text:?} is granted twice"),
            );
        } else {
            env.push(text.clone());
        }
    }
    Grants {
        env,
        clock: raw.clock.unwrap_or(false),
    }
}
