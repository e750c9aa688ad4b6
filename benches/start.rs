//! How long a node takes to start many modules, next to actix starting as
//! many bare actors on as many arbiters, in one run.
//!
//! `cargo bench --bench start` (`-- 1000 10000` for other counts)
//!
//! botbus starts modules in order, each one's `started` hook finishing
//! before the next begins, and registers, supervises and routes each one;
//! the raw side starts actors with no order and no hook to wait for, and
//! only waits until every one has run. Starting should be linear: the time
//! per module should not grow with the count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext};
use actix_rt::{Arbiter, System};
use botbus::{Context, Module, ModuleError, Node};

#[derive(Default)]
struct Idle;

impl Module for Idle {
    type Message = u32;
    type Reply = u32;

    async fn process(&mut self, n: u32, _ctx: &mut Context) -> Result<u32, ModuleError> {
        Ok(n)
    }
}

/// The time `Node::builder(..).start()` takes for `count` modules.
fn botbus_start(count: usize) -> Duration {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut builder = Node::builder("many").pool_threads(threads);
    for i in 0..count {
        builder = builder.module(&format!("m{i}"), Idle::default);
    }
    let began = Instant::now();
    let node = builder.start().expect("the node starts");
    let took = began.elapsed();
    assert_eq!(node.modules().len(), count);
    node.shutdown_blocking();
    took
}

struct Bare(Arc<AtomicUsize>);

impl Actor for Bare {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.0.fetch_add(1, Ordering::Release);
        let _ = ctx.address();
    }
}

/// The time actix takes to start `count` actors on the pool's arbiters and
/// run each one's `started`.
fn actix_start(count: usize) -> Duration {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = System::new();
        system.block_on(async move {
            let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
            let running = Arc::new(AtomicUsize::new(0));
            let began = Instant::now();
            for i in 0..count {
                let running = running.clone();
                Bare::start_in_arbiter(&arbiters[i % threads].handle(), move |_| Bare(running));
            }
            while running.load(Ordering::Acquire) < count {
                tokio::task::yield_now().await;
            }
            let _ = tx.send(began.elapsed());
            for arbiter in arbiters {
                arbiter.stop();
            }
        });
    });
    rx.recv().expect("the actix run finishes")
}

fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        counts
    };
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>10}",
        "modules", "botbus", "per module", "actix", "ratio"
    );
    for count in counts {
        let ours = botbus_start(count);
        let raw = actix_start(count);
        println!(
            "{count:>9} {:>12.2?} {:>10.1}µs {:>12.2?} {:>10.1}",
            ours,
            ours.as_secs_f64() * 1e6 / count as f64,
            raw,
            ours.as_secs_f64() / raw.as_secs_f64()
        );
    }
}
