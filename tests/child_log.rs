//! What the node logs about a child matches what happened: one SIGKILL is
//! one `child lost` event at one level, with the exit status as people read
//! it. Alone in its test binary, because it captures the process's log.

mod support;

use std::io::Write;
use std::sync::Mutex;

use botbus::{AskError, ModuleStatus};
use support::{kill_9, Req, DEADLINE};

/// The log lines about the child, as the test's subscriber wrote them.
static LOG: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().push_str(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_sigkill_is_one_child_lost_event_at_one_level() {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(|| Capture)
        .with_ansi(false)
        .without_time()
        .init();
    let node = support::echo_child_node();
    let client = node.client("test");
    const KILLS: usize = 8;
    let mut previous = 0;
    for kill in 0..KILLS {
        node.wait_until("echo running in a new child", DEADLINE, |node| {
            node.status("echo") == Some(ModuleStatus::Running) && node.child_pid("echo").is_some_and(|p| p != previous)
        })
        .await
        .unwrap();
        previous = node.child_pid("echo").unwrap();
        // Half the kills land mid-ask, half while the child is idle: the
        // loss may be noticed by the exit or by the link first.
        if kill % 2 == 0 {
            let mut call = client
                .ask::<_, u32>("echo", Req::Sleep)
                .timeout(DEADLINE)
                .start()
                .await
                .unwrap();
            assert!(call.next_event().await.is_some());
            kill_9(previous);
            assert_eq!(call.reply().await, Err(AskError::Stopped("echo".into())));
        } else {
            kill_9(previous);
        }
    }
    node.wait_until("echo back after the last kill", DEADLINE, |node| {
        node.status("echo") == Some(ModuleStatus::Running) && node.child_pid("echo").is_some_and(|p| p != previous)
    })
    .await
    .unwrap();
    node.shutdown().await;

    let log = LOG.lock().unwrap().clone();
    let lost: Vec<&str> = log.lines().filter(|line| line.contains("child lost")).collect();
    assert_eq!(lost.len(), KILLS, "one `child lost` per kill:\n{log}");
    for line in &lost {
        assert!(line.trim_start().starts_with("WARN"), "{line}");
        assert!(line.contains("killed by signal 9 (SIGKILL)"), "{line}");
        assert!(
            !line.contains("ExitStatus") && !line.contains("unix_wait_status"),
            "{line}"
        );
    }
    assert!(
        !log.contains("child exited"),
        "a second wording for the same event:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|line| line.trim_start().starts_with("ERROR") && line.contains("module=echo")),
        "a kill logged at ERROR:\n{log}"
    );
}
