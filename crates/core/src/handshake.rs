//! The handshake: each side sends a [`Hello`] and checks the other's.
//!
//! The exchange is symmetric — both sides write their hello first, then read —
//! so each side sees the other's version and reports a mismatch itself:
//! a version mismatch is a clear error on *both* ends. Nothing but the hello
//! is decoded before [`check_hello`] passes.
//!
//! ```
//! use botbus_core::handshake::{check_hello, HandshakeError};
//! use botbus_core::Hello;
//!
//! let ours = Hello::new("robot");
//! let mut theirs = Hello::new("arm");
//! assert!(check_hello(&ours, &theirs).is_ok());
//! theirs.version += 1;
//! assert!(matches!(check_hello(&ours, &theirs), Err(HandshakeError::VersionMismatch { .. })));
//! ```

use crate::codec::FrameError;
use crate::frame::{Hello, MAGIC};

/// Why a link's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's first bytes are not a botbus hello.
    #[error("peer is not a botbus node: bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak v{ours}, peer `{peer}` speaks v{theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
        /// The peer's node name.
        peer: String,
    },
    /// The peer wants a codec we do not speak.
    #[error("peer `{peer}` wants codec {codec:?}, which this node does not speak")]
    UnsupportedCodec {
        /// What the peer asked for.
        codec: crate::frame::CodecKind,
        /// The peer's node name.
        peer: String,
    },
    /// The peer's name is empty or not a valid node name.
    #[error("peer announced an invalid node name `{0}`")]
    BadNodeName(String),
    /// The peer did not complete the handshake in time.
    #[error("handshake timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The link closed before the peer's hello arrived.
    #[error("link closed during the handshake")]
    Closed,
    /// The hello frame could not be read or written.
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
}

/// Checks the peer's hello against ours.
pub fn check_hello(ours: &Hello, theirs: &Hello) -> Result<(), HandshakeError> {
    if theirs.magic != MAGIC {
        return Err(HandshakeError::BadMagic(theirs.magic));
    }
    if theirs.version != ours.version {
        return Err(HandshakeError::VersionMismatch {
            ours: ours.version,
            theirs: theirs.version,
            peer: theirs.node.clone(),
        });
    }
    if theirs.codec != ours.codec {
        return Err(HandshakeError::UnsupportedCodec {
            codec: theirs.codec,
            peer: theirs.node.clone(),
        });
    }
    if crate::address::validate_name(&theirs.node).is_err() {
        return Err(HandshakeError::BadNodeName(theirs.node.clone()));
    }
    Ok(())
}
