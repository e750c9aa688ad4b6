//! # botbus-transport-tcp
//!
//! The `tcp` transport: TCP to other machines, with authentication and optional TLS.
//!
//! Every botbus transport crate exports the same trio — a scheme constant, a
//! transport type and a link type — and moves bytes only: the handshake,
//! framing and routing above it are the same code for every transport.
//!
//! For now this crate holds the scheme constant; the transport and link
//! types land in their own issue. Until then a node refuses `tcp` endpoints with
//! `LinkError::NoTransport`.

/// The endpoint scheme this transport serves.
pub const TCP_SCHEME: &str = botbus_core::TCP_SCHEME;
