//! A module's own thread (`ModuleOptions::own_thread`) is the module's: it
//! ends when the module ends for good, and when a start that made it fails.
//! Threads are counted from the kernel (`/proc/self/task`), so this binary
//! holds this one test, and no other test's threads come and go beside it.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use botbus::{Context, Module, ModuleError, ModuleOptions, Node, NodeError};
use support::DEADLINE;

/// Answers with where the kernel lists the thread it runs on, under
/// `/proc`: `<pid>/task/<tid>`.
struct WhichThread;

impl Module for WhichThread {
    type Message = ();
    type Reply = String;

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<String, ModuleError> {
        let task = std::fs::read_link("/proc/thread-self").map_err(|e| ModuleError::new(e.to_string()))?;
        Ok(task.display().to_string())
    }
}

/// The threads of this process, as the kernel counts them.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
}

/// Waits until `done` holds, failing with `what` at the deadline.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < DEADLINE, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_modules_own_thread_ends_with_the_module_and_with_a_start_that_fails() {
    let node = Node::builder("threads")
        .module_with("resident", || WhichThread, ModuleOptions::new().own_thread())
        .start()
        .expect("the node starts");
    // The thread `module` runs on, as a path that exists while it runs.
    let thread_of = |module: &'static str| -> PathBuf {
        let client = node.client("test");
        let task: String = node
            .block_on(async move { client.ask(module, ()).timeout(DEADLINE).await })
            .expect("node up")
            .expect("it answers");
        Path::new("/proc").join(task)
    };
    let spawn = |module: &'static str| {
        let node = node.clone();
        let options = ModuleOptions::new().own_thread();
        node.clone()
            .block_on(async move { node.spawn(module, || WhichThread, options).await })
            .expect("node up")
    };
    let resident = thread_of("resident");
    let before = threads();

    for round in 0..5 {
        spawn("visitor").expect("the visitor starts");
        let task = thread_of("visitor");
        assert!(task.exists(), "round {round}: its thread runs ({})", task.display());
        assert_ne!(task, resident, "a thread of its own");
        let stopper = node.clone();
        node.block_on(async move { stopper.stop_module("visitor").await })
            .expect("node up")
            .expect("the visitor stops");
        wait_for(&format!("round {round}: the visitor's thread ends"), || !task.exists());
    }
    wait_for("the process is back to its threads before the visitors", || {
        threads() == before
    });

    for round in 0..5 {
        let refused = spawn("resident");
        assert!(
            matches!(refused, Err(NodeError::DuplicateModule(ref name)) if name == "resident"),
            "round {round}: {refused:?}"
        );
    }
    wait_for("the threads made for refused starts end", || threads() == before);
    assert_eq!(
        thread_of("resident"),
        resident,
        "the resident module runs on, on its thread"
    );
    node.shutdown_blocking();
}
