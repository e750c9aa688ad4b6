//! A child's stderr, into the parent's `tracing` log — without letting a
//! child that floods it hurt the robot.
//!
//! * **Off the frame path:** each child's stderr is read on a thread of its
//!   own, with blocking reads, so formatting and writing log lines never
//!   runs on the thread that routes frames between children.
//! * **Bounded memory:** a line longer than [`MAX_LOG_LINE`] bytes is cut
//!   there and marked with how much was cut; 100 MB without a newline costs
//!   4 KiB, not 100 MB.
//! * **Bounded time:** the parent takes [`LOG_LINES_PER_SEC`] lines a second
//!   from each child on average, in bursts of up to [`LOG_BURST`]. Past that,
//!   lines are read and dropped, and a warning says how many, once a second
//!   while it lasts. The child is never slowed down by its own logging, and
//!   nothing else is either. Lines the parent's log filter would discard
//!   (`RUST_LOG`) cost no budget.

use std::io::Read;
use std::time::{Duration, Instant};

use tracing::Level;

/// The longest stderr line forwarded, in bytes; the rest is cut.
pub const MAX_LOG_LINE: usize = 4096;
/// Lines a second taken from one child's stderr, on average.
pub const LOG_LINES_PER_SEC: u32 = 1000;
/// Lines taken at once after a quiet spell, before the rate applies.
pub const LOG_BURST: u32 = 2000;

/// The target the child's lines are logged under.
const TARGET: &str = "botbus::child";

/// Splits a byte stream into lines of at most `max` bytes, with no more
/// memory than `max`. A longer line is handed over as soon as `max` bytes of
/// it arrived (a child hung in the middle of one is seen at once), marked as
/// cut; the rest of it, up to its newline, is skipped and counted.
#[derive(Debug)]
pub(crate) struct LineCutter {
    line: Vec<u8>,
    max: usize,
    /// Inside the rest of a cut line.
    skipping: bool,
    /// Bytes skipped since [`LineCutter::take_skipped`].
    skipped: usize,
}

impl LineCutter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            line: Vec::with_capacity(max.min(1024)),
            max,
            skipping: false,
            skipped: 0,
        }
    }

    /// Takes `chunk`; calls `line(text, cut)` for each line it completes or
    /// cuts, `cut` telling which.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], line: &mut impl FnMut(&[u8], bool)) {
        while !chunk.is_empty() {
            let end = memchr::memchr(b'\n', chunk);
            let part = &chunk[..end.unwrap_or(chunk.len())];
            if self.skipping {
                self.skipped += part.len();
            } else {
                let room = self.max - self.line.len();
                if part.len() > room {
                    self.line.extend_from_slice(&part[..room]);
                    line(&self.line, true);
                    self.line.clear();
                    self.skipping = true;
                    self.skipped += part.len() - room;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            let Some(end) = end else { return };
            if !self.skipping {
                let text = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                line(text, false);
            }
            self.line.clear();
            self.skipping = false;
            chunk = &chunk[end + 1..];
        }
    }

    /// The stream ended: hands over an unfinished last line, if any.
    pub(crate) fn finish(&mut self, line: &mut impl FnMut(&[u8], bool)) {
        if !self.line.is_empty() {
            line(&self.line, false);
            self.line.clear();
        }
    }

    /// Bytes of cut lines skipped since the last call.
    pub(crate) fn take_skipped(&mut self) -> usize {
        std::mem::take(&mut self.skipped)
    }

    /// The most the cutter holds.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.line.capacity()
    }
}

/// A token bucket: `rate` a second on average, `burst` at most at once.
#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: now,
        }
    }

    /// Whether a token is there at `now`, without taking it.
    pub(crate) fn available(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens >= 1.0
    }

    /// Takes one token if there is one at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let available = self.available(now);
        if available {
            self.tokens -= 1.0;
        }
        available
    }
}

/// Lines dropped since the last report.
#[derive(Debug, Default)]
struct Dropped {
    lines: u64,
    bytes: u64,
    since: Option<Instant>,
}

