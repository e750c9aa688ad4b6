//! Launch files: every way a file can be wrong is one error naming the
//! file, the line and column, the field, and what was expected.
//! (`tests/robot.rs` runs the robot example under the four launch files in
//! `examples/launch/` and checks that they tell the same story.)

mod support;

use botbus::launch::{Launch, Role};
use botbus::{Context, Module, ModuleError, NodeBuilder};

struct Motor;

impl Module for Motor {
    type Message = f32;
    type Reply = f32;

    async fn process(&mut self, speed: f32, _ctx: &mut Context) -> Result<f32, ModuleError> {
        Ok(speed)
    }
}

fn register(builder: NodeBuilder) -> NodeBuilder {
    builder
        .register("motor", |(): ()| Motor)
        .register("led", |(): ()| Motor)
}

/// The error `text` gets, as one line.
fn error(text: &str) -> String {
    match Launch::parse(text, "robot.toml") {
        Err(error) => error.to_string(),
        Ok(launch) => match launch.builder(&Role::Robot, register) {
            Err(error) => error.to_string(),
            Ok(builder) => panic!("expected an error, got {builder:?}"),
        },
    }
}

const NODE: &str = "[node]\nname = \"robot\"\n";

#[test]
fn a_good_file_builds_the_node_it_describes() {
    let text = format!(
        "{NODE}link_thread = \"control\"\n\n[[module]]\nname = \"motor\"\ntype = \"motor\"\nplacement = \"child\"\nrestart = \"always\"\n\
         budget = {{ restarts = 5, within = \"10s\" }}\nmailbox = 16\nthread = \"control\"\nstart_timeout = \"2s\"\n\n\
         [[module]]\nname = \"front-led\"\ntype = \"led\"\nneeds = [\"motor\"]\n"
    );
    let builder = Launch::parse(&text, "robot.toml")
        .unwrap()
        .builder(&Role::Robot, register)
        .unwrap();
    let shown = format!("{builder:?}");
    assert!(shown.contains(r#"modules: ["motor", "front-led"]"#), "{shown}");
    assert!(shown.contains(r#"link_thread: Some("control")"#), "{shown}");
}

#[test]
fn malformed_toml_is_named_by_line_and_column() {
    assert_eq!(
        error("[node]\nname = \"robot\"\nlisten = [\"pipe://x\"\n"),
        "robot.toml:3:21: field `listen`: unclosed array, expected `]`"
    );
}

#[test]
fn a_missing_field_is_named() {
    assert_eq!(
        error(&format!("{NODE}\n[[module]]\nname = \"motor\"\n")),
        "robot.toml:4:1: missing field `type`"
    );
    assert_eq!(error("[node]\nlisten = []\n"), "robot.toml:1:1: missing field `name`");
}

#[test]
fn an_unknown_field_is_named_with_the_fields_expected() {
    let said = error(&format!(
        "{NODE}\n[[module]]\nname = \"motor\"\ntype = \"motor\"\nrestrat = \"never\"\n"
    ));
    assert!(
        said.starts_with("robot.toml:7:1: unknown field `restrat`, expected one of"),
        "{said}"
    );
    assert!(said.contains("`restart`"), "{said}");
}

#[test]
fn an_unknown_module_type_lists_the_types_the_binary_registers() {
    assert_eq!(
        error(&format!("{NODE}\n[[module]]\nname = \"arm\"\ntype = \"arm\"\n")),
        "robot.toml:6:8: module `arm`, field `type`: unknown module type `arm`; this binary registers led, motor"
    );
}

#[test]
fn an_unknown_placement_says_what_placements_there_are() {
    assert_eq!(
        error(&format!(
            "{NODE}\n[[module]]\nname = \"motor\"\ntype = \"motor\"\nplacement = \"cloud\"\n"
        )),
        "robot.toml:7:13: module `motor`, field `placement`: unknown placement `cloud`; expected `thread`, \
         `child`, `pipe:pipe://<name>` or `worker:<worker name>`"
    );
    assert_eq!(
        error(&format!(
            "{NODE}\n[[module]]\nname = \"motor\"\ntype = \"motor\"\nplacement = \"worker:gpu\"\n"
        )),
        "robot.toml:7:13: module `motor`, field `placement`: no worker `gpu` is declared (add it under [[worker]])"
    );
}

#[test]
fn a_token_written_in_the_file_is_refused() {
    assert_eq!(
        error("[node]\nname = \"robot\"\ntoken = \"hunter2hunter2hunter2\"\n"),
        "robot.toml:3:9: node, field `token`: a token must not be written in the launch file; put it in a \
         file only its owner can read and name that file with `token_file`"
    );
}

#[test]
fn bad_values_are_named_with_what_was_expected() {
    let module = |line: &str| format!("{NODE}\n[[module]]\nname = \"motor\"\ntype = \"motor\"\n{line}\n");
    assert_eq!(
        error(&module("start_timeout = \"soon\"")),
        "robot.toml:7:17: module `motor`, field `start_timeout`: `soon` is not a duration (expected number at 0); \
         expected e.g. `500ms`, `5s`, `1m`"
    );
    assert_eq!(
        error(&module("restart = \"sometimes\"")),
        "robot.toml:7:11: module `motor`, field `restart`: unknown policy `sometimes`; expected `never`, \
         `on-failure` or `always`"
    );
    assert_eq!(
        error(&module("mailbox = \"big\"")),
        "robot.toml:7:11: field `mailbox`: invalid type: string \"big\", expected usize"
    );
    let twice = format!(
        "{NODE}\n[[module]]\nname = \"motor\"\ntype = \"motor\"\n\n[[module]]\nname = \"motor\"\ntype = \"led\"\n"
    );
    assert_eq!(
        error(&twice),
        "robot.toml:9:8: module `motor`, field `name`: a second module of this name"
    );
}

#[test]
fn a_token_file_others_can_read_and_a_missing_file_are_named() {
    let scratch = support::secrets::Scratch::new("launch");
    let open = scratch.path().join("open.token");
    std::fs::write(&open, "a token of more than sixteen bytes").unwrap();
    let file = scratch.path().join("robot.toml");
    std::fs::write(&file, "[node]\nname = \"robot\"\ntoken_file = \"open.token\"\n").unwrap();
    let said = Launch::read(&file)
        .unwrap()
        .builder(&Role::Robot, register)
        .unwrap_err()
        .to_string();
    assert!(
        said.starts_with(&format!(
            "{}:3:14: node, field `token_file`: token file",
            file.display()
        )),
        "{said}"
    );
    assert!(said.contains("chmod 600"), "{said}");
    let missing = scratch.path().join("missing.toml");
    let said = Launch::read(&missing).unwrap_err().to_string();
    assert!(
        said.starts_with(&format!("{}: cannot read the launch file", missing.display())),
        "{said}"
    );
}
