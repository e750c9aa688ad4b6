//! What botbus costs on this machine: botbus next to the raw channel under
//! it, with the same payloads, in the same run — the measurements behind
//! `botbus bench` and `cargo bench`.
//!
//! Each placement is measured against the channel it runs over:
//!
//! * **in one process** — two modules on one thread against a bounded
//!   tokio channel and a oneshot on one thread (what a module's mailbox and
//!   an ask are made of);
//! * **a child over stdio** — against a length-prefixed stream over the
//!   same kind of pipes to a child process;
//! * **a process over a Unix socket** (`pipe://`) — against a raw Unix
//!   socket;
//! * **a process over TCP** on loopback — against a raw TCP connection
//!   with `TCP_NODELAY`.
//!
//! The process on the other end of a Unix socket or TCP runs its link and
//! its modules on one thread ([`LinkConfig::thread`]), as a process serving
//! through its link should; [`Peer::service_on_pool`] is the same service
//! with its modules on the pool, to compare.
//!
//! For each: the p50 of an ask round trip of 64 bytes against a blocking
//! ping-pong; the rate of 64-byte tells and the bandwidth of 64 KiB tells
//! against a stream of length-prefixed messages; and the context switches
//! per ask in both processes (from `/proc`, on Linux).
//!
//! Between processes on Unix, one more round trip splits what botbus adds
//! from what its reactor costs: the same ping-pong with a bare tokio
//! runtime on each side (a non-blocking descriptor, woken by the reactor;
//! one `epoll_wait`, one `read` and one `write` per message), which is the
//! least any design on tokio pays where the raw channel blocks in `read`.
//!
//! Over stdio, two more: an ask from a module on a thread of its own (its
//! child's link on the node's thread), and, on Linux, from a module whose
//! thread carries its child's link, pinned with that child to one CPU
//! ([`ModuleOptions::cpus`]) while the rest of the node is not.
//!
//! The processes on the other end are this same binary, started again:
//! a program that runs a measurement calls [`serve_if_asked`] first thing
//! in `main`, which serves that role when this process is one of them and
//! returns otherwise.
//!
//! ```no_run
//! // First thing in `main`: the processes on the other end serve here.
//! botbus::bench::serve_if_asked();
//! let figures = botbus::bench::over_tcp(botbus::bench::Sizes::QUICK);
//! figures.print("botbus over TCP vs raw TCP", ["", "", ""]);
//! ```

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use botbus_actors::{LinkConfig, ModuleOptions, Node};
use botbus_core::{Blob, Context, Message, Module, ModuleError};
use serde::{Deserialize, Serialize};

/// The small payload: 64 bytes.
pub const SMALL: usize = 64;
/// The large payload: 64 KiB.
pub const LARGE: usize = 64 * 1024;

/// What botbus aims at between two processes (stdio, pipe, tcp), to end the
/// round trip, small tells and large tells rows of [`Versus::print`].
pub const BETWEEN_PROCESSES_TARGETS: [&str; 3] = [
    "target <= 1.5 (one CPU)",
    "target >= 4 M/s (2.5 one CPU)",
    "target >= 0.7",
];

/// A chunk of bytes; the [`Sink`] answers with how many it has taken. A
/// [`Blob`]: sending a clone copies nothing, and a large one received is a
/// slice of what the link read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk(pub Blob);

impl Chunk {
    /// A chunk of `size` bytes.
    pub fn of(size: usize) -> Chunk {
        Chunk(Blob::from(vec![7; size]))
    }
}

impl Message for Chunk {
    const NAME: &'static str = "bench.Chunk";
}

/// Answers a chunk with the same chunk.
pub struct Echo;

impl Module for Echo {
    type Message = Chunk;
    type Reply = Chunk;

    async fn process(&mut self, chunk: Chunk, _ctx: &mut Context) -> Result<Chunk, ModuleError> {
        Ok(chunk)
    }
}

/// Takes chunks, and answers how many it has taken.
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

/// Asks `echo` (or the module it names) 64 bytes as many times as it is
/// told, one after another, from a module of its own — on a thread of its
/// own, not the link's; it answers the p50 round trip, in nanoseconds.
pub struct Asker {
    /// The module it asks.
    pub asks: &'static str,
}

impl Module for Asker {
    type Message = u64;
    type Reply = u64;

    async fn process(&mut self, n: u64, ctx: &mut Context) -> Result<u64, ModuleError> {
        let mut samples = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let start = Instant::now();
            let _: Chunk = ctx.ask(self.asks, Chunk::of(SMALL)).await?;
            samples.push(start.elapsed());
        }
        Ok(median(&mut samples).as_nanos() as u64)
    }
}

/// The module name of a measuring node's [`Asker`], and its thread's.
const ASKER: &str = "asker";
/// The child module a [`stdio_node`] runs on one CPU with the [`Asker`]
/// that asks it, that asker's thread, and so the link between them.
const PINNED_ECHO: &str = "echo-pinned";
/// That asker's name, and its thread's.
const PINNED_ASKER: &str = "asker-pinned";

