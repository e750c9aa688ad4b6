//! A whole robot in one binary: seven modules on one node.
//!
//! * `sensor` publishes a range reading on `sensors/front/range` at 20 Hz (a tick).
//! * `controller` subscribes to `sensors/*/range`, asks `motor` for a speed and
//!   tells `led` when the state changes.
//! * `motor` answers speed commands; `led` shows a colour.
//! * `logger` subscribes to `**` and prints a summary each second.
//! * `mission` starts a long plan on `planner`, follows its progress, and
//!   cancels it half-way; `planner` notices and stops.
//!
//! Run it: `cargo run --example robot` (add `-- --seconds N` to run longer,
//! `-- --readings N` for a sensor that stops after N readings; Ctrl-C stops
//! it cleanly at any time).
//!
//! Any module can run in a child process instead — a re-launched copy of
//! this binary — with no change to its code: `-- --child motor` (repeat the
//! flag for more), or `ROBOT_CHILD=motor,planner`. The trace is the same;
//! the child's lines arrive through the parent's log, tagged with the module.
//!
//! Or in a separately started process that joins this one through a pipe:
//!
//! ```text
//! cargo run --example robot -- --listen pipe://robot --joined motor
//! cargo run --example robot -- --join pipe://robot --module motor
//! ```
//!
//! Or on a remote worker — this same binary on another machine, started as
//! a worker that hosts the robot's module types — over TCP, both proving the
//! token in `ROBOT_TOKEN`:
//!
//! ```text
//! ROBOT_TOKEN=... cargo run --example robot -- --listen tcp://0.0.0.0:7000 --on-worker planner
//! ROBOT_TOKEN=... cargo run --example robot -- --worker --join tcp://robot.local:7000
//! ```
//!
//! Or as a launch file says — where each module runs, and the node's links,
//! in TOML (`examples/launch/`): `cargo run --example robot -- --launch
//! examples/launch/threads.toml`; a process for a module placed
//! `pipe:<endpoint>` runs the same file with `--role module:<name>`, and a
//! worker with `--role worker:<name>`.

use std::collections::BTreeMap;
use std::time::Duration;

use botbus::{CallEvent, Context, LinkConfig, Message, Module, ModuleError, ModuleOptions, Node, Payload};
use serde::{Deserialize, Serialize};

/// A range reading from a distance sensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Range {
    seq: u64,
    metres: f32,
}
impl Message for Range {
    const NAME: &'static str = "robot.Range";
}

/// A speed command for the motor, in m/s.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetSpeed(f32);
impl Message for SetSpeed {
    const NAME: &'static str = "robot.SetSpeed";
}

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Colour {
    Green,
    Amber,
    Red,
}
impl Message for Colour {
    const NAME: &'static str = "robot.Colour";
}

/// A planning request: how many steps to plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    steps: u32,
}
impl Message for Plan {
    const NAME: &'static str = "robot.Plan";
}

struct Sensor {
    seq: u64,
    /// Stop after this many readings (`--readings N`), so that a run tells a
    /// story of known length, the same in every placement.
    readings: Option<u64>,
}

impl Module for Sensor {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.tick_every(Duration::from_millis(50)); // 20 Hz
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        if self.readings.is_some_and(|readings| self.seq >= readings) {
            ctx.stop_ticks();
            return Ok(());
        }
        self.seq += 1;
        // An obstacle approaches, then recedes: 2.0 m down to 0.2 m and back.
        let phase = (self.seq % 40) as f32 / 40.0;
        let metres = 0.2 + 1.8 * (2.0 * (phase - 0.5)).abs();
        ctx.publish("sensors/front/range", Range { seq: self.seq, metres })
            .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Controller {
    colour: Option<Colour>,
}

impl Module for Controller {
    type Message = Range;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("sensors/*/range")
            .map_err(|e| ModuleError::new(e.to_string()))?;
        Ok(())
    }

