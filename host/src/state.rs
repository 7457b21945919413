//! Keyed state that plugins read and write through the `state` import.
//!
//! State is host-held so it survives instance restarts and plugin swaps. The
//! [`StateStore`] trait is the seam for a durable backend; the in-memory store
//! is the only one today.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whose state: a stage, and one partition of its input (or `STAGE_SCOPE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub stage: Arc<str>,
    pub partition: i32,
}

/// The partition number of stage-wide state, used during `init`.
pub const STAGE_SCOPE: i32 = -1;

pub trait StateStore: Send + Sync + 'static {
    fn get(&self, scope: &Scope, key: &[u8]) -> Option<Vec<u8>>;
    fn set(&self, scope: &Scope, key: &[u8], value: &[u8]);
    fn delete(&self, scope: &Scope, key: &[u8]);
    /// Drops every key of a stage (all partitions).
    fn clear_stage(&self, stage: &str);
    /// The number of keys a stage holds.
    fn len(&self, stage: &str) -> usize;
    /// The partitions a stage holds state for, sorted.
    fn partitions(&self, stage: &str) -> Vec<i32>;
}

type Partition = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

/// State in process memory: lost on restart.
#[derive(Default)]
pub struct MemoryState {
    scopes: Mutex<HashMap<Scope, Partition>>,
}

impl MemoryState {
    fn partition(&self, scope: &Scope) -> Partition {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes.entry(scope.clone()).or_default().clone()
    }
}

fn lock(p: &Partition) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
    // A panic elsewhere while holding the lock leaves a consistent map: each
    // operation is a single insert or remove.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl StateStore for MemoryState {
    fn get(&self, scope: &Scope, key: &[u8]) -> Option<Vec<u8>> {
        lock(&self.partition(scope)).get(key).cloned()
    }

    fn set(&self, scope: &Scope, key: &[u8], value: &[u8]) {
        lock(&self.partition(scope)).insert(key.to_vec(), value.to_vec());
    }

    fn delete(&self, scope: &Scope, key: &[u8]) {
        lock(&self.partition(scope)).remove(key);
    }

    fn clear_stage(&self, stage: &str) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes.retain(|s, _| &*s.stage != stage);
    }

    fn partitions(&self, stage: &str) -> Vec<i32> {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<i32> = scopes
            .keys()
            .filter(|s| &*s.stage == stage)
            .map(|s| s.partition)
            .collect();
        out.sort_unstable();
        out
    }

    fn len(&self, stage: &str) -> usize {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes
            .iter()
            .filter(|(s, _)| &*s.stage == stage)
            .map(|(_, p)| lock(p).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(stage: &str, partition: i32) -> Scope {
        Scope {
            stage: stage.into(),
            partition,
        }
    }

    #[test]
    fn scopes_are_isolated() {
        let s = MemoryState::default();
        s.set(&scope("a", 0), b"k", b"a0");
        s.set(&scope("a", 1), b"k", b"a1");
        s.set(&scope("b", 0), b"k", b"b0");
        assert_eq!(s.get(&scope("a", 0), b"k").as_deref(), Some(&b"a0"[..]));
        assert_eq!(s.get(&scope("a", 1), b"k").as_deref(), Some(&b"a1"[..]));
        assert_eq!(s.get(&scope("b", 0), b"k").as_deref(), Some(&b"b0"[..]));
        s.delete(&scope("a", 0), b"k");
        assert_eq!(s.get(&scope("a", 0), b"k"), None);
        assert_eq!(s.len("a"), 1);
        assert_eq!(s.partitions("a"), vec![0, 1]);
        s.clear_stage("a");
        assert_eq!(s.len("a"), 0);
        assert_eq!(s.len("b"), 1);
    }
}