/// Reads a child's stderr until it closes, into `tracing` events tagged
/// with the child's module and pid. Runs on a thread of its own.
pub(crate) fn forward(mut stderr: impl Read, module: &str, pid: u32) {
    let mut cutter = LineCutter::new(MAX_LOG_LINE);
    let mut forwarder = Forwarder {
        module,
        pid,
        limit: RateLimit::new(LOG_LINES_PER_SEC, LOG_BURST, Instant::now()),
        dropped: Dropped::default(),
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stderr.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                cutter.feed(&chunk[..n], &mut |text, cut| forwarder.line(text, cut));
                forwarder.skipped(cutter.take_skipped());
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(target: TARGET, %module, pid, %error, "cannot read the child's stderr");
                break;
            }
        }
    }
    cutter.finish(&mut |text, cut| forwarder.line(text, cut));
    forwarder.report();
}

/// Turns one child's stderr lines into events, within its rate.
struct Forwarder<'a> {
    module: &'a str,
    pid: u32,
    limit: RateLimit,
    dropped: Dropped,
}

impl Forwarder<'_> {
    fn line(&mut self, text: &[u8], cut: bool) {
        let (module, pid) = (self.module, self.pid);
        let now = Instant::now();
        // Over the rate, a line is dropped before it is even parsed: a
        // flood costs this thread little more than finding its newlines.
        if !self.limit.available(now) {
            self.dropped.lines += 1;
            self.dropped.bytes += text.len() as u64;
            self.dropped.since.get_or_insert(now);
            self.report_if_due(now);
            return;
        }
        let text = String::from_utf8_lossy(text);
        let (level, text) = crate::split_level(text.trim_end());
        let level = level.unwrap_or(Level::INFO);
        if !enabled(level) {
            return; // filtered out: costs no budget
        }
        self.limit.take(now);
        self.report_if_due(now);
        let text = without_module_field(text, module);
        match cut {
            false => log(level, module, pid, format_args!("{text}")),
            true => log(
                level,
                module,
                pid,
                format_args!("{text}… [line cut at {MAX_LOG_LINE} bytes; the rest of it is dropped]"),
            ),
        }
    }

    /// `bytes` of cut lines were skipped.
    fn skipped(&mut self, bytes: usize) {
        if bytes > 0 {
            self.dropped.bytes += bytes as u64;
            self.dropped.since.get_or_insert_with(Instant::now);
        }
    }

    /// Reports the drops once they have gone on for a second: one report a
    /// second while a flood lasts, not one per line let through between
    /// drops. The last count is reported when the stream ends.
    fn report_if_due(&mut self, now: Instant) {
        if self
            .dropped
            .since
            .is_some_and(|since| now.duration_since(since) >= Duration::from_secs(1))
        {
            self.report();
        }
    }

    /// Says how many lines (and bytes of cut lines) were dropped, if any,
    /// and starts counting afresh.
    fn report(&mut self) {
        let dropped = std::mem::take(&mut self.dropped);
        if dropped.lines == 0 && dropped.bytes == 0 {
            return;
        }
        let over = dropped.since.map_or(Duration::ZERO, |since| since.elapsed());
        tracing::warn!(
            target: TARGET,
            module = %self.module,
            pid = self.pid,
            lines = dropped.lines,
            bytes = dropped.bytes,
            "dropped stderr lines over {over:.1?}: the child logs faster than {LOG_LINES_PER_SEC} lines/s, or longer lines than {MAX_LOG_LINE} bytes"
        );
    }
}

fn enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(target: TARGET, Level::ERROR),
        Level::WARN => tracing::enabled!(target: TARGET, Level::WARN),
        Level::INFO => tracing::enabled!(target: TARGET, Level::INFO),
        Level::DEBUG => tracing::enabled!(target: TARGET, Level::DEBUG),
        Level::TRACE => tracing::enabled!(target: TARGET, Level::TRACE),
    }
}

fn log(level: Level, module: &str, pid: u32, text: std::fmt::Arguments<'_>) {
    match level {
        Level::ERROR => tracing::error!(target: TARGET, %module, pid, "{text}"),
        Level::WARN => tracing::warn!(target: TARGET, %module, pid, "{text}"),
        Level::INFO => tracing::info!(target: TARGET, %module, pid, "{text}"),
        Level::DEBUG => tracing::debug!(target: TARGET, %module, pid, "{text}"),
        Level::TRACE => tracing::trace!(target: TARGET, %module, pid, "{text}"),
    }
}

