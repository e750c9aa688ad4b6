//! What the benches share: the message and modules they measure with, the
//! framing of the raw channels they compare against, and the statistics.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use botbus::{Context, Message, Module, ModuleError, Node};
use serde::{Deserialize, Serialize};

pub const SMALL: usize = 64;
pub const LARGE: usize = 64 * 1024;

/// A chunk of bytes; the sink answers with how many it has taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk(#[serde(with = "serde_bytes_compat")] Vec<u8>);

impl Chunk {
    /// A chunk of `size` bytes.
    pub fn of(size: usize) -> Chunk {
        Chunk(vec![7; size])
    }
}

impl Message for Chunk {
    const NAME: &'static str = "bench.Chunk";
}

/// `Vec<u8>` as one byte string: postcard then copies it whole instead of
/// byte by byte (the wire bytes are the same).
pub mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteBuf)
    }

    struct ByteBuf;

    impl serde::de::Visitor<'_> for ByteBuf {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}

pub struct Echo;

impl Module for Echo {
    type Message = Chunk;
    type Reply = Chunk;

    async fn process(&mut self, chunk: Chunk, _ctx: &mut Context) -> Result<Chunk, ModuleError> {
        Ok(chunk)
    }
}

#[derive(Default)]
pub struct Sink {
    taken: u64,
}

impl Module for Sink {
    type Message = Chunk;
    type Reply = u64;

    async fn process(&mut self, _chunk: Chunk, _ctx: &mut Context) -> Result<u64, ModuleError> {
        self.taken += 1;
        Ok(self.taken)
    }
}

// ---- botbus -----------------------------------------------------------------

/// The p50 of `n` ask round trips, timed one by one.
pub fn botbus_round_trip(node: &Node, n: usize) -> Duration {
    let mut samples = botbus_round_trips(node, n);
    median(&mut samples)
}

/// `n` ask round trips, each timed.
pub fn botbus_round_trips(node: &Node, n: usize) -> Vec<Duration> {
    let client = node.client("driver");
    node.block_on(async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let _: Chunk = client.ask("echo", Chunk(vec![7; SMALL])).await.expect("echo answers");
            samples.push(start.elapsed());
        }
        samples
    })
    .expect("node up")
}

/// Time for `n` tells of `size` bytes, until the sink has taken them all.
pub fn botbus_tells(node: &Node, n: u64, size: usize) -> Duration {
    let client = node.client("driver");
    node.block_on(async move {
        let before: u64 = client.ask("sink", Chunk(Vec::new())).await.expect("sink answers");
        let chunk = Chunk(vec![7; size]);
        let start = Instant::now();
        for _ in 0..n {
            client.tell("sink", chunk.clone()).await.expect("tell accepted");
        }
        let after: u64 = client
            .ask("sink", Chunk(Vec::new()))
            .timeout(Duration::from_secs(120))
            .await
            .expect("sink answers");
        let elapsed = start.elapsed();
        assert_eq!(after, before + n + 1, "the sink took every tell");
        elapsed
    })
    .expect("node up")
}

// ---- raw channels ------------------------------------------------------------

pub fn write_frame(to: &mut impl Write, body: &[u8]) {
    to.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    to.write_all(body).unwrap();
}

pub fn read_frame(from: &mut impl Read, body: &mut Vec<u8>) -> bool {
    let mut len = [0u8; 4];
    if from.read_exact(&mut len).is_err() {
        return false;
    }
    body.resize(u32::from_be_bytes(len) as usize, 0);
    from.read_exact(body).is_ok()
}

/// `n` blocking ping-pongs of 64 B over a raw channel, each timed.
pub fn raw_round_trips(to: &mut impl Write, from: &mut impl Read, n: usize) -> Vec<Duration> {
    let (ping, mut pong) = (vec![7u8; SMALL], Vec::new());
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        write_frame(to, &ping);
        to.flush().unwrap();
        assert!(read_frame(from, &mut pong));
        samples.push(start.elapsed());
    }
    samples
}

/// The p50 of `n` raw ping-pongs.
pub fn raw_round_trip(to: &mut impl Write, from: &mut impl Read, n: usize) -> Duration {
    let mut samples = raw_round_trips(to, from, n);
    median(&mut samples)
}

/// Time for `n` length-prefixed messages of `size` bytes over a raw
/// channel, until the other side has read them all.
pub fn raw_stream(to: &mut impl Write, from: &mut impl Read, n: u64, size: usize) -> Duration {
    let body = vec![7u8; size];
    let start = Instant::now();
    to.write_all(&n.to_be_bytes()).unwrap();
    for _ in 0..n {
        write_frame(to, &body);
    }
    to.flush().unwrap();
    let mut taken = [0u8; 8];
    from.read_exact(&mut taken).unwrap();
    assert_eq!(u64::from_be_bytes(taken), n);
    start.elapsed()
}