/// The CPU a [`stdio_node`] pins its child `echo-pinned` and that child's
/// asker to: the last this process may use (Linux; none elsewhere).
pub fn pinned_cpu() -> Option<usize> {
    botbus_transport_stdio::affinity::usable_cpus().ok()?.last().copied()
}

/// How much each measurement does: round trips per round, tells of each
/// size per round, and rounds (the median is reported).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Ask round trips per round.
    pub round_trips: usize,
    /// 64-byte tells per round.
    pub small_tells: u64,
    /// 64 KiB tells per round.
    pub large_tells: u64,
    /// Rounds of each.
    pub rounds: usize,
}

impl Sizes {
    /// What `cargo bench` measures.
    pub const FULL: Sizes = Sizes {
        round_trips: 2_000,
        small_tells: 200_000,
        large_tells: 4_000,
        rounds: 5,
    };
    /// A quicker look, for `botbus bench` by default.
    pub const QUICK: Sizes = Sizes {
        round_trips: 1_000,
        small_tells: 50_000,
        large_tells: 1_000,
        rounds: 3,
    };
}

// ---- botbus -----------------------------------------------------------------

/// The p50 of `n` ask round trips of 64 bytes to the module `echo`, asked
/// from `node`.
pub fn botbus_round_trip(node: &Node, n: usize) -> Duration {
    let mut samples = botbus_round_trips(node, n);
    median(&mut samples)
}

/// `n` ask round trips to `echo`, each timed.
pub fn botbus_round_trips(node: &Node, n: usize) -> Vec<Duration> {
    let client = node.client("driver");
    node.block_on(async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let _: Chunk = client.ask("echo", Chunk::of(SMALL)).await.expect("echo answers");
            samples.push(start.elapsed());
        }
        samples
    })
    .expect("node up")
}

/// The p50 of `n` ask round trips of 64 bytes to the module `echo`, asked
/// by `node`'s module [`Asker`] from a thread of its own.
pub fn module_round_trip(node: &Node, n: usize) -> Duration {
    asker_round_trip(node, ASKER, n)
}

/// [`module_round_trip`], asked by the [`Asker`] named `asker`.
fn asker_round_trip(node: &Node, asker: &'static str, n: usize) -> Duration {
    let client = node.client("driver");
    let nanos: u64 = node
        .block_on(async move { client.ask(asker, n as u64).timeout(Duration::from_secs(120)).await })
        .expect("node up")
        .expect("the asker answers");
    Duration::from_nanos(nanos)
}

