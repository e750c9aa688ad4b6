//! CPU affinity as placement (`ModuleOptions::cpus`, Linux): a module's
//! own thread, a named thread with everything on it, and every thread of a
//! real child process run only on the CPUs named; what cannot be pinned is
//! refused, naming why. What a thread may run on is read back from the
//! kernel (`/proc/…/status`), not from botbus.
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use botbus::{ChildCommand, Context, Module, ModuleError, ModuleOptions, Node, NodeError, RestartPolicy};
use support::{child_services_binary, Req};

/// The CPUs a thread may run on, as the kernel lists them (`0-1`, `1`).
fn cpus_allowed(status: &str) -> String {
    let text = std::fs::read_to_string(status).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_owned())
        .unwrap_or_default()
}

/// The CPUs this test may use, one by one.
fn usable_cpus() -> Vec<usize> {
    let mut cpus = Vec::new();
    for range in cpus_allowed("/proc/self/status").split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last);
        }
    }
    cpus
}

/// The last CPU this test may use, if it may use two or more: pinned
/// there, a thread's list differs from an unpinned one's, so a pin that
/// did not happen is seen.
fn a_cpu_to_pin_to() -> Option<usize> {
    let cpus = usable_cpus();
    if cpus.len() < 2 {
        eprintln!("SKIPPED: pinning cannot be told from not pinning with one usable CPU ({cpus:?})");
        return None;
    }
    cpus.last().copied()
}

/// Answers with the CPUs the thread it runs on may use.
struct WhereAmI;

impl Module for WhereAmI {
    type Message = ();
    type Reply = String;

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<String, ModuleError> {
        Ok(cpus_allowed("/proc/thread-self/status"))
    }
}

fn start(builder: botbus::NodeBuilder) -> Node {
    builder.start().expect("the node starts")
}

fn ask_where(node: &Node, module: &str) -> String {
    let client = node.client("test");
    let module = module.to_owned();
    node.block_on(async move { client.ask(&module, ()).timeout(Duration::from_secs(10)).await })
        .expect("node up")
        .expect("it answers")
}

#[test]
fn a_module_on_its_own_or_a_named_thread_runs_only_on_its_cpus_and_so_does_the_rest_of_that_thread() {
    let Some(cpu) = a_cpu_to_pin_to() else { return };
    let unpinned = cpus_allowed("/proc/self/status");
    let node = start(
        Node::builder("pinned")
            .module_with("own", || WhereAmI, ModuleOptions::new().own_thread().cpus([cpu]))
            .module_with("io-first", || WhereAmI, ModuleOptions::new().thread("io"))
            .module_with("io-pinned", || WhereAmI, ModuleOptions::new().thread("io").cpus([cpu]))
            .module_with("io-same", || WhereAmI, ModuleOptions::new().thread("io").cpus([cpu]))
            .module_with("free", || WhereAmI, ModuleOptions::new().own_thread()),
    );
    let pinned = cpu.to_string();
    assert_eq!(ask_where(&node, "own"), pinned);
    // A pinned named thread carries every module on it, those that came
    // before the pin included.
    assert_eq!(ask_where(&node, "io-pinned"), pinned);
    assert_eq!(ask_where(&node, "io-same"), pinned);
    assert_eq!(ask_where(&node, "io-first"), pinned);
    // Nothing else moved.
    assert_eq!(ask_where(&node, "free"), unpinned);
    assert_eq!(cpus_allowed("/proc/thread-self/status"), unpinned);
    node.shutdown_blocking();
}

#[test]
fn a_child_placed_on_a_cpu_runs_every_thread_there_and_answers() {
    let Some(cpu) = a_cpu_to_pin_to() else { return };
    let node = start(Node::builder("parent").child_module(
        "echo",
        ChildCommand::new(child_services_binary()),
        ModuleOptions::new().cpus([cpu]),
    ));
    let client = node.client("test");
    let sum: u32 = node
        .block_on(async move { client.ask("echo", Req::Add(40, 2)).await })
        .expect("node up")
        .expect("the pinned child answers");
    assert_eq!(sum, 42);
    let pid = node.child_pid("echo").expect("echo runs in a child");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the child's threads")
        .map(|task| cpus_allowed(&format!("{}/status", task.expect("a thread").path().display())))
        .collect();
    assert!(threads.len() > 1, "a botbus child runs several threads: {threads:?}");
    assert!(threads.iter().all(|cpus| *cpus == cpu.to_string()), "{threads:?}");
    // The parent's own threads are not pinned by it.
    assert_eq!(
        cpus_allowed("/proc/self/status"),
        cpus_allowed("/proc/thread-self/status")
    );
    assert_ne!(cpus_allowed("/proc/self/status"), cpu.to_string());
    node.shutdown_blocking();
}

