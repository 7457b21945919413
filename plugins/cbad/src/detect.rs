//! The decision rule, and the analysis that feeds it with as few
//! compressions as the rule allows.
//!
//! - strong = NCD ≥ 0.3 and p ≤ 0.05;
//! - votes = #{compression drop ≥ 0.15, entropy rise ≥ 0.2, composite ≥ 0.6,
//!   novelty ≥ 1.10};
//! - anomaly = strong, or (composite ≥ 0.6 and (votes ≥ 2 or NCD ≥ 0.3));
//! - composite = 0.5·NCD + 0.25·(1 − p) + 0.25·max(0, −Δcompression ratio).
//!
//! Every term that involves p favours an anomaly as p falls, so whether a
//! window *can* be an anomaly is decided by the smallest p the test could
//! return, 1/(N + 1). When even that gives no anomaly, the permutation test
//! (N × 3B+W bytes compressed) is skipped; when the shuffles counted so far
//! already push p's lower bound past every path to an anomaly, the rest are.
//! Both cuts are exact: they never change a decision.

use serde::Serialize;

use crate::metrics::{Measure, Observed, Permutations};

/// The rule's thresholds; the defaults are the spec's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub ncd: f64,
    pub p_value: f64,
    pub compression_drop: f64,
    pub entropy_rise: f64,
    pub composite: f64,
    pub novelty: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            ncd: 0.3,
            p_value: 0.05,
            compression_drop: 0.15,
            entropy_rise: 0.2,
            composite: 0.6,
            novelty: 1.10,
        }
    }
}

/// The rule applied to one set of measurements and one p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub composite: f64,
    pub votes: u32,
    pub strong: bool,
    pub anomaly: bool,
}

/// The compression drop as the composite counts it: positive when the
/// window compresses worse than the baseline.
fn drop(o: &Observed) -> f64 {
    (-o.compression_ratio_change).max(0.0)
}

pub fn decide(o: &Observed, p: f64, t: &Thresholds) -> Decision {
    let composite = 0.5 * o.ncd + 0.25 * (1.0 - p) + 0.25 * drop(o);
    let votes = u32::from(drop(o) >= t.compression_drop)
        + u32::from(o.entropy_change >= t.entropy_rise)
        + u32::from(composite >= t.composite)
        + u32::from(o.conditional_novelty >= t.novelty);
    let strong = o.ncd >= t.ncd && p <= t.p_value;
    let anomaly = strong || (composite >= t.composite && (votes >= 2 || o.ncd >= t.ncd));
    Decision {
        composite,
        votes,
        strong,
        anomaly,
    }
}

/// A finished analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub observed: Observed,
    /// `None` when the test was not needed to decide.
    pub permutations: Option<Permutations>,
    pub decision: Decision,
}

impl Verdict {
    /// The p-value, when the test ran to the end.
    pub fn p_value(&self) -> Option<f64> {
        self.permutations
            .filter(Permutations::complete)
            .map(|p| p.p_value())
    }
}

/// How the permutation test may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestPlan {
    /// Shuffles wanted (N).
    pub permutations: usize,
    /// Bytes the whole test may compress; fewer shuffles run when N of
    /// them would compress more (large events), so one analysis has a
    /// bounded cost whatever the payloads.
    pub budget_bytes: usize,
    /// Seeds the shuffles, so that a replay gives the same p-value.
    pub seed: u64,
}

impl TestPlan {
    /// The shuffles to run for this pool: N, or what the budget affords.
    pub fn shuffles<F: AsRef<[u8]>>(&self, baseline: &[F], window: &[F]) -> usize {
        let per_shuffle = crate::metrics::shuffle_bytes(baseline, window).max(1);
        self.permutations.min(self.budget_bytes / per_shuffle)
    }
}

/// Measures `window` against `baseline` and decides, running only the
/// shuffles the decision needs.
pub fn analyse<F: AsRef<[u8]>>(
    measure: &mut Measure,
    baseline: &[F],
    window: &[F],
    plan: &TestPlan,
    t: &Thresholds,
) -> Verdict {
    let observed = measure.observe(baseline, window);
    let permutations = plan.shuffles(baseline, window);
    let best_p = 1.0 / (permutations + 1) as f64;
    if !decide(&observed, best_p, t).anomaly {
        return Verdict {
            decision: decide(&observed, 1.0, t),
            observed,
            permutations: None,
        };
    }
    // `p_value()` of a partial count is the smallest p the full test can
    // still give; once that rules an anomaly out, stop.
    let test = measure.permutation_test(
        baseline,
        window,
        observed.ncd_raw,
        permutations,
        plan.seed,
        |so_far| decide(&observed, so_far.p_value(), t).anomaly,
    );
    Verdict {
        decision: decide(&observed, test.p_value(), t),
        observed,
        permutations: Some(test),
    }
}

