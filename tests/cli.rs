//! The introspection commands (`botbus nodes`, `modules`, `topics`,
//! `call`, `echo`, `hz`, `pub`) as a person or a script runs them: the real `botbus` binary
//! against a robot listening on a real socket — its output for a person
//! and as JSON lines, progress, a cancel by SIGINT, and each error as one
//! line and a non-zero exit.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use botbus::{Context, LinkConfig, Message, Module, ModuleError, Node, Payload};
use serde::{Deserialize, Serialize};
use support::secrets::Scratch;
use support::DEADLINE;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    steps: u32,
}

impl Message for Plan {
    const NAME: &'static str = "cli.Plan";
}

/// Works a step at a time, saying how far it got; stops when cancelled.
struct Planner;

impl Module for Planner {
    type Message = Plan;
    type Reply = u32;

    async fn process(&mut self, plan: Plan, ctx: &mut Context) -> Result<u32, ModuleError> {
        for step in 1..=plan.steps {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = ctx.cancelled() => return Err(ModuleError::new("cancelled")),
            }
            ctx.progress(Progress {
                done: step,
                total: plan.steps,
            });
        }
        Ok(plan.steps)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    done: u32,
    total: u32,
}

impl Message for Progress {
    const NAME: &'static str = "cli.Progress";
}

/// Answers a speed with the same speed.
struct Motor;

impl Module for Motor {
    type Message = f32;
    type Reply = f32;

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("robot/speed/*")
            .map_err(|e| ModuleError::new(e.to_string()))
    }

    async fn process(&mut self, speed: f32, _ctx: &mut Context) -> Result<f32, ModuleError> {
        Ok(speed)
    }
}

/// Publishes a tick on `robot/tick` every 20 ms, and beside it on
/// `robot/opaque` postcard bytes of a type no process here knows.
struct Ticker(u32);

impl Module for Ticker {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.tick_every(Duration::from_millis(20));
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        self.0 += 1;
        let tick = Progress { done: self.0, total: 0 };
        ctx.publish("robot/tick", tick)
            .await
            .map_err(|e| ModuleError::new(e.to_string()))?;
        let opaque = Payload::from_encoded("cli.Opaque", vec![0xca, 0xfe].into());
        ctx.publish_payload("robot/opaque", opaque)
            .await
            .map(drop)
            .map_err(|e| ModuleError::new(e.to_string()))
    }
}

/// A robot of two nodes listening at a socket of the test's own: `robot`
/// (the planner, and a ticker) and `arm` (the motor) linked to it.
struct Robot {
    robot: Node,
    arm: Node,
    endpoint: String,
    socket: std::path::PathBuf,
}

impl Robot {
    async fn start(config: LinkConfig) -> Robot {
        let socket = support::socket_path("cli");
        let robot = Node::builder("robot")
            .link_config(config.clone())
            .module("planner", || Planner)
            .module("ticker", || Ticker(0))
            .start()
            .unwrap();
        let arm = Node::builder("arm")
            .link_config(config)
            .module("motor", || Motor)
            .start()
            .unwrap();
        let endpoint = format!("pipe://{}", socket.display());
        robot.listen(&endpoint).await.unwrap();
        let at = robot
            .listen(&format!("mem://{}", support::unique("cli-arm")))
            .await
            .unwrap();
        arm.connect(&at.to_string()).await.unwrap();
        robot.wait_for_module("motor", DEADLINE).await.unwrap();
        Robot {
            robot,
            arm,
            endpoint,
            socket,
        }
    }

