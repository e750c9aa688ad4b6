//! botbus over a Unix domain socket (`pipe://`) next to a raw socket
//! between the same two processes, in one run: ask round trip (p50) against
//! a blocking ping-pong, tells of 64 B and 64 KiB against a raw
//! length-prefixed stream; the same service with its modules on the pool
//! instead of beside its link (`LinkConfig::thread`); and an ask through a
//! hub (two hops, three processes) next to a direct one. Prints ratios.
//!
//! `cargo bench --bench pipe` (and `taskset -c 0 cargo bench --bench pipe`
//! for every process on one CPU); `botbus bench --only pipe` makes the
//! first table's measurements.
//!
//! Every other process is this binary, started by `botbus::bench`.

use std::time::Duration;

#[path = "support/mod.rs"]
mod support;
use support::{
    botbus_round_trip, botbus_tells, linked, median_of, over_pipe, switches_per_op, Peer, Sizes, Versus,
    BETWEEN_PROCESSES_TARGETS, LARGE, SMALL,
};

fn main() {
    support::serve_if_asked();
    over_pipe(Sizes::FULL).print(
        "botbus over a Unix socket (pipe://) vs a raw Unix socket, between two processes (switches: us + them)",
        BETWEEN_PROCESSES_TARGETS,
    );
    let dir = std::env::temp_dir().join(format!("botbus-bench-hub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = |name: &str| format!("pipe://{}", dir.join(name).display());

    // Where the service runs its modules: beside its link, or on the pool.
    let beside = Peer::service(&endpoint("beside.sock"), None);
    let on_pool = Peer::service_on_pool(&endpoint("pool.sock"));
    let to_beside = linked("to-beside", &endpoint("beside.sock"));
    let to_pool = linked("to-pool", &endpoint("pool.sock"));
    let me = std::process::id();
    let switches = |node, service: &Peer| {
        switches_per_op(&[me, service.id()], 2_000, || {
            botbus_round_trip(node, 2_000);
        })
    };
    let sizes = Sizes::FULL;
    let figures = |node| {
        (
            median_of(sizes.rounds, || botbus_round_trip(node, sizes.round_trips)),
            median_of(sizes.rounds, || botbus_tells(node, sizes.small_tells, SMALL)),
            median_of(sizes.rounds, || botbus_tells(node, sizes.large_tells, LARGE)),
        )
    };
    let (cs_beside, cs_pool) = (switches(&to_beside, &beside), switches(&to_pool, &on_pool));
    let ((rtt_beside, small_beside, large_beside), (rtt_pool, small_pool, large_pool)) =
        (figures(&to_beside), figures(&to_pool));
    Versus {
        round_trip: (rtt_beside, rtt_pool),
        small_tells: (sizes.small_tells, small_beside, small_pool),
        large_tells: (sizes.large_tells, large_beside, large_pool),
        switches: (cs_beside, cs_pool),
        from_module: None,
        pinned: None,
        reactor: None,
    }
    .print_as(
        "the service's modules beside its link (LinkConfig::thread) vs on the pool, its link on the node's thread",
        ["beside", "pool"],
        ["", "", ""],
    );
    for node in [to_beside, to_pool] {
        node.shutdown_blocking();
    }
    drop((beside, on_pool));

    // Through a hub: this process and the service both join it.
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
