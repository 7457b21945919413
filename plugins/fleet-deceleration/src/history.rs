//! A vehicle's recent frames in event-time order, with the fleet-operations
//! design's tolerance for frames that arrive late.

use serde::{Deserialize, Serialize};

/// What the rule needs of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub frame_index: i64,
    /// Event time, ms since the Unix epoch.
    pub t_ms: i64,
    /// hypot(vx, vy), m/s.
    pub speed: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The frame is the newest: the rule runs.
    Newest,
    /// An older frame, inserted in event-time order within the tolerance.
    Reordered,
}

/// Too old to place: how far behind the newest it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLate {
    pub frames_behind: i64,
    pub ms_behind: i64,
    pub newest_frame: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Keep at most this many frames.
    pub capacity: usize,
    /// A frame this many frames behind the newest, or fewer, is reordered.
    pub max_frames: i64,
    /// A frame this many ms behind the newest, or fewer, is reordered.
    pub max_ms: i64,
}

/// Places `frame` among `frames` (oldest first), or says it is too late.
pub fn place(frames: &mut Vec<Frame>, frame: Frame, tol: Tolerance) -> Result<Placed, TooLate> {
    let placed = match frames.last() {
        None => Placed::Newest,
        Some(newest) if (frame.t_ms, frame.frame_index) > (newest.t_ms, newest.frame_index) => {
            Placed::Newest
        }
        Some(newest) => {
            let frames_behind = newest.frame_index - frame.frame_index;
            let ms_behind = newest.t_ms - frame.t_ms;
            if frames_behind > tol.max_frames && ms_behind > tol.max_ms {
                return Err(TooLate {
                    frames_behind,
                    ms_behind,
                    newest_frame: newest.frame_index,
                });
            }
            Placed::Reordered
        }
    };
    let at = frames.partition_point(|f| (f.t_ms, f.frame_index) <= (frame.t_ms, frame.frame_index));
    frames.insert(at, frame);
    if frames.len() > tol.capacity {
        let excess = frames.len() - tol.capacity;
        frames.drain(..excess);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        capacity: 10,
        max_frames: 2,
        max_ms: 500,
    };

    fn f(i: i64) -> Frame {
        Frame {
            frame_index: i,
            t_ms: i * 100,
            speed: 10.0,
        }
    }

    #[test]
    fn keeps_the_last_frames_in_event_time_order() {
        let mut h = Vec::new();
        for i in 0..15 {
            assert_eq!(place(&mut h, f(i), TOL), Ok(Placed::Newest));
        }
        assert_eq!(h.len(), 10);
        assert_eq!(h[0].frame_index, 5);
        // Two frames late: reordered into place.
        let mut h: Vec<Frame> = [0, 1, 2, 4].map(f).into();
        assert_eq!(place(&mut h, f(3), TOL), Ok(Placed::Reordered));
        let order: Vec<i64> = h.iter().map(|f| f.frame_index).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn older_than_both_tolerances_is_too_late() {
        let mut h: Vec<Frame> = (0..=10).map(f).collect();
        // 3 frames and 300 ms behind: within 500 ms, so reordered.
        assert_eq!(place(&mut h, f(7), TOL), Ok(Placed::Reordered));
        // 6 frames and 600 ms behind: too late.
        assert_eq!(
            place(&mut h, f(4), TOL),
            Err(TooLate {
                frames_behind: 6,
                ms_behind: 600,
                newest_frame: 10
            })
        );
        // 2 frames behind but 900 ms (sparse frames): within 2 frames.
        let mut h = vec![
            Frame {
                frame_index: 1,
                t_ms: 0,
                speed: 1.0,
            },
            Frame {
                frame_index: 3,
                t_ms: 1000,
                speed: 1.0,
            },
        ];
        let late = Frame {
            frame_index: 1,
            t_ms: 100,
            speed: 1.0,
        };
        assert_eq!(place(&mut h, late, TOL), Ok(Placed::Reordered));
    }
}
