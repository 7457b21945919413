//! What a reload changes: the difference between the running pipeline and
//! a new one, stage by stage. Pure: the plugin files' digests are read by
//! the caller and passed in, so every kind of change is testable offline.

use std::collections::BTreeMap;

use super::model::{PipelineConfig, StageConfig};

/// What a reload does to each stage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// New stages, and declared stages that are not running.
    pub added: Vec<String>,
    /// Stages the new pipeline no longer declares.
    pub removed: Vec<String>,
    /// Rebuilt: a new consumer and producer as well as a new plugin
    /// instance (their inputs, outputs, batching or state changed, or the
    /// Kafka client settings all stages share).
    pub restarted: Vec<String>,
    /// A new plugin instance in the running stage (a new plugin file, or
    /// new `[stage.config]`, limits or grants).
    pub swapped: Vec<String>,
}

impl ConfigDiff {
    /// The difference from `old`, with the plugin digests `running` (the
    /// digest each running stage's plugin had when it was loaded), to
    /// `new`, whose plugin files have the digests `on_disk`. A stage of
    /// `old` missing from `running` is not running, and is added afresh.
    pub fn new(
        old: &PipelineConfig,
        new: &PipelineConfig,
        running: &BTreeMap<String, String>,
        on_disk: &BTreeMap<String, String>,
    ) -> ConfigDiff {
        let mut diff = ConfigDiff::default();
        for stage in &old.stages {
            if new.stage(&stage.name).is_none() {
                diff.removed.push(stage.name.clone());
            }
        }
        for stage in &new.stages {
            let Some(before) = old
                .stage(&stage.name)
                .filter(|_| running.contains_key(&stage.name))
            else {
                diff.added.push(stage.name.clone());
                continue;
            };
            if io_changed(before, stage) || old.kafka != new.kafka {
                diff.restarted.push(stage.name.clone());
            } else if before != stage || running.get(&stage.name) != on_disk.get(&stage.name) {
                diff.swapped.push(stage.name.clone());
            }
        }
        diff
    }

    /// The diff that goes back: what was added is removed and the other way
    /// round; what was restarted or swapped is restarted or swapped again.
    pub fn flip(&self) -> ConfigDiff {
        ConfigDiff {
            added: self.removed.clone(),
            removed: self.added.clone(),
            restarted: self.restarted.clone(),
            swapped: self.swapped.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &ConfigDiff::default()
    }

    /// One line per change (`added x`, `swapped y`, ...), for the reload's
    /// outcome.
    pub fn describe(&self) -> Vec<String> {
        let mut changed = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("restarted", &self.restarted),
            ("swapped", &self.swapped),
        ] {
            changed.extend(names.iter().map(|n| format!("{what} {n}")));
        }
        changed
    }
}

/// Why `new` cannot be reached from `old` while running, if it cannot: the
/// cluster itself (weir resolved it, embedded or not, at start), or the
/// consumer groups. A new group has no committed offsets, so its stages
/// would start from the beginning of every input with the state of the old
/// group's progress: everything retained would be processed again.
pub fn restart_needed(old: &PipelineConfig, new: &PipelineConfig) -> Option<String> {
    if old.kafka.brokers != new.kafka.brokers {
        return Some("[kafka].brokers changed".to_string());
    }
    if old.bridges != new.bridges {
        return Some("a [[bridge]] changed".to_string());
    }
    (old.kafka.group_id != new.kafka.group_id).then(|| {
        format!(
            "[kafka].group_id changed from {:?} to {:?} (a new group would reprocess every \
             input from the beginning)",
            old.kafka.group_id, new.kafka.group_id
        )
    })
}

