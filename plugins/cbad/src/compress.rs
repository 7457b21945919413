//! The compressors CBAD measures with. Only compressed sizes matter, so each
//! one counts output bytes and keeps its buffers between calls: an analysis
//! compresses hundreds of times.
//!
//! All three are pure Rust, because the C `zstd` crate cannot be built for
//! `wasm32-wasip2` without a C toolchain for WASI. The `zstd` choice is
//! `ruzstd`'s frame and entropy encoder driven by our own match finder
//! ([`DoubleFast`]): `ruzstd` offers no level 3 (only `Fastest`), and its
//! own matcher cannot reach back past one 128 KiB block, which would hide
//! the baseline from the window in every concatenation CBAD measures.

use std::io::{Cursor, Write};

use ruzstd::encoding::FrameCompressor;

use serde::Deserialize;

use crate::matcher::DoubleFast;

/// Which compressor a stage uses (`compressor` in its config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Zstd,
    Lz4,
    Deflate,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Lz4 => "lz4",
            Algorithm::Deflate => "deflate",
        }
    }

    pub fn compressor(self) -> Box<dyn Compressor> {
        match self {
            Algorithm::Zstd => Box::new(Zstd::default()),
            Algorithm::Lz4 => Box::new(Lz4::default()),
            Algorithm::Deflate => Box::new(Deflate::default()),
        }
    }
}

/// A compressor as CBAD sees it: a function from bytes to a size.
pub trait Compressor {
    /// The size of `data` compressed, in bytes.
    fn compressed_len(&mut self, data: &[u8]) -> usize;
}

/// Counts what the zstd encoder writes instead of storing it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// zstd, one frame per input, without a content checksum (it would add the
/// same 4 bytes to every size), matched by [`DoubleFast`] so that the window
/// spans the whole input as zstd level 3's 2 MiB window does.
///
/// The frame compressor is kept between calls: building it costs about as
/// much as compressing one window of events.
pub struct Zstd {
    frame: FrameCompressor<Cursor<Vec<u8>>, Counter, DoubleFast>,
    input: Vec<u8>,
}

impl Default for Zstd {
    fn default() -> Self {
        Zstd {
            frame: FrameCompressor::new_with_matcher(
                DoubleFast::default(),
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            input: Vec::new(),
        }
    }
}

impl Compressor for Zstd {
    fn compressed_len(&mut self, data: &[u8]) -> usize {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        input.extend_from_slice(data);
        self.frame.set_source(Cursor::new(input));
        self.frame.set_drain(Counter(0));
        self.frame.compress();
        if let Some(source) = self.frame.take_source() {
            self.input = source.into_inner();
        }
        self.frame.take_drain().map_or(data.len(), |c| c.0)
    }
}

/// LZ4 block format.
#[derive(Default)]
pub struct Lz4 {
    out: Vec<u8>,
}

impl Compressor for Lz4 {
    fn compressed_len(&mut self, data: &[u8]) -> usize {
        let need = lz4_flex::block::get_maximum_output_size(data.len());
        if self.out.len() < need {
            self.out.resize(need, 0);
        }
        // The buffer is sized for the worst case, so this cannot fail; if it
        // did, "incompressible" is the honest answer.
        lz4_flex::block::compress_into(data, &mut self.out).unwrap_or(data.len())
    }
}

/// Raw deflate at level 6 (zlib's default).
pub struct Deflate {
    state: Box<miniz_oxide::deflate::core::CompressorOxide>,
    out: Vec<u8>,
}

impl Default for Deflate {
    fn default() -> Self {
        use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
        let flags = create_comp_flags_from_zip_params(6, 0, 0);
        Deflate {
            state: Box::new(CompressorOxide::new(flags)),
            out: vec![0; 64 * 1024],
        }
    }
}

impl Compressor for Deflate {
    fn compressed_len(&mut self, mut data: &[u8]) -> usize {
        use miniz_oxide::deflate::core::{TDEFLFlush, TDEFLStatus, compress};
        self.state.reset();
        let mut total = 0;
        loop {
            let (status, read, written) =
                compress(&mut self.state, data, &mut self.out, TDEFLFlush::Finish);
            total += written;
            data = data.get(read..).unwrap_or(&[]);
            match status {
                TDEFLStatus::Done => return total,
                // Output buffer full: its bytes are counted, reuse it.
                TDEFLStatus::Okay => continue,
                // Not expected from an in-memory compression; never loop on it.
                _ => return total + data.len(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..2000)
            .map(|i| {
                format!(
                    "{{\"level\":\"INFO\",\"message\":\"GET /api/orders/{} 200\"}}\n",
                    i % 37
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn every_compressor_shrinks_text_and_handles_edges() {
        let text = sample();
        let mut noise = Vec::with_capacity(100_000);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        for algorithm in [Algorithm::Zstd, Algorithm::Lz4, Algorithm::Deflate] {
            let mut c = algorithm.compressor();
            let n = c.compressed_len(&text);
            assert!(
                n > 0 && n * 5 < text.len(),
                "{}: {n} of {}",
                algorithm.name(),
                text.len()
            );
            // Deterministic and independent of earlier calls.
            assert_eq!(c.compressed_len(&text), n, "{}", algorithm.name());
            let random = c.compressed_len(&noise);
            assert!(
                random * 10 > noise.len() * 9,
                "{}: noise to {random}",
                algorithm.name()
            );
            assert!(c.compressed_len(&[]) < 32, "{}", algorithm.name());
            assert!(c.compressed_len(b"x") < 32, "{}", algorithm.name());
            // Larger than the reusable buffers.
            let big = text.repeat(40);
            assert!(
                c.compressed_len(&big) < big.len() / 5,
                "{}",
                algorithm.name()
            );
        }
    }
}