/// Time for `n` tells of `size` bytes to the module `sink`, until it has
/// taken them all.
pub fn botbus_tells(node: &Node, n: u64, size: usize) -> Duration {
    let client = node.client("driver");
    node.block_on(async move {
        let before: u64 = client.ask("sink", Chunk::of(0)).await.expect("sink answers");
        let chunk = Chunk::of(size);
        let start = Instant::now();
        for _ in 0..n {
            client.tell("sink", chunk.clone()).await.expect("tell accepted");
        }
        let after: u64 = client
            .ask("sink", Chunk::of(0))
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

/// Writes one length-prefixed message.
pub fn write_frame(to: &mut impl Write, body: &[u8]) {
    to.write_all(&(body.len() as u32).to_be_bytes())
        .expect("the raw peer reads");
    to.write_all(body).expect("the raw peer reads");
}

/// Reads one length-prefixed message into `body`; false at the end.
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
        to.flush().expect("the raw peer reads");
        assert!(read_frame(from, &mut pong), "the raw peer answers");
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
    to.write_all(&n.to_be_bytes()).expect("the raw peer reads");
    for _ in 0..n {
        write_frame(to, &body);
    }
    to.flush().expect("the raw peer reads");
    let mut taken = [0u8; 8];
    from.read_exact(&mut taken).expect("the raw peer answers");
    assert_eq!(u64::from_be_bytes(taken), n);
    start.elapsed()
}

/// The other end of a raw channel: `echo` answers each message with
/// itself; `sink` reads a count, then that many messages, and answers the
/// count.
pub fn raw_serve(role: &str, from: &mut impl Read, to: &mut impl Write) {
    let mut body = Vec::new();
    match role {
        "echo" => {
            while read_frame(from, &mut body) {
                write_frame(to, &body);
                to.flush().expect("the measuring side reads");
            }
        }
        "sink" => {
            let mut count = [0u8; 8];
            while from.read_exact(&mut count).is_ok() {
                let n = u64::from_be_bytes(count);
                for _ in 0..n {
                    assert!(read_frame(from, &mut body), "a whole message");
                }
                to.write_all(&count).expect("the measuring side reads");
                to.flush().expect("the measuring side reads");
            }
        }
        other => panic!("unknown raw role {other}"),
    }
}

// ---- statistics ----------------------------------------------------------------

/// The median of `samples` (sorting them).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median of `rounds` runs of `run`.
pub fn median_of(rounds: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds.max(1)).map(|_| run()).collect();
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
/// the same run.
#[derive(Debug, Clone)]
pub struct Versus {
    /// Ask round trip 64 B, p50: botbus, raw.
    pub round_trip: (Duration, Duration),
    /// `n` tells of 64 B: n, botbus, raw.
    pub small_tells: (u64, Duration, Duration),
    /// `n` tells of 64 KiB: n, botbus, raw.
    pub large_tells: (u64, Duration, Duration),
    /// Context switches per ask in each process: botbus, raw.
    pub switches: (Vec<f64>, Vec<f64>),
    /// Asked by a module on a thread of its own (not the link's), if
    /// measured: the p50 round trip, and context switches per ask in each
    /// process (against the raw channel's above).
    pub from_module: Option<(Duration, Vec<f64>)>,
    /// Asked by a module whose thread, link and child all run on one CPU
    /// ([`ModuleOptions::cpus`]), if measured: the CPU, the p50 round trip,
    /// and context switches per ask in each process.
    pub pinned: Option<(usize, Duration, Vec<f64>)>,
    /// The p50 of the same round trip as the raw channel's with a bare
    /// tokio runtime on each side instead, if measured: the reactor's
    /// floor, under botbus's round trip and over the raw channel's.
    pub reactor: Option<Duration>,
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
        if let Some(rtt_reactor) = self.reactor {
            println!(
                "{:<34} {:>11.1} us {:>11.1} us {:>12.2}  {}/tokio {:.2}",
                "… a bare tokio echo, no botbus",
                us(rtt_reactor),
                us(rtt_raw),
                us(rtt_reactor) / us(rtt_raw),
                columns[0],
                us(rtt_bb) / us(rtt_reactor),
            );
        }
        println!(
            "{:<34} {:>10.2} M/s {:>10.2} M/s {:>12.2}{}",
            "tells 64 B",
            per_sec(small_n, small_bb) / 1e6,
            per_sec(small_n, small_raw) / 1e6,
            small_raw.as_secs_f64() / small_bb.as_secs_f64(),
            target(targets[1])
        );
        if large_n > 0 {
            println!(
                "{:<34} {:>8.0} MiB/s {:>8.0} MiB/s {:>12.2}{}",
                "tells 64 KiB, bandwidth",
                per_sec(large_n * LARGE as u64, large_bb) / mib,
                per_sec(large_n * LARGE as u64, large_raw) / mib,
                large_raw.as_secs_f64() / large_bb.as_secs_f64(),
                target(targets[2])
            );
        }
        if !cs_bb.is_empty() {
            println!(
                "{:<34} {:>14} {:>14}",
                "context switches per ask",
                joined(cs_bb),
                joined(cs_raw)
            );
        }
        // A round trip asked another way, and its context switches, each
        // against the raw channel's.
        let asked = |how: &str, rtt: Duration, cs: &[f64]| {
            println!(
                "{:<34} {:>11.1} us {:>11.1} us {:>12.2}",
                how,
                us(rtt),
                us(rtt_raw),
                us(rtt) / us(rtt_raw),
            );
            println!(
                "{:<34} {:>14} {:>14}",
                "… context switches per ask",
                joined(cs),
                joined(cs_raw)
            );
        };
        if let Some((rtt_module, cs_module)) = &self.from_module {
            asked("… asked from a module's thread", *rtt_module, cs_module);
        }
        if let Some((cpu, rtt_pinned, cs_pinned)) = &self.pinned {
            asked(
                &format!("… it, its link and child on CPU {cpu}"),
                *rtt_pinned,
                cs_pinned,
            );
        }
    }
}

// ---- the processes on the other end ----------------------------------------------

/// The role of a process of this binary started to serve a measurement.
const ROLE_ENV: &str = "BOTBUS_BENCH_ROLE";
/// Where that process serves: `stdio`, `unix:<path>`, `tcp:<port>`, or
/// `at:<endpoint>` for a botbus node.
const AT_ENV: &str = "BOTBUS_BENCH_AT";
/// Where a `service` also joins (a hub), if anywhere.
const JOIN_ENV: &str = "BOTBUS_BENCH_JOIN";
/// Set for a `service` whose modules run on the pool, away from its links.
const POOL_ENV: &str = "BOTBUS_BENCH_POOL";
/// The thread a `service` runs its links and modules on, unless told
/// [`POOL_ENV`].
const SERVICE_THREAD: &str = "service";

/// Serves a measurement and exits, if this process was started to: a raw
/// peer (`raw-echo`, `raw-sink`, and on Unix the bare tokio `tokio-echo`),
/// the botbus node a measurement links to (`service`), or a child module of
/// [`stdio_node`]. Returns at once in any other process; call it first
/// thing in `main` (it is started with the same arguments).
pub fn serve_if_asked() {
    if botbus_transport_stdio::StdioTransport::child_role().is_some() {
        stdio_node(); // hosts the child's module; never returns in a child
        unreachable!("a child module's process ends in its node");
    }
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let at = std::env::var(AT_ENV).expect("a bench process is told where to serve");
    match (role.as_str(), at.split_once(':')) {
        ("service", Some((_, endpoint))) => {
            // By default a service does what a process serving through its
            // link should: the link and the modules it feeds share a thread.
            let beside_its_link = std::env::var_os(POOL_ENV).is_none();
            // Each call makes its own options. Not `placed(ModuleOptions::new())`
            // twice: rustc 1.95's MIR GVN merges two equal by-value arguments
            // of that shape into one, and the second module's options were
            // the first's, already moved and dropped — a double free in safe
            // code (rust-lang/rust#155241; seen here in a release build).
            let options = || match beside_its_link {
                true => ModuleOptions::new().thread(SERVICE_THREAD),
                false => ModuleOptions::new(),
            };
            let mut builder = Node::builder("service")
                .module_with("echo", || Echo, options())
                .module_with("sink", Sink::default, options())
                .listen(endpoint);
            if beside_its_link {
                builder = builder.link_config(LinkConfig {
                    thread: Some(SERVICE_THREAD.to_owned()),
                    ..LinkConfig::default()
                });
            }
            if let Ok(hub) = std::env::var(JOIN_ENV) {
                builder = builder.join(&hub);
            }
            let node = builder.start().expect("the service starts");
            say_listening();
            node.run_until_signal().expect("the service runs");
        }
        ("hub", Some((_, endpoint))) => {
            let node = Node::builder("hub").listen(endpoint).start().expect("the hub starts");
            say_listening();
            node.run_until_signal().expect("the hub runs");
        }
        #[cfg(unix)]
        (role, _) if role == REACTOR_ECHO => reactor::echo(&at),
        (raw, _) if at == "stdio" => {
            let mut from = BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
            let mut to = BufWriter::new(std::io::stdout().lock());
            raw_serve(raw.trim_start_matches("raw-"), &mut from, &mut to);
        }
        #[cfg(unix)]
        (raw, Some(("unix", path))) => {
            let stream = std::os::unix::net::UnixStream::connect(path).expect("the raw socket");
            let mut from = BufReader::with_capacity(256 * 1024, stream.try_clone().expect("a socket"));
            let mut to = BufWriter::with_capacity(256 * 1024, stream);
            raw_serve(raw.trim_start_matches("raw-"), &mut from, &mut to);
        }
        (raw, Some(("tcp", port))) => {
            let port: u16 = port.parse().expect("a port");
            let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the raw socket");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut from = BufReader::with_capacity(256 * 1024, stream.try_clone().expect("a socket"));
            let mut to = BufWriter::with_capacity(256 * 1024, stream);
            raw_serve(raw.trim_start_matches("raw-"), &mut from, &mut to);
        }
        (role, _) => panic!("unknown bench role {role} at {at}"),
    }
    std::process::exit(0);
}

/// What a bench node prints once it listens.
const LISTENING: &str = "listening";

fn say_listening() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{LISTENING}").and_then(|()| out.flush());
}

