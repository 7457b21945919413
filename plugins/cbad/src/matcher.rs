//! A match finder for `ruzstd`'s encoder with a whole-input window.
//!
//! `ruzstd`'s own matcher keeps one 128 KiB block in its window and drops
//! it before matching the next one, so data more than one block back is
//! never referenced. For CBAD that is fatal: when baseline + window pass
//! 128 KiB (400 log lines of 330 bytes do), the window can no longer be
//! matched against the baseline and every concatenation looks novel. Real
//! zstd at level 3 keeps a 2 MiB window (`windowLog` 21).
//!
//! This matcher is zstd's "double fast" strategy, the one level 3 uses:
//! two hash tables, of 8-byte and 5-byte prefixes, a greedy parse that
//! prefers the long candidate, matches extended backwards into pending
//! literals, and a step that grows over incompressible stretches. Tables
//! are sized as at level 3 (2^17 and 2^16 entries). Its sequences go
//! through `ruzstd`'s entropy coder unchanged, so the output is a valid
//! zstd frame (the tests decode it).

use ruzstd::encoding::{CompressionLevel, Matcher, Sequence};

/// The largest match distance, as zstd level 3's `windowLog` of 21.
pub const WINDOW: usize = 1 << 21;
/// `ruzstd` encodes one block per space; 128 KiB is the format's maximum.
const BLOCK: usize = 128 * 1024;
const LONG_LOG: u32 = 17;
const SHORT_LOG: u32 = 16;
const MIN_MATCH: usize = 5;

pub struct DoubleFast {
    /// Everything committed in the current frame.
    history: Vec<u8>,
    /// Where the last committed block starts in `history`.
    block_start: usize,
    /// The last committed space, for `get_last_space`.
    last_space: Vec<u8>,
    spare: Vec<u8>,
    /// Positions + `base`, so a table entry from an earlier frame reads as
    /// stale without clearing 768 KiB on every reset.
    long: Vec<u32>,
    short: Vec<u32>,
    base: u32,
}

impl Default for DoubleFast {
    fn default() -> Self {
        DoubleFast {
            history: Vec::new(),
            block_start: 0,
            last_space: Vec::new(),
            spare: Vec::new(),
            long: vec![0; 1 << LONG_LOG],
            short: vec![0; 1 << SHORT_LOG],
            base: 1,
        }
    }
}

fn read_u64(s: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(b)
}

fn hash_long(s: &[u8], i: usize) -> usize {
    (read_u64(s, i).wrapping_mul(0xCF1B_BCDC_B7A5_6463) >> (64 - LONG_LOG)) as usize
}

fn hash_short(s: &[u8], i: usize) -> usize {
    // The low five bytes only.
    ((read_u64(s, i) << 24).wrapping_mul(0xCF1B_BCDC_BB00_0000) >> (64 - SHORT_LOG)) as usize
}

fn common_len(s: &[u8], a: usize, b: usize, limit: usize) -> usize {
    let mut n = 0;
    while b + n < limit && s[a + n] == s[b + n] {
        n += 1;
    }
    n
}

impl DoubleFast {
    /// The table value for position `i` of this frame.
    fn tag(&self, i: usize) -> u32 {
        // Frames are far smaller than 2^31 bytes; were one not, a wrong tag
        // would only cost a missed match, as `check` verifies candidates.
        self.base.wrapping_add(i as u32)
    }

    /// The position a table value names, if it is from this frame.
    fn position(&self, tagged: u32) -> Option<usize> {
        tagged.checked_sub(self.base).map(|p| p as usize)
    }

    fn insert(&mut self, i: usize) {
        if i + 8 <= self.history.len() {
            let tag = self.tag(i);
            self.long[hash_long(&self.history, i)] = tag;
            self.short[hash_short(&self.history, i)] = tag;
        }
    }

    /// A candidate at `cand` for position `i`, if it really matches at
    /// least `min` bytes and is within the window.
    fn check(&self, cand: Option<usize>, i: usize, min: usize) -> Option<usize> {
        let c = cand?;
        (c < i && i - c <= WINDOW && self.history[c..c + min] == self.history[i..i + min])
            .then_some(c)
    }
}

impl Matcher for DoubleFast {
    fn get_next_space(&mut self) -> Vec<u8> {
        let mut space = std::mem::take(&mut self.spare);
        space.resize(BLOCK, 0);
        space
    }

    fn get_last_space(&mut self) -> &[u8] {
        &self.last_space
    }

    fn commit_space(&mut self, space: Vec<u8>) {
        self.block_start = self.history.len();
        self.history.extend_from_slice(&space);
        self.spare = std::mem::replace(&mut self.last_space, space);
    }

    fn skip_matching(&mut self) {
        for i in self.block_start..self.history.len() {
            self.insert(i);
        }
    }

