//! # botbus-actors
//!
//! The botbus runtime on actix: a [`Node`] hosts modules on actix arbiters,
//! routes their tells, asks and publishes (in memory, or over links to other
//! nodes), supervises them with restart policies and budgets, and stops them
//! gracefully on SIGINT/SIGTERM.
//!
//! A module can also run in a child process ([`ModuleOptions::in_child`],
//! [`NodeBuilder::child_module`]): the node spawns it, links to it over its
//! stdin/stdout and supervises the process like any instance.
//!
//! This is the only botbus crate that knows actix; module authors write
//! against `botbus-core` and never see an actix type.

mod alarm;
mod child;
mod host;
mod link;
mod mailbox;
pub mod mem;
mod names;
mod node;
mod router;
mod supervisor;
mod token;

pub use link::{LinkConfig, LinkError, LinkStats};
pub use mem::{MemLink, MemListener, MemTransport, MEM_SCHEME};
pub use node::{
    Hosting, Introspect, LinkInfo, ModuleInfo, ModuleOptions, Node, NodeBuilder, NodeError, NodeInfo, PublicationInfo,
    SubscriptionInfo, WorkerRequest, NODE_MODULE, WORKER_MODULE,
};
pub use router::ModuleStatus;
pub use token::{env_token, read_token, TokenSourceError};
