//! One session's laps, folded frame by frame, with no I/O: the plugin keeps
//! a [`Session`] per session id in keyed state.

use serde::{Deserialize, Serialize};
use weir_purple_telemetry::{LapSummary, TelemetryFrame, round};

/// What the folding needs of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub ts: i64,
    pub lap_time: i32,
    pub throttle: f32,
    pub brake: f32,
    pub speed: f32,
    pub gear: i32,
    pub pos: f32,
    pub lap: i32,
}

impl From<&TelemetryFrame> for Frame {
    fn from(f: &TelemetryFrame) -> Self {
        Frame {
            ts: f.timestamp,
            lap_time: f.lap_time,
            throttle: f.throttle,
            brake: f.brake,
            speed: f.speed,
            gear: f.gear,
            pos: f.normalized_position,
            lap: f.lap_number,
        }
    }
}

/// The `[stage.config]` settings the folding uses.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Frames held back to put late ones in order; a frame older than
    /// every frame held and folded is too late.
    pub reorder_frames: usize,
    /// Throttle at or above this is full throttle.
    pub full_throttle: f32,
    /// Brake above this is braking.
    pub braking: f32,
    /// How far back (ms of frame time) folded frames are remembered, so
    /// that one delivered again (after a restart, say) is known as a
    /// repeat rather than taken for a late frame.
    pub dedup_window_ms: i64,
}

/// A lap being folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lap {
    number: i32,
    /// The `lapNumber` its frames carry: the same as `number` unless the
    /// game did not count the lap and a position wrap ended the last one.
    frame_lap: i32,
    /// Its first frame was seen: its summary covers all of it.
    whole: bool,
    start_ts: i64,
    last_pos: f32,
    last_gear: i32,
    frames: u64,
    speed_sum: f64,
    speed_max: f32,
    full_throttle: u64,
    braking: u64,
    gear_changes: u32,
    sector1: Option<i64>,
    sector2: Option<i64>,
}

impl Lap {
    fn start(f: &Frame, number: i32, whole: bool) -> Lap {
        Lap {
            number,
            frame_lap: f.lap,
            whole,
            start_ts: f.ts,
            last_pos: f.pos,
            last_gear: f.gear,
            frames: 0,
            speed_sum: 0.0,
            speed_max: f32::MIN,
            full_throttle: 0,
            braking: 0,
            gear_changes: 0,
            sector1: None,
            sector2: None,
        }
    }

    fn add(&mut self, f: &Frame, rules: &Rules) {
        if self.frames > 0 && f.gear != self.last_gear {
            self.gear_changes += 1;
        }
        self.frames += 1;
        self.speed_sum += f64::from(f.speed);
        self.speed_max = self.speed_max.max(f.speed);
        self.full_throttle += u64::from(f.throttle >= rules.full_throttle);
        self.braking += u64::from(f.brake > rules.braking);
        if self.sector1.is_none() && f.pos >= 1.0 / 3.0 {
            self.sector1 = Some(f.ts - self.start_ts);
        }
        if self.sector2.is_none() && f.pos >= 2.0 / 3.0 {
            self.sector2 = Some(f.ts - self.start_ts);
        }
        self.last_pos = f.pos;
        self.last_gear = f.gear;
    }

    /// The summary of this lap, ended by a frame at `next_ts`.
    fn summary(&self, session: &str, next_ts: i64) -> LapSummary {
        let lap_time = next_ts - self.start_ts;
        let n = self.frames.max(1) as f64;
        let s1 = self.sector1.unwrap_or(lap_time);
        let s2 = self.sector2.unwrap_or(lap_time);
        LapSummary {
            session_id: session.to_string(),
            lap_number: self.number,
            started_at_ms: self.start_ts,
            lap_time_ms: lap_time,
            frames: self.frames,
            max_speed: f64::from(self.speed_max),
            avg_speed: round(self.speed_sum / n, 3),
            full_throttle_share: round(self.full_throttle as f64 / n, 4),
            braking_share: round(self.braking as f64 / n, 4),
            gear_changes: self.gear_changes,
            sectors_ms: [s1, s2 - s1, lap_time - s2],
        }
    }
}

