//! botbus next to raw actix, in one run, with the same 64-byte payload:
//! tell throughput and ask round trip between two modules on the same
//! arbiter and on two arbiters. Prints botbus/raw ratios at the end.
//!
//! `cargo bench --bench in_process`
//!
//! Each measurement is timed inside the sending module (or actor), so the
//! harness's own cross-thread hop to start it is not counted.

use std::time::{Duration, Instant};

use actix::{Actor, Addr, Handler, ResponseFuture};
use actix_rt::{Arbiter, System};
use botbus::bench::{drive as run_botbus, driver_node, Drive, Sample};
use botbus::Node;
use criterion::{Criterion, Throughput};

// ---- raw actix -----------------------------------------------------------

/// The same 64-byte sample as botbus's modules take, as an actix message.
struct RawSample(Sample);

impl actix::Message for RawSample {
    type Result = u64;
}

/// The same driving orders, as an actix message.
struct RawDrive(Drive);

impl actix::Message for RawDrive {
    type Result = u64;
}

struct RawSink;

impl Actor for RawSink {
    type Context = actix::Context<Self>;
}

impl Handler<RawSample> for RawSink {
    type Result = u64;

    fn handle(&mut self, RawSample(sample): RawSample, _: &mut Self::Context) -> u64 {
        sample.seq
    }
}

struct RawDriver {
    sink: Addr<RawSink>,
}

impl Actor for RawDriver {
    type Context = actix::Context<Self>;
}

impl Handler<RawDrive> for RawDriver {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, RawDrive(drive): RawDrive, _: &mut Self::Context) -> Self::Result {
        let sink = self.sink.clone();
        Box::pin(async move {
            let start = Instant::now();
            match drive {
                Drive::Tells(n) => {
                    for i in 0..n {
                        sink.do_send(RawSample(Sample::new(i)));
                    }
                    sink.send(RawSample(Sample::new(n))).await.expect("sink alive");
                }
                Drive::Asks(n) => {
                    for i in 0..n {
                        sink.send(RawSample(Sample::new(i))).await.expect("sink alive");
                    }
                }
            }
            start.elapsed().as_nanos() as u64
        })
    }
}

struct RawActix {
    system: actix_rt::SystemRunner,
    driver: Addr<RawDriver>,
    _arbiters: Vec<Arbiter>,
}

fn raw_actix(same_thread: bool) -> RawActix {
    let system = System::new();
    let (driver, arbiters) = system.block_on(async move {
        let one = Arbiter::new();
        let two = Arbiter::new();
        let sink_home = if same_thread { one.handle() } else { two.handle() };
        let sink = RawSink::start_in_arbiter(&sink_home, |_| RawSink);
        let driver = RawDriver::start_in_arbiter(&one.handle(), move |_| RawDriver { sink });
        (driver, vec![one, two])
    });
    RawActix {
        system,
        driver,
        _arbiters: arbiters,
    }
}

fn run_raw(raw: &RawActix, drive: Drive) -> Duration {
    Duration::from_nanos(
        raw.system
            .block_on(raw.driver.send(RawDrive(drive)))
            .expect("driver alive"),
    )
}

// ---- the run -------------------------------------------------------------

const TELLS_PER_SAMPLE: u64 = 10_000;

struct Setup {
    label: &'static str,
    node: Node,
    raw: RawActix,
}

fn setups() -> Vec<Setup> {
    vec![
        Setup {
            label: "same arbiter",
            node: driver_node("bench-same", true),
            raw: raw_actix(true),
        },
        Setup {
            label: "two arbiters",
            node: driver_node("bench-two", false),
            raw: raw_actix(false),
        },
    ]
}

fn benches(c: &mut Criterion) {
    for setup in setups() {
        let mut group = c.benchmark_group(format!("tell 64 B, {}", setup.label));
        group.throughput(Throughput::Elements(TELLS_PER_SAMPLE));
        group.bench_function("botbus tell", |b| {
            b.iter_custom(|iters| run_botbus(&setup.node, Drive::Tells(iters * TELLS_PER_SAMPLE)))
        });
        group.bench_function("actix do_send", |b| {
            b.iter_custom(|iters| run_raw(&setup.raw, Drive::Tells(iters * TELLS_PER_SAMPLE)))
        });
        group.finish();

        let mut group = c.benchmark_group(format!("ask round trip 64 B, {}", setup.label));
        group.bench_function("botbus ask", |b| {
            b.iter_custom(|iters| run_botbus(&setup.node, Drive::Asks(iters)))
        });
        group.bench_function("actix send().await", |b| {
            b.iter_custom(|iters| run_raw(&setup.raw, Drive::Asks(iters)))
        });
        group.finish();
        setup.node.shutdown_blocking();
    }
}

/// Median time per operation over `rounds` runs of `ops` operations.
fn per_op(rounds: usize, ops: u64, mut run: impl FnMut(u64) -> Duration) -> f64 {
    let mut samples: Vec<f64> = (0..rounds).map(|_| run(ops).as_nanos() as f64 / ops as f64).collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
}

/// The ratios, measured in this same run, side by side.
fn summary() {
    println!("\nbotbus vs raw actix, 64-byte payload (median of 21 rounds, this run):");
    println!("{:<34} {:>14} {:>14} {:>16}", "", "botbus", "raw actix", "botbus/raw");
    for setup in setups() {
        let (node, raw) = (&setup.node, &setup.raw);
        let tell_bb = per_op(21, 20_000, |n| run_botbus(node, Drive::Tells(n)));
        let tell_raw = per_op(21, 20_000, |n| run_raw(raw, Drive::Tells(n)));
        println!(
            "{:<34} {:>10.2} M/s {:>10.2} M/s {:>10.2} (throughput; target >= 0.8)",
            format!("tell throughput, {}", setup.label),
            1e3 / tell_bb,
            1e3 / tell_raw,
            tell_raw / tell_bb
        );
        let ask_bb = per_op(21, 2_000, |n| run_botbus(node, Drive::Asks(n)));
        let ask_raw = per_op(21, 2_000, |n| run_raw(raw, Drive::Asks(n)));
        println!(
            "{:<34} {:>11.2} us {:>11.2} us {:>10.2} (latency; target <= 1.5)",
            format!("ask round trip, {}", setup.label),
            ask_bb / 1e3,
            ask_raw / 1e3,
            ask_bb / ask_raw
        );
        setup.node.shutdown_blocking();
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    summary();
}