/// The line without a `module=…` field naming this child's own module: the
/// parent's event carries that field already, so it is said once.
///
/// ```text
/// speed set module="motor" from=0 to=0.8   →   speed set from=0 to=0.8
/// ```
pub(crate) fn without_module_field<'a>(line: &'a str, module: &str) -> std::borrow::Cow<'a, str> {
    let quoted = format!("module=\"{module}\"");
    let plain = format!("module={module}");
    for field in [quoted, plain] {
        let mut from = 0;
        while let Some(found) = line[from..].find(&field) {
            let start = from + found;
            let end = start + field.len();
            let starts_word = line[..start].ends_with(' ') || start == 0;
            let ends_word = line[end..].starts_with(' ') || end == line.len();
            if starts_word && ends_word {
                let (before, after) = (line[..start].trim_end(), line[end..].trim_start());
                let joined = match (before.is_empty(), after.is_empty()) {
                    (true, _) => after.to_owned(),
                    (_, true) => before.to_owned(),
                    _ => format!("{before} {after}"),
                };
                return std::borrow::Cow::Owned(joined);
            }
            from = end;
        }
    }
    std::borrow::Cow::Borrowed(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]], max: usize) -> (Vec<(String, bool)>, usize) {
        let mut cutter = LineCutter::new(max);
        let mut out = Vec::new();
        let mut skipped = 0;
        let mut take = |text: &[u8], cut: bool| out.push((String::from_utf8_lossy(text).into_owned(), cut));
        for chunk in chunks {
            cutter.feed(chunk, &mut take);
            skipped += cutter.take_skipped();
        }
        cutter.finish(&mut take);
        (out, skipped)
    }

    #[test]
    fn lines_are_split_across_chunks_and_cut_at_the_limit() {
        let (lines, skipped) = lines_of(&[b"one\ntw", b"o\r\nthree is long", b"er than eight\nlast"], 8);
        assert_eq!(
            lines,
            vec![
                ("one".into(), false),
                ("two".into(), false),
                ("three is".into(), true),
                ("last".into(), false)
            ]
        );
        assert_eq!(skipped, " longer than eight".len());
    }

    #[test]
    fn a_line_without_end_is_shown_at_the_limit_and_costs_no_more() {
        let mut cutter = LineCutter::new(MAX_LOG_LINE);
        let mut lines = Vec::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut skipped = 0;
        for _ in 0..1600 {
            // 100 MiB, no newline
            cutter.feed(&chunk, &mut |text, cut| lines.push((text.len(), cut)));
            skipped += cutter.take_skipped();
        }
        assert!(cutter.capacity() <= 2 * MAX_LOG_LINE, "{}", cutter.capacity());
        assert_eq!(lines, vec![(MAX_LOG_LINE, true)], "shown once, as soon as it was cut");
        assert_eq!(skipped, 1600 * 64 * 1024 - MAX_LOG_LINE);
        cutter.finish(&mut |_, _| panic!("nothing left to show"));
        // The next line is a line again.
        cutter.feed(b"\nnext\n", &mut |text, cut| lines.push((text.len(), cut)));
        assert_eq!(lines[1..], [(4, false)]);
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(10, 5, t0);
        assert_eq!((0..100).filter(|_| limit.take(t0)).count(), 5);
        assert!(!limit.take(t0 + Duration::from_millis(50)));
        assert!(limit.take(t0 + Duration::from_millis(150)));
        // A long quiet spell refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| limit.take(later)).count(), 5);
    }

    #[test]
    fn the_module_field_is_said_once() {
        assert_eq!(
            without_module_field(r#"speed set module="motor" from=0 to=0.8"#, "motor"),
            "speed set from=0 to=0.8"
        );
        assert_eq!(without_module_field("running module=motor", "motor"), "running");
        assert_eq!(without_module_field("module=motors x", "motor"), "module=motors x");
        assert_eq!(
            without_module_field(r#"asked module="led""#, "motor"),
            r#"asked module="led""#
        );
    }
}
