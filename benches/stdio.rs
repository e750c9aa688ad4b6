//! botbus over stdio next to raw pipes between the same two processes, in
//! one run: ask round trip (p50) against a blocking pipe ping-pong, tell
//! throughput for 64 B and 64 KiB messages against a raw length-prefixed
//! stream, and spawn → ready. Prints botbus/raw ratios at the end.
//!
//! `cargo bench --bench stdio`
//!
//! The children are this same binary: the botbus ones through
//! `ModuleOptions::in_child()`, the raw ones through `BOTBUS_BENCH_RAW`.
//! Both kinds get the same enlarged (1 MiB) pipes.

use std::io::{BufReader, BufWriter};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use botbus::{ModuleOptions, Node};
use criterion::{Criterion, Throughput};

#[path = "support/mod.rs"]
mod support;
use support::{
    botbus_round_trip, botbus_round_trips, botbus_tells, median_of, switches_per_op, Echo, Sink, Versus, LARGE, SMALL,
};

const RAW_ROLE_ENV: &str = "BOTBUS_BENCH_RAW";
// ---- botbus ----------------------------------------------------------------

fn botbus_node() -> Node {
    let child = || ModuleOptions::new().in_child();
    Node::builder("bench")
        .module_with("echo", || Echo, child())
        .module_with("sink", Sink::default, child())
        .module_with("spawnee", || Echo, child())
        .start()
        .expect("bench node with its children starts")
}

/// Stops and respawns a child module; the time until it is ready.
fn botbus_spawn(node: &Node) -> Duration {
    let node2 = node.clone();
    node.block_on(async move {
        node2.stop_module("spawnee").await.expect("spawnee stops");
        let start = Instant::now();
        node2
            .spawn("spawnee", || Echo, ModuleOptions::new().in_child())
            .await
            .expect("spawnee respawns");
        start.elapsed()
    })
    .expect("node up")
}

// ---- raw pipes ---------------------------------------------------------------

struct RawChild {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl RawChild {
    fn spawn(role: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("bench binary"))
            .env(RAW_ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("raw child starts");
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        enlarge_pipe(&stdin);
        enlarge_pipe(&stdout);
        RawChild {
            child,
            to: BufWriter::with_capacity(256 * 1024, stdin),
            from: BufReader::with_capacity(256 * 1024, stdout),
        }
    }
}

impl Drop for RawChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enlarge_pipe(fd: impl std::os::fd::AsFd) {
    #[cfg(target_os = "linux")]
    let _ = rustix::pipe::fcntl_setpipe_size(fd, 1024 * 1024);
}

/// The p50 of `n` blocking ping-pongs of 64 B, length-prefixed.
fn raw_round_trip(echo: &mut RawChild, n: usize) -> Duration {
    support::raw_round_trip(&mut echo.to, &mut echo.from, n)
}

/// `n` blocking ping-pongs, each timed.
fn raw_round_trips(echo: &mut RawChild, n: usize) -> Vec<Duration> {
    support::raw_round_trips(&mut echo.to, &mut echo.from, n)
}

/// Time for `n` length-prefixed messages of `size` bytes, until the child
/// has read them all.
fn raw_stream(sink: &mut RawChild, n: u64, size: usize) -> Duration {
    support::raw_stream(&mut sink.to, &mut sink.from, n, size)
}

/// The raw children, over their stdin and stdout.
fn raw_child(role: &str) {
    let mut from = BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
    let mut to = BufWriter::new(std::io::stdout().lock());
    support::raw_serve(role, &mut from, &mut to);
}

// ---- the run -------------------------------------------------------------------

const TELLS_PER_SAMPLE: u64 = 20_000;

fn benches(c: &mut Criterion, node: &Node) {
    let mut echo = RawChild::spawn("echo");
    let mut sink = RawChild::spawn("sink");
    let mut group = c.benchmark_group("stdio ask round trip 64 B");
    group.bench_function("botbus ask", |b| {
        b.iter_custom(|iters| botbus_round_trips(node, iters as usize).iter().sum())
    });
    group.bench_function("raw pipe ping-pong", |b| {
        b.iter_custom(|iters| raw_round_trips(&mut echo, iters as usize).iter().sum())
    });
    group.finish();

    let mut group = c.benchmark_group("stdio tells 64 B");
    group.throughput(Throughput::Elements(TELLS_PER_SAMPLE));
    group.bench_function("botbus tell", |b| {
        b.iter_custom(|iters| botbus_tells(node, iters * TELLS_PER_SAMPLE, SMALL))
    });
    group.bench_function("raw length-prefixed", |b| {
        b.iter_custom(|iters| raw_stream(&mut sink, iters * TELLS_PER_SAMPLE, SMALL))
    });
    group.finish();
}

fn summary(node: &Node) {
    let mut echo = RawChild::spawn("echo");
    let mut sink = RawChild::spawn("sink");
    // Context switches per ask, in this process and the child.
    let me = std::process::id();
    let echo_child = node.child_pid("echo").expect("the echo child runs");
    let cs_bb = switches_per_op(&[me, echo_child], 2_000, || {
        botbus_round_trip(node, 2_000);
    });
    let cs_raw = switches_per_op(&[me, echo.child.id()], 2_000, || {
        raw_round_trip(&mut echo, 2_000);
    });
    let rtt_bb = median_of(5, || botbus_round_trip(node, 2_000));
    let rtt_raw = median_of(5, || raw_round_trip(&mut echo, 2_000));
    let small_n = 200_000;
    let small_bb = median_of(7, || botbus_tells(node, small_n, SMALL));
    let small_raw = median_of(7, || raw_stream(&mut sink, small_n, SMALL));
    let large_n = 4_000;
    let large_bb = median_of(7, || botbus_tells(node, large_n, LARGE));
    let large_raw = median_of(7, || raw_stream(&mut sink, large_n, LARGE));
    let spawn = median_of(21, || botbus_spawn(node));

    Versus {
        round_trip: (rtt_bb, rtt_raw),
        small_tells: (small_n, small_bb, small_raw),
        large_tells: (large_n, large_bb, large_raw),
        switches: (cs_bb, cs_raw),
    }
    .print(
        "botbus over stdio vs raw pipes, parent <-> child (switches: parent + child)",
        ["target <= 1.5", "target botbus >= 3 M/s", "target >= 0.6"],
    );
    println!(
        "{:<34} {:>11.1} ms {:>14} {:>12}  target <= 20 ms",
        "spawn -> ready, p50",
        spawn.as_secs_f64() * 1e3,
        "",
        ""
    );
}

fn main() {
    if let Ok(role) = std::env::var(RAW_ROLE_ENV) {
        raw_child(&role);
        return;
    }
    // In a botbus child, this call hosts the module and never returns.
    let node = botbus_node();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    benches(&mut criterion, &node);
    criterion.final_summary();
    summary(&node);
    node.shutdown_blocking();
}