/// A process of this binary serving `role` at `at`; killed when dropped.
pub struct Peer {
    child: Child,
}

impl Peer {
    /// A botbus node with the modules `echo` and `sink`, listening at
    /// `endpoint`, and joining `hub` if given; its links and its modules
    /// share one thread ([`LinkConfig::thread`]).
    /// Returns once it listens.
    pub fn service(endpoint: &str, hub: Option<&str>) -> Peer {
        Peer::start("service", &format!("at:{endpoint}"), hub, false).listening()
    }

    /// [`Peer::service`], with its modules on the node's pool and its links
    /// on the node's own thread (the defaults): each message its link takes
    /// is handed to another thread.
    pub fn service_on_pool(endpoint: &str) -> Peer {
        let mut peer = Peer::command("service", &format!("at:{endpoint}"), None, false);
        peer.env(POOL_ENV, "1");
        Peer::spawn(peer).listening()
    }

    /// A botbus node with no modules of its own, listening at `endpoint`:
    /// a hub that others join.
    /// Returns once it listens.
    pub fn hub(endpoint: &str) -> Peer {
        Peer::start("hub", &format!("at:{endpoint}"), None, false).listening()
    }

    /// Waits for the node to say it listens (its first line), so that
    /// joining it succeeds at once instead of warning and backing off.
    fn listening(mut self) -> Peer {
        let said = self.child.stdout.take().expect("the node's stdout");
        let mut line = String::new();
        BufReader::new(said).read_line(&mut line).expect("the node's stdout");
        assert_eq!(line.trim(), LISTENING, "the bench node did not start");
        self
    }

    /// Starts this binary again as `role`, serving at `at`.
    fn start(role: &str, at: &str, join: Option<&str>, stdio: bool) -> Peer {
        Peer::spawn(Peer::command(role, at, join, stdio))
    }

