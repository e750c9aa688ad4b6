//! botbus over a Unix domain socket (`pipe://`) next to a raw socket
//! between the same two processes, in one run: ask round trip (p50) against
//! a blocking ping-pong, tells of 64 B and 64 KiB against a raw
//! length-prefixed stream; and an ask through a hub (two hops, three
//! processes) next to a direct one. Prints ratios.
//!
//! `cargo bench --bench pipe` (and `taskset -c 0 cargo bench --bench pipe`
//! for every process on one CPU)
//!
//! Every process is this binary, in the role `BOTBUS_BENCH_ROLE` names.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use botbus::Node;

#[path = "support/mod.rs"]
mod support;
use support::{
    botbus_round_trip, botbus_tells, median_of, raw_round_trip, raw_serve, raw_stream, switches_per_op, Echo, Sink,
    Versus, LARGE, SMALL,
};

const ROLE: &str = "BOTBUS_BENCH_ROLE";
const SOCKET: &str = "BOTBUS_BENCH_SOCKET";
const HUB: &str = "BOTBUS_BENCH_HUB";

/// A process of this binary in `role`; killed when dropped.
struct Role(Child);

impl Role {
    fn start(role: &str, socket: &Path, hub: &Path) -> Role {
        let child = Command::new(std::env::current_exe().expect("bench binary"))
            .env(ROLE, role)
            .env(SOCKET, socket)
            .env(HUB, hub)
            .env("RUST_LOG", "error")
            .spawn()
            .expect("a bench process starts");
        Role(child)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn endpoint(path: &Path) -> String {
    format!("pipe://{}", path.display())
}

/// The other processes.
fn serve(role: &str) {
    let socket = PathBuf::from(std::env::var_os(SOCKET).expect("socket"));
    let hub = PathBuf::from(std::env::var_os(HUB).expect("hub"));
    match role {
        "service" => {
            let node = Node::builder("service")
                .module("echo", || Echo)
                .module("sink", Sink::default)
                .listen(&endpoint(&socket))
                .join(&endpoint(&hub))
                .start()
                .expect("the service starts");
            node.run_until_signal().expect("runs");
        }
        "hub" => {
            let node = Node::builder("hub")
                .listen(&endpoint(&hub))
                .start()
                .expect("the hub starts");
            node.run_until_signal().expect("runs");
        }
        raw => {
            let stream = UnixStream::connect(&socket).expect("the raw socket");
            let mut from = BufReader::with_capacity(256 * 1024, stream.try_clone().unwrap());
            let mut to = BufWriter::with_capacity(256 * 1024, stream);
            raw_serve(raw.trim_start_matches("raw-"), &mut from, &mut to);
        }
    }
}

/// A raw socket to a process of this binary serving `role`.
fn raw_pair(role: &str, dir: &Path) -> (Role, BufWriter<UnixStream>, BufReader<UnixStream>) {
    let path = dir.join(format!("{role}.sock"));
    let listener = UnixListener::bind(&path).expect("raw socket");
    let process = Role::start(role, &path, &path);
    let (stream, _) = listener.accept().expect("the raw peer connects");
    let to = BufWriter::with_capacity(256 * 1024, stream.try_clone().unwrap());
    (process, to, BufReader::with_capacity(256 * 1024, stream))
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        serve(&role);
        return;
    }
    let dir = std::env::temp_dir().join(format!("botbus-bench-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (service_socket, hub_socket) = (dir.join("service.sock"), dir.join("hub.sock"));
    let _hub = Role::start("hub", &service_socket, &hub_socket);
    let service = Role::start("service", &service_socket, &hub_socket);
    // This process: one node linked straight to the service, one joined
    // to the hub only.
    let direct = Node::builder("direct")
        .join(&endpoint(&service_socket))
        .start()
        .unwrap();
    let via_hub = Node::builder("via-hub").join(&endpoint(&hub_socket)).start().unwrap();
    for node in [&direct, &via_hub] {
        let waiter = node.clone();
        node.block_on(async move { waiter.wait_for_module("echo", Duration::from_secs(30)).await })
            .unwrap()
            .expect("the service is reachable");
    }
    let (raw_echo, mut echo_to, mut echo_from) = raw_pair("raw-echo", &dir);
    let (_raw_sink, mut sink_to, mut sink_from) = raw_pair("raw-sink", &dir);

    // Context switches per ask, in this process and the other one.
    let me = std::process::id();
    let cs_bb = switches_per_op(&[me, service.0.id()], 2_000, || {
        botbus_round_trip(&direct, 2_000);
    });
    let cs_raw = switches_per_op(&[me, raw_echo.0.id()], 2_000, || {
        raw_round_trip(&mut echo_to, &mut echo_from, 2_000);
    });
    let rtt_bb = median_of(5, || botbus_round_trip(&direct, 2_000));
    let rtt_hub = median_of(5, || botbus_round_trip(&via_hub, 2_000));
    let rtt_raw = median_of(5, || raw_round_trip(&mut echo_to, &mut echo_from, 2_000));
    let small_n = 200_000;
    let small_bb = median_of(5, || botbus_tells(&direct, small_n, SMALL));
    let small_raw = median_of(5, || raw_stream(&mut sink_to, &mut sink_from, small_n, SMALL));
    let large_n = 4_000;
    let large_bb = median_of(5, || botbus_tells(&direct, large_n, LARGE));
    let large_raw = median_of(5, || raw_stream(&mut sink_to, &mut sink_from, large_n, LARGE));

    Versus {
        round_trip: (rtt_bb, rtt_raw),
        small_tells: (small_n, small_bb, small_raw),
        large_tells: (large_n, large_bb, large_raw),
        switches: (cs_bb, cs_raw),
    }
    .print(
        "botbus over a Unix socket (pipe://) vs a raw Unix socket, between two processes (switches: us + them)",
        ["", "", ""],
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\nask round trip 64 B, p50: through a hub (two hops, three processes) vs direct:");
    println!(
        "{:<34} {:>11.1} us {:>11.1} us {:>12.2}",
        "hub / direct",
        us(rtt_hub),
        us(rtt_bb),
        us(rtt_hub) / us(rtt_bb)
    );
    for node in [direct, via_hub] {
        node.shutdown_blocking();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
