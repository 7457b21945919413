//! What a plugin sees of time, and how long it may wait for it.
//!
//! Without the `clock` grant both WASI clocks are frozen at zero: the wall
//! clock reads the Unix epoch and the monotonic clock never advances, so a
//! plugin cannot observe time (and its output depends on its input only).
//!
//! Sleeping is a host call, and epoch interruption covers wasm code only:
//! a plugin blocked in `wasi:io/poll` on a one-hour timer would hold its
//! stage thread for an hour. So the host's `monotonic-clock.subscribe-*`
//! functions are replaced by ones whose timers never run past the deadline
//! of the call under way (plus two epoch ticks). When such a timer fires the
//! plugin is back in wasm code after its epoch deadline, and is interrupted
//! at its next loop header or function entry like any other late call.

use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::host::HostState;
use super::runtime::EPOCH_TICK;

/// The WASI clocks interface whose timers are bounded; the version of
/// wasmtime-wasi's WIT (`wasi:clocks@0.2.x` imports of any minor version
/// resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The wall clock a plugin sees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    pub frozen: bool,
}

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        if self.frozen {
            return Duration::ZERO;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// The monotonic clock a plugin sees, in nanoseconds since the instance
/// started, or always 0.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MonotonicClock {
    Frozen,
    Real { start: Instant },
}

impl MonotonicClock {
    pub(crate) fn new(frozen: bool) -> Self {
        if frozen {
            MonotonicClock::Frozen
        } else {
            MonotonicClock::Real {
                start: Instant::now(),
            }
        }
    }
}

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        match self {
            MonotonicClock::Frozen => 0,
            MonotonicClock::Real { start } => {
                u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }
}

/// A timer of the guest's, bounded by the call's deadline.
enum Timer {
    /// Already due: ready after one yield, so a guest polling in a loop
    /// does not starve the runtime (as wasmtime-wasi does).
    Due {
        yielded: bool,
    },
    At(tokio::time::Instant),
}

#[wasmtime_wasi::async_trait]
impl Pollable for Timer {
    async fn ready(&mut self) {
        match self {
            Timer::Due { yielded: true } => {}
            Timer::Due { yielded } => {
                *yielded = true;
                tokio::task::yield_now().await
            }
            Timer::At(at) => tokio::time::sleep_until(*at).await,
        }
    }
}

fn subscribe(
    mut store: StoreContextMut<'_, HostState>,
    wanted: Duration,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let host = store.data_mut();
    let now = Instant::now();
    let budget = host.deadline.saturating_duration_since(now) + 2 * EPOCH_TICK;
    let wait = wanted.min(budget);
    let timer = if wait.is_zero() {
        Timer::Due { yielded: false }
    } else {
        Timer::At(tokio::time::Instant::from_std(now + wait))
    };
    let timer = host.table.push(timer)?;
    Ok((wasmtime_wasi::p2::subscribe(&mut host.table, timer)?,))
}

/// Replaces the linker's `subscribe-duration` and `subscribe-instant` with
/// bounded ones. Call after adding WASI to `linker`.
pub(crate) fn bound_timers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |store: StoreContextMut<'_, HostState>, (nanos,): (u64,)| {
            subscribe(store, Duration::from_nanos(nanos))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |store: StoreContextMut<'_, HostState>, (when,): (u64,)| {
            let now = store.data().monotonic.now();
            subscribe(store, Duration::from_nanos(when.saturating_sub(now)))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