    async fn process(&mut self, range: Range, ctx: &mut Context) -> Result<(), ModuleError> {
        let (speed, colour) = match range.metres {
            m if m < 0.5 => (0.0, Colour::Red),
            m if m < 1.0 => (0.3, Colour::Amber),
            _ => (1.0, Colour::Green),
        };
        let applied: f32 = ctx
            .ask("motor", SetSpeed(speed))
            .timeout(Duration::from_millis(200))
            .await?;
        if self.colour != Some(colour) {
            self.colour = Some(colour);
            tracing::info!(
                module = ctx.name(),
                seq = range.seq,
                metres = %format_args!("{:.2}", range.metres),
                // `%`: an f32 as written (0.8); a plain field would be
                // widened to f64 and print 0.800000011920929.
                speed = %applied,
                "obstacle distance changed the plan"
            );
            ctx.tell("led", colour).await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Motor {
    speed: f32,
}

impl Module for Motor {
    type Message = SetSpeed;
    type Reply = f32;

    async fn process(&mut self, SetSpeed(speed): SetSpeed, ctx: &mut Context) -> Result<f32, ModuleError> {
        let speed = speed.clamp(0.0, 0.8); // the motor's own limit
        if speed != self.speed {
            tracing::info!(module = ctx.name(), from = %self.speed, to = %speed, "speed set");
            self.speed = speed;
        }
        Ok(speed)
    }

    async fn stopping(&mut self, ctx: &mut Context) {
        tracing::info!(module = ctx.name(), "braking to 0 before stopping");
    }
}

struct Led;

impl Module for Led {
    type Message = Colour;
    type Reply = ();

    async fn process(&mut self, colour: Colour, ctx: &mut Context) -> Result<(), ModuleError> {
        tracing::info!(module = ctx.name(), ?colour, "led");
        Ok(())
    }
}

#[derive(Default)]
struct Logger {
    counts: BTreeMap<String, u32>,
}

impl Module for Logger {
    type Message = Payload; // anything, undecoded
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("**").map_err(|e| ModuleError::new(e.to_string()))?;
        ctx.tick_every(Duration::from_secs(1));
        Ok(())
    }

    async fn process(&mut self, message: Payload, ctx: &mut Context) -> Result<(), ModuleError> {
        let key = format!("{} ({})", ctx.topic().unwrap_or("direct"), message.name());
        *self.counts.entry(key).or_default() += 1;
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        for (topic, count) in std::mem::take(&mut self.counts) {
            tracing::info!(module = ctx.name(), %topic, count, "published in the last second");
        }
        Ok(())
    }

    async fn stopping(&mut self, ctx: &mut Context) {
        for (topic, count) in std::mem::take(&mut self.counts) {
            tracing::info!(module = ctx.name(), %topic, count, "published since the last count");
        }
    }
}

struct Planner;

impl Module for Planner {
    type Message = Plan;
    type Reply = u32;

    async fn process(&mut self, plan: Plan, ctx: &mut Context) -> Result<u32, ModuleError> {
        for step in 1..=plan.steps {
            tokio::select! {
                () = ctx.cancelled() => {
                    tracing::info!(module = ctx.name(), step, "plan cancelled by the asker; stopping work");
                    return Err(ModuleError::new("cancelled"));
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => ctx.progress(step),
            }
        }
        Ok(plan.steps)
    }
}

#[derive(Default)]
struct Mission {
    done: bool,
}

impl Module for Mission {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.tick_every(Duration::from_millis(500));
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        if std::mem::replace(&mut self.done, true) {
            ctx.stop_ticks();
            return Ok(());
        }
        tracing::info!(module = ctx.name(), "asking the planner for a 20-step plan");
        let mut call = ctx.ask::<_, u32>("planner", Plan { steps: 20 }).start().await?;
        while let Some(event) = call.next_event().await {
            if let CallEvent::Progress(step) = event {
                let step: u32 = step.decode()?;
                tracing::info!(module = ctx.name(), step, "plan progress");
                if step == 5 {
                    tracing::info!(module = ctx.name(), "changed my mind: cancelling the plan");
                    call.cancel();
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    botbus::init_tracing();
    let seconds = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map(|s| s.parse::<f64>())
        .transpose()?
        .unwrap_or(3.0);

    let readings = std::env::args()
        .skip_while(|a| a != "--readings")
        .nth(1)
        .map(|s| s.parse::<u64>())
        .transpose()?;
    if let Some(file) = flag("--launch") {
        return launched(&file, seconds);
    }
    let children = listed("--child")?;
    let joined = listed("--joined")?;
    let only = listed("--module")?;
    let on_worker = listed("--on-worker")?;
    let placed = |name: &str| match children.iter().any(|c| c == name) {
        true => ModuleOptions::new().in_child(),
        false => ModuleOptions::new(),
    };
    // Hosted here unless it runs in a process that joins this one, or this
    // process hosts only some modules (`--module`).
    let here = |name: &str| !joined.iter().any(|j| j == name) && (only.is_empty() || only.iter().any(|o| o == name));

    let worker = std::env::args().any(|a| a == "--worker");
    let mut builder = Node::builder(&match (worker, only.is_empty()) {
        (true, _) => WORKER.to_owned(),
        (false, true) => "robot".to_owned(),
        (false, false) => format!("robot-{}", only.join("-")),
    });
    if let Ok(token) = botbus::env_token("ROBOT_TOKEN") {
        builder = builder.link_config(LinkConfig {
            token: Some(token),
            ..LinkConfig::default()
        });
    }
    if let Some(endpoint) = flag("--listen") {
        builder = builder.listen(&endpoint);
    }
    if let Some(endpoint) = flag("--join") {
        builder = builder.join(&endpoint);
    }
    if worker {
        // A worker hosts nothing of its own: it starts the robot's module
        // types when the robot asks.
        let node = register(builder).worker().start()?;
        node.shutdown_on_signal()?;
        tracing::info!(node = WORKER, "worker up; Ctrl-C stops it");
        node.join();
        return Ok(());
    }
    // Placed on the worker: started there once it joins, this node's own.
    let remote = |builder: botbus::NodeBuilder, name: &str, options: ModuleOptions| {
        let options = options.start_timeout(Duration::from_secs(30));
        match name {
            "sensor" => builder.worker_module(name, WORKER, name, &readings, options),
            _ => builder.worker_module(name, WORKER, name, &(), options),
        }
    };
    let add = |builder: botbus::NodeBuilder,
               name: &str,
               options: ModuleOptions,
               local: &dyn Fn(botbus::NodeBuilder, ModuleOptions) -> botbus::NodeBuilder| {
        match (here(name), on_worker.iter().any(|w| w == name)) {
            (false, _) => builder,
            (true, true) => remote(builder, name, options),
            (true, false) => local(builder, options),
        }
    };
    builder = add(builder, "motor", placed("motor"), &|b, o| {
        b.module_with("motor", Motor::default, o)
    });
    builder = add(builder, "led", placed("led"), &|b, o| b.module_with("led", || Led, o));
    builder = add(builder, "planner", placed("planner"), &|b, o| {
        b.module_with("planner", || Planner, o)
    });
    builder = add(builder, "logger", placed("logger"), &|b, o| {
        b.module_with("logger", Logger::default, o)
    });
    // The controller asks the motor and tells the LED from its first reading
    // on: wherever they run, it starts once they can be reached.
    let options = placed("controller").needs("motor").needs("led");
    builder = add(builder, "controller", options, &|b, o| {
        b.module_with("controller", Controller::default, o)
    });
    let options = placed("mission").needs("planner");
    builder = add(builder, "mission", options, &|b, o| {
        b.module_with("mission", Mission::default, o)
    });
    builder = add(builder, "sensor", placed("sensor"), &|b, o| {
        b.module_with("sensor", move || Sensor { seq: 0, readings }, o)
    });
    let node = builder.start()?;
    node.shutdown_on_signal()?;
    tracing::info!(modules = ?node.modules(), ?children, seconds, "robot up; Ctrl-C stops it");
    node.run_for(Duration::from_secs_f64(seconds))?;
    tracing::info!("robot stopped cleanly");
    Ok(())
}

/// The robot's module types, for a worker or a launch file to build from.
/// The sensor's argument is how many readings it takes (none: no end).
fn register(builder: botbus::NodeBuilder) -> botbus::NodeBuilder {
    builder
        .register("motor", |(): ()| Motor::default())
        .register("led", |(): ()| Led)
        .register("planner", |(): ()| Planner)
        .register("logger", |(): ()| Logger::default())
        .register("controller", |(): ()| Controller::default())
        .register("mission", |(): ()| Mission::default())
        .register("sensor", |readings: Option<u64>| Sensor { seq: 0, readings })
}

/// The robot as the launch file `file` describes it, in the role `--role`
/// names: `robot` (the default), `module:<name>` for a module placed
/// `pipe:<endpoint>`, or `worker:<name>`.
fn launched(file: &str, seconds: f64) -> Result<(), Box<dyn std::error::Error>> {
    use botbus::launch::{Launch, Role};
    let role = match flag("--role").as_deref() {
        None | Some("robot") => Role::Robot,
        Some(role) => match role.split_once(':') {
            Some(("module", name)) => Role::Module(name.to_owned()),
            Some(("worker", name)) => Role::Worker(name.to_owned()),
            _ => return Err(format!("--role {role}: expected `robot`, `module:<name>` or `worker:<name>`").into()),
        },
    };
    let node = Launch::read(file)?.builder(&role, register)?.start()?;
    node.shutdown_on_signal()?;
    tracing::info!(modules = ?node.modules(), ?role, launch = file, seconds, "robot up; Ctrl-C stops it");
    match role {
        // A worker serves until it is stopped.
        Role::Worker(_) => node.join(),
        _ => node.run_for(Duration::from_secs_f64(seconds))?,
    }
    tracing::info!("robot stopped cleanly");
    Ok(())
}

/// The name a worker of this robot goes by.
const WORKER: &str = "robot-worker";

/// The value of `name VALUE`, if given.
fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The modules named by every `name MODULE` flag — for `--child`, also the
/// comma-separated `ROBOT_CHILD` variable.
fn listed(name: &str) -> Result<Vec<String>, String> {
    const MODULES: [&str; 7] = ["motor", "led", "planner", "logger", "controller", "mission", "sensor"];
    let args: Vec<String> = std::env::args().collect();
    let flags = args
        .windows(2)
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].clone());
    let env = match name {
        "--child" => std::env::var("ROBOT_CHILD").unwrap_or_default(),
        _ => String::new(),
    };
    let from_env = env
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let modules: Vec<String> = flags.chain(from_env).collect();
    match modules.iter().find(|m| !MODULES.contains(&m.as_str())) {
        Some(unknown) => Err(format!(
            "{name} {unknown}: the robot has no such module (it has {MODULES:?})"
        )),
        None => Ok(modules),
    }
}
