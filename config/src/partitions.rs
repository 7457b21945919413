//! Co-partitioning: the inputs of a stage with keyed state must have the same number of
//! partitions.
//!
//! A stage's keyed state is scoped by partition number across all of its inputs: the state a
//! record of partition 2 sees is that of partition 2, whichever input it came from. Records
//! with the same key only meet the same state when every input spreads keys over the same
//! number of partitions.

use super::diagnostic::{ConfigError, Diagnostic};
use super::keypath::KeyPath;
use super::model::{PipelineConfig, StageConfig, StateBackend};

/// Checks every stage with keyed state and two or more inputs: their partition counts, as
/// given by `counts` (`None`: unknown, that input is left out), must be equal.
///
/// Offline validation passes the `partitions` declared in `[[topic]]`; at run time the
/// caller passes the broker's metadata. Every mismatch is reported, one diagnostic per stage,
/// located at the stage's `[[stage]]` line.
pub fn check_copartitioned(
    config: &PipelineConfig,
    counts: &dyn Fn(&str) -> Option<i32>,
) -> Result<(), ConfigError> {
    let diagnostics: Vec<Diagnostic> = config
        .stages
        .iter()
        .enumerate()
        .filter_map(|(index, stage)| {
            let message = mismatch(stage, counts)?;
            Some(Diagnostic {
                file: config.source.clone(),
                line: Some(stage.line),
                column: None,
                key: Some(KeyPath::root().key("stage").index(index).to_string()),
                message,
            })
        })
        .collect();
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            path: config.source.clone(),
            diagnostics,
        })
    }
}

/// The message for `stage` when the known partition counts of its inputs differ.
pub(super) fn mismatch(
    stage: &StageConfig,
    counts: &dyn Fn(&str) -> Option<i32>,
) -> Option<String> {
    if stage.state == StateBackend::None || stage.inputs.len() < 2 {
        return None;
    }
    let known: Vec<(&str, i32)> = stage
        .inputs
        .iter()
        .filter_map(|topic| Some((topic.as_str(), counts(topic)?)))
        .collect();
    let (_, first) = *known.first()?;
    if known.iter().all(|&(_, count)| count == first) {
        return None;
    }
    let list: Vec<String> = known
        .iter()
        .map(|(topic, count)| format!("{topic} has {count}"))
        .collect();
    Some(format!(
        "stage {:?}: inputs must have the same number of partitions because its keyed state \
         is scoped by partition: {}",
        stage.name,
        list.join(", ")
    ))
}
