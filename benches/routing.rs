//! What a hop through the parent costs: an ask from a child to a sibling
//! child (child → parent → sibling) next to an ask from the same child to a
//! module in the parent (child → parent), in one run, 64 B each way.
//!
//! `cargo bench --bench routing` (`taskset -c 0 cargo bench --bench routing`
//! for every process on one CPU)
//!
//! The asks are timed inside the asking child, so the harness's own hop to
//! start them is not counted. The children are this same binary
//! (`ModuleOptions::in_child()`). Context switches per ask are counted in
//! each of the three processes.

use std::time::{Duration, Instant};

use botbus::{Context, Message, Module, ModuleError, ModuleOptions, Node};
use serde::{Deserialize, Serialize};

#[path = "support/mod.rs"]
mod support;
use support::switches_per_op;

/// 64 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sample {
    seq: u64,
    data: [u64; 7],
}

impl Message for Sample {
    const NAME: &'static str = "bench.Sample";
}

/// Ask `target` `n` times; answer the p50 in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AskMany {
    target: String,
    n: u32,
}

impl Message for AskMany {
    const NAME: &'static str = "bench.AskMany";
}

struct Echo;

impl Module for Echo {
    type Message = Sample;
    type Reply = Sample;

    async fn process(&mut self, sample: Sample, _ctx: &mut Context) -> Result<Sample, ModuleError> {
        Ok(sample)
    }
}

struct Asker;

impl Module for Asker {
    type Message = AskMany;
    type Reply = u64;

    async fn process(&mut self, job: AskMany, ctx: &mut Context) -> Result<u64, ModuleError> {
        let mut samples = Vec::with_capacity(job.n as usize);
        for seq in 0..u64::from(job.n) {
            let sample = Sample { seq, data: [seq; 7] };
            let began = Instant::now();
            let back: Sample = ctx.ask(&job.target, sample).await?;
            samples.push(began.elapsed());
            assert_eq!(back.seq, seq);
        }
        samples.sort();
        Ok(samples[samples.len() / 2].as_nanos() as u64)
    }
}

fn main() {
    // In a botbus child, this call hosts the one module and never returns.
    let node = Node::builder("bench")
        .module("parent_echo", || Echo)
        .module_with("sibling_echo", || Echo, ModuleOptions::new().in_child())
        .module_with("asker", || Asker, ModuleOptions::new().in_child())
        .start()
        .expect("the bench node starts");
    let p50 = |target: &str, n: u32| -> Duration {
        let client = node.client("bench");
        let job = AskMany {
            target: target.to_owned(),
            n,
        };
        let nanos: u64 = node
            .block_on(async move { client.ask("asker", job).timeout(Duration::from_secs(120)).await })
            .expect("node up")
            .expect("the asker answers");
        Duration::from_nanos(nanos)
    };
    // Warm up both paths, then alternate rounds so both see the same machine.
    p50("parent_echo", 500);
    p50("sibling_echo", 500);
    let pids = [
        std::process::id(),
        node.child_pid("asker").expect("the asker child runs"),
        node.child_pid("sibling_echo").expect("the sibling child runs"),
    ];
    let cs_direct = switches_per_op(&pids, 2_000, || {
        p50("parent_echo", 2_000);
    });
    let cs_hop = switches_per_op(&pids, 2_000, || {
        p50("sibling_echo", 2_000);
    });
    let (mut direct, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        direct.push(p50("parent_echo", 2_000));
        hop.push(p50("sibling_echo", 2_000));
    }
    direct.sort();
    hop.sort();
    let (direct, hop) = (direct[2], hop[2]);
    println!("\nask round trip 64 B from a child, p50 (median of 5 rounds of 2000), this run:");
    println!("{:<44} {:>9.1} us", "child -> parent", direct.as_secs_f64() * 1e6);
    println!(
        "{:<44} {:>9.1} us",
        "child -> parent -> sibling child",
        hop.as_secs_f64() * 1e6
    );
    println!(
        "{:<44} {:>9.2}",
        "sibling / parent",
        hop.as_secs_f64() / direct.as_secs_f64()
    );
    println!("\ncontext switches per ask (parent + asking child + sibling child):");
    for (path, cs) in [
        ("child -> parent", &cs_direct),
        ("child -> parent -> sibling child", &cs_hop),
    ] {
        println!("{:<44} {:>5.1} + {:.1} + {:.1}", path, cs[0], cs[1], cs[2]);
    }
    node.shutdown_blocking();
}
