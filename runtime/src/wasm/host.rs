//! What a plugin's store holds, and the host side of the `log`, `state` and
//! `metrics` imports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::plugin::{log, metrics, state, types};
use super::clocks::MonotonicClock;
use super::limiter::Limiter;
use super::stdio::Capture;
use crate::metrics::StageMetrics;
use crate::state::{Scope, StateStore, Usage};

/// Host resources a stage's plugin controls, bounded (`[stage.limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Bytes of keyed state (keys and values), all partitions together.
    pub state_max_bytes: usize,
    /// Keys of keyed state, all partitions together.
    pub state_max_keys: usize,
    /// Distinct metric series (name and labels).
    pub max_metric_series: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        let limits = crate::config::Limits::default();
        Quotas {
            state_max_bytes: limits.state_max_bytes,
            state_max_keys: limits.state_max_keys,
            max_metric_series: limits.max_metric_series,
        }
    }
}

/// A buffered write: the value and its ttl.
pub(crate) type Pending = (Vec<u8>, Option<Duration>);

/// Why a state write trapped: the error that becomes the trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "keyed state would reach {would} {what}, past the stage's state_max_{what} of {limit} \
     (all partitions, this call's writes included)"
)]
pub(crate) struct StateLimitExceeded {
    /// `bytes` or `keys`.
    pub what: &'static str,
    pub would: u64,
    pub limit: u64,
}

/// One key's buffered write.
#[derive(Debug)]
struct Write {
    /// `None`: a delete.
    value: Option<Pending>,
    /// The size of the stored entry the write replaces: `None` until looked
    /// up (`Some(None)`: no entry).
    replaces: Option<Option<usize>>,
}

/// The state writes of the `process` call under way, with what they would
/// add to the stage's usage, so that a call cannot buffer past the quota.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    writes: HashMap<Vec<u8>, Write>,
    /// Keys and values of the buffered sets.
    added: Usage,
    /// Keys and values of the stored entries they replace or delete, as far
    /// as looked up. The store is only read when the cheap bound (nothing
    /// replaced) is over the quota, and then each key once per call.
    replaced: Usage,
}

impl Buffer {
    /// `Some(None)` for a buffered delete, `None` if the key is untouched.
    fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes
            .get(key)
            .map(|w| w.value.as_ref().map(|(v, _)| v.as_slice()))
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Pending>) {
        use std::collections::hash_map::Entry;
        let key_len = key.len();
        if let Some((v, _)) = &value {
            self.added.bytes += (key_len + v.len()) as u64;
            self.added.keys += 1;
        }
        match self.writes.entry(key) {
            Entry::Occupied(mut w) => {
                if let Some((old, _)) = &w.get().value {
                    self.added.bytes -= (key_len + old.len()) as u64;
                    self.added.keys -= 1;
                }
                w.get_mut().value = value;
            }
            Entry::Vacant(slot) => {
                slot.insert(Write {
                    value,
                    replaces: None,
                });
            }
        }
    }

    /// The stage's usage if the writes were applied to `before`; high if
    /// some replaced entries are not looked up yet.
    fn projected(&self, before: Usage) -> Usage {
        Usage {
            bytes: (before.bytes + self.added.bytes).saturating_sub(self.replaced.bytes),
            keys: (before.keys + self.added.keys).saturating_sub(self.replaced.keys),
        }
    }

    /// Looks up the entries replaced that are not known yet.
    fn look_up(&mut self, size_of: impl Fn(&[u8]) -> Option<usize>) {
        for (key, w) in &mut self.writes {
            if w.replaces.is_none() {
                let size = size_of(key);
                w.replaces = Some(size);
                if let Some(size) = size {
                    self.replaced.bytes += size as u64;
                    self.replaced.keys += 1;
                }
            }
        }
    }

    fn clear(&mut self) {
        self.writes.clear();
        self.added = Usage::default();
        self.replaced = Usage::default();
    }

    fn drain(&mut self) -> impl Iterator<Item = (Vec<u8>, Option<Pending>)> + '_ {
        self.added = Usage::default();
        self.replaced = Usage::default();
        self.writes.drain().map(|(k, w)| (k, w.value))
    }
}