    /// The command that starts this binary again as `role`, serving at `at`.
    fn command(role: &str, at: &str, join: Option<&str>, stdio: bool) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("this binary"));
        command
            .args(std::env::args_os().skip(1))
            .env(ROLE_ENV, role)
            .env(AT_ENV, at)
            .env("RUST_LOG", "error");
        if let Some(hub) = join {
            command.env(JOIN_ENV, hub);
        }
        if stdio {
            command.stdin(Stdio::piped());
        }
        // A raw peer over stdio talks on it; a node says when it listens.
        command.stdout(Stdio::piped());
        command
    }

    fn spawn(mut command: Command) -> Peer {
        Peer {
            child: command.spawn().expect("a bench process starts"),
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw channel to a [`Peer`]: where to write, where to read.
struct Raw<W: Write, R: Read> {
    peer: Peer,
    to: BufWriter<W>,
    from: BufReader<R>,
}

impl<W: Write, R: Read> Raw<W, R> {
    /// Writing to `to` and reading from `from`, both buffered as the botbus
    /// links are.
    fn new(peer: Peer, to: W, from: R) -> Self {
        Raw {
            peer,
            to: BufWriter::with_capacity(256 * 1024, to),
            from: BufReader::with_capacity(256 * 1024, from),
        }
    }
}

/// The node whose child modules `echo` and `sink` the stdio measurement
/// asks (and `spawnee`, which [`spawn_to_ready`] restarts); in such a
/// child, it hosts that module and never returns.
///
/// Where it can ([`pinned_cpu`]), it also runs `echo-pinned` in a child
/// on one CPU, with the thread of the asker that asks it and of its link.
pub fn stdio_node() -> Node {
    let child = || ModuleOptions::new().in_child();
    let mut builder = Node::builder("bench")
        .module_with("echo", || Echo, child())
        .module_with("sink", Sink::default, child())
        .module_with("spawnee", || Echo, child())
        .module_with(ASKER, || Asker { asks: "echo" }, ModuleOptions::new().thread(ASKER));
    if let Some(cpu) = pinned_cpu() {
        let pinned = || ModuleOptions::new().thread(PINNED_ASKER).cpus([cpu]);
        builder = builder
            .module_with(PINNED_ECHO, || Echo, pinned().in_child())
            .module_with(PINNED_ASKER, || Asker { asks: PINNED_ECHO }, pinned());
    }
    builder.start().expect("the bench node with its children starts")
}

/// Stops the child module `spawnee` of a [`stdio_node`] and starts it
/// again; the time from the start until it is ready.
pub fn spawn_to_ready(node: &Node) -> Duration {
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

/// Measures botbus and the raw channel, alike, given a node that reaches
/// `echo` and `sink` in process `service`, and the raw peers.
fn measure<W: Write, R: Read>(
    node: &Node,
    service: u32,
    echo: &mut Raw<W, R>,
    sink: &mut Raw<W, R>,
    sizes: Sizes,
) -> Versus {
    let me = std::process::id();
    let n = sizes.round_trips;
    let cs_bb = switches_per_op(&[me, service], n, || {
        botbus_round_trip(node, n);
    });
    let echo_pid = echo.peer.id();
    let cs_raw = switches_per_op(&[me, echo_pid], n, || {
        raw_round_trip(&mut echo.to, &mut echo.from, n);
    });
    let rounds = sizes.rounds;
    let rtt_bb = median_of(rounds, || botbus_round_trip(node, n));
    let rtt_raw = median_of(rounds, || raw_round_trip(&mut echo.to, &mut echo.from, n));
    let (small_n, large_n) = (sizes.small_tells, sizes.large_tells);
    let small_bb = median_of(rounds, || botbus_tells(node, small_n, SMALL));
    let small_raw = median_of(rounds, || raw_stream(&mut sink.to, &mut sink.from, small_n, SMALL));
    let large_bb = median_of(rounds, || botbus_tells(node, large_n, LARGE));
    let large_raw = median_of(rounds, || raw_stream(&mut sink.to, &mut sink.from, large_n, LARGE));
    let cs_module = switches_per_op(&[me, service], n, || {
        module_round_trip(node, n);
    });
    let rtt_module = median_of(rounds, || module_round_trip(node, n));
    let pinned = pinned_cpu().zip(node.child_pid(PINNED_ECHO)).map(|(cpu, pinned_echo)| {
        let switches = switches_per_op(&[me, pinned_echo], n, || {
            asker_round_trip(node, PINNED_ASKER, n);
        });
        (
            cpu,
            median_of(rounds, || asker_round_trip(node, PINNED_ASKER, n)),
            switches,
        )
    });
    Versus {
        round_trip: (rtt_bb, rtt_raw),
        small_tells: (small_n, small_bb, small_raw),
        large_tells: (large_n, large_bb, large_raw),
        switches: (cs_bb, cs_raw),
        from_module: Some((rtt_module, cs_module)),
        pinned,
        reactor: None,
    }
}

/// botbus over stdio to child modules of `node` (made by [`stdio_node`])
/// against a raw stream over pipes to a child process (switches: parent +
/// child).
pub fn over_stdio(node: &Node, sizes: Sizes) -> Versus {
    let raw = |role: &str| {
        let mut peer = Peer::start(role, "stdio", None, true);
        let (stdin, stdout): (ChildStdin, ChildStdout) = (
            peer.child.stdin.take().expect("piped"),
            peer.child.stdout.take().expect("piped"),
        );
        #[cfg(target_os = "linux")]
        {
            enlarge_pipe(&stdin);
            enlarge_pipe(&stdout);
        }
        Raw::new(peer, stdin, stdout)
    };
    let (mut echo, mut sink) = (raw("raw-echo"), raw("raw-sink"));
    let service = node.child_pid("echo").expect("the echo child runs");
    let figures = measure(node, service, &mut echo, &mut sink, sizes);
    #[cfg(unix)]
    let figures = Versus {
        reactor: Some(reactor_round_trip(raw(REACTOR_ECHO), reactor::pipes, sizes)),
        ..figures
    };
    figures
}

/// Pipes as large as botbus makes its children's (1 MiB), so both sides
/// of a stdio measurement get the same (failing, they keep the default).
#[cfg(target_os = "linux")]
fn enlarge_pipe(fd: &impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, 1024 * 1024);
}

/// A directory of this run's own for socket files, removed when dropped.
#[cfg(unix)]
struct Scratch(std::path::PathBuf);

#[cfg(unix)]
impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("botbus-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

#[cfg(unix)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node of this process, `name`, linked to `endpoint` once it reaches
/// `echo`.
pub fn linked(name: &str, endpoint: &str) -> Node {
    let node = Node::builder(name)
        .module_with(ASKER, || Asker { asks: "echo" }, ModuleOptions::new().thread(ASKER))
        .join(endpoint)
        .start()
        .expect("the measuring node starts");
    let waiter = node.clone();
    node.block_on(async move { waiter.wait_for_module("echo", Duration::from_secs(30)).await })
        .expect("the node runs")
        .expect("the service is reachable");
    node
}

/// botbus over a Unix socket (`pipe://`) to a process of this binary
/// against a raw Unix socket to another (switches: us + them).
#[cfg(unix)]
pub fn over_pipe(sizes: Sizes) -> Versus {
    use std::os::unix::net::{UnixListener, UnixStream};
    let scratch = Scratch::new("pipe");
    let socket = scratch.path().join("service.sock");
    let endpoint = format!("pipe://{}", socket.display());
    let raw = |role: &str| -> Raw<UnixStream, UnixStream> {
        let path = scratch.path().join(format!("{role}.sock"));
        let listener = UnixListener::bind(&path).expect("a raw socket");
        let peer = Peer::start(role, &format!("unix:{}", path.display()), None, false);
        let (stream, _) = listener.accept().expect("the raw peer connects");
        Raw::new(peer, stream.try_clone().expect("a socket"), stream)
    };
    let mut figures = against_service(&endpoint, &raw, sizes);
    figures.reactor = Some(reactor_round_trip(
        raw(REACTOR_ECHO),
        |socket, _| reactor::unix(socket),
        sizes,
    ));
    figures
}

/// Measures a botbus node of this process linked to a [`Peer::service`]
/// listening at `endpoint`, against raw peers that `raw` starts by role.
fn against_service<S: Read + Write>(endpoint: &str, raw: &impl Fn(&str) -> Raw<S, S>, sizes: Sizes) -> Versus {
    let service = Peer::service(endpoint, None);
    let node = linked(&format!("bench-{}", std::process::id()), endpoint);
    let (mut echo, mut sink) = (raw("raw-echo"), raw("raw-sink"));
    let figures = measure(&node, service.id(), &mut echo, &mut sink, sizes);
    node.shutdown_blocking();
    figures
}

/// botbus over TCP on loopback to a process of this binary against a raw
/// TCP connection (`TCP_NODELAY`) to another (switches: us + them).
pub fn over_tcp(sizes: Sizes) -> Versus {
    use std::net::{TcpListener, TcpStream};
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let raw = |role: &str| -> Raw<TcpStream, TcpStream> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a raw listener");
        let port = listener.local_addr().expect("its port").port();
        let peer = Peer::start(role, &format!("tcp:{port}"), None, false);
        let (stream, _) = listener.accept().expect("the raw peer connects");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Raw::new(peer, stream.try_clone().expect("a socket"), stream)
    };
    let figures = against_service(&endpoint, &raw, sizes);
    #[cfg(unix)]
    let figures = Versus {
        reactor: Some(reactor_round_trip(
            raw(REACTOR_ECHO),
            |socket, _| reactor::tcp(socket),
            sizes,
        )),
        ..figures
    };
    figures
}

// ---- the reactor's floor ------------------------------------------------------------

/// The role of a peer that echoes with a bare tokio runtime.
#[cfg(unix)]
const REACTOR_ECHO: &str = "tokio-echo";

/// The p50 of the raw channel's ping-pong with a bare tokio runtime on
/// each side: `raw` (started as [`REACTOR_ECHO`]) answers each message from
/// its reactor, and this side, its channel made tokio's by `open`, waits
/// for the answer in its own.
#[cfg(unix)]
fn reactor_round_trip<W: Write, R: Read>(
    raw: Raw<W, R>,
    open: impl FnOnce(W, R) -> reactor::Channel,
    sizes: Sizes,
) -> Duration {
    let Raw { peer, to, from } = raw;
    let to = to.into_inner().map_err(|_| ()).expect("nothing was written yet");
    let from = from.into_inner();
    let rtt = reactor::runtime().block_on(async move {
        let (mut to, mut from) = open(to, from);
        let _timer = reactor::Timer::pending();
        let mut rounds = Vec::with_capacity(sizes.rounds);
        for _ in 0..sizes.rounds.max(1) {
            let mut samples = reactor::round_trips(&mut to, &mut from, sizes.round_trips).await;
            rounds.push(median(&mut samples));
        }
        median(&mut rounds)
    });
    drop(peer);
    rtt
}

/// A bare tokio runtime's side of a ping-pong: tokio's own pipes and
/// sockets, woken by its reactor, and nothing else.
#[cfg(unix)]
mod reactor {
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::{write_frame, SMALL};

    /// Where to write and where to read.
    pub(super) type Channel = (Box<dyn AsyncWrite + Unpin>, Box<dyn AsyncRead + Unpin>);

    /// A current-thread runtime with I/O and time, as a node's threads have.
    pub(super) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// Two ends of pipes, as tokio's (in a runtime).
    pub(super) fn pipes(to: impl Into<OwnedFd>, from: impl Into<OwnedFd>) -> Channel {
        let to = tokio::net::unix::pipe::Sender::from_owned_fd(to.into()).expect("a pipe");
        let from = tokio::net::unix::pipe::Receiver::from_owned_fd(from.into()).expect("a pipe");
        (Box::new(to), Box::new(from))
    }

    /// A Unix socket, as tokio's (in a runtime).
    pub(super) fn unix(socket: std::os::unix::net::UnixStream) -> Channel {
        socket.set_nonblocking(true).expect("a non-blocking socket");
        let (from, to) = tokio::net::UnixStream::from_std(socket).expect("a socket").into_split();
        (Box::new(to), Box::new(from))
    }

    /// A TCP connection, as tokio's (in a runtime).
    pub(super) fn tcp(socket: std::net::TcpStream) -> Channel {
        socket.set_nonblocking(true).expect("a non-blocking socket");
        let (from, to) = tokio::net::TcpStream::from_std(socket).expect("a socket").into_split();
        (Box::new(to), Box::new(from))
    }

    /// A timer waiting far off, as a node's liveness timers always are: the
    /// reactor waits with a timeout, not forever.
    pub(super) struct Timer(tokio::task::JoinHandle<()>);

    impl Timer {
        pub(super) fn pending() -> Timer {
            Timer(tokio::spawn(tokio::time::sleep(Duration::from_secs(3600))))
        }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// `n` ping-pongs of a 64-byte message (framed as the raw channel's),
    /// each timed. Reads take what is there into a large
    /// buffer, so a read that comes back short leaves the next one to the
    /// reactor (no read that would block), as botbus's links do.
    pub(super) async fn round_trips(
        to: &mut (impl AsyncWrite + Unpin),
        from: &mut (impl AsyncRead + Unpin),
        n: usize,
    ) -> Vec<Duration> {
        let mut ping = Vec::new();
        write_frame(&mut ping, &[7; SMALL]);
        let mut pong = vec![0; 64 * 1024];
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            to.write_all(&ping).await.expect("the tokio echo reads");
            let mut got = 0;
            while got < ping.len() {
                let read = from.read(&mut pong).await.expect("the tokio echo answers");
                assert!(read > 0, "the tokio echo answers");
                got += read;
            }
            samples.push(start.elapsed());
        }
        samples
    }

    /// Serves [`super::REACTOR_ECHO`] at `at` (`stdio`, `unix:<path>`,
    /// `tcp:<port>`): writes back whatever it reads, until the end.
    pub(super) fn echo(at: &str) {
        runtime().block_on(async move {
            let (mut to, mut from) = match at.split_once(':') {
                None => pipes(
                    std::io::stdout().as_fd().try_clone_to_owned().expect("stdout"),
                    std::io::stdin().as_fd().try_clone_to_owned().expect("stdin"),
                ),
                Some(("unix", path)) => unix(std::os::unix::net::UnixStream::connect(path).expect("the socket")),
                Some(("tcp", port)) => {
                    let port: u16 = port.parse().expect("a port");
                    let socket = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the socket");
                    socket.set_nodelay(true).expect("TCP_NODELAY");
                    tcp(socket)
                }
                Some(_) => panic!("a tokio echo at {at}?"),
            };
            let _timer = Timer::pending();
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = from.read(&mut buf).await.expect("the measuring side writes");
                if n == 0 {
                    return;
                }
                to.write_all(&buf[..n]).await.expect("the measuring side reads");
            }
        });
    }
}

// ---- in one process --------------------------------------------------------------

/// What the in-process driver does, `n` times; it answers the nanoseconds
/// taken.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Drive {
    /// `n` tells to the sink, then an ask (answered after all of them).
    Tells(u64),
    /// `n` asks to the sink, one after another.
    Asks(u64),
}

