//! What the nodes of this test process log, captured for tests that check
//! that something was logged (a refusal on the listening side, say).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static LOG: Mutex<String> = Mutex::new(String::new());
static LOGGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().push_str(&String::from_utf8_lossy(bytes));
        LOGGED.notify_waiters();
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (once per process): every `info` line and above.
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(|| Capture)
            .with_ansi(false)
            .without_time()
            .init();
    });
}

/// Waits until a captured line holds every one of `parts`; returns it.
/// Panics with the whole log after `within`.
pub async fn wait_for_line(parts: &[&str], within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Registered before looking, so a line logged in between wakes it.
        let logged = LOGGED.notified();
        if let Some(line) = lines_with(parts).into_iter().next() {
            return line;
        }
        if tokio::time::timeout_at(deadline, logged).await.is_err() {
            panic!("no log line holds all of {parts:?}; the log:\n{}", LOG.lock().unwrap());
        }
    }
}

/// The captured lines so far that hold every one of `parts`.
pub fn lines_with(parts: &[&str]) -> Vec<String> {
    LOG.lock()
        .unwrap()
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .map(str::to_owned)
        .collect()
}
