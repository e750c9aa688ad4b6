//! Node-level behaviour outside the conformance body: adding modules at run
//! time, start failures, restart policies, ticks.

use std::time::Duration;

use botbus::{Context, Module, ModuleError, ModuleOptions, ModuleStatus, Node, NodeError, RestartPolicy};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

/// Answers `n + 1`; stops itself on 0.
struct Incr;

impl Module for Incr {
    type Message = u32;
    type Reply = u32;

    async fn process(&mut self, n: u32, ctx: &mut Context) -> Result<u32, ModuleError> {
        if n == 0 {
            ctx.stop();
        }
        Ok(n + 1)
    }
}

/// Fails in `started`.
struct Broken;

impl Module for Broken {
    type Message = u32;
    type Reply = ();

    async fn started(&mut self, _ctx: &mut Context) -> Result<(), ModuleError> {
        Err(ModuleError::new("no hardware on the bus"))
    }

    async fn process(&mut self, _: u32, _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }
}

/// Reports each start and each tick.
struct Ticker {
    events: mpsc::UnboundedSender<&'static str>,
}

impl Module for Ticker {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.tick_every(Duration::from_millis(5));
        let _ = self.events.send("started");
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, _ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.events.send("tick");
        Ok(())
    }
}

#[tokio::test]
async fn modules_join_a_running_node_under_valid_unique_names() {
    let node = Node::builder("host").start().unwrap();
    node.spawn("incr", || Incr, ModuleOptions::new()).await.unwrap();
    let client = node.client("test");
    assert_eq!(client.ask::<_, u32>("incr", 41u32).await, Ok(42));

    let duplicate = node.spawn("incr", || Incr, ModuleOptions::new()).await;
    assert!(
        matches!(duplicate, Err(NodeError::DuplicateModule(ref m)) if m == "incr"),
        "{duplicate:?}"
    );
    let invalid = node.spawn("bad name", || Incr, ModuleOptions::new()).await;
    assert!(matches!(invalid, Err(NodeError::Name(_))), "{invalid:?}");
    assert_eq!(node.modules(), vec!["incr".to_owned()]);
    node.shutdown().await;
    assert!(matches!(
        node.spawn("late", || Incr, ModuleOptions::new()).await,
        Err(NodeError::Stopped)
    ));
}

#[test]
fn a_module_that_cannot_start_fails_the_node_start_with_its_reason() {
    let outcome = Node::builder("fragile-robot")
        .module_with("driver", || Broken, ModuleOptions::new().restart(RestartPolicy::Never))
        .start();
    match outcome {
        Err(NodeError::StartFailed { module, reason }) => {
            assert_eq!(module, "driver");
            assert!(reason.contains("no hardware on the bus"), "{reason}");
        }
        Err(other) => panic!("expected StartFailed, got {other:?}"),
        Ok(_) => panic!("expected StartFailed, the node started"),
    }
}

#[tokio::test]
async fn restart_always_brings_back_a_module_that_stopped_itself() {
    let node = Node::builder("policies")
        .module_with("always", || Incr, ModuleOptions::new().restart(RestartPolicy::Always))
        .module_with("once", || Incr, ModuleOptions::new().restart(RestartPolicy::OnFailure))
        .start()
        .unwrap();
    let client = node.client("test");
    // Both answer, then stop themselves after replying.
    assert_eq!(client.ask::<_, u32>("always", 0u32).await, Ok(1));
    assert_eq!(client.ask::<_, u32>("once", 0u32).await, Ok(1));
    node.wait_until("once stopped", DEADLINE, |n| {
        n.status("once") == Some(ModuleStatus::Stopped)
    })
    .await
    .unwrap();
    // `always` is back and answering; `once` is gone.
    assert_eq!(client.ask::<_, u32>("always", 5u32).await, Ok(6));
    assert_eq!(node.status("always"), Some(ModuleStatus::Running));
    assert!(client.ask::<_, u32>("once", 5u32).await.is_err());
    node.shutdown().await;
}

#[tokio::test]
async fn ticks_run_the_control_loop_until_stopped() {
    let (events, mut seen) = mpsc::unbounded_channel();
    let node = Node::builder("ticking")
        .module("ticker", move || Ticker { events: events.clone() })
        .start()
        .unwrap();
    let mut ticks = 0;
    while ticks < 5 {
        match tokio::time::timeout(DEADLINE, seen.recv()).await.expect("ticks arrive") {
            Some("tick") => ticks += 1,
            Some("started") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    node.stop_module("ticker").await.unwrap();
    // Once it is stopped nothing ticks any more: the channel closes with the module.
    while let Some(event) = tokio::time::timeout(DEADLINE, seen.recv())
        .await
        .expect("channel closes")
    {
        assert_eq!(event, "tick", "only ticks already sent before the stop");
    }
    node.shutdown().await;
}
