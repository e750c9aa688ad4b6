//! A child that floods its stderr cannot hurt the node: a neighbour child's
//! asks stay fast and the parent's memory stays flat, with and without
//! newlines in the flood. Alone in its test binary, so the memory figures
//! are this test's own.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use botbus::{ChildCommand, ModuleOptions, Node};
use support::{child_services_binary, Req};

const FLOOD_BYTES: u64 = 100_000_000;

/// Counts the log lines of the two flooding children — all of them, those
/// that say a line was cut, and those that say lines were dropped — by the
/// child each is about (its module's name); keeps nothing.
struct Counting;

/// Lines, cut marks and drop reports of `flood-lines`, then of `flood-raw`.
static LINES: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static CUT: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static DROPPED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// The raw flood's lines (a few), to show when a check fails.
static RAW_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Write for Counting {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let child = if line.contains("module=flood-lines") {
                0
            } else if line.contains("module=flood-raw") {
                1
            } else {
                continue;
            };
            LINES[child].fetch_add(1, Ordering::Relaxed);
            if child == 1 {
                let shown: String = line.chars().filter(|c| *c != 'x').take(300).collect();
                RAW_LINES.lock().unwrap().push(shown);
            }
            CUT[child].fetch_add(line.matches("[line cut at 4096 bytes").count(), Ordering::Relaxed);
            DROPPED[child].fetch_add(line.matches("dropped stderr lines").count(), Ordering::Relaxed);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// A child that writes `FLOOD_BYTES` to its stderr, and only then announces
/// its module: its start ends when its flood has been read. It then reads
/// its stdin until the parent closes it, keeping its stdout — the link —
/// open (`exec cat >/dev/null` would close it, and the parent would rightly
/// see the child as lost and restart it, flood and all).
fn flooding_child(node: &str, newlines: bool) -> ChildCommand {
    let flood = if newlines {
        format!("yes 'a log line that goes on for a while, as log lines do' | head -c {FLOOD_BYTES} >&2")
    } else {
        format!("head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x >&2")
    };
    let script = format!(
        r#"printf '%s\n' '{{"magic":"BBUS","version":1,"node":"{node}","codecs":["json"]}}'
{flood}
printf '%s\n' '{{"announce":{{"modules":["{node}"],"subscriptions":[]}}}}'
while read -r _; do :; done"#
    );
    ChildCommand::new("sh").arg("-c").arg(script)
}

#[tokio::test]
async fn a_stderr_flood_leaves_the_neighbours_asks_fast_and_memory_flat() {
    // A real subscriber at INFO, formatting every line the node logs.
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(|| Counting)
        .with_ansi(false)
        .init();
    let node = Node::builder("host")
        .child_module("echo", ChildCommand::new(child_services_binary()), ModuleOptions::new())
        .start()
        .unwrap();
    let client = node.client("test");
    let mut quiet = Vec::new();
    for _ in 0..300 {
        let began = Instant::now();
        let _: u32 = client.ask("echo", Req::Add(1, 1)).await.unwrap();
        quiet.push(began.elapsed());
    }
    quiet.sort();
    let before = rss_mib();

    // Each flood in a child of its own name, so each is judged by its own
    // lines (another child's log may still be draining).
    for (child, newlines) in [(0, true), (1, false)] {
        let name = ["flood-lines", "flood-raw"][child];
        let flooder = node.clone();
        let flood = tokio::spawn(async move {
            let options = ModuleOptions::new().start_timeout(Duration::from_secs(60));
            flooder.spawn_child(name, flooding_child(name, newlines), options).await
        });
        let mut during = Vec::new();
        let mut peak = before;
        let began = Instant::now();
        while !flood.is_finished() {
            let asked = Instant::now();
            let _: u32 = client.ask("echo", Req::Add(1, 1)).await.unwrap();
            during.push(asked.elapsed());
            peak = peak.max(rss_mib());
            assert!(began.elapsed() < Duration::from_secs(60), "the flood never ended");
        }
        let flooding = began.elapsed();
        flood
            .await
            .unwrap()
            .expect("the flooding child announced itself after its flood");
        node.stop_module(name).await.unwrap();
        let after = rss_mib();
        during.sort();
        let logged = LINES[child].load(Ordering::Relaxed);
        eprintln!(
            "flood of {} MB {}: {} asks during {flooding:.2?}: p50 {:?} p99 {:?} max {:?} (quiet: p50 {:?} p99 {:?}); \
             RSS {before:.1} MiB before, {peak:.1} MiB peak, {after:.1} MiB after; {logged} lines logged, \
             {} drop reports",
            FLOOD_BYTES / 1_000_000,
            if newlines { "in lines" } else { "without a newline" },
            during.len(),
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            during.last().unwrap(),
            percentile(&quiet, 0.5),
            percentile(&quiet, 0.99),
            DROPPED[child].load(Ordering::Relaxed),
        );
        // Bounds for a loaded 2-core machine; the figures above are the
        // measurement (the quiet p50 is a fraction of a millisecond).
        assert!(!during.is_empty());
        assert!(
            percentile(&during, 0.5) < Duration::from_millis(20),
            "asks slowed by the flood"
        );
        assert!(
            peak - before < 64.0,
            "the flood grew the parent by {:.1} MiB",
            peak - before
        );
        assert!(
            after - before < 32.0,
            "the parent kept {:.1} MiB after the flood",
            after - before
        );
        if newlines {
            assert!(DROPPED[child].load(Ordering::Relaxed) > 0, "no drop was reported");
            assert!(logged < 100_000, "{logged} lines logged: nothing was dropped");
            // One report a second while the flood lasts, and one at its end:
            // not one per line let through between drops.
            let reports = DROPPED[child].load(Ordering::Relaxed);
            assert!(
                reports as f64 <= flooding.as_secs_f64() + 2.0,
                "{reports} drop reports in a flood of {flooding:.2?}"
            );
        } else {
            // The log thread writes the cut line; wait for it, bounded.
            let deadline = Instant::now() + support::DEADLINE;
            while CUT[child].load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                CUT[child].load(Ordering::Relaxed),
                1,
                "the one long line was not cut and marked: {:#?}",
                RAW_LINES.lock().unwrap()
            );
        }
    }
    node.shutdown().await;
}
