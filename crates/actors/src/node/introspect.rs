//! What a node says about itself to a tool that asks — `botbus nodes`,
//! `botbus modules`, `botbus topics`, or a test.
//!
//! Every node runs the module [`NODE_MODULE`] (`botbus.node`, one of the
//! framework's own, not listed among the node's modules). Asked
//! [`Introspect`], it answers [`NodeInfo`]: the node's process, its links,
//! its subscriptions, and for each module where it runs, its state, its
//! restarts, its mailbox's depth and the types it takes and answers. Ask
//! `node/botbus.node` from anywhere linked to that node.

use std::sync::Weak;

use botbus_core::{Context, Message, Module, ModuleError};
use serde::{Deserialize, Serialize};

use super::{Node, Shared};

/// The module every node runs to describe itself.
pub const NODE_MODULE: &str = "botbus.node";

/// Asks a node to describe itself (the message of [`NODE_MODULE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Introspect {
    /// The whole description: [`NodeInfo`].
    Node,
}

impl Message for Introspect {
    const NAME: &'static str = "botbus.Introspect";
}

/// One module of a node, as the node describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Its name.
    pub name: String,
    /// Where it runs: `thread`, `child` or `worker:<name>`.
    pub placement: String,
    /// The process it runs in: this node's for a thread, the child's while
    /// it is up; none for a module on a worker (the worker's node says).
    pub pid: Option<u32>,
    /// The node that had this node, a worker, start it (see
    /// [`Node::spawn_on`]).
    pub placed_by: Option<String>,
    /// `starting`, `running`, `restarting`, `stopped` or `failed: <why>`.
    pub state: String,
    /// How often it was restarted.
    pub restarts: u32,
    /// Messages waiting in its mailbox (for a module in this process).
    pub mailbox: Option<usize>,
    /// The wire name of what it takes (none: it takes any message, or it
    /// runs elsewhere and this node does not know).
    pub takes: Option<String>,
    /// The wire name of what it answers.
    pub answers: Option<String>,
}

/// A subscription of one of the node's modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// The topic pattern.
    pub pattern: String,
    /// The module.
    pub module: String,
}

/// What one of the node's modules published on one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicationInfo {
    /// The topic.
    pub topic: String,
    /// The publisher (`node/module`).
    pub module: String,
    /// How many messages it published there since the node started; a
    /// tool that asks twice has the rate.
    pub messages: u64,
}

/// One of the node's links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The node at the other end.
    pub peer: String,
    /// What it runs over, as the transport says: the endpoint this node
    /// connected to, the listener's endpoint and the peer's pid or address
    /// for a link it accepted, or the child process.
    pub via: String,
    /// `connected` (this node connected to the peer), `accepted` (the peer
    /// connected here), or `child` (the link to a child process of this
    /// node's).
    pub kind: String,
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub node: String,
    /// Its process.
    pub pid: u32,
    /// Its modules, by name.
    pub modules: Vec<ModuleInfo>,
    /// Its modules' subscriptions.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// The nodes it has links to.
    pub peers: Vec<String>,
    /// Its links, by peer.
    pub links: Vec<LinkInfo>,
    /// What its modules published, by topic.
    pub publications: Vec<PublicationInfo>,
}

impl Message for NodeInfo {
    const NAME: &'static str = "botbus.NodeInfo";
}

/// The module [`NODE_MODULE`].
pub(super) struct Describer {
    pub(super) node: Weak<Shared>,
}

impl Module for Describer {
    type Message = Introspect;
    type Reply = NodeInfo;

    async fn process(&mut self, Introspect::Node: Introspect, _ctx: &mut Context) -> Result<NodeInfo, ModuleError> {
        let shared = self
            .node
            .upgrade()
            .ok_or_else(|| ModuleError::new("the node is shutting down"))?;
        let node = Node { shared };
        Ok(node.describe())
    }
}

impl Node {
    /// What this node says about itself (what [`NODE_MODULE`] answers).
    pub fn describe(&self) -> NodeInfo {
        let router = &self.shared.router;
        let mut peers = self.peers();
        peers.sort();
        NodeInfo {
            node: self.name().to_owned(),
            pid: std::process::id(),
            modules: router.module_infos(),
            subscriptions: router
                .subscription_list()
                .into_iter()
                .filter(|(_, module)| !module.starts_with(crate::router::FRAMEWORK_PREFIX))
                .map(|(pattern, module)| SubscriptionInfo { pattern, module })
                .collect(),
            peers,
            links: router.link_infos(),
            publications: router.publications(),
        }
    }
}