/// Whether `usage` is within the quotas; the first one exceeded if not.
fn check(usage: Usage, quotas: &Quotas) -> Result<(), StateLimitExceeded> {
    if usage.bytes > quotas.state_max_bytes as u64 {
        return Err(StateLimitExceeded {
            what: "bytes",
            would: usage.bytes,
            limit: quotas.state_max_bytes as u64,
        });
    }
    if usage.keys > quotas.state_max_keys as u64 {
        return Err(StateLimitExceeded {
            what: "keys",
            would: usage.keys,
            limit: quotas.state_max_keys as u64,
        });
    }
    Ok(())
}

pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The plugin's stdout and stderr, and its `log` messages.
    pub(crate) stdio: Capture,
    /// The monotonic clock the plugin sees (also installed in `wasi`).
    pub(crate) monotonic: MonotonicClock,
    /// When the call under way (`init` or `process`) must end: timers the
    /// plugin waits on do not run past it (see `clocks`).
    pub(crate) deadline: Instant,
    pub(crate) scope: Scope,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) quotas: Quotas,
    /// State writes of the `process` call under way, applied only when it
    /// returns: a call that traps leaves no trace, so retrying its messages
    /// on a fresh instance does not find their effects already done.
    pub(crate) pending: Buffer,
    /// The stage's state usage when the call began. Only this stage's
    /// thread writes its state, so during the call it can only go down (a
    /// sweep): a bound from it is safe.
    pub(crate) usage_before: Usage,
    /// Set when a state write was refused for the quota: the trap that
    /// follows is a `state_limit` failure.
    pub(crate) state_refused: Option<StateLimitExceeded>,
    /// Whether a `process` call is under way; during `init` writes go
    /// straight to the store.
    pub(crate) in_call: bool,
    pub(crate) metrics: Arc<StageMetrics>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) {
        let level = match level {
            types::Level::Trace => tracing::Level::TRACE,
            types::Level::Debug => tracing::Level::DEBUG,
            types::Level::Info => tracing::Level::INFO,
            types::Level::Warn => tracing::Level::WARN,
            types::Level::Error => tracing::Level::ERROR,
        };
        self.stdio.log(level, self.scope.partition, &message)
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(written) = self.pending.get(&key) {
            return Ok(written.map(<[u8]>::to_vec));
        }
        Ok(self.state.get(&self.scope, &key))
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.write(key, value, None)
    }

    fn set_with_ttl(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        if ttl_ms == 0 {
            return self.delete(key);
        }
        self.write(key, value, Some(Duration::from_millis(ttl_ms)))
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        if self.in_call {
            self.pending.put(key, None);
        } else {
            self.state.delete(&self.scope, &key)
        }
        Ok(())
    }
}

