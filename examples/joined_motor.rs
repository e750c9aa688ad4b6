//! A motor in a process of its own: joins the hub and answers speed
//! commands from whoever asks. See `joined_sensor.rs` for the terminals to
//! start; stop it and start it again, and the controller carries on.

#[path = "joined/messages.rs"]
mod messages;

use botbus::{Context, Module, ModuleError, Node};
use messages::SetSpeed;

#[derive(Default)]
struct Motor {
    speed: f32,
}

impl Module for Motor {
    type Message = SetSpeed;
    type Reply = f32;

    async fn process(&mut self, SetSpeed(speed): SetSpeed, ctx: &mut Context) -> Result<f32, ModuleError> {
        if speed != self.speed {
            tracing::info!(from = %self.speed, to = %speed, asked_by = ctx.sender(), "speed set");
            self.speed = speed;
        }
        Ok(self.speed)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    botbus::init_tracing();
    let node = Node::builder("motor")
        .module("motor", Motor::default)
        .join(&messages::hub())
        .start()?;
    node.run_until_signal()?;
    Ok(())
}
