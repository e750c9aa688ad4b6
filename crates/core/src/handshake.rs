//! The handshake: each side sends a [`Hello`] — one line of JSON — and checks
//! the other's.
//!
//! [`Handshake`] is the exchange as a state machine with no I/O, as
//! quinn-proto holds a connection: it says what to send
//! ([`Handshake::poll_transmit`]) and takes what arrives
//! ([`Handshake::handle_input`]) until the link is agreed on. A link's
//! driver only moves bytes and keeps the deadline.
//!
//! The exchange is symmetric — both sides write their hello first, then read —
//! so each side sees the other's version and reports a mismatch itself:
//! a version mismatch is a clear error on *both* ends. Each hello lists the
//! codecs its sender speaks; both sides pick the same one with
//! [`CodecKind::negotiate`], so choosing a codec costs no extra round trip.
//! Nothing but the hello is decoded before [`check_hello`] passes.
//!
//! ```
//! use botbus_core::handshake::{check_hello, read_hello, HandshakeError};
//! use botbus_core::{CodecKind, Hello};
//!
//! let ours = Hello::new("robot");
//! let line = Hello::with_codecs("arm", &[CodecKind::Json]).to_line();
//! let theirs = read_hello(&line).unwrap();
//! assert_eq!(check_hello(&ours, &theirs).unwrap(), CodecKind::Json);
//!
//! let future = br#"{"magic":"BBUS","version":9,"node":"arm","whatever":true}"#;
//! assert!(matches!(read_hello(future), Err(HandshakeError::VersionMismatch { theirs: 9, .. })));
//! ```

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::codec::FrameError;
use crate::frame::{CodecKind, Hello, MAGIC, PROTOCOL_VERSION};

/// The longest hello line accepted: a hello is a few dozen bytes.
pub const MAX_HELLO_LEN: usize = 4 * 1024;

/// Why a link's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's first bytes are not a botbus hello.
    #[error("peer is not a botbus node: its first line is not a botbus hello (starts {0:?})")]
    BadMagic(String),
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
    /// The hello is JSON with the right magic and version but not a valid hello.
    #[error("malformed hello: {0}")]
    BadHello(String),
    /// The two sides speak no codec in common.
    #[error("no codec in common with peer `{peer}`: we speak {ours:?}, it speaks {theirs:?}")]
    NoCommonCodec {
        /// What we offered.
        ours: Vec<CodecKind>,
        /// What the peer offered.
        theirs: Vec<CodecKind>,
        /// The peer's node name.
        peer: String,
    },
    /// The peer's name is empty or not a valid node name.
    #[error("peer announced an invalid node name `{0}`")]
    BadNodeName(String),
    /// The peer uses this node's own name.
    #[error("peer uses this node's own name `{0}`")]
    SameName(String),
    /// The peer did not complete the handshake in time.
    #[error("handshake timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The link closed before the peer's hello arrived.
    #[error("link closed during the handshake")]
    Closed,
    /// The hello line was longer than [`MAX_HELLO_LEN`] (without its
    /// ending), however it arrived.
    #[error("hello longer than {MAX_HELLO_LEN} bytes")]
    TooLong,
    /// The hello could not be read or written.
    #[error("handshake i/o: {0}")]
    Frame(#[from] FrameError),
}

/// Parses the peer's hello line (with or without its newline).
///
/// Magic and version are checked first, on a loose parse, so that a peer of
/// another version — whose hello may have other fields — gets a version
/// mismatch, not a parse error.
pub fn read_hello(line: &[u8]) -> Result<Hello, HandshakeError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let bad_magic = || HandshakeError::BadMagic(String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned());
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|_| bad_magic())?;
    if value.get("magic").and_then(|m| m.as_str()) != Some(MAGIC) {
        return Err(bad_magic());
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version.map_or(0, |v| u16::try_from(v).unwrap_or(u16::MAX)),
            peer: value.get("node").and_then(|n| n.as_str()).unwrap_or("?").to_owned(),
        });
    }
    serde_json::from_value(value).map_err(|e| HandshakeError::BadHello(e.to_string()))
}