impl HostState {
    /// A write past the stage's quota traps the call, so the message fails
    /// as `state_limit` and none of the call's writes is applied.
    fn write(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> wasmtime::Result<()> {
        if !self.in_call {
            let before = self.state.usage(&self.scope.stage);
            let replaced = self.state.stored_size(&self.scope, &key);
            let after = Usage {
                bytes: (before.bytes + (key.len() + value.len()) as u64)
                    .saturating_sub(replaced.unwrap_or(0) as u64),
                keys: (before.keys + 1).saturating_sub(u64::from(replaced.is_some())),
            };
            self.refuse_past_quota(after)?;
            self.state.set(&self.scope, &key, &value, ttl);
            return Ok(());
        }
        self.pending.put(key, Some((value, ttl)));
        if check(self.pending.projected(self.usage_before), &self.quotas).is_ok() {
            return Ok(());
        }
        let (state, scope) = (&self.state, &self.scope);
        self.pending.look_up(|k| state.stored_size(scope, k));
        self.refuse_past_quota(self.pending.projected(self.usage_before))
    }

    fn refuse_past_quota(&mut self, usage: Usage) -> wasmtime::Result<()> {
        check(usage, &self.quotas).map_err(|exceeded| {
            self.state_refused = Some(exceeded.clone());
            wasmtime::Error::new(exceeded)
        })
    }

    /// Starts buffering state writes for one `process` call.
    pub(crate) fn begin_call(&mut self) {
        self.pending.clear();
        self.state_refused = None;
        self.usage_before = self.state.usage(&self.scope.stage);
        self.in_call = true;
    }

    /// Ends a `process` call: applies its writes if it returned, drops them
    /// if it trapped.
    pub(crate) fn end_call(&mut self, returned: bool) {
        self.in_call = false;
        if !returned {
            self.pending.clear();
            return;
        }
        for (key, value) in self.pending.drain() {
            match value {
                Some((value, ttl)) => self.state.set(&self.scope, &key, &value, ttl),
                None => self.state.delete(&self.scope, &key),
            }
        }
    }

    /// A plugin metric update; one past the stage's series limit or with an
    /// invalid name is dropped and counted (see [`crate::metrics::PluginSeries`]).
    fn metric_labels(labels: Vec<metrics::Label>) -> Vec<(String, String)> {
        labels.into_iter().map(|l| (l.name, l.value)).collect()
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, labels: Vec<metrics::Label>, delta: u64) {
        let labels = Self::metric_labels(labels);
        let _ = self
            .metrics
            .plugin
            .counter_add(&self.scope.stage, name, labels, delta);
    }

    fn gauge_set(&mut self, name: String, labels: Vec<metrics::Label>, value: f64) {
        let labels = Self::metric_labels(labels);
        let _ = self
            .metrics
            .plugin
            .gauge_set(&self.scope.stage, name, labels, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(bytes: usize, keys: usize) -> Quotas {
        Quotas {
            state_max_bytes: bytes,
            state_max_keys: keys,
            ..Quotas::default()
        }
    }

    #[test]
    fn the_buffer_counts_what_its_writes_add() {
        let mut b = Buffer::default();
        b.put(b"k1".to_vec(), Some((vec![0; 8], None)));
        b.put(b"k2".to_vec(), Some((vec![0; 8], None)));
        // Written again: counted once, at its last size.
        b.put(b"k1".to_vec(), Some((vec![0; 18], None)));
        assert_eq!(b.added, Usage { bytes: 30, keys: 2 });
        b.put(b"k2".to_vec(), None);
        assert_eq!(b.added, Usage { bytes: 20, keys: 1 });
        assert_eq!(b.get(b"k2"), Some(None));
        assert_eq!(b.get(b"k1").map(|v| v.map(<[u8]>::len)), Some(Some(18)));
        assert_eq!(b.get(b"k3"), None);
        let before = Usage {
            bytes: 100,
            keys: 5,
        };
        assert_eq!(
            b.projected(before),
            Usage {
                bytes: 120,
                keys: 6
            }
        );
        // k1 replaces a stored entry of 50 bytes; k2 deletes one of 10.
        b.look_up(|k| match k {
            b"k1" => Some(50),
            b"k2" => Some(10),
            _ => None,
        });
        assert_eq!(b.projected(before), Usage { bytes: 60, keys: 4 });
        // Looked up once per call.
        b.look_up(|_| panic!("looked up again"));
        b.put(b"k3".to_vec(), Some((vec![], None)));
        b.look_up(|_| None);
        assert_eq!(b.projected(before), Usage { bytes: 62, keys: 5 });
        b.clear();
        assert_eq!(b.projected(before), before);
    }

    #[test]
    fn usage_past_either_quota_is_refused() {
        let q = quotas(100, 3);
        assert!(
            check(
                Usage {
                    bytes: 100,
                    keys: 3
                },
                &q
            )
            .is_ok()
        );
        let e = check(
            Usage {
                bytes: 101,
                keys: 1,
            },
            &q,
        )
        .unwrap_err();
        assert_eq!((e.what, e.would, e.limit), ("bytes", 101, 100));
        let e = check(Usage { bytes: 1, keys: 4 }, &q).unwrap_err();
        assert_eq!((e.what, e.would, e.limit), ("keys", 4, 3));
        assert!(e.to_string().contains("state_max_keys of 3"), "{e}");
        assert!(check(Usage { bytes: 0, keys: 1 }, &quotas(0, 0)).is_err());
    }
}
