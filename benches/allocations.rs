//! Heap allocations per message across a real link: 64 B tells, then asks
//! one at a time, from this process to a module in a child process (stdio),
//! counted in each process by a counting allocator (dhat's, in testing
//! mode). Prints allocations per message on each side.
//!
//! `cargo bench --bench allocations`
//!
//! What it counts in the steady state is the message's own: the receiver
//! copies the small `Blob` a chunk carries out of the read bytes. The
//! sender holds the chunk in place, an ask's flag is a spare one on both
//! sides, the callee's way back is its link (shared, not boxed), and the
//! names of senders and of the modules asked are shared per link.

use std::time::Duration;

use botbus::{Context, Module, ModuleError, ModuleOptions, Node};

#[path = "support/mod.rs"]
mod support;
use support::{Chunk, SMALL};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Takes chunks; an empty one is answered with the allocations its
/// process has made so far.
struct CountingSink;

impl Module for CountingSink {
    type Message = Chunk;
    type Reply = u64;

    async fn process(&mut self, _chunk: Chunk, _ctx: &mut Context) -> Result<u64, ModuleError> {
        Ok(dhat::HeapStats::get().total_blocks)
    }
}

fn main() {
    // Both processes count: this one, and the child it re-launches.
    let _profiler = dhat::Profiler::builder().testing().build();
    let node = Node::builder("bench")
        .module_with("sink", || CountingSink, ModuleOptions::new().in_child())
        .start()
        .expect("the bench node and its child start");
    let client = node.client("driver");
    const N: u64 = 20_000;
    let ((sent, received), (asked, answered)) = node
        .block_on(async move {
            let chunk = Chunk::of(SMALL);
            // Warm up: the link's buffers, the arena, the mailbox grow once.
            for _ in 0..N {
                client.tell("sink", chunk.clone()).await.expect("tell accepted");
            }
            let timeout = Duration::from_secs(60);
            let theirs_before = client
                .ask::<_, u64>("sink", Chunk::of(0))
                .timeout(timeout)
                .await
                .expect("the sink answers");
            let ours_before = dhat::HeapStats::get().total_blocks;
            for _ in 0..N {
                client.tell("sink", chunk.clone()).await.expect("tell accepted");
            }
            let ours_after = dhat::HeapStats::get().total_blocks;
            let theirs_after = client
                .ask::<_, u64>("sink", Chunk::of(0))
                .timeout(timeout)
                .await
                .expect("the sink answers");
            let tells = (ours_after - ours_before, theirs_after - theirs_before);
            // Asks, one at a time, after one to warm up: each answer is the
            // count the child had made when it took that ask.
            let first = client
                .ask::<_, u64>("sink", chunk.clone())
                .timeout(timeout)
                .await
                .expect("the sink answers");
            let ours_before = dhat::HeapStats::get().total_blocks;
            let mut last = first;
            for _ in 0..N {
                last = client
                    .ask::<_, u64>("sink", chunk.clone())
                    .timeout(timeout)
                    .await
                    .expect("the sink answers");
            }
            let ours_after = dhat::HeapStats::get().total_blocks;
            (tells, (ours_after - ours_before, last - first))
        })
        .expect("node up");
    println!("\nheap allocations per 64 B tell over stdio, {N} tells, this run:");
    println!("{:<34} {:>10.2}", "sender (this process)", sent as f64 / N as f64);
    println!("{:<34} {:>10.2}", "receiver (the child)", received as f64 / N as f64);
    println!("(the sender holds a value of up to 32 bytes in place; the receiver's one is the small Blob's own copy)");
    println!("\nheap allocations per ask of a 64 B chunk over stdio, one at a time, {N} asks:");
    println!("{:<34} {:>10.2}", "asker (this process)", asked as f64 / N as f64);
    println!("{:<34} {:>10.2}", "callee (the child)", answered as f64 / N as f64);
    node.shutdown_blocking();
}