    fn start_matching(&mut self, mut handle_sequence: impl for<'a> FnMut(Sequence<'a>)) {
        let end = self.history.len();
        let mut anchor = self.block_start;
        let mut ip = self.block_start;
        while ip + 8 <= end {
            let long = self.position(self.long[hash_long(&self.history, ip)]);
            let short = self.position(self.short[hash_short(&self.history, ip)]);
            self.insert(ip);
            let found = match self.check(long, ip, 8) {
                Some(c) => Some((ip, c)),
                None => self.check(short, ip, MIN_MATCH).map(|c| {
                    // As zstd does: a long match one byte on beats a short one here.
                    let next = ip + 1;
                    let long_next = (next + 8 <= end)
                        .then(|| self.position(self.long[hash_long(&self.history, next)]))
                        .flatten();
                    match self.check(long_next, next, 8) {
                        Some(c1) => (next, c1),
                        None => (ip, c),
                    }
                }),
            };
            let Some((mut start, mut cand)) = found else {
                // Farther strides over literal runs keep noise cheap to scan.
                ip += 1 + ((ip - anchor) >> 8);
                continue;
            };
            let mut len = common_len(&self.history, cand, start, end);
            // `ruzstd`'s table builder panics when every sequence of a block
            // has zero literals (a one-symbol table), so the block's first
            // sequence keeps at least one literal.
            let floor = if anchor == self.block_start {
                anchor + 1
            } else {
                anchor
            };
            while start > floor && cand > 0 && self.history[start - 1] == self.history[cand - 1] {
                start -= 1;
                cand -= 1;
                len += 1;
            }
            if start < floor {
                start += 1;
                cand += 1;
                len -= 1;
                if len < MIN_MATCH {
                    ip += 1;
                    continue;
                }
            }
            let match_end = start + len;
            // Index inside the match, as zstd does, for later matches.
            self.insert(start + 2);
            if match_end >= 2 {
                self.insert(match_end - 2);
            }
            handle_sequence(Sequence::Triple {
                literals: &self.history[anchor..start],
                offset: start - cand,
                match_len: len,
            });
            ip = match_end;
            anchor = match_end;
        }
        if anchor < end {
            handle_sequence(Sequence::Literals {
                literals: &self.history[anchor..end],
            });
        }
    }

    fn reset(&mut self, _level: CompressionLevel) {
        let next = u64::from(self.base) + self.history.len() as u64 + 1;
        if next >= 1 << 31 {
            self.long.fill(0);
            self.short.fill(0);
            self.base = 1;
        } else {
            self.base = next as u32;
        }
        self.history.clear();
        self.block_start = 0;
    }

    fn window_size(&self) -> u64 {
        WINDOW as u64
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn zstd(data: &[u8], matcher: &mut DoubleFast) -> Vec<u8> {
        let mut c = ruzstd::encoding::FrameCompressor::new_with_matcher(
            std::mem::take(matcher),
            CompressionLevel::Fastest,
        );
        let mut out = Vec::new();
        c.set_source(data);
        c.set_drain(&mut out);
        c.compress();
        *matcher = c.replace_matcher(DoubleFast::default());
        drop(c);
        out
    }

    fn decode(frame: &[u8]) -> Vec<u8> {
        let mut d = ruzstd::decoding::StreamingDecoder::new(frame).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    fn logs(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = String::new();
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push_str(&format!(
                "{{\"level\":\"INFO\",\"message\":\"GET /api/orders/{} 200 in {}ms\",\"service\":\"api-gateway\"}}\n",
                x % 1000,
                (x >> 20) % 300
            ));
        }
        out.into_bytes()
    }

    #[test]
    fn frames_decode_to_the_input() {
        let mut noise = vec![0u8; 300_000];
        let mut x: u64 = 7;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut mixed = logs(3000, 1);
        mixed.extend_from_slice(&noise[..50_000]);
        mixed.extend_from_slice(&logs(3000, 1));
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            b"abcdefgh".to_vec(),
            vec![b'a'; 200_000],
            logs(10, 3),
            logs(5000, 4),
            noise,
            mixed,
        ];
        let mut m = DoubleFast::default();
        for input in &inputs {
            let frame = zstd(input, &mut m);
            assert_eq!(&decode(&frame), input, "input of {} bytes", input.len());
        }
    }

    /// Inputs shaped to reach the encoder's corners: one to four distinct
    /// bytes, long runs, repeats at every distance, block-sized pieces.
    #[test]
    fn random_inputs_round_trip() {
        let mut rng = crate::metrics::Rng::new(77);
        let mut m = DoubleFast::default();
        for case in 0..120 {
            let len = match case % 4 {
                0 => rng.below(64),
                1 => rng.below(4096),
                2 => rng.below(40_000),
                _ => BLOCK - 2 + rng.below(BLOCK + 4),
            };
            let alphabet = [1, 2, 3, 4, 16, 256][rng.below(6)];
            let mut data = Vec::with_capacity(len);
            while data.len() < len {
                if data.len() > 8 && rng.below(3) == 0 {
                    // Copy an earlier stretch, possibly overlapping.
                    let from = rng.below(data.len());
                    let n = (rng.below(300) + 1).min(len - data.len());
                    for k in 0..n {
                        let b = data[from + k % (data.len() - from)];
                        data.push(b);
                    }
                } else {
                    data.push(rng.below(alphabet) as u8);
                }
            }
            let frame = zstd(&data, &mut m);
            assert_eq!(
                decode(&frame),
                data,
                "case {case}: {len} bytes over {alphabet} symbols"
            );
        }
    }

    #[test]
    fn matches_reach_back_more_than_one_block() {
        // Two identical 200 KiB halves: the second is one long match.
        let half = logs(2500, 9);
        assert!(half.len() > BLOCK);
        let whole = [half.clone(), half.clone()].concat();
        let mut m = DoubleFast::default();
        let one = zstd(&half, &mut m);
        let two = zstd(&whole, &mut m);
        assert!(
            two.len() < one.len() + one.len() / 20,
            "{} vs {}",
            two.len(),
            one.len()
        );
        assert_eq!(decode(&two), whole);
    }
}
