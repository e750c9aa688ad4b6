//! A sensor in a process of its own: joins the hub and publishes a range
//! reading on `sensors/front/range` five times a second.
//!
//! ```text
//! botbus hub --listen pipe://robot                  # terminal 1
//! cargo run --example joined_sensor                 # terminal 2
//! cargo run --example joined_controller             # terminal 3
//! cargo run --example joined_motor                  # terminal 4
//! ```

#[path = "joined/messages.rs"]
mod messages;

use std::time::Duration;

use botbus::{Context, Module, ModuleError, Node};
use messages::Range;

#[derive(Default)]
struct Sensor {
    seq: u32,
}

impl Module for Sensor {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.tick_every(Duration::from_millis(200));
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        self.seq += 1;
        // An obstacle comes closer and goes away again, every four seconds.
        let phase = (self.seq % 20) as f32 / 20.0;
        let metres = 0.2 + 1.8 * (2.0 * (phase - 0.5)).abs();
        let reached = ctx.publish("sensors/front/range", Range(metres)).await?;
        tracing::info!(metres = %format_args!("{metres:.2}"), subscribers = reached, "published");
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    botbus::init_tracing();
    let node = Node::builder("sensor")
        .module("sensor", Sensor::default)
        .join(&messages::hub())
        .start()?;
    node.run_until_signal()?;
    Ok(())
}