impl Message for Drive {
    const NAME: &'static str = "bench.Drive";
}

/// The in-process payload: 64 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Its number.
    pub seq: u64,
    /// The rest of the 64 bytes.
    pub data: [u64; 7],
}

impl Sample {
    /// Sample number `seq`.
    pub fn new(seq: u64) -> Self {
        Self { seq, data: [seq; 7] }
    }
}

impl Message for Sample {
    const NAME: &'static str = "bench.Sample";
}

/// Takes samples, answering each with its number.
pub struct SampleSink;

impl Module for SampleSink {
    type Message = Sample;
    type Reply = u64;

    async fn process(&mut self, sample: Sample, _ctx: &mut Context) -> Result<u64, ModuleError> {
        Ok(sample.seq)
    }
}

/// Drives the `sink` as [`Drive`] says, timing it from inside its module.
pub struct Driver;

impl Module for Driver {
    type Message = Drive;
    type Reply = u64;

    async fn process(&mut self, drive: Drive, ctx: &mut Context) -> Result<u64, ModuleError> {
        let start = Instant::now();
        match drive {
            Drive::Tells(n) => {
                for i in 0..n {
                    ctx.tell("sink", Sample::new(i)).await?;
                }
                // The sink answers after every tell before it: all were handled.
                let _: u64 = ctx.ask("sink", Sample::new(n)).await?;
            }
            Drive::Asks(n) => {
                for i in 0..n {
                    let _: u64 = ctx.ask("sink", Sample::new(i)).await?;
                }
            }
        }
        Ok(start.elapsed().as_nanos() as u64)
    }
}

