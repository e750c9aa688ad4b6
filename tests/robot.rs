//! The robot example tells the same story whichever module runs in a child
//! process: every module's part of the trace appears, and it exits cleanly.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// What each module is heard saying in a normal run.
const STORY: [(&str, &str); 7] = [
    ("motor", "speed set"),
    ("led", "colour="),
    ("planner", "plan cancelled by the asker"),
    ("logger", "published in the last second"),
    ("controller", "obstacle distance changed the plan"),
    ("mission", "changed my mind: cancelling the plan"),
    // The sensor says nothing itself; the logger counts its readings.
    ("sensor", "sensors/front/range (robot.Range)"),
];

#[test]
fn the_robot_tells_the_same_story_with_any_module_in_a_child() {
    let robot = support::example_binary("robot");
    let runs: Vec<_> = STORY
        .iter()
        .map(|(child, _)| {
            let run = Command::new(&robot)
                .args(["--seconds", "2", "--child", child])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("robot starts");
            (*child, run)
        })
        .collect();
    for (child, run) in runs {
        let output = run.wait_with_output().expect("robot runs to the end");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "robot with `{child}` in a child: {}\n{log}",
            output.status
        );
        assert!(
            log.contains(&format!("child running module={child}")),
            "`{child}` did not run in a child:\n{log}"
        );
        for (module, line) in STORY {
            assert!(
                log.contains(line),
                "with `{child}` in a child, `{module}` never said `{line}`:\n{log}"
            );
        }
        assert!(log.contains("robot stopped cleanly"), "{log}");
        // The child's lines name their module once, and speeds read as
        // written (an f32 widened to f64 would say 0.800000011920929).
        for line in log
            .lines()
            .filter(|line| line.contains(&format!("module={child} pid=")))
        {
            assert_eq!(line.matches("module=").count(), 1, "{line}");
        }
        assert!(log.contains("to=0.8") || log.contains("to=0.3"), "{log}");
        assert!(!log.contains("0.80000001") && !log.contains("0.30000001"), "{log}");
    }
}

/// What a robot run did, each module's part in the order that module did
/// it (lines from different processes interleave in the log in no promised
/// order): the parts of its story that do not depend on timing — every
/// reading is delivered, and the sensor's readings depend only on their
/// sequence number.
#[derive(Debug, Default, PartialEq, Eq)]
struct Trace {
    /// The motor's speed changes, `from→to`.
    speeds: Vec<String>,
    /// The LED's colours.
    colours: Vec<String>,
    /// The controller's plan changes: the reading and the speed applied.
    plan_changes: Vec<String>,
    /// The plan progress the mission heard.
    progress: Vec<String>,
    /// Where the planner stopped when the mission cancelled its plan at
    /// step 5: `half-way` for any step after that and before the plan's
    /// end. Which one is timing: the next (6) when the cancel reaches the
    /// planner within its 100 ms step, as it does in one process; a later
    /// one when it crosses four links of children on a loaded machine.
    cancelled_at: Vec<String>,
    /// The logger's total per topic.
    logged: BTreeMap<String, u32>,
}

/// The value of `key=` in `line`, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .map(|i| i + key.len())
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[start..].split_whitespace().next().unwrap_or_default()
}

fn trace(log: &str) -> Trace {
    let mut trace = Trace::default();
    for line in log.lines() {
        if line.contains("speed set") {
            trace
                .speeds
                .push(format!("{}→{}", field(line, "from="), field(line, "to=")));
        } else if line.contains("colour=") {
            trace.colours.push(field(line, "colour=").to_owned());
        } else if line.contains("obstacle distance changed the plan") {
            trace.plan_changes.push(format!(
                "#{} {} m: {}",
                field(line, "seq="),
                field(line, "metres="),
                field(line, "speed=")
            ));
        } else if line.contains("plan progress") {
            trace.progress.push(field(line, "step=").to_owned());
        } else if line.contains("plan cancelled by the asker") {
            let step = field(line, "step=");
            let half_way = step.parse::<u32>().is_ok_and(|step| (6..20).contains(&step));
            trace.cancelled_at.push(if half_way {
                "half-way".to_owned()
            } else {
                step.to_owned()
            });
        } else if line.contains("published in the last second") || line.contains("published since the last count") {
            let topic = &line[line.find("topic=").expect("a topic") + 6..line.find(" count=").expect("a count")];
            let count: u32 = field(line, "count=").parse().expect("a count");
            *trace.logged.entry(topic.to_owned()).or_default() += count;
        }
    }
    trace
}

/// Runs the robot for a 30-reading story with `children` in child processes.
fn story(children: &[&str]) -> std::process::Child {
    let mut command = Command::new(support::example_binary("robot"));
    command.args(["--seconds", "2.5", "--readings", "30"]);
    for child in children {
        command.args(["--child", child]);
    }
    command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("robot starts")
}

