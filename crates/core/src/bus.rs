//! The seam between a module's [`Context`](crate::Context) and the runtime
//! that hosts it.
//!
//! [`Bus`] is what a runtime implements (botbus-actors' router does); an
//! [`Envelope`] is what it routes. A [`CallerSink`] is the asker's end of an
//! ask, as the callee sees it: a local oneshot, or a link back to another
//! node. Module authors never touch these directly.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{AskError, SendError};
use crate::message::Payload;
use crate::topic::TopicPattern;

/// The asker's end of an ask, held by the callee while it works.
///
/// Dropping a sink without calling [`reply`](CallerSink::reply) must end the
/// ask with [`AskError::Stopped`]: that is how "the callee died" reaches the
/// asker in every placement.
pub trait CallerSink: Send + Sync {
    /// Sends a progress update to the asker.
    fn progress(&self, payload: Payload);

    /// Sends a message to the asker mid-request and waits for its answer.
    fn caller_ask(&self, payload: Payload) -> BoxFuture<'static, Result<Payload, AskError>>;

    /// Ends the ask.
    fn reply(self: Box<Self>, result: Result<Payload, AskError>);
}

/// The ask-specific part of an [`Envelope`].
pub struct AskEnvelope {
    /// Where the reply, progress and caller messages go.
    pub caller: Box<dyn CallerSink>,
    /// Cancelled when the asker gives up.
    pub cancel: CancellationToken,
    /// When the asker stops waiting.
    pub deadline: Instant,
}

/// What kind of delivery an [`Envelope`] is.
pub enum EnvelopeKind {
    /// A one-way message.
    Tell,
    /// A message published on `topic`.
    Publish {
        /// The topic it was published on.
        topic: Arc<str>,
    },
    /// A request that expects one reply.
    Ask(AskEnvelope),
}

/// A message on its way to a module.
pub struct Envelope {
    /// The sender, `node/module`.
    pub from: Arc<str>,
    /// The message.
    pub payload: Payload,
    /// Tell, publish or ask.
    pub kind: EnvelopeKind,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            EnvelopeKind::Tell => "tell",
            EnvelopeKind::Publish { .. } => "publish",
            EnvelopeKind::Ask(_) => "ask",
        };
        f.debug_struct("Envelope")
            .field("kind", &kind)
            .field("from", &self.from)
            .field("payload", &self.payload)
            .finish()
    }
}

/// Runs when an asker gives up on an ask that crossed a link, so the callee's
/// node hears of it. Local asks need none: the shared token is enough.
pub type CancelHook = Box<dyn FnOnce() + Send>;

/// Why [`Bus::try_deliver`] did not deliver.
pub enum TryDeliverError {
    /// The target's mailbox (or link queue) is full: here is the envelope
    /// back (boxed: this is the slow path, and it keeps the result small).
    Full(Box<Envelope>),
    /// It cannot be delivered at all.
    Failed(SendError),
}

/// What a runtime offers to the modules it hosts.
pub trait Bus: Send + Sync + 'static {
    /// This node's name.
    fn node_name(&self) -> &str;

    /// Delivers to `to` (`module` or `node/module`) without waiting. On
    /// success returns the ask's cancel hook, if it crossed a link.
    fn try_deliver(&self, to: &str, envelope: Envelope) -> Result<Option<CancelHook>, TryDeliverError>;

    /// Delivers to `to`, waiting for room in its mailbox or link queue.
    fn deliver<'a>(&'a self, to: &'a str, envelope: Envelope) -> BoxFuture<'a, Result<Option<CancelHook>, SendError>>;

    /// Delivers `payload` to every subscriber of `topic`, here and behind
    /// links, waiting for room. Returns how many local subscribers and links
    /// it went to.
    fn publish(&self, from: Arc<str>, topic: Arc<str>, payload: Payload) -> BoxFuture<'_, Result<usize, SendError>>;

    /// Subscribes module `module` (hosted here) to `pattern`.
    fn subscribe(&self, module: &str, pattern: TopicPattern);

    /// Drops module `module`'s subscription to `pattern`.
    fn unsubscribe(&self, module: &str, pattern: &str);

    /// Tells `watcher` (hosted here) when `target` goes down.
    fn monitor(&self, watcher: &str, target: &str);
}