/// How sure the plugin is of an anomaly, in [0, 1]: 1 − p when the change
/// is statistically significant ("strong"); otherwise the composite score,
/// which passed 0.6 for the window to be flagged.
pub fn confidence(d: &Decision, p: f64) -> f64 {
    if d.strong { 1.0 - p } else { d.composite }.clamp(0.0, 1.0)
}

/// One line naming what moved, strongest signal first.
pub fn explanation(o: &Observed, d: &Decision, p: f64, t: &Thresholds) -> String {
    let mut parts = Vec::new();
    if o.ncd >= t.ncd {
        parts.push(format!(
            "window is unlike its baseline (NCD {:.2}: {:.2} against a same-stream floor \
             of {:.2}, p={p:.3})",
            o.ncd, o.ncd_raw, o.ncd_floor
        ));
    }
    if drop(o) >= t.compression_drop {
        parts.push(format!(
            "compression ratio fell {:.0}% ({:.1} to {:.1})",
            drop(o) * 100.0,
            o.baseline_compression_ratio,
            o.window_compression_ratio
        ));
    }
    if o.entropy_change >= t.entropy_rise {
        parts.push(format!(
            "byte entropy rose {:.0}% ({:.2} to {:.2} bits/byte)",
            o.entropy_change * 100.0,
            o.baseline_entropy,
            o.window_entropy
        ));
    }
    if o.conditional_novelty >= t.novelty {
        parts.push(format!(
            "the baseline does not help compress the window (novelty {:.2})",
            o.conditional_novelty
        ));
    }
    if parts.is_empty() {
        parts.push(format!("composite score {:.2} (p={p:.3})", d.composite));
    }
    let kind = if d.strong {
        "significant change"
    } else {
        "change"
    };
    format!("{kind}: {}", parts.join("; "))
}

