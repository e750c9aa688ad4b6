//! # botbus-core
//!
//! The protocol and the traits of botbus, with no I/O and no actix: what a
//! module is ([`Module`], [`Context`], [`Message`]), what crosses a link
//! ([`Frame`], [`Hello`], [`FrameCodec`]), where links go ([`Endpoint`]), how
//! transports plug in ([`Transport`], [`Listener`], [`Link`]), and the errors
//! each of these can end in.
//!
//! The runtime that hosts modules lives in `botbus-actors`; it implements
//! [`Bus`], the one seam between a module's [`Context`] and the node.

pub mod address;
pub mod announce;
pub mod auth;
pub mod blob;
pub mod bus;
pub mod codec;
pub mod context;
pub mod depth;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod liveness;
pub mod message;
pub mod module;
mod read_buffer;
pub mod supervision;
pub mod topic;
pub mod transport;

pub use address::{validate_name, Address, NameError, SenderAddress};
pub use auth::{AuthToken, Role, TokenError};
pub use blob::Blob;
pub use bus::{
    AskEnvelope, Bus, Caller, CallerSink, CancelAsk, CancelFlag, CancelHook, Envelope, EnvelopeKind, TryDeliverError,
};
pub use codec::{
    FrameCodec, FrameError, Incoming, IncomingCodec, JsonLinesCodec, Splices, WireCodec, DEFAULT_MAX_FRAME_LEN,
};
pub use context::{Ask, Call, CallEvent, CallerRequest, Client, Context, DEFAULT_ASK_TIMEOUT};
pub use endpoint::{Endpoint, EndpointError, PipeAddr, MEM_SCHEME, PIPE_SCHEME, STDIO_SCHEME, TCP_SCHEME, TLS_SCHEME};
pub use error::{AskError, ModuleError, PayloadError, SendError};
pub use frame::{
    CodecKind, DataFrame, DataHead, DataIn, Frame, FrameIn, Hello, PayloadIn, PayloadRef, Reach, RunReader,
    WirePayload, MAGIC, PROTOCOL_VERSION,
};
pub use handshake::HandshakeError;
pub use liveness::Liveness;
pub use message::{register_message, FromPayload, Message, Payload, ValueBody};
pub use module::{Down, DownReason, Module};
pub use supervision::{RestartBudget, RestartPolicy, RestartTracker};
pub use topic::{validate_topic, TopicError, TopicPattern};
pub use transport::{Link, LinkReader, LinkWriter, Listener, Transport, TransportError};

/// Re-exported so module authors need no direct dependency on it.
pub use async_trait::async_trait;
