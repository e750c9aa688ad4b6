//! A module written in Python (`examples/python_child/child.py`, standard
//! library only) as a child of a Rust node: it answers asks (one with
//! progress), subscribes to a topic and publishes to another, and returns
//! typed errors — all over the JSON-lines codec, with the machine's python3.
//! It keeps to the frame limits both sides state, and closes its link at
//! bad input, as a Rust node does.

use std::process::Command;
use std::time::Duration;

use botbus::{register_message, AskError, CallEvent, ChildCommand, Context, Module, ModuleError, ModuleOptions, Node};
use tokio::sync::mpsc;

#[path = "../examples/python_child/messages.rs"]
mod messages;
mod support;
#[path = "support/thermostat.rs"]
mod thermostat;
use messages::{Alert, Calibrate, Reading, ToFahrenheit};
use thermostat::ThermostatCmd;

const DEADLINE: Duration = Duration::from_secs(10);

/// Hands every alert it hears to the test.
struct Listener {
    alerts: mpsc::UnboundedSender<(String, Alert)>,
}

impl Module for Listener {
    type Message = Alert;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("alerts/**").map_err(|e| ModuleError::new(e.to_string()))
    }

    async fn process(&mut self, alert: Alert, ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.alerts.send((ctx.topic().unwrap_or_default().to_owned(), alert));
        Ok(())
    }
}

fn python3() -> Option<&'static str> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    found.then_some("python3")
}

#[tokio::test]
async fn a_python_module_answers_asks_subscribes_and_publishes() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python child test needs it");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
    let (alerts, mut heard) = mpsc::unbounded_channel();
    let node = Node::builder("robot")
        .module("listener", move || Listener { alerts: alerts.clone() })
        .start()
        .unwrap();
    node.spawn_child("thermo", ChildCommand::new(python).arg(script), ModuleOptions::new())
        .await
        .expect("the Python child completes the handshake and announces itself");
    let client = node.client("test");

    // Asks, answered in Python.
    let fahrenheit: f64 = client.ask("thermo", ToFahrenheit(100.0)).await.unwrap();
    assert_eq!(fahrenheit, 212.0);
    let mut call = client.ask::<_, String>("thermo", Calibrate(3)).start().await.unwrap();
    let mut steps = Vec::new();
    while let Some(event) = call.next_event().await {
        if let CallEvent::Progress(step) = event {
            steps.push(step.decode::<u32>().unwrap());
        }
    }
    assert_eq!(steps, vec![1, 2, 3]);
    assert_eq!(call.reply().await.unwrap(), "calibrated in 3 steps");
    // A message it does not take: `BadPayload`, as from any module.
    let refused = client.ask::<_, u32>("thermo", 5u32).await.unwrap_err();
    assert!(
        matches!(&refused, AskError::BadPayload(why) if why.contains("thermo") && why.contains("u32")),
        "{refused:?}"
    );

    // Its subscription reached this node; its publish reaches ours.
    node.wait_for_subscriber("robot/temp", DEADLINE).await.unwrap();
    client.publish("robot/temp", Reading { celsius: 20.0 }).await.unwrap();
    client.publish("robot/temp", Reading { celsius: 91.5 }).await.unwrap();
    let (topic, alert) = tokio::time::timeout(DEADLINE, heard.recv()).await.unwrap().unwrap();
    assert_eq!(topic, "alerts/thermo");
    assert_eq!(alert.celsius, 91.5, "only the hot reading raises an alert");
    assert_eq!(alert.message, "over 80 C");

    // It stops when asked: a goodbye, and it exits on its own.
    node.stop_module("thermo").await.unwrap();
    assert!(node.child_pid("thermo").is_none());
    node.shutdown().await;
}

