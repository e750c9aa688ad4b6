//! The transport traits: a [`Transport`] connects and listens by
//! [`Endpoint`]; a [`Link`] is one connection, split into owned halves.
//!
//! These are object-safe so transports plug in at run time (a node picks one
//! by the endpoint's scheme). A link moves bytes only; framing lives above it,
//! in [`FrameCodec`](crate::FrameCodec), the same for every transport.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::endpoint::Endpoint;

/// A link's owned read half.
pub type LinkReader = Pin<Box<dyn AsyncRead + Send>>;
/// A link's owned write half.
pub type LinkWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Why a transport could not connect, listen or accept.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// This transport does not serve that endpoint's scheme.
    #[error("transport `{transport}` cannot serve endpoint `{endpoint}`")]
    WrongScheme {
        /// The transport's scheme.
        transport: &'static str,
        /// The endpoint given.
        endpoint: String,
    },
    /// Nothing listens at the endpoint.
    #[error("nothing listens at `{0}`")]
    NotListening(String),
    /// Something already listens at the endpoint.
    #[error("`{0}` is already in use")]
    InUse(String),
    /// The listener was closed.
    #[error("listener `{0}` is closed")]
    Closed(String),
    /// An operating-system error.
    #[error("{endpoint}: {source}")]
    Io {
        /// The endpoint involved.
        endpoint: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One connection between two nodes, carrying bytes both ways.
#[async_trait]
pub trait Link: Send + fmt::Debug {
    /// A human-readable description of the peer (address, pid, name).
    fn peer(&self) -> String;

    /// Finishes whatever the transport itself does before botbus bytes can
    /// flow — TLS's own handshake, say; most links are open already. A node
    /// calls it once, on its own task and within the link's handshake
    /// deadline, never in a listener's accept loop, so a peer that stalls
    /// here holds up nobody else.
    async fn open(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Splits into owned read and write halves.
    fn split(self: Box<Self>) -> (LinkReader, LinkWriter);
}

/// Accepts incoming links at one endpoint.
#[async_trait]
pub trait Listener: Send + fmt::Debug {
    /// The endpoint peers connect to (with the real port or path).
    fn endpoint(&self) -> Endpoint;

    /// Waits for the next incoming link. Returns as soon as there is a
    /// connection: anything the peer must do first waits for [`Link::open`].
    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError>;
}

/// Connects to and listens at endpoints of one scheme.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// The scheme this transport serves (`mem`, `stdio`, `pipe`, `tcp`, `tls`).
    fn scheme(&self) -> &'static str;

    /// Opens a link to a listener at `endpoint`. What the transport does
    /// beyond connecting (a TLS handshake) may wait for [`Link::open`].
    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError>;

    /// Whether the transport itself tells who may link (TLS requiring
    /// client certificates), so that a listener open to other machines
    /// needs no token.
    fn authenticates_peers(&self) -> bool {
        false
    }

    /// Starts listening at `endpoint`.
    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError>;
}

/// What an error from accepting a connection means for the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// It concerned that one connection (reset before it was taken,
    /// interrupted): accept the next.
    OneConnection,
    /// The process or system is short of something that comes back (file
    /// descriptors, buffers, memory): wait a little, then accept again.
    Exhausted,
    /// The listener itself is broken.
    Fatal,
}

impl AcceptError {
    /// Sorts an error from `accept`. A listener stops only on
    /// [`AcceptError::Fatal`].
    ///
    /// ```
    /// use botbus_core::transport::AcceptError;
    /// use std::io::{Error, ErrorKind};
    /// assert_eq!(AcceptError::of(&Error::from(ErrorKind::ConnectionAborted)), AcceptError::OneConnection);
    /// assert_eq!(AcceptError::of(&Error::from(ErrorKind::PermissionDenied)), AcceptError::Fatal);
    /// ```
    pub fn of(error: &std::io::Error) -> AcceptError {
        use std::io::ErrorKind;
        // EMFILE, ENFILE, ENOBUFS, ENOMEM (Linux numbers; std has no stable
        // kind for the first three).
        const EXHAUSTED: [i32; 4] = [24, 23, 105, 12];
        match error.kind() {
            ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted => {
                AcceptError::OneConnection
            }
            ErrorKind::OutOfMemory => AcceptError::Exhausted,
            _ if error.raw_os_error().is_some_and(|code| EXHAUSTED.contains(&code)) => AcceptError::Exhausted,
            _ => AcceptError::Fatal,
        }
    }
}
