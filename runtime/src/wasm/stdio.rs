//! A plugin's stdout and stderr, captured into `tracing`.
//!
//! Bytes are cut into lines; each line becomes one event with the fields
//! `stage` and `stream` (`stdout` at info level, `stderr` at warn). The
//! messages of the `log` import share the same limits (see [`Capture::log`]).
//! A plugin cannot flood the log or the host's memory:
//! - a line longer than [`MAX_LINE`] bytes is truncated, the rest of it
//!   discarded as it arrives;
//! - lines are rate limited per instance by a token bucket ([`BURST`] lines,
//!   refilled at [`LINES_PER_SEC`]); lines beyond it are dropped and
//!   counted, and a warning says how many when logging resumes (at most one
//!   per [`SUMMARY_INTERVAL`] during a flood, and a last one when the
//!   instance is dropped).
//!
//! Everything is synchronous: writes are handled on the thread that calls
//! the plugin, which needs no tokio runtime (the same approach as
//! wasmtime-wasi's own stdout stream).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line logged, in bytes; longer ones are truncated.
pub const MAX_LINE: usize = 4096;
/// Lines an instance may log at once before the rate limit applies.
pub const BURST: f64 = 100.0;
/// Lines per second an instance may log in the long run.
pub const LINES_PER_SEC: f64 = 100.0;
/// How often, at most, a flood of output is summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);
/// How much a guest may write in one `write` call.
const WRITE_PERMIT: usize = 64 * 1024;
/// How much of a call's stderr is kept to explain a trap (a Rust panic
/// message, typically), in bytes.
const RECENT_STDERR: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Stdout = 0,
    Stderr = 1,
    /// The `log` import: whole messages, no line buffer.
    Log = 2,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Stdout => "stdout",
            Which::Stderr => "stderr",
            Which::Log => "log",
        }
    }
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new() -> Self {
        TokenBucket {
            tokens: BURST,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * LINES_PER_SEC;
        self.tokens = (self.tokens + refill).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct State {
    stage: Arc<str>,
    /// Per stream: the line being written.
    line: [Vec<u8>; 2],
    /// Per stream: the line being written was already logged, truncated;
    /// the rest of it is discarded.
    truncated: [bool; 2],
    bucket: TokenBucket,
    /// Per stream (and the `log` import): lines dropped since the last
    /// summary.
    dropped: [u64; 3],
    /// Lines dropped over the instance's life.
    dropped_total: u64,
    /// When the last summary of dropped lines was logged.
    last_summary: Option<Instant>,
    /// Stderr lines of the current call, joined, up to [`RECENT_STDERR`].
    recent_stderr: String,
}

impl State {
    fn write(&mut self, which: Which, mut bytes: &[u8]) {
        let w = which as usize;
        while !bytes.is_empty() {
            let (segment, newline) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            bytes = &bytes[segment.len() + usize::from(newline)..];
            if !self.truncated[w] {
                let room = MAX_LINE - self.line[w].len();
                if segment.len() > room {
                    self.line[w].extend_from_slice(&segment[..room]);
                    self.log_line(which, true);
                    self.truncated[w] = true;
                } else {
                    self.line[w].extend_from_slice(segment);
                }
            }
            if newline {
                if !self.truncated[w] {
                    self.log_line(which, false);
                }
                self.truncated[w] = false;
            }
        }
    }

    /// Logs the buffered line of `which`, if the rate limit allows.
    fn log_line(&mut self, which: Which, truncated: bool) {
        let w = which as usize;
        let mut line = std::mem::take(&mut self.line[w]);
        if which == Which::Stderr {
            self.remember_stderr(&line);
        }
        if !self.bucket.take() {
            self.dropped[w] += 1;
            self.dropped_total += 1;
            line.clear();
            self.line[w] = line;
            return;
        }
        if self
            .last_summary
            .is_none_or(|at| at.elapsed() >= SUMMARY_INTERVAL)
        {
            self.summarise();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line);
        let stage = &*self.stage;
        let stream = which.name();
        match (which, truncated) {
            (Which::Stdout, false) => tracing::info!(stage, stream, "{text}"),
            (Which::Stdout, true) => tracing::info!(stage, stream, truncated, "{text}"),
            (_, false) => tracing::warn!(stage, stream, "{text}"),
            (_, true) => tracing::warn!(stage, stream, truncated, "{text}"),
        }
        line.clear();
        self.line[w] = line;
    }

    /// Keeps what explains a failure: not Rust's hint about backtraces.
    fn remember_stderr(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() || text.starts_with("note: run with `RUST_BACKTRACE") {
            return;
        }
        let room = RECENT_STDERR.saturating_sub(self.recent_stderr.len());
        if room < 2 {
            return;
        }
        if !self.recent_stderr.is_empty() {
            self.recent_stderr.push(' ');
        }
        let mut end = text.len().min(room - 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.recent_stderr.push_str(&text[..end]);
    }

    /// Logs a message of the `log` import at `level`, if the rate limit
    /// allows and the level is enabled, cut at [`MAX_LINE`] bytes.
    fn log(&mut self, level: tracing::Level, partition: i32, message: &str) {
        // A disabled level costs no token, so that a plugin's debug lines
        // do not use up the budget of its warnings.
        let enabled = match level {
            tracing::Level::TRACE => tracing::enabled!(tracing::Level::TRACE),
            tracing::Level::DEBUG => tracing::enabled!(tracing::Level::DEBUG),
            tracing::Level::INFO => tracing::enabled!(tracing::Level::INFO),
            tracing::Level::WARN => tracing::enabled!(tracing::Level::WARN),
            _ => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        if !self.bucket.take() {
            self.dropped[Which::Log as usize] += 1;
            self.dropped_total += 1;
            return;
        }
        if self
            .last_summary
            .is_none_or(|at| at.elapsed() >= SUMMARY_INTERVAL)
        {
            self.summarise();
        }
        let truncated = message.len() > MAX_LINE;
        let mut end = message.len().min(MAX_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message[..end];
        let stage = &*self.stage;
        macro_rules! emit {
            ($level:expr) => {
                if truncated {
                    tracing::event!($level, stage, partition, truncated, "{text}")
                } else {
                    tracing::event!($level, stage, partition, "{text}")
                }
            };
        }
        match level {
            tracing::Level::TRACE => emit!(tracing::Level::TRACE),
            tracing::Level::DEBUG => emit!(tracing::Level::DEBUG),
            tracing::Level::INFO => emit!(tracing::Level::INFO),
            tracing::Level::WARN => emit!(tracing::Level::WARN),
            _ => emit!(tracing::Level::ERROR),
        }
    }

    /// One warning per stream with lines dropped since the last one.
    fn summarise(&mut self) {
        if self.dropped == [0; 3] {
            return;
        }
        self.last_summary = Some(Instant::now());
        for which in [Which::Stdout, Which::Stderr, Which::Log] {
            let dropped = std::mem::take(&mut self.dropped[which as usize]);
            if dropped > 0 {
                tracing::warn!(
                    stage = &*self.stage,
                    stream = which.name(),
                    dropped,
                    "plugin output over the rate limit of {LINES_PER_SEC} lines/s: \
                     {dropped} lines dropped"
                );
            }
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // A last line without its newline is still worth seeing.
        for which in [Which::Stdout, Which::Stderr] {
            let w = which as usize;
            if !self.line[w].is_empty() && !self.truncated[w] {
                self.log_line(which, false);
            }
        }
        self.summarise();
    }
}

/// The captured stdio of one instance. Cheap to clone; every clone and every
/// stream made from it share the line buffers and the rate limit.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    state: Arc<Mutex<State>>,
}

impl Capture {
    pub(crate) fn new(stage: Arc<str>) -> Self {
        Capture {
            state: Arc::new(Mutex::new(State {
                stage,
                line: [Vec::new(), Vec::new()],
                truncated: [false; 2],
                bucket: TokenBucket::new(),
                dropped: [0; 3],
                dropped_total: 0,
                last_summary: None,
                recent_stderr: String::new(),
            })),
        }
    }

    /// A message of the plugin's `log` import: rate limited together with
    /// stdout and stderr, and cut at [`MAX_LINE`] bytes.
    pub(crate) fn log(&self, level: tracing::Level, partition: i32, message: &str) {
        self.lock().log(level, partition, message)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock but a tracing subscriber;
        // the state is still consistent then.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream to install as the plugin's stdout.
    pub(crate) fn stdout(&self) -> CapturedStream {
        CapturedStream {
            capture: self.clone(),
            which: Which::Stdout,
        }
    }

    /// The stream to install as the plugin's stderr.
    pub(crate) fn stderr(&self) -> CapturedStream {
        CapturedStream {
            capture: self.clone(),
            which: Which::Stderr,
        }
    }

    /// Forgets the stderr of the previous call.
    pub(crate) fn begin_call(&self) {
        self.lock().recent_stderr.clear();
    }

    /// What the plugin wrote to stderr during this call, lines joined
    /// (including a last line without its newline), if anything.
    pub(crate) fn recent_stderr(&self) -> Option<String> {
        let mut state = self.lock();
        let pending = std::mem::take(&mut state.line[Which::Stderr as usize]);
        if !pending.is_empty() && !state.truncated[Which::Stderr as usize] {
            state.remember_stderr(&pending);
        }
        state.line[Which::Stderr as usize] = pending;
        (!state.recent_stderr.is_empty()).then(|| state.recent_stderr.clone())
    }

    /// Lines (and `log` messages) dropped by the rate limit over the
    /// instance's life.
    pub(crate) fn dropped_lines(&self) -> u64 {
        self.lock().dropped_total
    }
}

/// One of stdout or stderr, as wasmtime-wasi sees it.
#[derive(Debug, Clone)]
pub(crate) struct CapturedStream {
    capture: Capture,
    which: Which,
}

impl CapturedStream {
    fn write_bytes(&self, bytes: &[u8]) {
        self.capture.lock().write(self.which, bytes);
    }
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedStream {
    /// Always ready: a write never waits.
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            stage: "s".into(),
            line: [Vec::new(), Vec::new()],
            truncated: [false; 2],
            bucket: TokenBucket::new(),
            dropped: [0; 3],
            dropped_total: 0,
            last_summary: None,
            recent_stderr: String::new(),
        }
    }

    #[test]
    fn a_calls_stderr_is_kept_short_for_the_dead_letter_reason() {
        let mut s = state();
        s.write(Which::Stdout, b"not this\n");
        s.write(Which::Stderr, b"panicked at x.rs:1:\nboom\n");
        s.write(Which::Stderr, b"note: run with `RUST_BACKTRACE=1` to see\n");
        assert_eq!(s.recent_stderr, "panicked at x.rs:1: boom");
        s.write(Which::Stderr, "é".repeat(400).as_bytes());
        s.write(Which::Stderr, b"\n");
        assert!(s.recent_stderr.len() <= RECENT_STDERR);
        assert!(s.recent_stderr.ends_with('é'));
    }

    #[test]
    fn lines_are_split_buffered_and_truncated() {
        let mut s = state();
        s.write(Which::Stdout, b"ab");
        assert_eq!(s.line[0], b"ab");
        s.write(Which::Stdout, b"c\nde\n\nf");
        // "abc", "de" and "" were logged (3 tokens); "f" waits.
        assert_eq!(s.line[0], b"f");
        assert!((s.bucket.tokens - (BURST - 3.0)).abs() < 0.5);
        s.write(Which::Stderr, &vec![b'x'; MAX_LINE + 10]);
        assert!(s.truncated[1] && s.line[1].is_empty());
        s.write(Which::Stderr, &vec![b'y'; 3 * MAX_LINE]);
        assert!(s.line[1].is_empty(), "the rest of a long line is discarded");
        s.write(Which::Stderr, b"\nnext");
        assert!(!s.truncated[1]);
        assert_eq!(s.line[1], b"next");
    }

    #[test]
    fn lines_beyond_the_burst_are_dropped_and_counted() {
        let mut s = state();
        let many = b"x\n".repeat(BURST as usize + 50);
        s.write(Which::Stdout, &many);
        // A little refill may happen while the loop runs.
        assert!((45..=50).contains(&s.dropped_total), "{}", s.dropped_total);
        assert_eq!(s.dropped[0], s.dropped_total);
    }
}
