//! botbus over a Unix domain socket (`pipe://`) next to a raw socket
//! between the same two processes, in one run: ask round trip (p50) against
//! a blocking ping-pong, tells of 64 B and 64 KiB against a raw
//! length-prefixed stream; and an ask through a hub (two hops, three
//! processes) next to a direct one. Prints ratios.
//!
//! `cargo bench --bench pipe` (and `taskset -c 0 cargo bench --bench pipe`
//! for every process on one CPU); `botbus bench --only pipe` makes the
//! first table's measurements.
//!
//! Every other process is this binary, started by `botbus::bench`.

use std::time::Duration;

#[path = "support/mod.rs"]
mod support;
use support::{botbus_round_trip, linked, median_of, over_pipe, Peer, Sizes};

fn main() {
    support::serve_if_asked();
    over_pipe(Sizes::FULL).print(
        "botbus over a Unix socket (pipe://) vs a raw Unix socket, between two processes (switches: us + them)",
        ["target <= 1.5 (one CPU)", "target >= 4 M/s", "target >= 0.7"],
    );

    // Through a hub: this process and the service both join it.
    let dir = std::env::temp_dir().join(format!("botbus-bench-hub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = |name: &str| format!("pipe://{}", dir.join(name).display());
    let _hub = Peer::hub(&endpoint("hub.sock"));
    let _service = Peer::service(&endpoint("service.sock"), Some(&endpoint("hub.sock")));
    let direct = linked("direct", &endpoint("service.sock"));
    let via_hub = linked("via-hub", &endpoint("hub.sock"));
    let rtt_bb = median_of(5, || botbus_round_trip(&direct, 2_000));
    let rtt_hub = median_of(5, || botbus_round_trip(&via_hub, 2_000));
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
