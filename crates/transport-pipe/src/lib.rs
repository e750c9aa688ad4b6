//! # botbus-transport-pipe
//!
//! The `pipe` transport: Unix domain sockets and Windows named pipes.
//!
//! Every botbus transport crate exports the same trio — a scheme constant, a
//! transport type and a link type — and moves bytes only: the handshake,
//! framing and routing above it are the same code for every transport.
//!
//! For now this crate holds the scheme constant; the transport and link
//! types land in their own issue. Until then a node refuses `pipe` endpoints with
//! `LinkError::NoTransport`.

/// The endpoint scheme this transport serves.
pub const PIPE_SCHEME: &str = botbus_core::PIPE_SCHEME;
