//! What a plugin sees of time.
//!
//! Without the `clock` grant both WASI clocks are frozen at zero: the wall
//! clock reads the Unix epoch and the monotonic clock never advances, so a
//! plugin cannot observe time (and its output depends on its input only).
//! How long it may wait for time is bounded in [`super::timers`].

use std::time::{Duration, Instant};

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// How often the epoch advances; call deadlines are multiples of it.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

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