/// The other end of a raw channel: an echo, or a sink that reads a count
/// then that many messages, and answers the count.
pub fn raw_serve(role: &str, from: &mut impl Read, to: &mut impl Write) {
    let mut body = Vec::new();
    match role {
        "echo" => {
            while read_frame(from, &mut body) {
                write_frame(to, &body);
                to.flush().unwrap();
            }
        }
        "sink" => {
            let mut count = [0u8; 8];
            while from.read_exact(&mut count).is_ok() {
                let n = u64::from_be_bytes(count);
                for _ in 0..n {
                    assert!(read_frame(from, &mut body));
                }
                to.write_all(&count).unwrap();
                to.flush().unwrap();
            }
        }
        other => panic!("unknown raw role {other}"),
    }
}

// ---- statistics ----------------------------------------------------------------

pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn median_of(rounds: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds).map(|_| run()).collect();
    median(&mut samples)
}

/// Context switches of every thread of process `pid` so far (voluntary and
/// not), from `/proc/<pid>/task/*/status`; 0 where there is no such file.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Runs `work` (`n` operations) and returns the context switches per
/// operation it cost each of `pids`.
pub fn switches_per_op(pids: &[u32], n: usize, work: impl FnOnce()) -> Vec<f64> {
    let before: Vec<u64> = pids.iter().map(|&pid| context_switches(pid)).collect();
    work();
    pids.iter()
        .zip(before)
        .map(|(&pid, before)| context_switches(pid).saturating_sub(before) as f64 / n as f64)
        .collect()
}

/// One run of botbus against the raw channel under it, the same payloads in
/// the same run: what the stdio and pipe benches measure, printed alike.
pub struct Versus {
    /// Ask round trip 64 B, p50: botbus, raw.
    pub round_trip: (Duration, Duration),
    /// `n` tells of 64 B: n, botbus, raw.
    pub small_tells: (u64, Duration, Duration),
    /// `n` tells of 64 KiB: n, botbus, raw.
    pub large_tells: (u64, Duration, Duration),
    /// Context switches per ask in each process: botbus, raw.
    pub switches: (Vec<f64>, Vec<f64>),
}

impl Versus {
    /// Prints the table under `title`; `targets` (round trip, small tells,
    /// large tells), where not empty, end their rows.
    pub fn print(&self, title: &str, targets: [&str; 3]) {
        self.print_as(title, ["botbus", "raw"], targets);
    }

    /// [`Versus::print`], naming the two columns (`tls` against `tcp`, say).
    pub fn print_as(&self, title: &str, columns: [&str; 2], targets: [&str; 3]) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
        let mib = (1024 * 1024) as f64;
        let (rtt_bb, rtt_raw) = self.round_trip;
        let (small_n, small_bb, small_raw) = self.small_tells;
        let (large_n, large_bb, large_raw) = self.large_tells;
        let (cs_bb, cs_raw) = &self.switches;
        let target = |t: &str| if t.is_empty() { String::new() } else { format!("  {t}") };
        let joined = |cs: &[f64]| cs.iter().map(|c| format!("{c:.1}")).collect::<Vec<_>>().join(" + ");
        println!("\n{title}, this run:");
        let ratio = format!("{}/{}", columns[0], columns[1]);
        println!("{:<34} {:>14} {:>14} {:>12}", "", columns[0], columns[1], ratio);
        println!(
            "{:<34} {:>11.1} us {:>11.1} us {:>12.2}{}",
            "ask round trip 64 B, p50",
            us(rtt_bb),
            us(rtt_raw),
            us(rtt_bb) / us(rtt_raw),
            target(targets[0])
        );
        println!(
            "{:<34} {:>10.2} M/s {:>10.2} M/s {:>12.2}{}",
            "tells 64 B",
            per_sec(small_n, small_bb) / 1e6,
            per_sec(small_n, small_raw) / 1e6,
            small_raw.as_secs_f64() / small_bb.as_secs_f64(),
            target(targets[1])
        );
        println!(
            "{:<34} {:>8.0} MiB/s {:>8.0} MiB/s {:>12.2}{}",
            "tells 64 KiB, bandwidth",
            per_sec(large_n * LARGE as u64, large_bb) / mib,
            per_sec(large_n * LARGE as u64, large_raw) / mib,
            large_raw.as_secs_f64() / large_bb.as_secs_f64(),
            target(targets[2])
        );
        println!(
            "{:<34} {:>14} {:>14}",
            "context switches per ask",
            joined(cs_bb),
            joined(cs_raw)
        );
    }
}
