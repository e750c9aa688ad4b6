//! The [`Module`] trait: what a module author writes.
//!
//! A module is an actor: it handles one message at a time in
//! [`process`](Module::process), and owns its state outright (`&mut self`), so
//! it needs no locks. Everything it does to the outside world goes through its
//! [`Context`]. Nothing here names actix or any transport: the same module runs
//! as a thread, a child process, a pipe peer or a remote peer.
//!
//! ```
//! use botbus_core::{Context, Message, Module, ModuleError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! enum MotorCmd { SetSpeed(f32), Stop }
//! impl Message for MotorCmd { const NAME: &'static str = "motor.Cmd"; }
//!
//! #[derive(Default)]
//! struct Motor { speed: f32 }
//!
//! impl Module for Motor {
//!     type Message = MotorCmd;
//!     type Reply = f32; // the speed after the command
//!
//!     async fn process(&mut self, cmd: MotorCmd, _ctx: &mut Context) -> Result<f32, ModuleError> {
//!         match cmd {
//!             MotorCmd::SetSpeed(s) if s.abs() > 1.0 => return Err(ModuleError::new("speed out of range")),
//!             MotorCmd::SetSpeed(s) => self.speed = s,
//!             MotorCmd::Stop => self.speed = 0.0,
//!         }
//!         Ok(self.speed)
//!     }
//! }
//! ```

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::ModuleError;
use crate::message::{FromPayload, Message};

/// Why a monitored module went down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    /// It stopped normally (asked to, or the node is shutting down).
    Stopped,
    /// It failed and will not be restarted: its restart budget is spent, or
    /// its policy does not restart it.
    Failed(String),
    /// The link to the node that hosts it closed.
    Unreachable(String),
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Stopped => f.write_str("stopped"),
            DownReason::Failed(why) => write!(f, "failed: {why}"),
            DownReason::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// Tells a monitoring module that a module it monitors went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The module that went down (as the monitor named it).
    pub module: String,
    /// Why.
    pub reason: DownReason,
}

/// A botbus module: an actor with a `process` handler and optional hooks.
///
/// Hooks run one at a time, never concurrently with each other. Errors:
///
/// * from [`process`](Module::process), the error is the asker's reply
///   ([`AskError::Remote`](crate::AskError::Remote)) and the module keeps running;
/// * from [`started`](Module::started), [`tick`](Module::tick) or
///   [`down`](Module::down), it is a failure: the module is stopped and its
///   restart policy applies;
/// * a panic anywhere is a failure too. It is caught: it never takes a thread
///   or the node down.
pub trait Module: Send + 'static {
    /// What the module receives: a [`Message`] type (usually an enum), or
    /// [`Payload`](crate::Payload) to receive anything undecoded.
    type Message: FromPayload;
    /// What `process` answers to an ask (`()` when it never answers anything).
    type Reply: Message;

    /// Runs once before the first message, and again after each restart.
    fn started(&mut self, ctx: &mut Context) -> impl Future<Output = Result<(), ModuleError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message: a tell, an ask or a publish on a subscribed topic.
    /// [`Context::topic`] and [`Context::is_ask`] tell which.
    fn process(
        &mut self,
        message: Self::Message,
        ctx: &mut Context,
    ) -> impl Future<Output = Result<Self::Reply, ModuleError>> + Send;

    /// Runs at the period set with [`Context::tick_every`]: a control loop.
    /// A tick that would fall while the previous one still runs is skipped,
    /// not queued.
    fn tick(&mut self, ctx: &mut Context) -> impl Future<Output = Result<(), ModuleError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// A module this one monitors ([`Context::monitor`]) went down.
    fn down(&mut self, down: Down, ctx: &mut Context) -> impl Future<Output = Result<(), ModuleError>> + Send {
        let _ = (down, ctx);
        async { Ok(()) }
    }

    /// Runs when the module stops normally: asked to, or at node shutdown.
    /// It does not run after a panic.
    fn stopping(&mut self, ctx: &mut Context) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}