fn told(run: std::process::Child, placement: &str) -> Trace {
    let output = run.wait_with_output().expect("robot runs to the end");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "robot with {placement}: {}\n{log}",
        output.status
    );
    trace(&log)
}

#[test]
fn the_robot_tells_the_same_story_in_one_process_in_seven_children_and_with_any_two_in_children() {
    let alone = told(story(&[]), "every module in one process");
    // The story is all there: the approach, the stop, the retreat; the plan
    // cancelled half-way; every reading counted.
    assert_eq!(
        alone.speeds,
        ["0→0.8", "0.8→0.3", "0.3→0", "0→0.3", "0.3→0.8"],
        "{alone:?}"
    );
    assert_eq!(alone.colours, ["Green", "Amber", "Red", "Amber", "Green"]);
    assert_eq!(alone.progress, ["1", "2", "3", "4", "5"]);
    assert_eq!(alone.cancelled_at, ["half-way"]);
    assert_eq!(
        alone.logged,
        BTreeMap::from([("sensors/front/range (robot.Range)".to_owned(), 30)])
    );

    let all = STORY.map(|(module, _)| module);
    assert_eq!(
        told(story(&all), "all seven modules in children"),
        alone,
        "all seven in children"
    );

    let mut pairs = Vec::new();
    for (i, first) in all.iter().enumerate() {
        for second in &all[i + 1..] {
            pairs.push([*first, *second]);
        }
    }
    assert_eq!(pairs.len(), 21);
    // A few at a time: a loaded machine must not turn the controller's
    // 200 ms asks into timeouts, which would change the story.
    for batch in pairs.chunks(3) {
        let runs: Vec<_> = batch.iter().map(|pair| (pair, story(pair))).collect();
        for (pair, run) in runs {
            let placement = format!("{} and {} in children", pair[0], pair[1]);
            assert_eq!(told(run, &placement), alone, "{placement}");
        }
    }
}

