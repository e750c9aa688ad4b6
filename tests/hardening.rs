//! Children that fail slowly or fall silent, against real processes: every
//! start ends, every ask ends, a hung child is noticed, and what the node
//! says matches what happened.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use botbus::{
    AskError, ChildCommand, LinkConfig, Liveness, ModuleOptions, ModuleStatus, Node, NodeError, RestartPolicy,
};
use support::{child_services_binary, gone, kill_9, unique, Req, DEADLINE};

/// A child in `sh` that speaks JSON: its hello as node `node`, then `body`.
fn script_child(node: &str, body: &str) -> ChildCommand {
    let hello = format!(r#"{{"magic":"BBUS","version":1,"node":"{node}","codecs":["json"]}}"#);
    let script = format!("printf '%s\\n' '{hello}'\n{body}");
    ChildCommand::new("sh").arg("-c").arg(script)
}

/// The JSON line that announces `module`.
fn announce(module: &str) -> String {
    format!(r#"printf '%s\n' '{{"announce":{{"modules":["{module}"],"subscriptions":[]}}}}'"#)
}

/// A file the test's children append a line to each time they start.
struct LaunchLog(PathBuf);

impl LaunchLog {
    fn new() -> Self {
        Self(std::env::temp_dir().join(unique("botbus-launches")))
    }

    fn count(&self) -> usize {
        std::fs::read_to_string(&self.0).map_or(0, |text| text.lines().count())
    }

    fn record(&self) -> String {
        format!("echo launched >> '{}'", self.0.display())
    }
}

impl Drop for LaunchLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn assert_failed_start(result: Result<Node, NodeError>, module: &str, missing: &str) {
    let error = match result {
        Ok(node) => {
            node.shutdown_blocking();
            panic!("the node started although `{module}` never came up")
        }
        Err(error) => error,
    };
    let NodeError::StartFailed { module: failed, reason } = &error else {
        panic!("{error}")
    };
    assert_eq!(failed, module);
    assert!(
        reason.contains("restart budget spent (3 failed starts in a row"),
        "{reason}"
    );
    assert!(reason.contains(missing), "{reason}");
}

#[test]
fn a_silent_child_fails_its_starts_and_start_returns_an_error() {
    let launches = LaunchLog::new();
    // Handshakes, then says nothing at all: never announces its module.
    let silent = script_child("silent-node", &format!("{}\nexec sleep 60", launches.record()));
    let options = ModuleOptions::new()
        .start_timeout(Duration::from_millis(400))
        .budget(2, Duration::from_millis(100)); // a short window: only the failed starts in a row can spend it
    let began = Instant::now();
    let result = Node::builder("host").child_module("silent", silent, options).start();
    let took = began.elapsed();
    assert_failed_start(
        result,
        "silent",
        "completed its handshake but did not announce module `silent` within the start deadline (400ms)",
    );
    // The first start and two restarts, each ended by its deadline.
    assert_eq!(launches.count(), 3);
    assert!(took >= Duration::from_millis(3 * 400), "{took:?}");
    assert!(took < DEADLINE, "start() took {took:?}");
}

#[test]
fn a_child_that_sends_garbage_after_its_hello_fails_its_starts_and_start_returns_an_error() {
    let launches = LaunchLog::new();
    let garbage = script_child(
        "garbage-node",
        &format!("{}\necho 'this is not a frame'\nexec sleep 60", launches.record()),
    );
    // A long grace: a broken child must be killed at once, not given it.
    let options = ModuleOptions::new()
        .start_timeout(Duration::from_secs(5))
        .budget(2, Duration::from_millis(100))
        .stop_grace(Duration::from_secs(30));
    let began = Instant::now();
    let result = Node::builder("host").child_module("garbage", garbage, options).start();
    assert_failed_start(result, "garbage", "malformed JSON frame");
    assert_eq!(launches.count(), 3);
    assert!(began.elapsed() < DEADLINE, "{:?}", began.elapsed());
}

/// A running child that answers its first ask with `answer` (shell), then
/// stays alive: the link is broken, so the child is killed at once, not
/// after its 30 s grace, and its ask ends. Returns why the module failed.
async fn a_child_breaking_its_link_with(answer: &str, link: LinkConfig) -> String {
    let node = Node::builder("host").link_config(link).start().unwrap();
    let body = format!(
        "{}\nwhile read -r line; do case \"$line\" in *'\"ask\"'*) {answer}; break ;; esac; done\nexec sleep 60",
        announce("junk")
    );
    let options = ModuleOptions::new()
        .restart(RestartPolicy::Never)
        .stop_grace(Duration::from_secs(30));
    node.spawn_child("junk", script_child("junk-node", &body), options)
        .await
        .unwrap();
    let pid = node.child_pid("junk").unwrap();
    let began = Instant::now();
    let outcome = node
        .client("test")
        .ask::<_, u32>("junk", Req::Add(1, 1))
        .timeout(DEADLINE)
        .await;
    assert_eq!(outcome, Err(AskError::Stopped("junk".into())));
    node.wait_until("junk failed", DEADLINE, |node| {
        matches!(node.status("junk"), Some(ModuleStatus::Failed(_)))
    })
    .await
    .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "waited out the grace: {:?}",
        began.elapsed()
    );
    let Some(ModuleStatus::Failed(why)) = node.status("junk") else {
        unreachable!()
    };
    assert!(
        why.contains("link to child `junk`") && why.contains("broken") && why.contains("killed by signal 9 (SIGKILL)"),
        "{why}"
    );
    assert!(gone(pid), "the child still runs");
    node.shutdown().await;
    why
}

#[tokio::test]
async fn a_running_child_that_breaks_its_link_is_killed_at_once_not_after_its_grace() {
    let why = a_child_breaking_its_link_with("echo garbage", LinkConfig::default()).await;
    assert!(why.contains("malformed JSON frame"), "{why}");
}

#[tokio::test]
async fn a_running_child_that_sends_a_line_past_the_frame_limit_is_killed_at_once() {
    // The parent reads at most 64 KiB a frame (and says so in its hello);
    // the child writes 100,000 bytes without a line's end.
    let link = LinkConfig {
        max_frame_len: 64 * 1024,
        ..LinkConfig::default()
    };
    let answer = "head -c 100000 /dev/zero | tr '\\0' x";
    let why = a_child_breaking_its_link_with(answer, link).await;
    assert!(
        why.contains("oversize frame") && why.contains("the limit is 65536"),
        "{why}"
    );
}

#[tokio::test]
async fn a_child_that_stalls_mid_frame_is_declared_down_and_its_ask_ends() {
    let liveness = Liveness::new(Duration::from_millis(150), Duration::from_millis(600));
    let node = Node::builder("host").start().unwrap();
    // Announces, then answers the first ask with half a frame, and stalls:
    // alive, its pipe open, but mute.
    let body = format!(
        "{}\nwhile read -r line; do case \"$line\" in *'\"ask\"'*) printf '{{\"reply\":{{\"id\":'; break ;; esac; done\nexec sleep 60",
        announce("stall")
    );
    let options = ModuleOptions::new().restart(RestartPolicy::Never).liveness(liveness);
    node.spawn_child("stall", script_child("stall-node", &body), options)
        .await
        .unwrap();
    assert_eq!(node.status("stall"), Some(ModuleStatus::Running));
    let began = Instant::now();
    let outcome = node
        .client("test")
        .ask::<_, u32>("stall", Req::Add(1, 1))
        .timeout(Duration::from_secs(60))
        .await;
    let took = began.elapsed();
    assert_eq!(outcome, Err(AskError::Stopped("stall".into())), "after {took:?}");
    assert!(took < DEADLINE, "the ask waited {took:?}, near its own timeout");
    assert_ne!(node.status("stall"), Some(ModuleStatus::Running));
    node.wait_until("stall failed", DEADLINE, |node| {
        matches!(node.status("stall"), Some(ModuleStatus::Failed(_)))
    })
    .await
    .unwrap();
    let Some(ModuleStatus::Failed(why)) = node.status("stall") else {
        unreachable!()
    };
    assert!(
        why.contains("peer silent for") && why.contains("not even a pong"),
        "{why}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_quiet_child_that_answers_pings_stays_up_past_the_silence_limit() {
    // Short liveness, and nothing to say for many times the limit: the
    // child's node answers each ping, so nothing is declared down.
    let liveness = Liveness::new(Duration::from_millis(50), Duration::from_millis(200));
    let node = Node::builder("host")
        .link_config(LinkConfig {
            liveness,
            ..LinkConfig::default()
        })
        .child_module("echo", ChildCommand::new(child_services_binary()), ModuleOptions::new())
        .start()
        .unwrap();
    let pid = node.child_pid("echo").unwrap();
    let quiet_until = Instant::now() + Duration::from_secs(1);
    let client = node.client("test");
    // Wait out the quiet spell on a condition that never holds.
    let _ = node
        .wait_until("a second of quiet", quiet_until - Instant::now(), |node| {
            node.status("echo") != Some(ModuleStatus::Running)
        })
        .await;
    assert_eq!(node.status("echo"), Some(ModuleStatus::Running));
    assert_eq!(node.child_pid("echo"), Some(pid), "the child was restarted");
    let sum: u32 = client.ask("echo", Req::Add(2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    node.shutdown().await;
}

#[tokio::test]
async fn status_leaves_running_before_an_ask_to_a_dead_child_fails() {
    let node = support::echo_child_node();
    let client = node.client("test");
    let mut previous = 0;
    for trial in 0..20 {
        node.wait_until("echo running in a new child", DEADLINE, |node| {
            node.status("echo") == Some(ModuleStatus::Running) && node.child_pid("echo").is_some_and(|p| p != previous)
        })
        .await
        .unwrap();
        previous = node.child_pid("echo").unwrap();
        let mut call = client
            .ask::<_, u32>("echo", Req::Sleep)
            .timeout(DEADLINE)
            .start()
            .await
            .unwrap();
        assert!(call.next_event().await.is_some(), "the child is working on it");
        kill_9(previous);
        assert_eq!(call.reply().await, Err(AskError::Stopped("echo".into())));
        let status = node.status("echo");
        assert_ne!(
            status,
            Some(ModuleStatus::Running),
            "trial {trial}: the ask failed, the status did not change"
        );
    }
    node.shutdown().await;
}

#[tokio::test]
async fn status_leaves_running_before_an_ask_to_a_panicking_module_fails() {
    // In process a restart takes microseconds: the asker could already see
    // the *next* instance running. Modules that are not restarted show the
    // order plainly: failed before the ask ends.
    let names: Vec<String> = (0..20).map(|i| format!("crashy{i}")).collect();
    let never = ModuleOptions::new().restart(RestartPolicy::Never);
    let mut builder = Node::builder("host");
    for name in &names {
        builder = builder.module_with(name, support::Service::quiet, never.clone());
    }
    let node = builder.start().unwrap();
    let client = node.client("test");
    for name in &names {
        let outcome = client.ask::<_, u32>(name, Req::Panic).await;
        assert_eq!(outcome, Err(AskError::Stopped(name.clone())));
        let status = node.status(name);
        assert!(
            matches!(status, Some(ModuleStatus::Restarting | ModuleStatus::Failed(_))),
            "{name}: {status:?}"
        );
    }
    node.shutdown().await;
}
