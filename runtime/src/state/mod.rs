//! Keyed state that plugins read and write through the `state` import.
//!
//! State is host-held so it survives instance restarts and plugin swaps.
//! The live copy is in process memory ([`MemoryState`]); a stage with a
//! changelog also has every change of a partition's state written to
//! partition p of its compacted changelog topic, from which the state is
//! restored after a restart or when the partition moves to another process
//! (the topology's `changelog` module does the Kafka side).

mod codec;
mod memory;

use std::sync::Arc;
use std::time::Duration;

pub use codec::{EXPIRES_HEADER, decode_expiry};
pub use memory::{Clock, MemoryState};

/// Whose state: a stage, and one partition of its input (or `STAGE_SCOPE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub stage: Arc<str>,
    pub partition: i32,
}

/// The partition number of stage-wide state, used during `init`; it is
/// never written to a changelog.
pub const STAGE_SCOPE: i32 = -1;

/// The latest value of a key, as a changelog record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// `None`: deleted or expired (a tombstone).
    pub value: Option<Vec<u8>>,
    /// When the key expires, milliseconds since the Unix epoch: a wall-clock
    /// deadline, so that it means the same after a restart.
    pub expires_at_ms: Option<i64>,
}

pub trait StateStore: Send + Sync + 'static {
    fn get(&self, scope: &Scope, key: &[u8]) -> Option<Vec<u8>>;
    /// Sets a key, to be dropped `ttl` after this call if given (a zero
    /// `ttl` deletes it).
    fn set(&self, scope: &Scope, key: &[u8], value: &[u8], ttl: Option<Duration>);
    fn delete(&self, scope: &Scope, key: &[u8]);
    /// Drops every key of a stage (all partitions).
    fn clear_stage(&self, stage: &str);
    /// The number of live keys a stage holds.
    fn len(&self, stage: &str) -> usize;
    /// The partitions a stage holds state for, sorted.
    fn partitions(&self, stage: &str) -> Vec<i32>;
    /// How many keys of a stage have been dropped at the end of their ttl
    /// since the process started (an expired key written again before a
    /// sweep reached it is replaced, not counted).
    fn expired(&self, stage: &str) -> u64;
    /// What a stage's keyed state takes, all partitions together, for its
    /// quota: keys whose ttl has run out count until a sweep drops them.
    fn usage(&self, stage: &str) -> Usage;
    /// The bytes (key and value) of the entry stored under `key`, counted
    /// in [`StateStore::usage`] whether or not its ttl has run out.
    fn stored_size(&self, scope: &Scope, key: &[u8]) -> Option<usize>;

    /// From now on, remembers which keys of the stage's partitions change,
    /// for [`StateStore::take_changes`].
    fn track_changes(&self, stage: &str);
    /// The keys of a partition changed since the last call, with their
    /// values now; expired keys come as tombstones (and are dropped).
    fn take_changes(&self, scope: &Scope) -> Vec<Change>;
    /// Whether a partition has changes not yet taken.
    fn has_changes(&self, scope: &Scope) -> bool;
    /// Applies one changelog record while a partition is restored. A key
    /// whose deadline has passed is dropped, and remembered as a change so
    /// that its tombstone reaches the changelog.
    fn restore(&self, scope: &Scope, change: Change);
    /// Drops a partition's keys and changes (it moved to another process,
    /// or is about to be restored).
    fn drop_partition(&self, scope: &Scope);
}

/// How much keyed state a stage holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys and values, bytes.
    pub bytes: u64,
    pub keys: u64,
}
