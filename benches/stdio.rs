//! botbus over stdio next to raw pipes between the same two processes, in
//! one run: ask round trip (p50) against a blocking pipe ping-pong, tell
//! throughput for 64 B and 64 KiB messages against a raw length-prefixed
//! stream, and spawn → ready. Prints botbus/raw ratios at the end.
//!
//! `cargo bench --bench stdio` (and `taskset -c 0 cargo bench --bench
//! stdio` for both processes on one CPU); `botbus bench --only stdio`
//! makes the same measurements.
//!
//! The children are this same binary: the botbus ones through
//! `ModuleOptions::in_child()`, the raw ones as `botbus::bench` starts
//! them. Both kinds get the same enlarged (1 MiB) pipes.

use std::time::Duration;

use botbus::Node;
use criterion::{Criterion, Throughput};

#[path = "support/mod.rs"]
mod support;
use support::{
    botbus_round_trips, botbus_tells, median_of, over_stdio, spawn_to_ready, Sizes, BETWEEN_PROCESSES_TARGETS, SMALL,
};

const TELLS_PER_SAMPLE: u64 = 20_000;

fn benches(c: &mut Criterion, node: &Node) {
    let mut group = c.benchmark_group("stdio ask round trip 64 B");
    group.bench_function("botbus ask", |b| {
        b.iter_custom(|iters| botbus_round_trips(node, iters as usize).iter().sum())
    });
    group.finish();

    let mut group = c.benchmark_group("stdio tells 64 B");
    group.throughput(Throughput::Elements(TELLS_PER_SAMPLE));
    group.bench_function("botbus tell", |b| {
        b.iter_custom(|iters| botbus_tells(node, iters * TELLS_PER_SAMPLE, SMALL))
    });
    group.finish();
}

fn summary(node: &Node) {
    over_stdio(node, Sizes::FULL).print(
        "botbus over stdio vs raw pipes, parent <-> child (switches: parent + child)",
        BETWEEN_PROCESSES_TARGETS,
    );
    let spawn = median_of(21, || spawn_to_ready(node));
    println!(
        "{:<34} {:>11.1} ms {:>14} {:>12}  target <= 20 ms",
        "spawn -> ready, p50",
        spawn.as_secs_f64() * 1e3,
        "",
        ""
    );
}

fn main() {
    // The raw peers, and (in a botbus child) the child's module, serve
    // here and never return.
    support::serve_if_asked();
    let node = support::stdio_node();
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
