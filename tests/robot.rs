//! The robot example tells the same story whichever module runs in a child
//! process: every module's part of the trace appears, and it exits cleanly.

mod support;

use std::process::{Command, Stdio};

/// What each module is heard saying in a normal run.
const STORY: [(&str, &str); 7] = [
    ("motor", "speed set"),
    ("led", "colour="),
    ("planner", "plan cancelled by the asker"),
    ("logger", "published in the last second"),
    ("controller", "obstacle distance changed the plan"),
    ("mission", "changed my mind: cancelling the plan"),
    // The sensor says nothing itself; the logger counts its readings.
    ("sensor", "sensors/front/range (robot.Range)"),
];

#[test]
fn the_robot_tells_the_same_story_with_any_module_in_a_child() {
    let robot = support::example_binary("robot");
    let runs: Vec<_> = STORY
        .iter()
        .map(|(child, _)| {
            let run = Command::new(&robot)
                .args(["--seconds", "2", "--child", child])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("robot starts");
            (*child, run)
        })
        .collect();
    for (child, run) in runs {
        let output = run.wait_with_output().expect("robot runs to the end");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "robot with `{child}` in a child: {}\n{log}",
            output.status
        );
        assert!(
            log.contains(&format!("child running module={child}")),
            "`{child}` did not run in a child:\n{log}"
        );
        for (module, line) in STORY {
            assert!(
                log.contains(line),
                "with `{child}` in a child, `{module}` never said `{line}`:\n{log}"
            );
        }
        assert!(log.contains("robot stopped cleanly"), "{log}");
        // The child's lines name their module once, and speeds read as
        // written (an f32 widened to f64 would say 0.800000011920929).
        for line in log
            .lines()
            .filter(|line| line.contains(&format!("module={child} pid=")))
        {
            assert_eq!(line.matches("module=").count(), 1, "{line}");
        }
        assert!(log.contains("to=0.8") || log.contains("to=0.3"), "{log}");
        assert!(!log.contains("0.80000001") && !log.contains("0.30000001"), "{log}");
    }
}
