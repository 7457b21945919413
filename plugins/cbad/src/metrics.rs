//! CBAD's measurements of a window of events against its baseline.
//!
//! The formulas are the spec's; what they are applied to is size-matched.
//! The spec's NCD, `(C(b+w) − min(C(b), C(w))) / max(C(b), C(w))`, assumes
//! inputs of similar size: with a baseline eight times the window it is
//! about `1 − C(w)/C(b)` whatever the content (≈ 0.9 on a perfectly stable
//! log stream, and *lower* when the window is novel, because `C(w)` grows),
//! and the window's compression ratio is lower than the baseline's only
//! because it is shorter. So every comparison here is between the window
//! and window-sized chunks of the baseline:
//!
//! - the baseline's compression ratio is that of its chunks (total raw over
//!   total compressed), comparable with the window's;
//! - `ncd_raw` is the mean over chunks `c` of `NCD(c, w)`, the spec's
//!   formula on inputs of one size;
//! - `ncd_floor` is the mean NCD between consecutive baseline chunks: how far
//!   apart two samples of the *same* stream are. Ids, latencies and other
//!   small values that survive preprocessing keep it well above 0 (≈ 0.55 on
//!   a realistic log stream);
//! - `ncd = (ncd_raw − ncd_floor) / (1 − ncd_floor)`, clamped to [0, 1]: 0
//!   when the window is as close to the baseline as the baseline is to
//!   itself, 1 when it shares nothing. This is what the spec's thresholds
//!   (0.3) are applied to;
//! - conditional novelty is `max(0, C(c+w) − C(c)) / C(w)`, averaged over
//!   chunks;
//! - Shannon byte entropy is over the whole baseline and the window (its
//!   small-sample bias is negligible at these sizes).
//!
//! The permutation test pools the baseline's and the window's events,
//! shuffles them, splits them back into B and W events and recomputes
//! `ncd_raw`; `p = (1 + #{shuffled ≥ observed}) / (N + 1)`.

use crate::compress::Compressor;

/// What one analysis measured, before any permutation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub baseline_compression_ratio: f64,
    pub window_compression_ratio: f64,
    /// `(window − baseline) / baseline`; negative when the window
    /// compresses worse.
    pub compression_ratio_change: f64,
    /// Bits per byte, 0 to 8.
    pub baseline_entropy: f64,
    pub window_entropy: f64,
    /// `(window − baseline) / baseline`.
    pub entropy_change: f64,
    /// Floor-corrected NCD in [0, 1] (see the module documentation).
    pub ncd: f64,
    /// Mean NCD between the window and each baseline chunk.
    pub ncd_raw: f64,
    /// Mean NCD between consecutive baseline chunks.
    pub ncd_floor: f64,
    pub conditional_novelty: f64,
}

/// The spec's NCD from compressed sizes, clamped to [0, 1].
pub fn ncd(cx: usize, cy: usize, cxy: usize) -> f64 {
    let (lo, hi) = (cx.min(cy) as f64, cx.max(cy) as f64);
    if hi <= 0.0 {
        return 0.0;
    }
    ((cxy as f64 - lo) / hi).clamp(0.0, 1.0)
}

