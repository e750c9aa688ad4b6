//! Node-level behaviour outside the conformance body: adding modules at run
//! time, start failures, restart policies, ticks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Checks, in `started`, that it starts in its place in the order: every
/// module before it has finished `started`, none after it has begun.
struct InOrder {
    place: usize,
    started: Arc<AtomicUsize>,
    misordered: Arc<Mutex<Vec<String>>>,
    /// Fails its start instead.
    broken: bool,
}

impl Module for InOrder {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, _ctx: &mut Context) -> Result<(), ModuleError> {
        let before = self.started.load(Ordering::SeqCst);
        if before != self.place {
            self.misordered
                .lock()
                .unwrap()
                .push(format!("module {} began after {before} had started", self.place));
        }
        // Give a later module every chance to run early if it could.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if self.broken {
            return Err(ModuleError::new("broken on purpose"));
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }
}

fn in_order(count: usize, broken: Option<usize>) -> (Result<Node, NodeError>, usize, Vec<String>) {
    let started = Arc::new(AtomicUsize::new(0));
    let misordered = Arc::new(Mutex::new(Vec::new()));
    let mut builder = Node::builder("ordered").pool_threads(2);
    for place in 0..count {
        let (started, misordered) = (started.clone(), misordered.clone());
        let options = match place % 3 {
            0 => ModuleOptions::new(),
            1 => ModuleOptions::new().thread("shared"),
            _ => ModuleOptions::new().own_thread(),
        };
        builder = builder.module_with(
            &format!("m{place}"),
            move || InOrder {
                place,
                started: started.clone(),
                misordered: misordered.clone(),
                broken: broken == Some(place),
            },
            options.restart(RestartPolicy::Never),
        );
    }
    let node = builder.start();
    let misordered = misordered.lock().unwrap().clone();
    (node, started.load(Ordering::SeqCst), misordered)
}

#[test]
fn modules_start_one_after_the_other_in_the_order_given() {
    let (node, started, misordered) = in_order(60, None);
    let node = node.expect("every module starts");
    assert_eq!(started, 60);
    assert!(misordered.is_empty(), "{misordered:?}");
    assert_eq!(node.modules().len(), 60);
    node.shutdown_blocking();
}

/// A `#[tokio::main]` builds its node inside a tokio task. Starting 300
/// modules waits on 300 channels there, past the task's budget of 128 per
/// turn: the start once stopped for good at the 128th. Run on a thread of
/// its own, so that a start that stops is a failure, not a hung suite.
#[test]
fn a_node_of_hundreds_of_modules_starts_from_inside_a_tokio_task() {
    const MODULES: usize = 300;
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (node, started, misordered) = in_order(MODULES, None);
            let node = node.expect("every module starts");
            let _ = done.send((started, misordered, node.modules().len()));
            node.shutdown().await;
        });
    });
    let (started, misordered, listed) = outcome
        .recv_timeout(DEADLINE)
        .expect("the node started within the deadline");
    assert_eq!((started, listed), (MODULES, MODULES));
    assert!(misordered.is_empty(), "{misordered:?}");
}

#[test]
fn a_failed_start_stops_the_modules_after_it_from_starting() {
    let (node, started, misordered) = in_order(30, Some(12));
    match node {
        Err(NodeError::StartFailed { module, reason }) => {
            assert_eq!(module, "m12");
            assert!(reason.contains("broken on purpose"), "{reason}");
        }
        Err(other) => panic!("expected m12's StartFailed, got {other}"),
        Ok(node) => {
            node.shutdown_blocking();
            panic!("the node started although m12 could not")
        }
    }
    assert_eq!(started, 12, "modules after the failed one started");
    assert!(misordered.is_empty(), "{misordered:?}");
}

/// Takes far longer in `started` than it is given.
struct Slow;

impl Module for Slow {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, _ctx: &mut Context) -> Result<(), ModuleError> {
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }
}

#[test]
fn a_started_hook_past_its_deadline_is_a_failed_start_counted_against_the_budget() {
    let options = ModuleOptions::new()
        .start_timeout(Duration::from_millis(100))
        .budget(2, Duration::from_millis(10));
    let began = std::time::Instant::now();
    let outcome = Node::builder("slow-robot")
        .module_with("slow", || Slow, options)
        .start();
    match outcome {
        Err(NodeError::StartFailed { module, reason }) => {
            assert_eq!(module, "slow");
            assert!(
                reason.contains("3 failed starts in a row")
                    && reason.contains("`started` did not finish within the start deadline (100ms)"),
                "{reason}"
            );
        }
        Err(other) => panic!("expected StartFailed, got {other:?}"),
        Ok(_) => panic!("expected StartFailed, the node started"),
    }
    assert!(began.elapsed() >= Duration::from_millis(300));
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
async fn a_wait_with_no_end_ends_when_its_condition_holds() {
    let node = Node::builder("patient").start().unwrap();
    let waiter = node.clone();
    let waiting = tokio::spawn(async move {
        waiter
            .wait_until("incr to run", Duration::MAX, |n| n.reaches("incr"))
            .await
    });
    node.spawn("incr", || Incr, ModuleOptions::new()).await.unwrap();
    let waited = tokio::time::timeout(DEADLINE, waiting).await.expect("the wait ends");
    assert!(matches!(waited, Ok(Ok(()))), "{waited:?}");
    node.shutdown().await;
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

#[tokio::test]
async fn a_module_starts_once_what_it_needs_is_reachable() {
    let a = Node::builder("a").start().unwrap();
    let b = Node::builder("b").module("incr", || Incr).start().unwrap();
    let spawner = a.clone();
    let waiting = tokio::spawn(async move {
        let options = ModuleOptions::new().needs("incr");
        spawner.spawn("uses-incr", || Incr, options).await
    });
    a.wait_until("uses-incr waiting to start", DEADLINE, |node| {
        node.status("uses-incr") == Some(ModuleStatus::Starting)
    })
    .await
    .unwrap();
    assert!(!waiting.is_finished(), "it started without what it needs");
    // `incr` becomes reachable: `b` links to `a`.
    let endpoint = a.listen("mem://needs-a").await.unwrap();
    b.connect(&endpoint.to_string()).await.unwrap();
    waiting.await.unwrap().expect("started once `incr` was reachable");
    assert_eq!(a.status("uses-incr"), Some(ModuleStatus::Running));
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn a_module_whose_need_is_never_reachable_fails_its_start_saying_so() {
    let options = ModuleOptions::new()
        .needs("nobody")
        .start_timeout(Duration::from_millis(100))
        .restart(RestartPolicy::Never);
    let Err(NodeError::StartFailed { module, reason }) =
        Node::builder("needs").module_with("lonely", || Incr, options).start()
    else {
        panic!("started without what it needs")
    };
    assert_eq!(module, "lonely");
    assert!(
        reason.contains("module `nobody`, which it needs, was not reachable within the start deadline (100ms)"),
        "{reason}"
    );
}
