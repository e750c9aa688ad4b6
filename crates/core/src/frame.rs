//! The wire unit: [`Frame`], and the [`Hello`] that opens every link.
//!
//! Every frame kind the protocol knows is a variant here. Payloads travel as
//! [`WirePayload`]: the message's stable name and its postcard bytes, so a
//! node routes a frame without knowing the message type.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::AskError;
use crate::module::DownReason;

/// The four bytes every botbus handshake starts with.
pub const MAGIC: [u8; 4] = *b"BBUS";

/// The protocol version this build speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// The encoding of frames after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodecKind {
    /// Length-prefixed postcard: compact, for Rust peers.
    Postcard,
}

/// The first frame each side sends on a new link.
///
/// Field order is part of the protocol: `magic` and `version` come first so
/// that any future version can still read them and report a clear mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The sender's node name.
    pub node: String,
    /// The codec the sender will use after the handshake.
    pub codec: CodecKind,
}

impl Hello {
    /// The hello this build sends for node `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            node: node.into(),
            codec: CodecKind::Postcard,
        }
    }
}

/// A message as it crosses a link: its stable name and its postcard bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePayload {
    /// The message's [`Message::NAME`](crate::Message::NAME).
    pub name: String,
    /// The postcard-encoded message.
    pub body: Bytes,
}

/// One unit on the wire after the handshake.
///
/// Ask ids are chosen by the asking side and are unique per link and
/// direction; every frame about an ask (reply, progress, caller messages,
/// cancel) carries its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A one-way message to module `to`.
    Tell {
        /// Target module name.
        to: String,
        /// Sending module (`node/module`).
        from: String,
        /// The message.
        payload: WirePayload,
    },
    /// A request to module `to` that expects exactly one [`Frame::Reply`].
    Ask {
        /// The ask's id on this link.
        id: u64,
        /// Target module name.
        to: String,
        /// Asking module (`node/module`).
        from: String,
        /// Milliseconds the asker will wait; the callee may give up after it.
        timeout_ms: u64,
        /// The request.
        payload: WirePayload,
    },
    /// The one answer to an ask.
    Reply {
        /// The ask this answers.
        id: u64,
        /// The reply, or how the ask failed on the callee's side.
        result: Result<WirePayload, AskError>,
    },
    /// A progress update for an ask still in flight.
    Progress {
        /// The ask this is about.
        id: u64,
        /// The update.
        payload: WirePayload,
    },
    /// The callee sends a message back to its caller mid-request.
    CallerAsk {
        /// The ask in flight.
        id: u64,
        /// Numbers the callee's caller messages within that ask.
        call: u32,
        /// The message.
        payload: WirePayload,
    },
    /// The caller's answer to a [`Frame::CallerAsk`].
    CallerReply {
        /// The ask in flight.
        id: u64,
        /// The caller message this answers.
        call: u32,
        /// The answer.
        result: Result<WirePayload, AskError>,
    },
    /// The asker gave up on ask `id` (cancelled, timed out or dropped).
    Cancel {
        /// The ask to cancel.
        id: u64,
    },
    /// A message to every subscriber of `topic` behind this link.
    Publish {
        /// The topic (no wildcards).
        topic: String,
        /// Publishing module (`node/module`).
        from: String,
        /// The message.
        payload: WirePayload,
    },
    /// The sender's node now has a subscriber for `pattern`.
    Subscribe {
        /// A topic pattern (`*` one level, `**` any depth).
        pattern: String,
    },
    /// The sender's node no longer has a subscriber for `pattern`.
    Unsubscribe {
        /// The pattern given up.
        pattern: String,
    },
    /// The full set of modules and subscription patterns behind the sender.
    /// Replaces whatever was announced before.
    Announce {
        /// Module names served behind this link.
        modules: Vec<String>,
        /// Topic patterns subscribed to behind this link.
        subscriptions: Vec<String>,
    },
    /// A module behind the sender stopped or failed (for monitors).
    Down {
        /// The module.
        module: String,
        /// Why it went down.
        reason: DownReason,
    },
    /// Liveness probe; the peer answers with [`Frame::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to [`Frame::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The sender is closing the link on purpose.
    Bye {
        /// Why.
        reason: String,
    },
}