#[test]
fn the_robot_tells_the_same_story_with_modules_in_a_process_joined_through_a_pipe() {
    let socket = support::socket_path("robot");
    let endpoint = format!("pipe://{}", socket.display());
    let run = |args: &[&str]| {
        Command::new(support::example_binary("robot"))
            .args(["--seconds", "2.5", "--readings", "30"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("robot starts")
    };
    let alone = run(&[]);
    // The robot listens, and hosts all but the motor and the planner...
    let hub = run(&["--listen", &endpoint, "--joined", "motor", "--joined", "planner"]);
    // ...which run in a process of their own that joins it.
    let joined = run(&["--join", &endpoint, "--module", "motor", "--module", "planner"]);
    let logs: Vec<String> = [hub, joined]
        .into_iter()
        .map(|run| {
            let output = run.wait_with_output().expect("robot runs to the end");
            let log = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{}\n{log}", output.status);
            log
        })
        .collect();
    let _ = std::fs::remove_file(&socket);
    let alone = told(alone, "every module in one process");
    let together = trace(&logs.concat());
    assert_eq!(
        together,
        alone,
        "motor and planner joined through a pipe:\n{}",
        logs.concat()
    );
}

#[test]
fn the_robot_tells_the_same_story_with_the_planner_and_motor_on_a_remote_worker() {
    // A free loopback port for the robot: the worker is started at once and
    // joins with backoff until the robot listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let run = |args: &[&str]| {
        Command::new(support::example_binary("robot"))
            .args(["--seconds", "2.5", "--readings", "30"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("ROBOT_TOKEN", "the robot example's test token")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("robot starts")
    };
    let alone = run(&[]);
    let worker = run(&["--worker", "--join", &endpoint]);
    let robot = run(&["--listen", &endpoint, "--on-worker", "motor", "--on-worker", "planner"]);
    let robot = robot.wait_with_output().expect("robot runs to the end");
    let robot_log = String::from_utf8_lossy(&robot.stderr).into_owned();
    assert!(robot.status.success(), "{}\n{robot_log}", robot.status);
    // The worker runs until told to stop, as a worker does.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(worker.id() as i32).expect("a pid"),
        rustix::process::Signal::TERM,
    )
    .expect("the worker is signalled");
    let worker = worker.wait_with_output().expect("the worker stops");
    let worker_log = String::from_utf8_lossy(&worker.stderr).into_owned();
    assert!(worker.status.success(), "{}\n{worker_log}", worker.status);
    for module in ["motor", "planner"] {
        assert!(
            robot_log.contains(&format!("running on worker module={module} worker=robot-worker")),
            "{robot_log}"
        );
        assert!(
            worker_log.contains(&format!("started on request module={module}")),
            "{worker_log}"
        );
    }
    let alone = told(alone, "every module in one process");
    let together = trace(&format!("{robot_log}{worker_log}"));
    assert_eq!(
        together, alone,
        "motor and planner on a worker:\n{robot_log}\n{worker_log}"
    );
}

/// `examples/launch/<name>.toml`, made this test's own in `scratch`: the
/// sensor stops after 30 readings, the pipe is a socket of the test's, and
/// the TCP port a free one.
fn launch_file(scratch: &support::secrets::Scratch, name: &str, socket: &std::path::Path, port: u16) -> String {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/launch/");
    let text = std::fs::read_to_string(format!("{example}{name}.toml")).expect("the example launch file");
    let text = text
        .replace("type = \"sensor\"\n", "type = \"sensor\"\nargs = 30\n")
        .replace("pipe://robot", &format!("pipe://{}", socket.display()))
        .replace("127.0.0.1:7000", &format!("127.0.0.1:{port}"));
    let path = scratch.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("launch file written");
    path.display().to_string()
}

/// The robot example under a launch file, in a role, for `seconds`.
fn launched(file: &str, role: &str, seconds: &str) -> std::process::Child {
    Command::new(support::example_binary("robot"))
        .args(["--launch", file, "--role", role, "--seconds", seconds])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("robot starts")
}

/// The stderr of a finished run, which must have succeeded.
fn log_of(run: std::process::Child, what: &str) -> String {
    let output = run.wait_with_output().expect("the process ends");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{what}: {}\n{log}", output.status);
    log
}

/// Stops a worker (which serves until told) with SIGTERM; its log.
fn stop_worker(worker: std::process::Child) -> String {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(worker.id() as i32).expect("a pid"),
        rustix::process::Signal::TERM,
    )
    .expect("the worker is signalled");
    log_of(worker, "worker")
}

#[test]
fn launch_files_that_differ_only_in_placements_tell_the_same_story() {
    let scratch = support::secrets::Scratch::new("launch");
    let socket = support::socket_path("launch");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let file = |name| launch_file(&scratch, name, &socket, port);

    // Every module a thread of one process, and every module a child.
    let threads = launched(&file("threads"), "robot", "2.5");
    let children = launched(&file("children"), "robot", "2.5");
    let alone = trace(&log_of(threads, "all threads"));
    assert_eq!(alone.cancelled_at, ["half-way"], "{alone:?}");
    assert_eq!(
        trace(&log_of(children, "all children")),
        alone,
        "every module in a child"
    );

    // The motor and the planner in processes of their own, joined through
    // a pipe the robot listens at; they outlive the robot's story.
    let pipe = file("pipe");
    let robot = launched(&pipe, "robot", "2.5");
    let motor = launched(&pipe, "module:motor", "6");
    let planner = launched(&pipe, "module:planner", "6");
    let logs = [
        log_of(robot, "robot"),
        log_of(motor, "motor"),
        log_of(planner, "planner"),
    ]
    .concat();
    assert!(logs.contains("link up node=\"robot-motor\""), "{logs}");
    assert_eq!(trace(&logs), alone, "motor and planner joined through a pipe:\n{logs}");
    let _ = std::fs::remove_file(&socket);

    // The planner and the motor on a worker over TCP, started as the robot
    // asks; the worker runs until it is told to stop.
    let worker_file = file("worker");
    let worker = launched(&worker_file, "worker:gpu", "0");
    let robot = log_of(launched(&worker_file, "robot", "2.5"), "robot");
    let worker = stop_worker(worker);
    assert!(robot.contains("running on worker module=planner worker=gpu"), "{robot}");
    assert_eq!(
        trace(&format!("{robot}{worker}")),
        alone,
        "planner and motor on a worker:\n{robot}\n{worker}"
    );

    // And in combination (the README's walk-through): the led in a child,
    // the motor joined through the pipe, the planner on the worker.
    let mixed = file("mixed");
    let worker = launched(&mixed, "worker:gpu", "0");
    let robot = launched(&mixed, "robot", "2.5");
    let motor = launched(&mixed, "module:motor", "6");
    let (robot, motor) = (log_of(robot, "robot"), log_of(motor, "motor"));
    let worker = stop_worker(worker);
    assert!(robot.contains("running on worker module=planner worker=gpu"), "{robot}");
    assert!(motor.contains("link up node=\"robot-motor\""), "{motor}");
    assert_eq!(
        trace(&format!("{robot}{motor}{worker}")),
        alone,
        "every placement at once:\n{robot}\n{motor}\n{worker}"
    );
    let _ = std::fs::remove_file(&socket);
}
