//! SIGINT and SIGTERM stop a real robot process gracefully: modules stop in
//! reverse start order, `stopping` hooks run, and the process exits 0.
//! The process is the robot example, which `cargo test` builds.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

/// The start order in `examples/robot.rs`.
const START_ORDER: [&str; 7] = ["motor", "led", "planner", "logger", "controller", "mission", "sensor"];

fn robot_binary() -> PathBuf {
    // target/<profile>/deps/signals-… → target/<profile>/examples/robot
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile dir");
    profile_dir.join("examples").join("robot")
}

/// Kills the child if the test fails before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stops_gracefully_on(signal: &str) {
    let binary = robot_binary();
    assert!(
        binary.exists(),
        "{} is missing: run the suite with `cargo test`, which builds the examples",
        binary.display()
    );
    let mut child = Reaped(
        Command::new(&binary)
            .args(["--seconds", "600"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("robot starts"),
    );
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.0.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let next_line = || {
        let left = DEADLINE.saturating_sub(started.elapsed());
        lines.recv_timeout(left).ok()
    };

    // Readiness is the robot's own word, logged once its signal handlers are in.
    loop {
        let line = next_line().expect("the robot reports that it is up");
        if line.contains("robot up") {
            break;
        }
    }
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
    assert!(sent.success());

    let mut log = Vec::new();
    while let Some(line) = next_line() {
        log.push(line);
    }
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "the robot did not exit after {signal}");
        std::thread::sleep(Duration::from_millis(10)); // polling the child's exit, bounded by DEADLINE
    };
    assert!(
        status.success(),
        "exit status {status:?} after {signal}\n{}",
        log.join("\n")
    );

    let stopped: Vec<&str> = log
        .iter()
        .filter(|line| line.ends_with(" stopped") || line.contains(" stopped module="))
        .filter_map(|line| {
            START_ORDER
                .iter()
                .copied()
                .find(|m| line.contains(&format!("module={m}")))
        })
        .collect();
    let mut reverse = START_ORDER.to_vec();
    reverse.reverse();
    assert_eq!(
        stopped,
        reverse,
        "modules stop in reverse start order\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("braking to 0 before stopping")),
        "motor's stopping hook ran"
    );
    assert!(log.iter().any(|l| l.contains("robot stopped cleanly")));
}

#[test]
fn sigint_stops_the_robot_gracefully() {
    stops_gracefully_on("-INT");
}

#[test]
fn sigterm_stops_the_robot_gracefully() {
    stops_gracefully_on("-TERM");
}