fn refusal(builder: botbus::NodeBuilder) -> (String, String) {
    match builder.start() {
        Err(NodeError::StartFailed { module, reason }) => (module, reason),
        Err(other) => panic!("expected a StartFailed, got {other}"),
        Ok(node) => {
            node.shutdown_blocking();
            panic!("the node started with CPUs it cannot have")
        }
    }
}

#[test]
fn cpus_that_cannot_be_had_are_refused_naming_why_and_the_module() {
    let usable = usable_cpus();
    let first = usable[0];
    let not_online = 1000; // a CPU the kernel can name but this machine lacks

    let (module, reason) =
        refusal(Node::builder("n").module_with("m", || WhereAmI, ModuleOptions::new().cpus([first])));
    assert_eq!(module, "m");
    assert!(reason.contains("not a thread of the shared pool"), "{reason}");

    let (_, reason) =
        refusal(Node::builder("n").module_with("m", || WhereAmI, ModuleOptions::new().own_thread().cpus([])));
    assert!(reason.contains("a set of no CPU"), "{reason}");

    let (_, reason) =
        refusal(Node::builder("n").module_with("m", || WhereAmI, ModuleOptions::new().own_thread().cpus([1 << 20])));
    assert!(reason.contains("CPU 1048576 is past the highest"), "{reason}");

    let (_, reason) =
        refusal(Node::builder("n").module_with("m", || WhereAmI, ModuleOptions::new().own_thread().cpus([not_online])));
    assert!(reason.contains("cannot run on CPUs [1000]"), "{reason}");
    assert!(
        reason.contains(&format!("this process may use CPUs {usable:?}")),
        "{reason}"
    );

    let (module, reason) = refusal(
        Node::builder("n")
            .module_with("a", || WhereAmI, ModuleOptions::new().thread("io").cpus([first]))
            .module_with(
                "b",
                || WhereAmI,
                ModuleOptions::new().thread("io").cpus([first, not_online]),
            ),
    );
    assert_eq!(module, "b");
    assert!(
        reason.contains(&format!(
            "thread `io` already runs on CPUs [{first}], not [{first}, 1000]"
        )),
        "{reason}"
    );

    // A module on a worker runs on that worker's threads, not this node's.
    let (module, reason) = refusal(Node::builder("n").worker_module(
        "planner",
        "gpu",
        "planner",
        &(),
        ModuleOptions::new().own_thread().cpus([first]),
    ));
    assert_eq!(module, "planner");
    assert!(reason.contains("not a module on a worker"), "{reason}");

    // A child: refused by the kernel in the child before its program runs.
    let (module, reason) = refusal(Node::builder("n").child_module(
        "echo",
        ChildCommand::new(child_services_binary()),
        ModuleOptions::new().restart(RestartPolicy::Never).cpus([not_online]),
    ));
    assert_eq!(module, "echo");
    assert!(reason.contains("cannot run it on CPUs [1000]"), "{reason}");
}

#[test]
fn a_launch_file_places_a_module_on_cpus_and_names_a_bad_cpus_field() {
    use botbus::launch::{Launch, Role};
    let register = |builder: botbus::NodeBuilder| builder.register("where", |(): ()| WhereAmI);
    let file = |cpus: &str| {
        format!("[node]\nname = \"robot\"\n\n[[module]]\nname = \"pinned\"\ntype = \"where\"\nthread = \"own\"\ncpus = {cpus}\n")
    };
    let said = match Launch::parse(&file("\"1\""), "robot.toml") {
        Err(error) => error.to_string(),
        Ok(_) => panic!("cpus = \"1\" was taken"),
    };
    assert!(
        said.starts_with("robot.toml:8:8: field `cpus`: invalid type: string"),
        "{said}"
    );

    let Some(cpu) = a_cpu_to_pin_to() else { return };
    let launch = Launch::parse(&file(&format!("[{cpu}]")), "robot.toml").expect("a good file");
    let node = start(launch.builder(&Role::Robot, register).expect("its node"));
    assert_eq!(ask_where(&node, "pinned"), cpu.to_string());
    node.shutdown_blocking();
}