/// A session's folding state, kept between messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Frames not folded yet, in timestamp order.
    pending: Vec<Frame>,
    /// The newest frame folded.
    folded_ts: Option<i64>,
    /// The frames folded before it within the dedup window, as ms before
    /// it.
    #[serde(default)]
    folded_before: Vec<i64>,
    lap: Option<Lap>,
}

/// What became of a frame.
#[derive(Debug, PartialEq)]
pub enum Placed {
    /// Held, and the frames it pushed out folded: the laps they completed.
    Held(Vec<LapSummary>),
    /// A frame with a timestamp already seen.
    Duplicate,
}

/// A frame older than the newest folded one, and not one of the folded
/// frames remembered: it came too late to be counted in its lap.
#[derive(Debug, PartialEq)]
pub struct TooLate {
    pub ts: i64,
    pub folded_ts: i64,
}

/// Whether a lap ends between `lap`'s last frame and `f`: a new lap
/// number, or the position wrapping from the end of the lap to its start.
fn boundary(lap: &Lap, f: &Frame) -> bool {
    f.lap != lap.frame_lap || (lap.last_pos > 0.9 && f.pos < 0.1)
}

impl Session {
    /// Places `f` among the frames held back, and folds those it pushes
    /// out.
    pub fn place(&mut self, session: &str, f: Frame, rules: &Rules) -> Result<Placed, TooLate> {
        let folded = |ts: i64| match self.folded_ts {
            Some(newest) => ts == newest || self.folded_before.contains(&(newest - ts)),
            None => false,
        };
        if folded(f.ts) || self.pending.iter().any(|p| p.ts == f.ts) {
            return Ok(Placed::Duplicate);
        }
        if let Some(folded_ts) = self.folded_ts.filter(|t| f.ts < *t) {
            return Err(TooLate {
                ts: f.ts,
                folded_ts,
            });
        }
        let at = self.pending.partition_point(|p| p.ts < f.ts);
        self.pending.insert(at, f);
        let mut laps = Vec::new();
        while self.pending.len() > rules.reorder_frames {
            let oldest = self.pending.remove(0);
            laps.extend(self.fold(session, &oldest, rules));
        }
        Ok(Placed::Held(laps))
    }

    /// Folds `f` into its lap; the summary of the lap it ends, if it ends a
    /// whole one.
    fn fold(&mut self, session: &str, f: &Frame, rules: &Rules) -> Option<LapSummary> {
        if let Some(previous) = self.folded_ts.replace(f.ts) {
            let shift = f.ts - previous;
            for before in &mut self.folded_before {
                *before += shift;
            }
            self.folded_before.push(shift);
            self.folded_before
                .retain(|before| *before <= rules.dedup_window_ms);
        }
        let mut ended = None;
        let lap = match self.lap.take() {
            // A session's first frame starts a whole lap only if it is the
            // lap's first (its lap time 0); weir may have joined mid-lap.
            None => Lap::start(f, f.lap, f.lap_time == 0),
            Some(lap) if boundary(&lap, f) => {
                if lap.whole {
                    ended = Some(lap.summary(session, f.ts));
                }
                let number = if f.lap != lap.frame_lap {
                    f.lap
                } else {
                    lap.number + 1
                };
                Lap::start(f, number, true)
            }
            Some(lap) => lap,
        };
        let lap = self.lap.insert(lap);
        lap.add(f, rules);
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        reorder_frames: 2,
        full_throttle: 0.98,
        braking: 0.05,
        dedup_window_ms: 25,
    };

    /// Frame `i` of a lap of `n` frames, 10 ms apart, lap `lap`.
    fn frame(lap: i32, i: i64, n: i64) -> Frame {
        let start = 1_000_000 + i64::from(lap - 1) * n * 10;
        Frame {
            ts: start + i * 10,
            lap_time: (i * 10) as i32,
            throttle: if i % 2 == 0 { 1.0 } else { 0.5 },
            brake: if i % 3 == 0 { 0.3 } else { 0.0 },
            speed: 100.0 + i as f32,
            gear: 3 + (i / 4) as i32,
            pos: i as f32 / n as f32,
            lap,
        }
    }

