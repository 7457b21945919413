//! The resource limiter of a plugin's store: caps its linear memory, its
//! tables and its number of instances, and remembers how much memory it
//! reached.
//!
//! Unlike wasmtime's `StoreLimits`, the memory cap is on the instance's
//! linear memories taken together (a component may hold several core
//! modules, each with its own memory), and a refused growth is remembered,
//! so that the trap it causes is classified as a memory error without
//! looking at error text.

use wasmtime::ResourceLimiter;

/// Most core instances a component may create (a Rust plugin has 1-3).
pub(crate) const MAX_INSTANCES: usize = 16;
/// Most tables a component may create.
pub(crate) const MAX_TABLES: usize = 64;
/// Most linear memories a component may create.
pub(crate) const MAX_MEMORIES: usize = 4;
/// Most elements of one table.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Why the limiter refused a growth: the error that becomes the trap.
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "linear memory would grow to {} bytes, past the stage's limit of {} bytes",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

#[derive(Debug)]
pub(crate) struct Limiter {
    /// The most bytes of linear memory, all memories together.
    memory_limit: usize,
    /// Bytes of linear memory now, all memories together.
    memory: usize,
    /// The most `memory` has been.
    high_water: usize,
    /// `(memory, high_water)` before the growth last allowed, restored if
    /// that growth then fails in the allocator.
    before_growth: Option<(usize, usize)>,
    /// Whether a growth was refused for going past the limit. Growth never
    /// fails quietly (the guest would see -1 from `memory.grow` and Rust
    /// would abort with a less clear trap): it traps, and this flag tells
    /// the caller that the trap is a memory error.
    refused: bool,
}

impl Limiter {
    pub(crate) fn new(memory_limit: usize) -> Self {
        Limiter {
            memory_limit,
            memory: 0,
            high_water: 0,
            before_growth: None,
            refused: false,
        }
    }

    /// The most linear memory the instance has had, in bytes.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water
    }

    /// Whether a memory growth was refused since the last [`Self::clear_refused`].
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    pub(crate) fn clear_refused(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit || maximum.is_some_and(|max| desired > max) {
            self.refused = true;
            self.before_growth = None;
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: total,
                limit: self.memory_limit,
            }));
        }
        self.before_growth = Some((self.memory, self.high_water));
        self.memory = total;
        self.high_water = self.high_water.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The growth we allowed did not happen (the host could not map the
        // memory, say): undo its accounting, and trap all the same.
        if let Some((memory, high_water)) = self.before_growth.take() {
            self.memory = memory;
            self.high_water = high_water;
        }
        self.refused = true;
        Err(error.context("linear memory could not grow"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!("a table would grow to {desired} elements, past the limit")
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("a table could not grow"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_all_memories_together_and_tracks_the_high_water_mark() {
        let mut l = Limiter::new(100);
        assert!(l.memory_growing(0, 40, None).unwrap());
        assert!(l.memory_growing(0, 30, None).unwrap());
        assert!(l.memory_growing(40, 60, None).unwrap());
        assert_eq!(l.high_water(), 90);
        assert!(!l.refused());
        // A second memory growing 30 -> 50 would make 110 in all.
        let err = l.memory_growing(30, 50, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
        assert!(l.refused());
        assert_eq!(l.high_water(), 90);
        l.clear_refused();
        assert!(!l.refused());
    }

    #[test]
    fn a_failed_growth_is_undone_and_traps() {
        let mut l = Limiter::new(100);
        assert!(l.memory_growing(0, 10, None).unwrap());
        assert!(l.memory_growing(10, 80, None).unwrap());
        assert!(l.memory_grow_failed(wasmtime::format_err!("mmap")).is_err());
        assert_eq!(l.high_water(), 10);
        assert!(l.refused());
        // The memory's own maximum is enforced too.
        assert!(l.memory_growing(10, 20, Some(15)).is_err());
    }
}
