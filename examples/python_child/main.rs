//! A Rust robot with one module written in Python: `child.py`, beside this
//! file, runs as a child process and speaks botbus's JSON-lines protocol
//! with only Python's standard library.
//!
//! * `stove` publishes a rising temperature on `robot/temp` at 20 Hz;
//! * `thermo` (Python) subscribes to it and publishes `alerts/thermo` when
//!   it gets too hot; it also answers asks, one of them with progress;
//! * `alarm` subscribes to `alerts/**` and logs what it hears.
//!
//! Run it: `cargo run --example python_child` (needs `python3` on `PATH`).

use std::time::Duration;

use botbus::{CallEvent, ChildCommand, Context, Module, ModuleError, ModuleOptions, Node};

mod messages;
use messages::{Alert, Calibrate, Reading, ToFahrenheit};

/// Heats up by 2 °C per tick.
#[derive(Default)]
struct Stove {
    celsius: f64,
}

impl Module for Stove {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        self.celsius = 20.0;
        ctx.tick_every(Duration::from_millis(50));
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        self.celsius += 2.0;
        let reading = Reading { celsius: self.celsius };
        ctx.publish("robot/temp", reading).await?;
        Ok(())
    }
}

struct Alarm;

impl Module for Alarm {
    type Message = Alert;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("alerts/**").map_err(|e| ModuleError::new(e.to_string()))
    }

    async fn process(&mut self, alert: Alert, ctx: &mut Context) -> Result<(), ModuleError> {
        tracing::warn!(module = ctx.name(), celsius = alert.celsius, message = %alert.message, from = ?ctx.sender(), "alarm");
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    botbus::init_tracing();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_child/child.py");
    let node = Node::builder("robot")
        .module("alarm", || Alarm)
        .child_module("thermo", ChildCommand::new("python3").arg(script), ModuleOptions::new())
        .module("stove", Stove::default)
        .start()?;
    node.shutdown_on_signal()?;

    let client = node.client("main");
    node.block_on(async move {
        let fahrenheit: f64 = client.ask("thermo", ToFahrenheit(100.0)).await?;
        tracing::info!(fahrenheit, "Python says 100 °C is");
        let mut call = client.ask::<_, String>("thermo", Calibrate(3)).start().await?;
        while let Some(event) = call.next_event().await {
            if let CallEvent::Progress(step) = event {
                tracing::info!(step = step.decode::<u32>()?, "calibration progress");
            }
        }
        let result = call.reply().await?;
        tracing::info!(%result, "calibration done");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?
    .map_err(|e| e.to_string())?;
    node.run_for(Duration::from_secs(2))?;
    Ok(())
}
