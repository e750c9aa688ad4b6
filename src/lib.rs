//! # botbus
//!
//! An actor framework for robots. Write a module once — an actor with a
//! `process` handler — and decide in configuration where it runs: as a thread
//! in one binary, a child process, a process joined through a named pipe, or
//! a remote peer over TCP.
//!
//! This facade re-exports what a robot needs: the module API from
//! `botbus-core` and the runtime from `botbus-actors`.
//!
//! ```
//! use botbus::{Context, Message, Module, ModuleError, Node};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Ping(u32);
//! impl Message for Ping { const NAME: &'static str = "doc.Ping"; }
//!
//! struct Echo;
//! impl Module for Echo {
//!     type Message = Ping;
//!     type Reply = u32;
//!     async fn process(&mut self, Ping(n): Ping, _ctx: &mut Context) -> Result<u32, ModuleError> {
//!         Ok(n + 1)
//!     }
//! }
//!
//! let node = Node::builder("robot").module("echo", || Echo).start().unwrap();
//! let client = node.client("main");
//! let reply = node.block_on(async move { client.ask::<_, u32>("echo", Ping(1)).await }).unwrap();
//! assert_eq!(reply, Ok(2));
//! node.shutdown_blocking();
//! ```

pub use botbus_actors::{
    env_token, read_token, Hosting, Introspect, LinkConfig, LinkError, LinkInfo, LinkStats, MemTransport, ModuleInfo,
    ModuleOptions, ModuleStatus, Node, NodeBuilder, NodeError, NodeInfo, PublicationInfo, SubscriptionInfo,
    TokenSourceError, WorkerRequest, MEM_SCHEME, NODE_MODULE, WORKER_MODULE,
};
pub use botbus_core::{
    async_trait, register_message, Ask, AskError, AuthToken, Blob, Call, CallEvent, CallerRequest, Client, CodecKind,
    Context, Down, DownReason, Endpoint, EndpointError, FromPayload, HandshakeError, Link, LinkReader, LinkWriter,
    Listener, Liveness, Message, Module, ModuleError, NameError, Payload, PayloadError, RestartBudget, RestartPolicy,
    SendError, TopicError, TopicPattern, Transport, TransportError, DEFAULT_ASK_TIMEOUT,
};
pub use botbus_transport_stdio::ChildCommand;
pub use botbus_transport_tcp::{TlsConfig, TlsConfigError, TlsTransport};

pub mod bench;
pub mod launch;
pub use launch::{Launch, LaunchError};

/// The crates behind the facade, for what it does not re-export.
pub mod crates {
    pub use botbus_actors as actors;
    pub use botbus_core as core;
    pub use botbus_transport_pipe as transport_pipe;
    pub use botbus_transport_stdio as transport_stdio;
    pub use botbus_transport_tcp as transport_tcp;
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`).
/// Call it once at the top of `main`; a second call does nothing.
///
/// In a child process started by a botbus parent, lines carry no time stamp
/// and no colour: the parent reads them into its own log, with its own time
/// and the child's module and level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = if botbus_transport_stdio::StdioTransport::child_role().is_some() {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