/// The anomaly event published for a flagged window.
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyEvent {
    pub anomaly_id: String,
    pub stream_id: String,
    pub partition: i32,
    pub window_start_offset: i64,
    pub window_end_offset: i64,
    pub window_events: usize,
    pub baseline_start_offset: i64,
    pub baseline_end_offset: i64,
    pub baseline_events: usize,
    pub compressor: &'static str,
    pub baseline_compression_ratio: f64,
    pub window_compression_ratio: f64,
    pub compression_ratio_change: f64,
    pub baseline_entropy: f64,
    pub window_entropy: f64,
    pub entropy_change: f64,
    pub ncd: f64,
    pub ncd_raw: f64,
    pub ncd_floor: f64,
    pub conditional_novelty: f64,
    pub p_value: f64,
    pub permutations: usize,
    pub composite: f64,
    pub votes: u32,
    pub strong: bool,
    pub confidence: f64,
    pub explanation: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Algorithm;

    fn observed(ncd: f64, ratio_change: f64, entropy_change: f64, novelty: f64) -> Observed {
        Observed {
            baseline_compression_ratio: 10.0,
            window_compression_ratio: 10.0 * (1.0 + ratio_change),
            compression_ratio_change: ratio_change,
            baseline_entropy: 5.0,
            window_entropy: 5.0 * (1.0 + entropy_change),
            entropy_change,
            ncd,
            ncd_raw: 0.5 + ncd / 2.0,
            ncd_floor: 0.5,
            conditional_novelty: novelty,
        }
    }

    #[test]
    fn the_rule_as_specified() {
        let t = Thresholds::default();
        // Strong: NCD and p both pass.
        let d = decide(&observed(0.3, 0.0, 0.0, 0.5), 0.05, &t);
        assert!(d.strong && d.anomaly);
        // NCD passes, p does not, composite 0.15 + 0.2375 < 0.6.
        let d = decide(&observed(0.3, 0.0, 0.0, 0.5), 0.051, &t);
        assert!(!d.strong && !d.anomaly);
        // Composite alone (0.5·0.5 + 0.25·0.9 + 0.25·0.5 = 0.6) with NCD ≥ 0.3.
        let d = decide(&observed(0.5, -0.5, 0.0, 0.5), 0.1, &t);
        assert!((d.composite - 0.6).abs() < 1e-12);
        assert!(!d.strong && d.anomaly);
        assert_eq!(d.votes, 2, "drop and composite");
        // Composite ≥ 0.6 with NCD < 0.3 needs a second vote.
        let d = decide(&observed(0.28, -0.9, 0.0, 0.5), 0.0, &t);
        assert!(d.composite >= 0.6);
        assert_eq!(d.votes, 2);
        assert!(d.anomaly);
        // Entropy and novelty votes alone do not make an anomaly.
        let d = decide(&observed(0.0, 0.0, 0.5, 2.0), 0.0, &t);
        assert_eq!(d.votes, 2);
        assert!(!d.anomaly, "composite {}", d.composite);
    }

    #[test]
    fn confidence_and_explanation() {
        let t = Thresholds::default();
        let o = observed(0.8, -0.3, 0.25, 1.2);
        let d = decide(&o, 0.01, &t);
        assert!(d.strong);
        assert!((confidence(&d, 0.01) - 0.99).abs() < 1e-12);
        let line = explanation(&o, &d, 0.01, &t);
        assert!(
            line.starts_with("significant change: window is unlike"),
            "{line}"
        );
        for part in [
            "compression ratio fell 30%",
            "entropy rose 25%",
            "novelty 1.20",
        ] {
            assert!(line.contains(part), "{line}");
        }
        assert!(!line.contains('\n'));
        let o = observed(0.28, -0.9, 0.0, 0.5);
        let d = decide(&o, 0.0, &t);
        assert!(!d.strong && d.anomaly);
        assert_eq!(confidence(&d, 0.0), d.composite.min(1.0));
        assert!(explanation(&o, &d, 0.0, &t).starts_with("change: compression ratio fell 90%"));
    }

    fn lines(n: usize, seed: u64, template: &str) -> Vec<Vec<u8>> {
        let mut rng = crate::metrics::Rng::new(seed);
        (0..n)
            .map(|_| {
                template
                    .replace("{a}", &rng.below(1000).to_string())
                    .into_bytes()
            })
            .collect()
    }

    #[test]
    fn the_test_is_skipped_or_cut_only_when_it_cannot_matter() {
        let t = Thresholds::default();
        let mut m = Measure::new(Algorithm::Lz4.compressor());
        let stable = lines(
            450,
            1,
            r#"{"level":"INFO","message":"GET /orders/{a} 200"}"#,
        );
        let plan = TestPlan {
            permutations: 200,
            budget_bytes: usize::MAX,
            seed: 9,
        };
        let v = analyse(&mut m, &stable[..400], &stable[400..], &plan, &t);
        assert!(v.permutations.is_none(), "{v:?}");
        assert!(!v.decision.anomaly);

        let mut changed = stable.clone();
        changed.splice(
            400..,
            lines(
                50,
                2,
                r#"{"level":"ERROR","stack":"at Foo.bar(Foo.java:{a})"}"#,
            ),
        );
        let v = analyse(&mut m, &changed[..400], &changed[400..], &plan, &t);
        let test = v.permutations.unwrap();
        assert!(test.complete(), "an anomaly reports an exact p");
        assert!(v.decision.anomaly && v.decision.strong, "{v:?}");
        assert_eq!(v.p_value(), Some(1.0 / 201.0));

        // With every NCD "high", a stable window could be strong if p were
        // small: the test starts, and stops once p cannot be.
        let lax = Thresholds { ncd: 0.0, ..t };
        let v = analyse(&mut m, &stable[..400], &stable[400..], &plan, &lax);
        let test = v.permutations.unwrap();
        assert!(!v.decision.anomaly);
        assert!(test.run < 200 && test.p_value() > 0.05, "{test:?}");
        assert_eq!(v.p_value(), None, "a cut test has no exact p");

        // A budget of 30 shuffles' worth of bytes runs 30.
        let per_shuffle = crate::metrics::shuffle_bytes(&changed[..400], &changed[400..]);
        let tight = TestPlan {
            budget_bytes: 30 * per_shuffle + per_shuffle / 2,
            ..plan
        };
        assert_eq!(tight.shuffles(&changed[..400], &changed[400..]), 30);
        let v = analyse(&mut m, &changed[..400], &changed[400..], &tight, &t);
        assert_eq!(v.permutations.map(|p| (p.run, p.requested)), Some((30, 30)));
        assert_eq!(v.p_value(), Some(1.0 / 31.0));
    }
}