/// Shannon entropy of the byte distribution, in bits per byte.
pub fn entropy(counts: &[u64; 256]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// `(new − old) / old`, 0 when `old` is 0 (nothing to compare with).
pub fn relative_change(old: f64, new: f64) -> f64 {
    if old.abs() < f64::EPSILON {
        0.0
    } else {
        (new - old) / old
    }
}

/// The `k` chunk boundaries of `len` events: as equal as integers allow.
pub fn chunk_bounds(len: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    let k = k.max(1);
    (0..k).map(move |i| (i * len / k, (i + 1) * len / k))
}

/// How many window-sized chunks a baseline splits into (at least 2, so
/// that the floor has a pair to measure).
pub fn chunk_count(baseline: usize, window: usize) -> usize {
    (baseline / window.max(1)).max(2)
}

/// Bytes one shuffle of the permutation test compresses: every chunk, the
/// window, and each chunk joined with the window (about 3·B + W events).
pub fn shuffle_bytes<F: AsRef<[u8]>>(baseline: &[F], window: &[F]) -> usize {
    let total: usize = baseline
        .iter()
        .chain(window)
        .map(|e| e.as_ref().len() + 1)
        .sum();
    let events = (baseline.len() + window.len()).max(1);
    let k = chunk_count(baseline.len(), window.len());
    // A shuffle moves events between baseline and window, so price it at
    // the pool's mean event size.
    total * (2 * baseline.len() + (k + 1) * window.len()) / events
}

/// SplitMix64: small, fast, and the same on every platform, which keeps
/// p-values reproducible between native tests and the wasm component.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; its bias is below 2^-50
    /// for the pool sizes used here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// The seed of one analysis: FNV-1a over the stream id and the window's
/// first offset, so a replay of the same records gives the same p-value.
pub fn seed(stream_id: &str, window_start_offset: i64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in stream_id
        .as_bytes()
        .iter()
        .chain(&window_start_offset.to_le_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The outcome of a (possibly cut short) permutation test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Permutations {
    /// Shuffles run.
    pub run: usize,
    /// Shuffled statistics at least as large as the observed one.
    pub at_least: usize,
    /// Shuffles asked for.
    pub requested: usize,
}

impl Permutations {
    /// The p-value: exact once every requested shuffle has run; before
    /// that, the smallest p-value the full test can still give, as the count
    /// only grows.
    pub fn p_value(&self) -> f64 {
        (1 + self.at_least) as f64 / (self.requested + 1) as f64
    }

    pub fn complete(&self) -> bool {
        self.run == self.requested
    }
}

/// Measures windows with one compressor, reusing its buffers.
pub struct Measure {
    compressor: Box<dyn Compressor>,
    buf: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    window: Vec<u8>,
}

/// Appends events to `out`, one per line.
fn join_into(out: &mut Vec<u8>, events: impl IntoIterator<Item = impl AsRef<[u8]>>) {
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(e.as_ref());
    }
}

fn count_bytes(counts: &mut [u64; 256], bytes: &[u8]) {
    for &b in bytes {
        counts[b as usize] += 1;
    }
}

/// Compressed sizes of the chunks, the window and each chunk + window.
struct Sizes {
    chunks: Vec<usize>,
    window: usize,
    joined: Vec<usize>,
}

impl Measure {
    pub fn new(compressor: Box<dyn Compressor>) -> Self {
        Measure {
            compressor,
            buf: Vec::new(),
            chunks: Vec::new(),
            window: Vec::new(),
        }
    }

    /// Joins the baseline's chunks and the window into the scratch buffers.
    fn load<F: AsRef<[u8]>>(&mut self, baseline: &[F], window: &[F], k: usize) {
        self.chunks.resize_with(k, Vec::new);
        for (chunk, (lo, hi)) in self.chunks.iter_mut().zip(chunk_bounds(baseline.len(), k)) {
            chunk.clear();
            join_into(chunk, &baseline[lo..hi]);
        }
        self.window.clear();
        join_into(&mut self.window, window);
    }

    fn concat_len(&mut self, a: usize, b: Option<usize>) -> usize {
        self.buf.clear();
        self.buf.extend_from_slice(&self.chunks[a]);
        self.buf.push(b'\n');
        match b {
            Some(b) => self.buf.extend_from_slice(&self.chunks[b]),
            None => self.buf.extend_from_slice(&self.window),
        }
        self.compressor.compressed_len(&self.buf)
    }

    fn sizes(&mut self) -> Sizes {
        let chunks: Vec<usize> = (0..self.chunks.len())
            .map(|i| self.compressor.compressed_len(&self.chunks[i]))
            .collect();
        let window = self.compressor.compressed_len(&self.window);
        let joined = (0..self.chunks.len())
            .map(|i| self.concat_len(i, None))
            .collect();
        Sizes {
            chunks,
            window,
            joined,
        }
    }

    fn mean_ncd(sizes: &Sizes) -> f64 {
        let n = sizes.chunks.len().max(1) as f64;
        sizes
            .chunks
            .iter()
            .zip(&sizes.joined)
            .map(|(&c, &cw)| ncd(c, sizes.window, cw))
            .sum::<f64>()
            / n
    }

    /// Every measurement of `window` against `baseline` except the p-value.
    pub fn observe<F: AsRef<[u8]>>(&mut self, baseline: &[F], window: &[F]) -> Observed {
        let k = chunk_count(baseline.len(), window.len());
        self.load(baseline, window, k);
        let sizes = self.sizes();
        let floor_pairs = k - 1;
        let floor = (0..floor_pairs)
            .map(|i| {
                let joined = self.concat_len(i, Some(i + 1));
                ncd(sizes.chunks[i], sizes.chunks[i + 1], joined)
            })
            .sum::<f64>()
            / floor_pairs.max(1) as f64;
        let raw = Self::mean_ncd(&sizes);
        let corrected = if floor >= 1.0 {
            0.0
        } else {
            ((raw - floor) / (1.0 - floor)).clamp(0.0, 1.0)
        };

        let baseline_raw: usize = self.chunks.iter().map(Vec::len).sum();
        let baseline_compressed: usize = sizes.chunks.iter().sum();
        let ratio = |raw: usize, compressed: usize| raw as f64 / compressed.max(1) as f64;
        let baseline_ratio = ratio(baseline_raw, baseline_compressed);
        let window_ratio = ratio(self.window.len(), sizes.window);

        let mut counts = [0u64; 256];
        for chunk in &self.chunks {
            count_bytes(&mut counts, chunk);
        }
        let baseline_entropy = entropy(&counts);
        let mut counts = [0u64; 256];
        count_bytes(&mut counts, &self.window);
        let window_entropy = entropy(&counts);

        let novelty = sizes
            .chunks
            .iter()
            .zip(&sizes.joined)
            .map(|(&c, &cw)| cw.saturating_sub(c) as f64 / sizes.window.max(1) as f64)
            .sum::<f64>()
            / k as f64;

        Observed {
            baseline_compression_ratio: baseline_ratio,
            window_compression_ratio: window_ratio,
            compression_ratio_change: relative_change(baseline_ratio, window_ratio),
            baseline_entropy,
            window_entropy,
            entropy_change: relative_change(baseline_entropy, window_entropy),
            ncd: corrected,
            ncd_raw: raw,
            ncd_floor: floor,
            conditional_novelty: novelty,
        }
    }

    /// The permutation test of `observed_raw` (the observed `ncd_raw`):
    /// pools `baseline` and `window`, and for each of `requested` shuffles
    /// splits the pool back into their sizes and recomputes `ncd_raw`.
    /// `go_on` sees the running counts after each shuffle and may stop the
    /// test early (when its outcome can no longer matter).
    pub fn permutation_test<F: AsRef<[u8]>>(
        &mut self,
        baseline: &[F],
        window: &[F],
        observed_raw: f64,
        requested: usize,
        seed: u64,
        mut go_on: impl FnMut(&Permutations) -> bool,
    ) -> Permutations {
        let mut pool: Vec<&[u8]> = baseline.iter().chain(window).map(AsRef::as_ref).collect();
        let k = chunk_count(baseline.len(), window.len());
        let mut rng = Rng::new(seed);
        let mut state = Permutations {
            run: 0,
            at_least: 0,
            requested,
        };
        while state.run < requested && go_on(&state) {
            rng.shuffle(&mut pool);
            let (b, w) = pool.split_at(baseline.len());
            self.load(b, w, k);
            let sizes = self.sizes();
            if Self::mean_ncd(&sizes) >= observed_raw {
                state.at_least += 1;
            }
            state.run += 1;
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Algorithm;

    fn lines(n: usize, seed: u64, template: &str) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                template
                    .replace("{a}", &rng.below(1000).to_string())
                    .replace("{b}", &rng.below(300).to_string())
                    .into_bytes()
            })
            .collect()
    }

    fn random_bytes(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| (0..len).map(|_| rng.next_u64() as u8).collect())
            .collect()
    }

    const INFO: &str =
        r#"{"level":"INFO","message":"GET /api/orders/{a} 200 in {b}ms","service":"api-gateway"}"#;

    #[test]
    fn ncd_formula_and_clamping() {
        assert_eq!(ncd(100, 100, 100), 0.0);
        assert_eq!(ncd(100, 50, 150), 1.0);
        assert!((ncd(100, 50, 120) - 0.7).abs() < 1e-12);
        assert_eq!(ncd(100, 50, 10), 0.0);
        assert_eq!(ncd(100, 50, 1000), 1.0);
        assert_eq!(ncd(0, 0, 0), 0.0);
    }

    #[test]
    fn entropy_of_known_distributions() {
        let mut counts = [0u64; 256];
        assert_eq!(entropy(&counts), 0.0);
        counts[b'a' as usize] = 10;
        assert_eq!(entropy(&counts), 0.0);
        counts[b'b' as usize] = 10;
        assert!((entropy(&counts) - 1.0).abs() < 1e-12);
        let uniform = [3u64; 256];
        assert!((entropy(&uniform) - 8.0).abs() < 1e-12);
    }

    #[test]
    fn identical_text_is_near_zero_and_random_bytes_are_far() {
        for algorithm in [Algorithm::Zstd, Algorithm::Lz4, Algorithm::Deflate] {
            let mut m = Measure::new(algorithm.compressor());
            let same: Vec<Vec<u8>> = vec![INFO.as_bytes().to_vec(); 450];
            let o = m.observe(&same[..400], &same[400..]);
            assert!(o.ncd_raw < 0.2, "{}: {o:?}", algorithm.name());
            assert!(o.ncd < 0.05, "{}: {o:?}", algorithm.name());
            assert!(
                o.compression_ratio_change.abs() < 0.05,
                "{}: {o:?}",
                algorithm.name()
            );

            let base = lines(400, 1, INFO);
            let noise = random_bytes(50, 120, 2);
            let o = m.observe(&base, &noise);
            assert!(o.ncd_raw > 0.9, "{}: {o:?}", algorithm.name());
            assert!(o.ncd > 0.8, "{}: {o:?}", algorithm.name());
            assert!(
                o.compression_ratio_change < -0.5,
                "{}: {o:?}",
                algorithm.name()
            );
            assert!(o.entropy_change > 0.2, "{}: {o:?}", algorithm.name());
        }
    }

    #[test]
    fn a_stable_stream_sits_on_its_floor() {
        let mut m = Measure::new(Algorithm::Zstd.compressor());
        let events = lines(450, 7, INFO);
        let o = m.observe(&events[..400], &events[400..]);
        assert!(o.ncd_floor > 0.2, "noise keeps the floor up: {o:?}");
        assert!(o.ncd < 0.2, "{o:?}");
        assert!(o.compression_ratio_change.abs() < 0.15, "{o:?}");
        assert!(o.entropy_change.abs() < 0.05, "{o:?}");
        assert!(o.conditional_novelty < 1.0, "{o:?}");
    }

    #[test]
    fn p_values_are_deterministic_and_separate_change_from_noise() {
        let mut m = Measure::new(Algorithm::Lz4.compressor());
        let stable = lines(450, 11, INFO);
        let mut changed = stable.clone();
        let errors = lines(
            50,
            12,
            r#"{"level":"ERROR","exception":"java.lang.IllegalStateException at Foo.java:{a}","thread":"exec-{b}"}"#,
        );
        changed.splice(400.., errors);

        let run = |m: &mut Measure, ev: &[Vec<u8>], seed: u64| {
            let o = m.observe(&ev[..400], &ev[400..]);
            let t = m.permutation_test(&ev[..400], &ev[400..], o.ncd_raw, 60, seed, |_| true);
            assert!(t.complete());
            t.p_value()
        };
        let p1 = run(&mut m, &changed, 42);
        assert_eq!(run(&mut m, &changed, 42), p1, "same seed, same p");
        assert!(
            (p1 - 1.0 / 61.0).abs() < 1e-12,
            "no shuffle beats a real change: {p1}"
        );
        let p_stable = run(&mut m, &stable, 42);
        assert!(p_stable > 0.05, "{p_stable}");

        // Stopping early is honoured and reported.
        let o = m.observe(&stable[..400], &stable[400..]);
        let t = m.permutation_test(&stable[..400], &stable[400..], o.ncd_raw, 60, 1, |s| {
            s.run < 5
        });
        assert_eq!(t.run, 5);
        assert!(!t.complete());
    }

    #[test]
    fn rng_and_seed_are_stable() {
        let mut r = Rng::new(1);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::new(1);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_ne!(seed("a", 1), seed("a", 2));
        assert_ne!(seed("a", 1), seed("b", 1));
        assert_eq!(seed("a", 1), seed("a", 1));
        let mut v: Vec<usize> = (0..100).collect();
        Rng::new(3).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
        for n in [1, 2, 7, 450] {
            assert!((0..1000).all(|_| r.below(n) < n));
        }
    }

    #[test]
    fn chunks_cover_the_baseline() {
        let b: Vec<_> = chunk_bounds(420, 8).collect();
        assert_eq!(b.first(), Some(&(0, 52)));
        assert_eq!(b.last().map(|x| x.1), Some(420));
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(chunk_count(400, 50), 8);
        assert_eq!(chunk_count(60, 50), 2);
    }
}
