//! A module written in Python (`examples/python_child/child.py`, standard
//! library only) as a child of a Rust node: it answers asks (one with
//! progress), subscribes to a topic and publishes to another, and returns
//! typed errors — all over the JSON-lines codec, with the machine's python3.

use std::process::Command;
use std::time::Duration;

use botbus::{AskError, CallEvent, ChildCommand, Context, Module, ModuleError, ModuleOptions, Node};
use tokio::sync::mpsc;

#[path = "../examples/python_child/messages.rs"]
mod messages;
use messages::{Alert, Calibrate, Reading, ToFahrenheit};

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
    // A message it does not know: a typed remote error, not a hang.
    let refused = client.ask::<_, u32>("thermo", 5u32).await.unwrap_err();
    assert!(
        matches!(&refused, AskError::Remote { module, message } if module == "thermo" && message.contains("u32")),
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
