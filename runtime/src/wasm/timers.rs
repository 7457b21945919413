//! How long a plugin may wait for time.
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
use wasmtime_wasi::HostMonotonicClock;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::clocks::EPOCH_TICK;
use super::host::HostState;

/// The WASI clocks interface whose timers are bounded; the version of
/// wasmtime-wasi's WIT (`wasi:clocks@0.2.x` imports of any minor version
/// resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

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
