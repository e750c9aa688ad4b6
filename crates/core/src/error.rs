//! Small, specific error types: one per operation, each naming what went wrong.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a [`Payload`](crate::Payload) could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload carries a different message type.
    #[error("expected message `{expected}`, got `{found}`")]
    TypeMismatch {
        /// The name the receiver expected.
        expected: &'static str,
        /// The name the payload carries.
        found: String,
    },
    /// The bytes do not decode as the named type.
    #[error("malformed `{name}` message: {source}")]
    Decode {
        /// The message type being decoded.
        name: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },
    /// The body decoded, but bytes were left over after it.
    #[error("malformed `{name}` message: {count} trailing bytes after the value")]
    TrailingBytes {
        /// The message type being decoded.
        name: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// The body nests deeper than [`MAX_NESTING`](crate::depth::MAX_NESTING)
    /// levels (a recursive type, such as a tree): refused rather than risk
    /// the stack.
    #[error(
        "malformed `{name}` message: nested deeper than {} levels",
        crate::depth::MAX_NESTING
    )]
    TooDeep {
        /// The message type being decoded.
        name: &'static str,
    },
    /// The value could not be encoded.
    #[error("cannot encode `{name}` message: {source}")]
    Encode {
        /// The message type being encoded.
        name: String,
        /// The postcard error.
        source: postcard::Error,
    },
    /// The JSON body does not decode as the named type.
    #[error("malformed `{name}` message: {source}")]
    DecodeJson {
        /// The message type being decoded.
        name: &'static str,
        /// The serde_json error.
        source: serde_json::Error,
    },
    /// The value could not be encoded as JSON.
    #[error("cannot encode `{name}` message as JSON: {source}")]
    EncodeJson {
        /// The message type being encoded.
        name: String,
        /// The serde_json error.
        source: serde_json::Error,
    },
    /// The value encoded to another length than it measured a moment
    /// before: its `Serialize` is not a function of the value alone.
    #[error("`{name}` message encoded to {written} bytes after measuring {measured}: its `Serialize` must give the same bytes each time")]
    Unstable {
        /// The message type being encoded.
        name: String,
        /// What it measured.
        measured: usize,
        /// What it wrote.
        written: usize,
    },
    /// An encoded message was to be passed on over a link of another codec,
    /// and this process does not know its type to re-encode it.
    #[error("cannot re-encode `{name}` from {from} to {to}: this process does not know the type (register it with `register_message`)")]
    Transcode {
        /// The message's name.
        name: String,
        /// The codec it arrived in.
        from: crate::CodecKind,
        /// The codec it would leave in.
        to: crate::CodecKind,
    },
}

/// Why a tell or publish could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No module of that name is known here or behind any link.
    #[error("unknown module `{0}`")]
    UnknownModule(String),
    /// The target's mailbox (or the link to it) is full and the caller asked
    /// not to wait.
    #[error("mailbox of `{0}` is full")]
    MailboxFull(String),
    /// The target stopped (or its link closed) before taking the message.
    #[error("module `{0}` has stopped")]
    Stopped(String),
    /// The address or topic is not well formed.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The message could not be encoded for a link.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// How an ask ended when it did not end with a reply. Every ask ends with a
/// reply or one of these, never a hang.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AskError {
    /// No reply arrived within the ask's timeout.
    #[error("ask to `{module}` timed out after {after:?}")]
    Timeout {
        /// The module that was asked.
        module: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// No module of that name is known here or behind any link.
    #[error("unknown module `{0}`")]
    UnknownModule(String),
    /// The target is known but cannot be reached: its link went down.
    #[error("module `{module}` is unreachable: {reason}")]
    Unreachable {
        /// The module that was asked.
        module: String,
        /// Why: which link closed, and how.
        reason: String,
    },
    /// The target stopped or failed before it replied.
    #[error("module `{0}` stopped before replying")]
    Stopped(String),
    /// The asker cancelled the ask.
    #[error("ask to `{0}` was cancelled")]
    Cancelled(String),
    /// The target's mailbox was full and the asker asked not to wait.
    #[error("mailbox of `{0}` is full")]
    MailboxFull(String),
    /// The target answered with an error.
    #[error("module `{module}` answered with an error: {message}")]
    Remote {
        /// The module that answered.
        module: String,
        /// The error it returned.
        message: String,
    },
    /// The reply (or request) did not have the expected type.
    #[error("bad payload: {0}")]
    BadPayload(String),
    /// The caller does not take messages from the callee mid-request (it
    /// awaited the ask without [`Ask::start`](crate::Ask::start)).
    #[error("the caller of `{0}` does not take caller messages")]
    CallerNotListening(String),
}

impl AskError {
    /// Converts a failed send into the ask error it means.
    pub fn from_send(error: SendError) -> Self {
        match error {
            SendError::UnknownModule(m) => AskError::UnknownModule(m),
            SendError::MailboxFull(m) => AskError::MailboxFull(m),
            SendError::Stopped(m) => AskError::Stopped(m),
            SendError::InvalidName(m) | SendError::Encode(m) => AskError::BadPayload(m),
        }
    }
}

/// An error a module returns from a hook. From `process` it becomes the
/// asker's [`AskError::Remote`]; from `started`, `tick` or `down` it counts as
/// a failure and the supervisor applies the module's restart policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModuleError {
    message: String,
}

impl ModuleError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<PayloadError> for ModuleError {
    fn from(error: PayloadError) -> Self {
        Self::new(error.to_string())
    }
}

impl From<AskError> for ModuleError {
    fn from(error: AskError) -> Self {
        Self::new(error.to_string())
    }
}

impl From<SendError> for ModuleError {
    fn from(error: SendError) -> Self {
        Self::new(error.to_string())
    }
}