/// Whether a stage must be rebuilt (new consumer or producer) rather than
/// get a new plugin instance.
fn io_changed(old: &StageConfig, new: &StageConfig) -> bool {
    old.inputs != new.inputs
        || old.outputs != new.outputs
        || old.dead_letter != new.dead_letter
        || old.batch != new.batch
        || old.state != new.state
        || old.processing != new.processing
        || old.compression != new.compression
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{no_env, pipeline_path};

    const BASE: &str = r#"
[kafka]
brokers = "h1:9092"

[[topic]]
name = "in"
[[topic]]
name = "mid"
[[topic]]
name = "out"
[[topic]]
name = "side"
[[topic]]
name = "dlq"

[[stage]]
name = "a"
plugin = "empty.wasm"
inputs = ["in"]
outputs = { default = "mid" }
dead_letter = "dlq"

[[stage]]
name = "b"
plugin = "empty.wasm"
inputs = ["mid"]
outputs = { default = "out" }
dead_letter = "dlq"
"#;

    fn parse(source: &str) -> PipelineConfig {
        crate::parse(&pipeline_path(), source, &no_env()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every stage of `config` running with a plugin of digest `d`.
    fn digests(config: &PipelineConfig, d: &str) -> BTreeMap<String, String> {
        config
            .stages
            .iter()
            .map(|s| (s.name.clone(), d.to_string()))
            .collect()
    }

    fn diff(old: &str, new: &str) -> ConfigDiff {
        let (old, new) = (parse(old), parse(new));
        ConfigDiff::new(&old, &new, &digests(&old, "d1"), &digests(&new, "d1"))
    }

    #[test]
    fn the_same_pipeline_changes_nothing() {
        assert!(diff(BASE, BASE).is_empty());
    }

    #[test]
    fn a_stage_declared_is_added_and_one_dropped_is_removed() {
        let with_c = format!(
            "{BASE}\n[[stage]]\nname = \"c\"\nplugin = \"empty.wasm\"\ninputs = [\"out\"]\ndead_letter = \"dlq\"\n"
        );
        let d = diff(BASE, &with_c);
        assert_eq!(d.added, ["c"]);
        assert!(d.removed.is_empty() && d.restarted.is_empty() && d.swapped.is_empty());
        let back = diff(&with_c, BASE);
        assert_eq!(back.removed, ["c"]);
        assert_eq!(back, d.flip());
    }

    #[test]
    fn new_inputs_outputs_batching_or_state_rebuild_the_stage() {
        for (from, to) in [
            (r#"inputs = ["mid"]"#, r#"inputs = ["mid", "side"]"#),
            (
                r#"outputs = { default = "out" }"#,
                r#"outputs = { default = "side" }"#,
            ),
            (
                "outputs = { default = \"out\" }\ndead_letter = \"dlq\"",
                "outputs = { default = \"out\" }\ndead_letter = \"side\"",
            ),
            (
                r#"outputs = { default = "out" }"#,
                "outputs = { default = \"out\" }\nbatch = { max_messages = 16 }",
            ),
            (
                r#"outputs = { default = "out" }"#,
                "outputs = { default = \"out\" }\nstate = \"memory\"",
            ),
            (
                r#"outputs = { default = "out" }"#,
                "outputs = { default = \"out\" }\nprocessing = \"exactly_once\"",
            ),
            (
                r#"outputs = { default = "out" }"#,
                "outputs = { default = \"out\" }\ncompression = \"zstd\"",
            ),
        ] {
            assert_eq!(BASE.matches(from).count(), 1, "{from} names stage b only");
            let changed = BASE.replace(from, to);
            let d = diff(BASE, &changed);
            assert_eq!(d.restarted, ["b"], "{from} -> {to}");
            assert!(d.swapped.is_empty() && d.added.is_empty(), "{d:?}");
        }
    }

    #[test]
    fn new_client_settings_rebuild_every_stage() {
        let changed = BASE.replace("[kafka]\n", "[kafka]\ncommit_interval_ms = 500\n");
        assert_eq!(diff(BASE, &changed).restarted, ["a", "b"]);
        let options = format!("{BASE}\n[kafka.options]\n\"linger.ms\" = \"1\"\n");
        assert_eq!(diff(BASE, &options).restarted, ["a", "b"]);
        assert!(restart_needed(&parse(BASE), &parse(&options)).is_none());
    }

    #[test]
    fn a_new_plugin_file_or_stage_config_swaps_the_plugin() {
        let (old, new) = (parse(BASE), parse(BASE));
        let mut on_disk = digests(&new, "d1");
        on_disk.insert("a".into(), "d2".into());
        let d = ConfigDiff::new(&old, &new, &digests(&old, "d1"), &on_disk);
        assert_eq!(d.swapped, ["a"]);
        assert!(d.restarted.is_empty());

        let configured = format!("{BASE}[stage.config]\nthreshold = 0.5\n");
        assert_eq!(diff(BASE, &configured).swapped, ["b"]);
    }

    #[test]
    fn a_declared_stage_that_is_not_running_is_added_again() {
        let (old, new) = (parse(BASE), parse(BASE));
        let mut running = digests(&old, "d1");
        running.remove("b");
        let d = ConfigDiff::new(&old, &new, &running, &digests(&new, "d1"));
        assert_eq!(d.added, ["b"]);
        assert!(d.swapped.is_empty());
    }

    #[test]
    fn a_new_cluster_or_group_needs_a_restart() {
        let old = parse(BASE);
        let moved = parse(&BASE.replace("h1:9092", "h2:9092"));
        assert!(restart_needed(&old, &moved).unwrap().contains("brokers"));
        let regrouped = parse(&BASE.replace("[kafka]\n", "[kafka]\ngroup_id = \"other\"\n"));
        assert!(
            restart_needed(&old, &regrouped)
                .unwrap()
                .contains("group_id")
        );
        assert!(restart_needed(&old, &parse(BASE)).is_none());
    }

    #[test]
    fn describes_each_change_once() {
        let d = ConfigDiff {
            added: vec!["c".into()],
            removed: vec![],
            restarted: vec!["a".into()],
            swapped: vec!["b".into()],
        };
        assert_eq!(d.describe(), ["added c", "restarted a", "swapped b"]);
    }
}