/// The handshake of one link, as a state machine with no I/O.
///
/// Both sides run the same one: send our hello, take theirs, check it, and
/// agree on a codec. Nothing but the hello is decoded before it passes;
/// whatever arrived after it stays in the input buffer for the frame codec.
///
/// ```
/// use botbus_core::handshake::Handshake;
/// use botbus_core::{CodecKind, Hello};
/// use bytes::BytesMut;
///
/// let mut ours = Handshake::new(Hello::new("robot"));
/// let mut theirs = Handshake::new(Hello::with_codecs("arm", &[CodecKind::Json]));
/// // Each side's first transmission is its hello...
/// let mut to_them = BytesMut::from(&ours.poll_transmit().unwrap()[..]);
/// let mut to_us = BytesMut::from(&theirs.poll_transmit().unwrap()[..]);
/// assert!(ours.poll_transmit().is_none());
/// // ...and each side, having read the other's, knows the link.
/// to_us.extend_from_slice(b"{\"ping\":{\"nonce\":1}}\n"); // the first frame, already here
/// let agreed = ours.handle_input(&mut to_us).unwrap().expect("done");
/// assert_eq!((agreed.peer.node.as_str(), agreed.codec), ("arm", CodecKind::Json));
/// assert_eq!(&to_us[..], b"{\"ping\":{\"nonce\":1}}\n"); // left for the frame codec
/// assert_eq!(theirs.handle_input(&mut to_them).unwrap().unwrap().peer.node, "robot");
/// ```
#[derive(Debug)]
pub struct Handshake {
    ours: Hello,
    hello_sent: bool,
    decoder: HelloCodec,
    agreed: bool,
}

/// What a finished handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The peer's hello (its name, its flow window).
    pub peer: Hello,
    /// The codec both sides use from now on.
    pub codec: CodecKind,
}

impl Handshake {
    /// A handshake that introduces this side with `ours`.
    pub fn new(ours: Hello) -> Self {
        Self {
            ours,
            hello_sent: false,
            decoder: HelloCodec::default(),
            agreed: false,
        }
    }

    /// This side's hello.
    pub fn ours(&self) -> &Hello {
        &self.ours
    }

    /// Whether there are bytes to send (see [`Handshake::poll_transmit`]).
    pub fn has_transmit(&self) -> bool {
        !self.hello_sent
    }

    /// The bytes to send next, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.hello_sent {
            return None;
        }
        self.hello_sent = true;
        Some(self.ours.to_line())
    }

    /// Takes the bytes that arrived. `Ok(Some(_))` once the link is agreed
    /// on (what follows the handshake stays in `input`); `Ok(None)` while
    /// more input is needed.
    pub fn handle_input(&mut self, input: &mut BytesMut) -> Result<Option<Agreed>, HandshakeError> {
        if self.agreed {
            return Err(HandshakeError::BadHello("the handshake is already done".to_owned()));
        }
        let Some(theirs) = self.decoder.decode(input)? else {
            return Ok(None);
        };
        let codec = check_hello(&self.ours, &theirs)?;
        if theirs.node == self.ours.node {
            return Err(HandshakeError::SameName(theirs.node));
        }
        self.agreed = true;
        Ok(Some(Agreed { peer: theirs, codec }))
    }
}

/// Checks the peer's hello against ours; returns the codec both will use.
pub fn check_hello(ours: &Hello, theirs: &Hello) -> Result<CodecKind, HandshakeError> {
    if theirs.magic != MAGIC {
        return Err(HandshakeError::BadMagic(theirs.magic.clone()));
    }
    if theirs.version != ours.version {
        return Err(HandshakeError::VersionMismatch {
            ours: ours.version,
            theirs: theirs.version,
            peer: theirs.node.clone(),
        });
    }
    if crate::address::validate_name(&theirs.node).is_err() {
        return Err(HandshakeError::BadNodeName(theirs.node.clone()));
    }
    CodecKind::negotiate(&ours.codecs, &theirs.codecs).ok_or_else(|| HandshakeError::NoCommonCodec {
        ours: ours.codecs.clone(),
        theirs: theirs.codecs.clone(),
        peer: theirs.node.clone(),
    })
}

/// Reads the peer's hello line off a byte stream, as a tokio-util
/// [`Decoder`](tokio_util::codec::Decoder) to use before the frame codec.
///
/// A stream whose first byte cannot begin a JSON hello is refused at once,
/// so a peer speaking something else gets a clear error, not a timeout.
#[derive(Debug, Default, Clone)]
pub struct HelloCodec {
    scanned: usize,
}

impl Decoder for HelloCodec {
    type Item = Hello;
    type Error = HandshakeError;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Hello>, HandshakeError> {
        if let Some(&first) = src.iter().find(|b| !b.is_ascii_whitespace()) {
            if first != b'{' {
                let shown = &src[..src.len().min(32)];
                return Err(HandshakeError::BadMagic(String::from_utf8_lossy(shown).into_owned()));
            }
        }
        match crate::codec::next_line(src, &mut self.scanned, MAX_HELLO_LEN) {
            Ok(Some(end)) => read_hello(&src.split_to(end + 1)).map(Some),
            Ok(None) => Ok(None),
            Err(_) => Err(HandshakeError::TooLong),
        }
    }
}

impl From<std::io::Error> for HandshakeError {
    fn from(error: std::io::Error) -> Self {
        HandshakeError::Frame(FrameError::Io(error))
    }
}
