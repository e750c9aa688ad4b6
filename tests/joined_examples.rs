//! The README's four terminals: a hub, and a sensor, a controller and a
//! motor, each a separately started process joined to it. The motor is
//! asked for speeds by the controller, which hears the sensor — every word
//! through the hub's process.

#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{example_binary, hub_process, socket_path, Process, DEADLINE};

fn joined(example: &str, endpoint: &str) -> Process {
    let child = Command::new(example_binary(example))
        .args(["--hub", endpoint])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    Process { child, socket: None }
}

#[test]
fn a_sensor_a_controller_and_a_motor_in_three_processes_work_through_a_hub() {
    let socket = socket_path("joined-examples");
    let endpoint = format!("pipe://{}", socket.display());
    let _hub = hub_process(&socket);
    let _sensor = joined("joined_sensor", &endpoint);
    let _controller = joined("joined_controller", &endpoint);
    let mut motor = joined("joined_motor", &endpoint);
    // The motor's log says it set speeds the controller asked for, which
    // it decided on from the sensor's readings.
    let log = BufReader::new(motor.child.stderr.take().expect("piped"));
    let (lines, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + DEADLINE * 2;
    let mut speeds = 0;
    while speeds < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = heard.recv_timeout(left).expect("the motor set two speeds in time");
        if line.contains("speed set") && line.contains("asked_by=\"controller/controller\"") {
            speeds += 1;
        }
    }
    assert_eq!(speeds, 2);
}