    async fn stop(self) {
        self.arm.shutdown().await;
        self.robot.shutdown().await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn botbus(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_botbus"));
    command.args(args).stdin(Stdio::null());
    command
}

/// Runs `botbus` to the end, on a blocking thread.
async fn run(args: &[&str]) -> Output {
    let mut command = botbus(args);
    tokio::task::spawn_blocking(move || command.output().expect("botbus runs"))
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn nodes_modules_and_topics_say_what_runs_where_for_a_person_and_as_json() {
    let robot = Robot::start(LinkConfig::default()).await;
    let at = robot.endpoint.as_str();

    let nodes = run(&["nodes", "--connect", at]).await;
    assert!(nodes.status.success(), "{}", text(&nodes.stderr));
    let out = text(&nodes.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("PID") && lines[0].contains("LINKS"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("arm ") && l.contains(" 1 ") && l.contains("robot (connected mem://cli-arm")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("robot ") && l.contains("arm (accepted mem://cli-arm")),
        "{out}"
    );
    let nodes = run(&["nodes", "--connect", at, "--json"]).await;
    let robot_row: serde_json::Value = text(&nodes.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["node"] == "robot")
        .expect("the robot is listed");
    assert_eq!(robot_row["pid"], std::process::id());
    let arm_link = robot_row["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["peer"] == "arm")
        .expect("the robot lists its link to the arm");
    assert_eq!(arm_link["kind"], "accepted");

    let modules = run(&["modules", "--connect", at, "--json"]).await;
    assert!(modules.status.success(), "{}", text(&modules.stderr));
    let rows: Vec<serde_json::Value> = text(&modules.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let motor = rows.iter().find(|r| r["name"] == "motor").expect("the motor is listed");
    assert_eq!(motor["node"], "arm");
    // The arm joined the robot (it connected); the tool says where.
    assert!(
        motor["placement"].as_str().unwrap().starts_with("joined:mem://cli-arm"),
        "{motor}"
    );
    assert_eq!(motor["pid"], std::process::id());
    assert_eq!(motor["state"], "running");
    assert_eq!(motor["restarts"], 0);
    assert_eq!(motor["takes"], "f32");
    let planner = rows.iter().find(|r| r["name"] == "planner").unwrap();
    assert_eq!(
        (planner["node"].as_str(), planner["takes"].as_str()),
        (Some("robot"), Some("cli.Plan"))
    );
    assert_eq!(planner["placement"], "thread");

    let human = text(&run(&["modules", "--connect", at]).await.stdout);
    let header: Vec<&str> = human.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NODE",
            "MODULE",
            "PLACEMENT",
            "PID",
            "STATE",
            "RESTARTS",
            "MAILBOX",
            "TAKES"
        ]
    );
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("arm") && l.contains("motor") && l.contains("running")),
        "{human}"
    );

    // The ticker publishes every 20 ms: over a 500 ms window, a rate well
    // above none; the motor's pattern has subscribers and no publisher.
    let topics = run(&["topics", "--connect", at, "--json", "--window", "500ms"]).await;
    assert!(topics.status.success(), "{}", text(&topics.stderr));
    let rows: Vec<serde_json::Value> = text(&topics.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let topics: Vec<&str> = rows.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, ["robot/opaque", "robot/tick", "robot/speed/*"], "{rows:?}");
    let tick = &rows[1];
    assert_eq!(tick["publishers"], serde_json::json!(["robot/ticker"]));
    assert_eq!(tick["subscribers"], serde_json::json!([]));
    assert!(tick["messages"].as_u64().unwrap() > 0, "{tick}");
    assert!(tick["rate_hz"].as_f64().unwrap() > 1.0, "{tick}");
    assert_eq!(
        (&rows[2]["publishers"], &rows[2]["subscribers"], &rows[2]["rate_hz"]),
        (
            &serde_json::json!([]),
            &serde_json::json!(["arm/motor"]),
            &serde_json::json!(0.0)
        )
    );
    let human = text(&run(&["topics", "--connect", at, "--window", "200ms"]).await.stdout);
    let header: Vec<&str> = human.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TOPIC", "RATE", "PUBLISHERS", "SUBSCRIBERS"]);
    let cells = |topic: &str| -> Vec<String> {
        let line = human.lines().find(|l| l.starts_with(topic)).unwrap_or_default();
        line.split_whitespace().map(str::to_owned).collect()
    };
    let tick = cells("robot/tick ");
    assert_eq!(
        (tick.len(), &tick[2][..], &tick[3][..], &tick[4][..]),
        (5, "Hz", "robot/ticker", "-"),
        "{human}"
    );
    assert!(tick[1].parse::<f64>().is_ok_and(|hz| hz > 1.0), "{human}");
    assert_eq!(
        cells("robot/speed/*"),
        ["robot/speed/*", "-", "-", "arm/motor"],
        "{human}"
    );
    robot.stop().await;
}

#[tokio::test]
async fn call_asks_shows_progress_and_the_reply_and_sigint_cancels_it() {
    let robot = Robot::start(LinkConfig::default()).await;
    let at = robot.endpoint.as_str();

    let speed = run(&["call", "--connect", at, "motor", "0.25"]).await;
    assert!(speed.status.success(), "{}", text(&speed.stderr));
    assert_eq!(text(&speed.stdout).trim(), "0.25");

    let planned = run(&["call", "--connect", at, "planner", r#"{"steps": 3}"#, "--json"]).await;
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    assert_eq!(
        text(&planned.stdout).lines().collect::<Vec<_>>(),
        [
            r#"{"progress":{"done":1,"total":3}}"#,
            r#"{"progress":{"done":2,"total":3}}"#,
            r#"{"progress":{"done":3,"total":3}}"#,
            r#"{"reply":3}"#,
        ]
    );
    // For a person, progress with `done` and `total` is a bar, on stderr.
    let human = run(&["call", "--connect", at, "planner", r#"{"steps": 2}"#]).await;
    assert_eq!(text(&human.stdout).trim(), "2");
    assert!(text(&human.stderr).contains("] 100%"), "{}", text(&human.stderr));

    // A long plan, cancelled by SIGINT once it is under way.
    let mut long = botbus(&["call", "--connect", at, "planner", r#"{"steps": 400}"#, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = long.id();
    let stdout = long.stdout.take().unwrap();
    let (first, output) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a first progress").unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::INT,
        )
        .unwrap();
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        (first, (rest, long.wait_with_output().unwrap()))
    })
    .await
    .unwrap();
    let (rest, ended) = output;
    assert_eq!(first, r#"{"progress":{"done":1,"total":400}}"#);
    assert_eq!(
        rest.last().map(String::as_str),
        Some(r#"{"cancelled":"planner"}"#),
        "{rest:?}"
    );
    assert!(!ended.status.success());
    assert!(text(&ended.stderr).contains("interrupted: the ask to `planner` was cancelled"));
    robot.stop().await;
}

/// A run that must fail with exactly one line on stderr holding `said`.
async fn fails_saying(args: &[&str], said: &str) {
    let output = run(args).await;
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(
        lines[0].starts_with("botbus: ") && lines[0].contains(said),
        "{args:?}: {stderr}"
    );
}

#[tokio::test]
async fn each_error_is_one_clear_line_and_a_non_zero_exit() {
    let scratch = Scratch::new("cli");
    let token = scratch.token_file("robot.token", "the robot's token, 16+ bytes");
    let wrong = scratch.token_file("wrong.token", "some other token, 16+ bytes");
    let config = LinkConfig {
        token: Some(botbus::read_token(&token).unwrap()),
        ..LinkConfig::default()
    };
    let robot = Robot::start(config).await;
    let at = robot.endpoint.as_str();
    let token = token.display().to_string();
    let wrong = wrong.display().to_string();

    let nowhere = format!("pipe://{}", support::socket_path("nobody").display());
    fails_saying(&["nodes", "--connect", &nowhere], &format!("no robot at `{nowhere}`")).await;
    fails_saying(&["modules", "--connect", at, "--token-file", &wrong], "wrong token").await;
    fails_saying(&["modules", "--connect", at], "requires a token").await;
    let with_token = ["--connect", at, "--token-file", token.as_str()];
    fails_saying(
        &[&["call"][..], &with_token, &["nosuch", "1"]].concat(),
        "unknown module `nosuch`",
    )
    .await;
    fails_saying(
        &[&["call"][..], &with_token, &["motor", "{not json"]].concat(),
        "bad JSON `{not json`",
    )
    .await;
    fails_saying(
        &[&["call"][..], &with_token, &["planner", r#""fast""#]].concat(),
        "malformed `cli.Plan` message",
    )
    .await;
    // And the right token works.
    let ok = run(&[&["call"][..], &with_token, &["motor", "1.5"]].concat()).await;
    assert_eq!(text(&ok.stdout).trim(), "1.5", "{}", text(&ok.stderr));
    robot.stop().await;
}

#[tokio::test]
async fn echo_hz_and_pub_follow_and_feed_topics() {
    let robot = Robot::start(LinkConfig::default()).await;
    let at = robot.endpoint.as_str();

    // Each tick is published, then the opaque bytes: four messages hold
    // at least one of each, in that order per tick.
    let echoed = run(&["echo", "--connect", at, "robot/**", "--count", "4", "--json"]).await;
    assert!(echoed.status.success(), "{}", text(&echoed.stderr));
    let lines: Vec<serde_json::Value> = text(&echoed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for line in &lines {
        assert_eq!(line["from"], "robot/ticker");
        match line["topic"].as_str() {
            Some("robot/tick") => {
                assert_eq!(line["name"], "cli.Progress");
                assert!(line["body"]["done"].as_u64().is_some(), "{line}");
            }
            _ => assert_eq!(
                (&line["topic"], &line["name"]),
                (&serde_json::json!("robot/opaque"), &serde_json::json!("cli.Opaque"))
            ),
        }
    }
    let ticks = lines.iter().filter(|l| l["topic"] == "robot/tick").count();
    assert!((1..=3).contains(&ticks), "{lines:?}");

    // A type the robot does not know cannot be JSON: its bytes come as hex.
    let opaque = run(&["echo", "--connect", at, "robot/opaque", "--count", "1", "--json"]).await;
    assert!(opaque.status.success(), "{}", text(&opaque.stderr));
    let line: serde_json::Value = serde_json::from_str(text(&opaque.stdout).trim()).unwrap();
    assert_eq!(line["name"], "cli.Opaque");
    assert_eq!(line["body"], serde_json::json!({ "hex": "cafe" }));
    let opaque = run(&["echo", "--connect", at, "robot/opaque", "--count", "1"]).await;
    assert_eq!(
        text(&opaque.stdout).trim(),
        r#"robot/opaque  cli.Opaque  {"hex":"cafe"}"#
    );

    let measured = run(&[
        "hz",
        "--connect",
        at,
        "robot/tick",
        "--window",
        "300ms",
        "--windows",
        "2",
        "--json",
    ])
    .await;
    assert!(measured.status.success(), "{}", text(&measured.stderr));
    let windows: Vec<serde_json::Value> = text(&measured.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(windows.len(), 2);
    let last = &windows[1];
    assert!(last["messages"].as_u64().unwrap() > 1, "{last}");
    assert!(last["rate_hz"].as_f64().unwrap() > 0.0, "{last}");
    assert!(
        last["min_s"].as_f64().unwrap() <= last["max_s"].as_f64().unwrap(),
        "{last}"
    );

    // A listener on the motor's topics, then a message published there:
    // its type is what the motor, the topic's subscriber, takes.
    let listener = botbus(&["echo", "--connect", at, "robot/speed/*", "--count", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listening = format!("botbus-cli-{}", listener.id());
    robot
        .robot
        .wait_until("the listener subscribed", DEADLINE, |node| {
            node.subscriber_nodes("robot/speed/left").contains(&listening)
        })
        .await
        .unwrap();
    let published = run(&["pub", "--connect", at, "robot/speed/left", "0.75"]).await;
    assert!(published.status.success(), "{}", text(&published.stderr));
    let heard = tokio::task::spawn_blocking(move || listener.wait_with_output().unwrap())
        .await
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(text(&heard.stdout).trim()).unwrap();
    assert_eq!(
        (line["topic"].as_str(), line["name"].as_str()),
        (Some("robot/speed/left"), Some("f32"))
    );
    assert_eq!(line["body"], 0.75);
    fails_saying(
        &["pub", "--connect", at, "nobody/listens", "1"],
        "no subscriber of `nobody/listens` says what it takes: give --type",
    )
    .await;
    robot.stop().await;
}

#[tokio::test]
async fn bench_measures_every_placement_next_to_its_raw_channel() {
    let child = botbus(&["bench"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let out = text(&output.stdout);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    // Four tables, each with its figures and a botbus/raw ratio that is a
    // positive number (what the figures are depends on the machine).
    let tables: Vec<&str> = out.split("\n\n").skip(1).collect();
    let titles = [
        "in one process",
        "a child process over stdio",
        "over a Unix socket",
        "over TCP",
    ];
    for title in titles {
        let table = tables
            .iter()
            .find(|t| t.contains(title))
            .unwrap_or_else(|| panic!("no `{title}` table in:\n{out}"));
        let ratio = |row: &str| -> f64 {
            let line = table
                .lines()
                .find(|l| l.starts_with(row))
                .unwrap_or_else(|| panic!("no `{row}` row in:\n{table}"));
            line.split_whitespace().last().unwrap().parse().unwrap()
        };
        assert!(ratio("ask round trip 64 B, p50") > 0.0, "{table}");
        assert!(ratio("tells 64 B") > 0.0, "{table}");
        if title != "in one process" {
            assert!(ratio("tells 64 KiB, bandwidth") > 0.0, "{table}");
            assert!(table.contains("context switches per ask"), "{table}");
        }
    }
    assert!(out.contains("spawn -> ready, p50"), "{out}");
    // Its processes and socket files are gone with it.
    assert!(!std::env::temp_dir().join(format!("botbus-bench-pipe-{pid}")).exists());
}
