//! botbus over TCP on loopback next to raw TCP between the same two
//! processes, in one run ([`over_tcp`], as `botbus bench --only tcp`): ask
//! round trip (p50) against a blocking ping-pong and a bare tokio echo,
//! tells of 64 B and 64 KiB against a raw length-prefixed stream. Then
//! botbus over TLS next to botbus over TCP (what TLS costs), both links
//! proving a token. Prints ratios.
//!
//! `cargo bench --bench tcp` (and `taskset -c 0 cargo bench --bench tcp`
//! for every process on one CPU)
//!
//! Every process is this binary: the TLS comparison's service in the role
//! `BOTBUS_TCP_BENCH_ROLE` names, the others as [`serve_if_asked`] says.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use botbus::{LinkConfig, ModuleOptions, Node, TlsConfig, TlsTransport};

#[path = "support/mod.rs"]
mod support;
use support::{
    botbus_round_trip, botbus_tells, median_of, over_tcp, serve_if_asked, switches_per_op, Echo, Sink, Sizes, Versus,
    BETWEEN_PROCESSES_TARGETS, LARGE, SMALL,
};

const ROLE: &str = "BOTBUS_TCP_BENCH_ROLE";
const DIR: &str = "BOTBUS_TCP_BENCH_DIR";
const PORT: &str = "BOTBUS_TCP_BENCH_PORT";
const TOKEN: &str = "BOTBUS_TCP_BENCH_TOKEN";

/// The TLS comparison's service, a process of this binary; killed when
/// dropped.
struct Service(Child);

impl Service {
    fn start(dir: &std::path::Path, port: u16) -> Service {
        let child = Command::new(std::env::current_exe().expect("bench binary"))
            .env(ROLE, "service")
            .env(DIR, dir)
            .env(PORT, port.to_string())
            .env(TOKEN, "the bench's token, 16+ bytes")
            .env("RUST_LOG", "error")
            .spawn()
            .expect("a bench process starts");
        Service(child)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config() -> LinkConfig {
    LinkConfig {
        token: Some(botbus::env_token(TOKEN).expect("the bench's token")),
        ..LinkConfig::default()
    }
}

/// The TLS comparison's service: a botbus node on `tcp://…:port` and
/// `tls://…:port+1`, its links and modules on one thread.
fn serve() {
    let dir = PathBuf::from(std::env::var_os(DIR).expect("dir"));
    let port: u16 = std::env::var(PORT).expect("port").parse().expect("a port");
    let tls = TlsConfig::default()
        .identity(dir.join("service.crt"), dir.join("service.key"))
        .expect("the service's certificate");
    // As `botbus::bench`'s service: its links and modules share a thread.
    let beside = || ModuleOptions::new().thread("service");
    let node = Node::builder("service")
        .link_config(LinkConfig {
            thread: Some("service".to_owned()),
            ..config()
        })
        .transport(Arc::new(TlsTransport::new(tls).expect("TLS")))
        .module_with("echo", || Echo, beside())
        .module_with("sink", Sink::default, beside())
        .listen(&format!("tcp://127.0.0.1:{port}"))
        .listen(&format!("tls://localhost:{}", port + 1))
        .start()
        .expect("the service starts");
    node.run_until_signal().expect("runs");
}

/// Two free loopback ports in a row, for the service's tcp and tls.
fn free_ports() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn main() {
    serve_if_asked();
    if std::env::var_os(ROLE).is_some() {
        serve();
        return;
    }
    over_tcp(Sizes::FULL).print(
        "botbus over TCP (tcp://) vs raw TCP on loopback, between two processes (switches: us + them)",
        BETWEEN_PROCESSES_TARGETS,
    );

    let dir = std::env::temp_dir().join(format!("botbus-bench-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    std::fs::write(dir.join("service.crt"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("service.key"), made.signing_key.serialize_pem()).unwrap();
    let port = free_ports();
    std::env::set_var(TOKEN, "the bench's token, 16+ bytes");
    let service = Service::start(&dir, port);
    let over_tcp = Node::builder("over-tcp")
        .link_config(config())
        .join(&format!("tcp://127.0.0.1:{port}"))
        .start()
        .unwrap();
    let trust = TlsConfig::default().trust(dir.join("service.crt")).unwrap();
    let over_tls = Node::builder("over-tls")
        .link_config(config())
        .transport(Arc::new(TlsTransport::new(trust).unwrap()))
        .join(&format!("tls://localhost:{}", port + 1))
        .start()
        .unwrap();
    for node in [&over_tcp, &over_tls] {
        let waiter = node.clone();
        node.block_on(async move { waiter.wait_for_module("echo", Duration::from_secs(30)).await })
            .unwrap()
            .expect("the service is reachable");
    }

    let me = std::process::id();
    let cs_tcp = switches_per_op(&[me, service.0.id()], 2_000, || {
        botbus_round_trip(&over_tcp, 2_000);
    });
    let cs_tls = switches_per_op(&[me, service.0.id()], 2_000, || {
        botbus_round_trip(&over_tls, 2_000);
    });
    let rtt_tcp = median_of(5, || botbus_round_trip(&over_tcp, 2_000));
    let rtt_tls = median_of(5, || botbus_round_trip(&over_tls, 2_000));
    let small_n = 200_000;
    let small_tcp = median_of(5, || botbus_tells(&over_tcp, small_n, SMALL));
    let small_tls = median_of(5, || botbus_tells(&over_tls, small_n, SMALL));
    let large_n = 4_000;
    let large_tcp = median_of(5, || botbus_tells(&over_tcp, large_n, LARGE));
    let large_tls = median_of(5, || botbus_tells(&over_tls, large_n, LARGE));

    Versus {
        round_trip: (rtt_tls, rtt_tcp),
        small_tells: (small_n, small_tls, small_tcp),
        large_tells: (large_n, large_tls, large_tcp),
        switches: (cs_tls, cs_tcp),
        from_module: None,
        pinned: None,
        reactor: None,
    }
    .print_as(
        "botbus over TLS (tls://) vs botbus over TCP, both with a token: what TLS costs",
        ["tls", "tcp"],
        ["", "", ""],
    );
    for node in [over_tcp, over_tls] {
        node.shutdown_blocking();
    }
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}