#[tokio::test]
async fn a_python_child_and_a_rust_child_talk_through_their_parent() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python child test needs it");
        return;
    };
    // The parent passes the thermostat's postcard to the Python child's
    // JSON and back: it must know the types that cross (its own modules'
    // types it knows by itself; here it has none).
    register_message::<ToFahrenheit>();
    register_message::<f64>();
    register_message::<Reading>();
    register_message::<Alert>();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
    let node = Node::builder("robot").start().unwrap();
    node.spawn_child("thermo", ChildCommand::new(python).arg(script), ModuleOptions::new())
        .await
        .unwrap();
    let services = ChildCommand::new(support::child_services_binary());
    node.spawn_child("thermostat", services, ModuleOptions::new())
        .await
        .unwrap();
    let client = node.client("test");

    // The Rust child asks the Python child, through the parent.
    let fahrenheit: f64 = client.ask("thermostat", ThermostatCmd::Convert(100.0)).await.unwrap();
    assert_eq!(fahrenheit, 212.0);

    // The Rust child publishes a reading the Python child subscribes to,
    // once it has heard of that subscription (nothing here can see the
    // child's table, so it asks again until its publish reaches someone)...
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let reached: f64 = client.ask("thermostat", ThermostatCmd::Heat(20.0)).await.unwrap();
        if reached >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Python child's subscription never reached its sibling"
        );
        node.wait_until("a routing change", Duration::from_millis(50), |_| false)
            .await
            .ok();
    }
    let reached: f64 = client.ask("thermostat", ThermostatCmd::Heat(91.5)).await.unwrap();
    assert_eq!(reached, 1.0);
    // ...and hears the Python child's alert, published back through the parent.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let last: f64 = client.ask("thermostat", ThermostatCmd::LastAlert).await.unwrap();
        if last == 91.5 {
            break;
        }
        assert_eq!(last, -1.0, "only the hot reading raises an alert");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the alert never reached the Rust child"
        );
        node.wait_until("a routing change", Duration::from_millis(20), |_| false)
            .await
            .ok();
    }
    node.shutdown().await;
}

#[tokio::test]
async fn the_python_module_joins_a_hub_through_its_socket_and_talks_with_a_rust_module() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python join test needs it");
        return;
    };
    let socket = support::socket_path("python-hub");
    let endpoint = format!("pipe://{}", socket.display());
    let _hub = support::hub_process(&socket);
    let (alerts, mut heard) = mpsc::unbounded_channel();
    // This node speaks postcard to the hub, the Python module JSON, and the
    // hub (another process) knows none of their types: JSON bodies cross
    // the postcard link as they are, and this node, which knows its types,
    // sends JSON to the node the hub announces as JSON-only.
    let node = Node::builder("robot")
        .module("listener", move || Listener { alerts: alerts.clone() })
        .join(&endpoint)
        .start()
        .unwrap();
    node.wait_until("joined", DEADLINE, |node| node.peers() == ["hub"])
        .await
        .unwrap();
    // The same script, joining instead of being spawned.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
    let _python = support::Process {
        child: std::process::Command::new(python)
            .args([script, "--join", &endpoint])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs"),
        socket: None,
    };
    node.wait_for_module("thermo", DEADLINE).await.unwrap();
    let client = node.client("test");
    let fahrenheit: f64 = client.ask("thermo", ToFahrenheit(37.0)).await.unwrap();
    assert!((fahrenheit - 98.6).abs() < 1e-9, "{fahrenheit}");
    // Progress, JSON from Python, through the hub to a postcard node.
    let mut call = client.ask::<_, String>("thermo", Calibrate(2)).start().await.unwrap();
    let mut steps = Vec::new();
    while let Some(event) = call.next_event().await {
        if let CallEvent::Progress(step) = event {
            steps.push(step.decode::<u32>().unwrap());
        }
    }
    assert_eq!(steps, vec![1, 2]);
    assert_eq!(call.reply().await.unwrap(), "calibrated in 2 steps");
    node.wait_for_subscriber("robot/temp", DEADLINE).await.unwrap();
    client.publish("robot/temp", Reading { celsius: 95.0 }).await.unwrap();
    let (topic, alert) = tokio::time::timeout(DEADLINE, heard.recv()).await.unwrap().unwrap();
    assert_eq!((topic.as_str(), alert.celsius), ("alerts/thermo", 95.0));
    node.shutdown().await;
}

