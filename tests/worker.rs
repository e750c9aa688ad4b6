//! Remote workers over real TCP: `botbus worker` processes join a robot
//! node with a token; the robot starts modules on them by type, asks them,
//! stops them, and — with a module placed on a worker — lives through the
//! worker's kill -9 and gets its module back when a new worker process joins.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use botbus::{AskError, LinkConfig, ModuleOptions, ModuleStatus, Node, NodeError};
use support::secrets::Scratch;
use support::{kill_9, Process, DEADLINE};

const TOKEN: &str = "worker test token, 16+ bytes";

/// A robot node listening on loopback with the token; its endpoint.
async fn robot(name: &str, scratch: &Scratch) -> (Node, String) {
    let file = scratch.token_file("robot.token", TOKEN);
    let node = Node::builder(name)
        .link_config(LinkConfig {
            token: Some(botbus::read_token(&file).unwrap()),
            liveness: botbus::Liveness::new(Duration::from_millis(250), Duration::from_secs(1)),
            ..LinkConfig::default()
        })
        .start()
        .unwrap();
    let endpoint = node.listen("tcp://127.0.0.1:0").await.unwrap().to_string();
    (node, endpoint)
}

/// `botbus worker --connect <endpoint> --name <name>`, its token from the
/// environment.
fn worker_process(endpoint: &str, name: &str) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_botbus"))
        .args([
            "worker",
            "--connect",
            endpoint,
            "--name",
            name,
            "--token-env",
            "ROBOT_TOKEN",
        ])
        .env("ROBOT_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the worker starts");
    Process { child, socket: None }
}

#[tokio::test]
async fn a_worker_starts_answers_and_stops_modules_on_request_and_names_an_unknown_type() {
    let scratch = Scratch::new("worker");
    let (robot, endpoint) = robot("robot-w1", &scratch).await;
    let _worker = worker_process(&endpoint, "w1");
    robot.wait_for_module("w1/botbus.worker", DEADLINE).await.unwrap();

    robot.spawn_on("w1", "echo", "echo1", &()).await.unwrap();
    let client = robot.client("test");
    let heard: String = client.ask("echo1", "over the network".to_owned()).await.unwrap();
    assert_eq!(heard, "over the network");
    let heard: String = client.ask("w1/echo1", "by its full name".to_owned()).await.unwrap();
    assert_eq!(heard, "by its full name");
    // The worker says whose module it runs.
    let described: botbus::NodeInfo = client.ask("w1/botbus.node", botbus::Introspect::Node).await.unwrap();
    let echo1 = described.modules.iter().find(|m| m.name == "echo1").unwrap();
    assert_eq!(
        (echo1.placed_by.as_deref(), echo1.pid),
        (Some("robot-w1"), Some(described.pid))
    );
    assert_eq!(described.links[0].kind, "connected", "{:?}", described.links);

    let error = robot.spawn_on("w1", "planner", "plan", &()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("worker `w1` has no module type `planner` (it has: echo)"),
        "{error}"
    );
    let error = robot.spawn_on("w1", "echo", "echo2", &42).await.unwrap_err();
    assert!(
        error.to_string().contains("bad arguments for module type `echo`"),
        "{error}"
    );

    robot.stop_on("w1", "echo1").await.unwrap();
    robot
        .wait_until("echo1 gone", DEADLINE, |robot| !robot.reaches("w1/echo1"))
        .await
        .unwrap();
    let gone = client.ask::<_, String>("echo1", "anyone?".to_owned()).await;
    assert!(
        matches!(&gone, Err(AskError::UnknownModule(m)) if m == "echo1"),
        "{gone:?}"
    );
    let error = robot.stop_on("w1", "echo1").await.unwrap_err();
    assert!(matches!(error, NodeError::StopFailed { .. }), "{error}");
    robot.shutdown().await;
}

#[tokio::test]
async fn a_module_placed_on_a_worker_outlives_the_workers_kill_9_and_comes_back_on_the_next() {
    let scratch = Scratch::new("worker-kill");
    let (robot, endpoint) = robot("robot-w2", &scratch).await;
    let mut worker = worker_process(&endpoint, "w2");
    let options = ModuleOptions::new().start_timeout(DEADLINE);
    robot
        .spawn_on_worker("echo", "w2", "echo", &(), options)
        .await
        .expect("the module starts on the worker once it joins");
    assert_eq!(robot.status("echo"), Some(ModuleStatus::Running));
    let client = robot.client("test");
    let heard: String = client.ask("echo", "one".to_owned()).await.unwrap();
    assert_eq!(heard, "one");

    // The worker dies without a word.
    kill_9(worker.child.id());
    let _ = worker.child.wait();
    robot
        .wait_until("the module restarting", DEADLINE, |robot| {
            robot.status("echo") == Some(ModuleStatus::Restarting)
        })
        .await
        .unwrap();
    // Asks end at once, and the robot lives on.
    let ended = client.ask::<_, String>("echo", "two".to_owned()).await;
    assert!(matches!(&ended, Err(AskError::Stopped(_))), "{ended:?}");
    let said = ended.unwrap_err().to_string();
    assert!(said.contains("`echo` on worker `w2`"), "{said}");
    assert_eq!(robot.modules(), Vec::<String>::new());

    // A new worker process joins under the same name: the module is back.
    let _worker = worker_process(&endpoint, "w2");
    robot
        .wait_until("the module running again", DEADLINE, |robot| {
            robot.status("echo") == Some(ModuleStatus::Running)
        })
        .await
        .unwrap();
    let heard: String = client.ask("echo", "three".to_owned()).await.unwrap();
    assert_eq!(heard, "three");

    // Stopping it on the robot stops it on the worker.
    robot.stop_module("echo").await.unwrap();
    assert_eq!(robot.status("echo"), Some(ModuleStatus::Stopped));
    robot
        .wait_until("echo gone from the worker", DEADLINE, |robot| !robot.reaches("w2/echo"))
        .await
        .unwrap();
    assert!(robot.reaches("w2/botbus.worker"), "the worker itself lives on");
    robot.shutdown().await;
}
