//! Modules in child processes, against real processes: crashes, garbage on
//! the protocol stream, large and oversize payloads, stray output from module
//! code, and a parent that dies.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use botbus::{AskError, ChildCommand, ModuleOptions, ModuleStatus, Node, NodeError, RestartPolicy};
use support::{child_services_binary, example_binary, gone, kill_9, Placement, Req, World, DEADLINE};

#[tokio::test]
async fn kill_9_mid_ask_ends_the_ask_and_the_restarted_child_answers() {
    let world = World::new(Placement::Child).await;
    let first = world.a.child_pid("echo").expect("echo runs in a child");
    let call = world.sleeping_call().await;
    kill_9(first);
    let outcome = tokio::time::timeout(DEADLINE, call.reply())
        .await
        .expect("the ask ends when its child dies, not at its timeout");
    assert_eq!(outcome, Err(AskError::Stopped("echo".into())));
    // The supervisor starts a new child, and it answers.
    world
        .a
        .wait_until("echo restarted in a new process", DEADLINE, |node| {
            node.status("echo") == Some(ModuleStatus::Running) && node.child_pid("echo").is_some_and(|pid| pid != first)
        })
        .await
        .unwrap();
    let sum: u32 = world.client.ask("echo", Req::Add(20, 22)).await.unwrap();
    assert_eq!(sum, 42);
    // The rest of the robot never noticed.
    let sum: u32 = world.client.ask("crashy", Req::Add(1, 1)).await.unwrap();
    assert_eq!(sum, 2);
    assert!(gone(first));
    world.finish().await;
}

#[tokio::test]
async fn println_in_module_code_does_not_touch_the_frame_stream() {
    let world = World::new(Placement::Child).await;
    // Text that would be a frame length prefix, or a JSON line, if it
    // reached the protocol stream.
    for text in ["\0\0\0\u{5}hello", "{\"bye\":{\"reason\":\"not me\"}}", "plain text"] {
        let len: u32 = world.client.ask("echo", Req::Print(text.into())).await.unwrap();
        assert_eq!(len as usize, text.len());
    }
    let sum: u32 = world.client.ask("echo", Req::Add(1, 2)).await.unwrap();
    assert_eq!(sum, 3);
    assert_eq!(world.a.status("echo"), Some(ModuleStatus::Running));
    world.finish().await;
}

/// A child that completes the handshake in JSON and announces `junk`, then
/// answers the first ask it reads with a line that is not a frame.
fn garbage_child() -> ChildCommand {
    let script = r#"
        printf '%s\n' '{"magic":"BBUS","version":1,"node":"junk","codecs":["json"]}' \
            '{"announce":{"modules":["junk"],"subscriptions":[]}}'
        while read -r line; do
            case "$line" in *'"ask"'*) echo 'this is not a frame'; break ;; esac
        done
        exec sleep 30
    "#;
    ChildCommand::new("sh").arg("-c").arg(script)
}

#[tokio::test]
async fn a_child_writing_garbage_loses_its_link_with_an_error_naming_it_and_the_node_lives() {
    let node = Node::builder("host")
        .module("echo", support::Service::new)
        .start()
        .unwrap();
    let never = ModuleOptions::new().restart(RestartPolicy::Never);
    node.spawn_child("junk", garbage_child(), never.clone())
        .await
        .expect("ready: it announced itself");
    let client = node.client("test");
    // The ask in flight ends at once when the link goes.
    let outcome = client.ask::<_, u32>("junk", Req::Add(1, 1)).timeout(DEADLINE).await;
    assert_eq!(outcome, Err(AskError::Stopped("junk".into())));
    node.wait_until("junk failed", DEADLINE, |node| {
        matches!(node.status("junk"), Some(ModuleStatus::Failed(_)))
    })
    .await
    .unwrap();
    let Some(ModuleStatus::Failed(why)) = node.status("junk") else {
        unreachable!()
    };
    assert!(
        why.contains("child `junk`") && why.contains("malformed JSON frame"),
        "{why}"
    );
    assert!(!node.modules().contains(&"junk".to_owned()));

    // Garbage before the hello (output before the node took its stdio) is
    // refused by the handshake, by name.
    let early = ChildCommand::new("sh")
        .arg("-c")
        .arg("echo 'starting up...'; exec sleep 30");
    let error = node.spawn_child("early", early, never).await.unwrap_err();
    assert!(
        matches!(&error, NodeError::StartFailed { module, reason }
            if module == "early" && reason.contains("not a botbus node") && reason.contains("starting up")),
        "{error}"
    );

    // The node and its other module carry on.
    let sum: u32 = client.ask("echo", Req::Add(2, 2)).await.unwrap();
    assert_eq!(sum, 4);
    node.shutdown().await;
}

#[tokio::test]
async fn a_1_mib_payload_round_trips_intact_and_an_oversize_one_is_refused() {
    let node = Node::builder("big")
        .child_module(
            "bouncer",
            ChildCommand::new(child_services_binary()),
            ModuleOptions::new(),
        )
        .start()
        .unwrap();
    let client = node.client("test");
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let back: Vec<u8> = client.ask("bouncer", payload.clone()).timeout(DEADLINE).await.unwrap();
    assert!(back == payload, "the 1 MiB payload came back changed");

    let oversize = vec![7u8; botbus::crates::core::DEFAULT_MAX_FRAME_LEN + 1];
    let refused = client
        .ask::<_, Vec<u8>>("bouncer", oversize)
        .timeout(DEADLINE)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AskError::BadPayload(why) if why.contains("oversize frame")),
        "{refused:?}"
    );
    // Refused before it was sent: the link and the child are fine.
    let back: Vec<u8> = client.ask("bouncer", vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(back, vec![1, 2, 3]);
    node.shutdown().await;
}

#[test]
fn killing_the_parent_takes_its_child_down_within_a_second() {
    let mut robot = Command::new(example_binary("robot"))
        .args(["--seconds", "60", "--child", "motor"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("robot starts");
    let stderr = BufReader::new(robot.stderr.take().expect("piped"));
    let mut child_pid = None;
    for line in stderr.lines() {
        let line = line.expect("robot log");
        if line.contains("child running") {
            let pid = line
                .split("pid=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            child_pid = pid.and_then(|p| p.parse::<u32>().ok());
        }
        if line.contains("robot up") {
            break;
        }
    }
    let child = child_pid.expect("the robot logged its child's pid before `robot up`");
    assert!(!gone(child));
    robot.kill().expect("SIGKILL the parent");
    robot.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(1);
    while !gone(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let still_there = !gone(child);
    if still_there {
        kill_9(child); // clean up before failing
    }
    assert!(!still_there, "child {child} outlived its parent by more than a second");
}
