//! A module written in Python (`examples/python_child/child.py`, standard
//! library only) as a child of a Rust node: it answers asks (one with
//! progress), subscribes to a topic and publishes to another, and returns
//! typed errors — all over the JSON-lines codec, with the machine's python3.

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