    fn fold_all(frames: &[Frame]) -> (Vec<LapSummary>, usize) {
        let mut s = Session::default();
        let (mut laps, mut duplicates) = (Vec::new(), 0);
        for f in frames {
            match s.place("s", *f, &RULES).unwrap() {
                Placed::Held(done) => laps.extend(done),
                Placed::Duplicate => duplicates += 1,
            }
        }
        (laps, duplicates)
    }

    #[test]
    fn a_lap_is_summarised_when_the_next_one_starts() {
        // Laps 1 and 2 of 12 frames, and the first frames of lap 3.
        let mut frames: Vec<Frame> = (0..12).map(|i| frame(1, i, 12)).collect();
        frames.extend((0..12).map(|i| frame(2, i, 12)));
        frames.extend((0..3).map(|i| frame(3, i, 12)));
        let (laps, _) = fold_all(&frames);
        assert_eq!(laps.len(), 2, "{laps:?}");
        let lap = &laps[0];
        assert_eq!((lap.lap_number, lap.frames, lap.lap_time_ms), (1, 12, 120));
        assert_eq!(lap.started_at_ms, 1_000_000);
        assert_eq!(lap.max_speed, 111.0);
        assert_eq!(lap.avg_speed, 105.5);
        assert_eq!(lap.full_throttle_share, 0.5);
        assert_eq!(lap.braking_share, round(4.0 / 12.0, 4));
        // Gears 3, 4, 5 over 12 frames: two changes.
        assert_eq!(lap.gear_changes, 2);
        // Position 4/12 is the first at 1/3, 8/12 the first at 2/3.
        assert_eq!(lap.sectors_ms, [40, 40, 40]);
        assert_eq!(laps[1].lap_number, 2);
        assert_eq!(laps[1].started_at_ms, 1_000_120);
    }

    #[test]
    fn late_and_repeated_frames_within_the_window_change_nothing() {
        let mut in_order: Vec<Frame> = (0..12).map(|i| frame(1, i, 12)).collect();
        in_order.extend((0..4).map(|i| frame(2, i, 12)));
        let (expected, _) = fold_all(&in_order);
        let mut shuffled = in_order.clone();
        shuffled.swap(3, 4);
        shuffled.swap(11, 13);
        shuffled.insert(6, in_order[5]);
        shuffled.insert(14, in_order[12]);
        let (laps, duplicates) = fold_all(&shuffled);
        assert_eq!(laps, expected);
        assert_eq!(duplicates, 2);
    }

    #[test]
    fn a_frame_behind_the_folded_ones_is_too_late() {
        let mut s = Session::default();
        for i in 0..6 {
            s.place("s", frame(1, i, 12), &RULES).unwrap();
        }
        // Frames 0..=3 are folded, 4 and 5 held; frames within 25 ms of
        // the newest folded (3) are remembered: 1 and 2.
        let folded_ts = frame(1, 3, 12).ts;
        for i in [1, 2, 3, 4, 5] {
            assert_eq!(s.place("s", frame(1, i, 12), &RULES), Ok(Placed::Duplicate));
        }
        let mut between = frame(1, 2, 12);
        between.ts += 5;
        let old = frame(1, 0, 12);
        for late in [between, old] {
            assert_eq!(
                s.place("s", late, &RULES),
                Err(TooLate {
                    ts: late.ts,
                    folded_ts
                })
            );
        }
    }

    #[test]
    fn a_lap_joined_midway_is_not_summarised() {
        let mut frames: Vec<Frame> = (5..12).map(|i| frame(1, i, 12)).collect();
        frames.extend((0..12).map(|i| frame(2, i, 12)));
        frames.extend((0..3).map(|i| frame(3, i, 12)));
        let (laps, _) = fold_all(&frames);
        assert_eq!(laps.len(), 1);
        assert_eq!(laps[0].lap_number, 2);
    }

    #[test]
    fn a_position_wrap_ends_a_lap_when_the_number_does_not_change() {
        let mut frames: Vec<Frame> = (0..12).map(|i| frame(1, i, 12)).collect();
        // The game kept lap number 1 into the next lap.
        frames.extend((0..4).map(|i| Frame {
            lap: 1,
            ..frame(2, i, 12)
        }));
        let (laps, _) = fold_all(&frames);
        assert_eq!(laps.len(), 1);
        assert_eq!((laps[0].lap_number, laps[0].lap_time_ms), (1, 120));
    }
}
