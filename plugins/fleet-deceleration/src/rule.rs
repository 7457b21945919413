//! The sudden-deceleration rule over a vehicle's recent frames.

use weir_fleet_events::Severity;

use crate::history::Frame;

/// The rule's thresholds (set in `[stage.config]`, see `Config`).
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Frames within this many ms of the newest are the evidence window.
    pub window_ms: i64,
    /// The last two frames must be at most this far apart (and not 0).
    pub max_dt_ms: i64,
    /// Deceleration (m/s², positive) that raises a WARNING.
    pub warning_decel_ms2: f64,
    /// Deceleration (m/s², positive) that raises a CRITICAL.
    pub critical_decel_ms2: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window_ms: 1000,
            max_dt_ms: 500,
            warning_decel_ms2: 3.0,
            critical_decel_ms2: 5.0,
        }
    }
}

/// A firing of the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    /// Signed, m/s²: negative is deceleration.
    pub acceleration: f64,
    pub velocity_delta: f64,
    pub dt_ms: i64,
    pub speed_before: f64,
    pub speed_after: f64,
    /// The window's frames, oldest first.
    pub frame_indices: Vec<i64>,
    pub velocity_history: Vec<f64>,
    /// Between consecutive window frames; `None` where Δt is out of range.
    pub acceleration_history: Vec<Option<f64>>,
}

fn acceleration(a: &Frame, b: &Frame, max_dt_ms: i64) -> Option<f64> {
    let dt = b.t_ms - a.t_ms;
    (dt > 0 && dt <= max_dt_ms).then(|| (b.speed - a.speed) / (dt as f64 / 1000.0))
}

/// Evaluates the rule with the newest frame last in `frames`.
pub fn evaluate(frames: &[Frame], th: &Thresholds) -> Option<Finding> {
    let newest = frames.last()?;
    let start = frames.partition_point(|f| newest.t_ms - f.t_ms > th.window_ms);
    let window = &frames[start..];
    let [.., before, after] = window else {
        return None;
    };
    let accel = acceleration(before, after, th.max_dt_ms)?;
    let severity = if accel <= -th.critical_decel_ms2 {
        Severity::Critical
    } else if accel <= -th.warning_decel_ms2 {
        Severity::Warning
    } else {
        return None;
    };
    Some(Finding {
        severity,
        acceleration: accel,
        velocity_delta: after.speed - before.speed,
        dt_ms: after.t_ms - before.t_ms,
        speed_before: before.speed,
        speed_after: after.speed,
        frame_indices: window.iter().map(|f| f.frame_index).collect(),
        velocity_history: window.iter().map(|f| f.speed).collect(),
        acceleration_history: window
            .windows(2)
            .map(|p| acceleration(&p[0], &p[1], th.max_dt_ms))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(speeds: &[f64], step_ms: i64) -> Vec<Frame> {
        speeds
            .iter()
            .enumerate()
            .map(|(i, &speed)| Frame {
                frame_index: i as i64,
                t_ms: i as i64 * step_ms,
                speed,
            })
            .collect()
    }

    #[test]
    fn severity_follows_the_thresholds() {
        let th = Thresholds::default();
        // 100 ms apart: a drop of 0.2 m/s is -2 m/s², 0.3 is -3, 0.5 is -5.
        assert_eq!(evaluate(&frames(&[10.0, 10.0, 9.8], 100), &th), None);
        let warn = evaluate(&frames(&[10.0, 10.0, 9.7], 100), &th).unwrap();
        assert_eq!(warn.severity, Severity::Warning);
        assert!((warn.acceleration + 3.0).abs() < 1e-9);
        let crit = evaluate(&frames(&[10.0, 10.0, 9.5], 100), &th).unwrap();
        assert_eq!(crit.severity, Severity::Critical);
        assert_eq!(crit.frame_indices, vec![0, 1, 2]);
        assert_eq!(crit.velocity_history, vec![10.0, 10.0, 9.5]);
        assert_eq!(crit.acceleration_history.len(), 2);
        // Speeding up is not deceleration.
        assert_eq!(evaluate(&frames(&[9.0, 10.0], 100), &th), None);
    }

    #[test]
    fn skips_pairs_too_far_apart_or_at_the_same_time() {
        let th = Thresholds::default();
        assert_eq!(evaluate(&frames(&[10.0, 5.0], 600), &th), None);
        assert_eq!(evaluate(&frames(&[10.0, 5.0], 0), &th), None);
        // Only frames within 1 s of the newest form the window.
        let f = frames(&[10.0, 10.0, 10.0, 10.0, 8.0], 400);
        let finding = evaluate(&f, &th).unwrap();
        assert_eq!(finding.frame_indices, vec![2, 3, 4]);
        assert_eq!(finding.severity, Severity::Critical);
    }
}
