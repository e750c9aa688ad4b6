//! A controller in a process of its own: joins the hub, subscribes to range
//! readings, and asks the motor — in yet another process — for a speed.
//! See `joined_sensor.rs` for the terminals to start.

#[path = "joined/messages.rs"]
mod messages;

use std::time::Duration;

use botbus::{AskError, Context, Module, ModuleError, Node};
use messages::{Range, SetSpeed};

struct Controller;

impl Module for Controller {
    type Message = Range;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("sensors/*/range")
            .map_err(|e| ModuleError::new(e.to_string()))
    }

    async fn process(&mut self, Range(metres): Range, ctx: &mut Context) -> Result<(), ModuleError> {
        let wanted = if metres < 0.5 {
            0.0
        } else if metres < 1.0 {
            0.3
        } else {
            0.8
        };
        match ctx
            .ask::<_, f32>("motor", SetSpeed(wanted))
            .timeout(Duration::from_millis(500))
            .await
        {
            Ok(speed) => tracing::info!(metres = %format_args!("{metres:.2}"), speed = %speed, "motor answered"),
            // The motor is not running (yet, or any more): say so, carry on.
            Err(error @ (AskError::UnknownModule(_) | AskError::Unreachable { .. })) => {
                tracing::warn!(%error, "no motor to ask")
            }
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    botbus::init_tracing();
    let node = Node::builder("controller")
        .module("controller", || Controller)
        .join(&messages::hub())
        .start()?;
    node.run_until_signal()?;
    Ok(())
}
