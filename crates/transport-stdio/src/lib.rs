//! # botbus-transport-stdio
//!
//! The `stdio` transport: child processes over stdin/stdout.
//!
//! Every botbus transport crate exports the same trio — a scheme constant, a
//! transport type and a link type — and moves bytes only: the handshake,
//! framing and routing above it are the same code for every transport.
//!
//! For now this crate holds the scheme constant; the transport and link
//! types land in their own issue. Until then a node refuses `stdio` endpoints with
//! `LinkError::NoTransport`.

/// The endpoint scheme this transport serves.
pub const STDIO_SCHEME: &str = botbus_core::STDIO_SCHEME;