/// A node whose `driver` and `sink` share one thread, or run on two.
pub fn driver_node(name: &str, same_thread: bool) -> Node {
    let sink_thread = if same_thread { "one" } else { "two" };
    Node::builder(name)
        .module_with("sink", || SampleSink, ModuleOptions::new().thread(sink_thread))
        .module_with("driver", || Driver, ModuleOptions::new().thread("one"))
        .start()
        .expect("the bench node starts")
}

/// Has `node`'s driver do `drive`; the time it took, inside the driver.
pub fn drive(node: &Node, drive: Drive) -> Duration {
    let client = node.client("bench");
    let nanos = node
        .block_on(async move {
            client
                .ask::<_, u64>("driver", drive)
                .timeout(Duration::from_secs(120))
                .await
        })
        .expect("node running")
        .expect("drive succeeds");
    Duration::from_nanos(nanos)
}

/// The same as [`drive`], over the raw channel a module's mailbox is made
/// of: a bounded tokio channel to a task on the same thread, and a oneshot
/// for each answer.
pub fn drive_raw(drive: Drive) -> Duration {
    use tokio::sync::{mpsc, oneshot};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let (to_sink, mut mailbox) = mpsc::channel::<(Sample, Option<oneshot::Sender<u64>>)>(1024);
        tokio::task::spawn_local(async move {
            while let Some((sample, answer)) = mailbox.recv().await {
                if let Some(answer) = answer {
                    let _ = answer.send(sample.seq);
                }
            }
        });
        let ask = |sample: Sample| {
            let to_sink = to_sink.clone();
            async move {
                let (answer, answered) = oneshot::channel();
                to_sink.send((sample, Some(answer))).await.expect("the sink runs");
                answered.await.expect("the sink answers")
            }
        };
        let start = Instant::now();
        match drive {
            Drive::Tells(n) => {
                for i in 0..n {
                    to_sink.send((Sample::new(i), None)).await.expect("the sink runs");
                }
                ask(Sample::new(n)).await;
            }
            Drive::Asks(n) => {
                for i in 0..n {
                    ask(Sample::new(i)).await;
                }
            }
        }
        start.elapsed()
    })
}

/// botbus between two modules on one thread against the raw channel under
/// it on one thread: tell rate and ask round trip.
pub fn in_process(sizes: Sizes) -> Versus {
    let node = driver_node(&format!("bench-in-process-{}", std::process::id()), true);
    let rounds = sizes.rounds;
    let (n_asks, n_tells) = (sizes.round_trips as u64, sizes.small_tells);
    let per_ask = |total: Duration| total / n_asks as u32;
    let rtt_bb = median_of(rounds, || per_ask(drive(&node, Drive::Asks(n_asks))));
    let rtt_raw = median_of(rounds, || per_ask(drive_raw(Drive::Asks(n_asks))));
    let small_bb = median_of(rounds, || drive(&node, Drive::Tells(n_tells)));
    let small_raw = median_of(rounds, || drive_raw(Drive::Tells(n_tells)));
    node.shutdown_blocking();
    Versus {
        round_trip: (rtt_bb, rtt_raw),
        small_tells: (n_tells, small_bb, small_raw),
        large_tells: (0, Duration::ZERO, Duration::ZERO),
        switches: (Vec::new(), Vec::new()),
        from_module: None,
        pinned: None,
        reactor: None,
    }
}