#[tokio::test]
async fn the_python_module_joins_over_tcp_proving_the_token_and_a_wrong_token_is_refused() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python join test needs it");
        return;
    };
    let scratch = support::secrets::Scratch::new("python-tcp");
    let token = "python and rust share this token";
    let file = scratch.token_file("robot.token", token);
    let node = Node::builder("robot-py-tcp")
        .link_config(botbus::LinkConfig {
            token: Some(botbus::read_token(&file).unwrap()),
            ..botbus::LinkConfig::default()
        })
        .start()
        .unwrap();
    let endpoint = node.listen("tcp://127.0.0.1:0").await.unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
    let joining = |token: &str| {
        std::process::Command::new(python)
            .args([script, "--join", &endpoint])
            .env("BOTBUS_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs")
    };

    // A wrong token: the Python side hears why, and nothing links.
    let refused = joining("not the token the robot holds").wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("refused the link: authentication failed: wrong token"),
        "{said}"
    );
    assert!(node.peers().is_empty());

    // The right one: the module joins and answers over TCP.
    let _python = support::Process {
        child: joining(token),
        socket: None,
    };
    node.wait_for_module("thermo", DEADLINE).await.unwrap();
    let fahrenheit: f64 = node.client("test").ask("thermo", ToFahrenheit(100.0)).await.unwrap();
    assert!((fahrenheit - 212.0).abs() < 1e-9, "{fahrenheit}");
    node.shutdown().await;
}

/// This test as the Python module's parent, speaking JSON lines to
/// `child.py` over its stdin and stdout, as botbus would, but able to say
/// what botbus never does.
struct FakeParent {
    child: std::process::Child,
    to: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl FakeParent {
    /// Starts `child.py` reading lines of at most `max_frame` bytes, and
    /// reads its hello.
    fn start(python: &str, max_frame: usize) -> (FakeParent, serde_json::Value) {
        use std::io::{BufRead, Read};
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
        let mut child = Command::new(python)
            .arg(script)
            .env("BOTBUS_MAX_FRAME", max_frame.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut said = String::new();
            let _ = stderr.read_to_string(&mut said);
            said
        });
        let to = child.stdin.take().unwrap();
        let parent = FakeParent {
            child,
            to,
            lines,
            stderr: Some(stderr),
        };
        let hello = parent.hears();
        (parent, hello)
    }

    fn says(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.to.write_all(bytes).unwrap();
        self.to.flush().unwrap();
    }

    /// The module's next frame.
    fn hears(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(DEADLINE).expect("the Python module answers");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The module's next line, as it was written.
    fn hears_line(&self) -> String {
        self.lines.recv_timeout(DEADLINE).expect("the Python module answers")
    }

    /// Waits until the module has closed its link (its stdout), then for it
    /// to exit: whether it succeeded, and what it logged.
    fn ends(mut self) -> (bool, String) {
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(timeout) => panic!("the Python module kept its link open: {timeout}"),
            }
        }
        let status = self.child.wait().unwrap();
        (status.success(), self.stderr.take().unwrap().join().unwrap())
    }
}

impl Drop for FakeParent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ask frame for `thermo`, of message `name` with `body`.
fn ask_frame(id: u64, name: &str, body: serde_json::Value) -> Vec<u8> {
    let frame = serde_json::json!({"ask": {"id": id, "to": "thermo", "from": "fake/test", "timeout_ms": 5000,
        "payload": {"name": name, "body": body}}});
    let mut line = serde_json::to_vec(&frame).unwrap();
    line.push(b'\n');
    line
}

