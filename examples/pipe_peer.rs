//! One of many separately started processes joined to a hub: peer `i` of
//! `n` hosts `echo-i`, asks `echo-(i+1 mod n)` — a module in another
//! process — until it is answered, and then tells `collector` (wherever
//! that runs) that it was. `tests/pipe.rs` starts fifty of these.
//!
//! ```text
//! botbus hub --listen pipe://many
//! cargo run --example pipe_peer -- --join pipe://many --index 0 --count 2
//! cargo run --example pipe_peer -- --join pipe://many --index 1 --count 2
//! ```

use std::time::Duration;

use botbus::{AskError, Context, Module, ModuleError, Node};

struct Echo;

impl Module for Echo {
    type Message = u32;
    type Reply = u32;

    async fn process(&mut self, n: u32, _ctx: &mut Context) -> Result<u32, ModuleError> {
        Ok(n + 1)
    }
}

/// Asks the next peer's echo on each tick until it answers.
struct Asker {
    next: String,
    index: u32,
}

impl Module for Asker {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.tick_every(Duration::from_millis(20));
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        match ctx
            .ask::<_, u32>(&self.next, self.index)
            .timeout(Duration::from_secs(5))
            .await
        {
            Ok(answer) if answer == self.index + 1 => {
                ctx.stop_ticks();
                ctx.tell("collector", self.index).await?;
            }
            Ok(wrong) => return Err(ModuleError::new(format!("{} answered {wrong}", self.next))),
            // Not known here yet: its announcement is still on its way.
            Err(AskError::UnknownModule(_)) => {}
            Err(error) => tracing::warn!(next = %self.next, %error, "ask failed; trying again"),
        }
        Ok(())
    }
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    botbus::init_tracing();
    let join = arg("--join").ok_or("--join ENDPOINT is required")?;
    let index: u32 = arg("--index").ok_or("--index I is required")?.parse()?;
    let count: u32 = arg("--count").ok_or("--count N is required")?.parse()?;
    let next = format!("echo-{}", (index + 1) % count);
    let node = Node::builder(&format!("peer-{index}"))
        .module(&format!("echo-{index}"), || Echo)
        .module(&format!("asker-{index}"), move || Asker {
            next: next.clone(),
            index,
        })
        .join(&join)
        .start()?;
    node.run_until_signal()?;
    Ok(())
}