#[test]
fn the_python_module_sends_nothing_longer_than_its_parent_reads_and_states_its_own_limit() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python child test needs it");
        return;
    };
    let (mut parent, hello) = FakeParent::start(python, 1024);
    assert_eq!(hello["max_frame"], 1024, "{hello}");
    parent.says(b"{\"magic\":\"BBUS\",\"version\":1,\"node\":\"fake\",\"codecs\":[\"json\"],\"max_frame\":200}\n");
    assert_eq!(parent.hears()["announce"]["modules"], serde_json::json!(["thermo"]));

    // Its refusal of a message it does not take would name it: 376 bytes,
    // more than the 200 this side reads. It answers with why instead.
    let long_name = "n".repeat(300);
    parent.says(&ask_frame(1, &long_name, 1.into()));
    let line = parent.hears_line();
    assert!(line.len() <= 200, "{} bytes: {line}", line.len());
    let refused: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(refused["reply"]["id"], 1);
    let why = refused["reply"]["result"]["Err"]["BadPayload"].as_str().unwrap();
    assert!(why.contains("fake reads at most 200"), "{why}");

    // A body that is not what the message holds: `BadPayload` too, not a
    // broken link...
    parent.says(&ask_frame(2, "thermo.ToFahrenheit", "hot".into()));
    let why = parent.hears();
    assert!(why["reply"]["result"]["Err"]["BadPayload"].is_string(), "{why}");
    // ...which still answers.
    parent.says(&ask_frame(3, "thermo.ToFahrenheit", 100.0.into()));
    assert_eq!(parent.hears()["reply"]["result"]["Ok"]["body"], 212.0);
}

#[test]
fn the_python_module_closes_its_link_at_a_line_past_its_limit_or_not_json() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python child test needs it");
        return;
    };
    let hello = b"{\"magic\":\"BBUS\",\"version\":1,\"node\":\"fake\",\"codecs\":[\"json\"]}\n";
    // 1,030 bytes and no line end, the link left open: refused as soon as
    // no ending could keep the line within 1,024 bytes.
    let (mut parent, _) = FakeParent::start(python, 1024);
    parent.says(hello);
    parent.hears();
    parent.says(&[b'x'; 1030]);
    let (succeeded, said) = parent.ends();
    assert!(!succeeded, "{said}");
    assert!(
        said.contains("oversize frame") && said.contains("the limit is 1024"),
        "{said}"
    );

    // A line that is not JSON.
    let (mut parent, _) = FakeParent::start(python, 1024);
    parent.says(hello);
    parent.hears();
    parent.says(b"{\"ask\": not json\n");
    let (succeeded, said) = parent.ends();
    assert!(!succeeded, "{said}");
    assert!(said.contains("malformed JSON frame (16 bytes)"), "{said}");
}

#[tokio::test]
async fn a_rust_parent_sends_the_python_child_no_frame_longer_than_it_reads() {
    let Some(python) = python3() else {
        eprintln!("SKIPPED: python3 is not on PATH; the Python child test needs it");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
    let node = Node::builder("robot").start().unwrap();
    let command = ChildCommand::new(python).arg(script).env("BOTBUS_MAX_FRAME", "1024");
    node.spawn_child("thermo", command, ModuleOptions::new()).await.unwrap();
    let pid = node.child_pid("thermo");
    let client = node.client("test");
    // Refused where it is sent, naming the limit...
    let refused = client.ask::<_, f64>("thermo", "x".repeat(2000)).await.unwrap_err();
    assert!(
        matches!(&refused, AskError::BadPayload(why) if why.contains("1024")),
        "{refused:?}"
    );
    // ...and the link, and the child, are as they were.
    let fahrenheit: f64 = client.ask("thermo", ToFahrenheit(100.0)).await.unwrap();
    assert_eq!(fahrenheit, 212.0);
    assert_eq!(node.child_pid("thermo"), pid);
    node.shutdown().await;
}
