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
//! Where both sides hold a token, a proof from each follows the hellos
//! ([`crate::auth`]). Nothing but these handshake lines is decoded before
//! the handshake passes.
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

use std::collections::VecDeque;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::auth::{self, AuthToken, Role, HMAC_SHA256, NONCE_LEN};
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
    /// This node requires a token, and the peer offered none.
    #[error("peer `{peer}` offers no authentication, and this node requires a token")]
    AuthRequired {
        /// The peer's node name (unproven).
        peer: String,
    },
    /// The peer requires a token, and this node has none.
    #[error("peer `{peer}` requires a token, and this node has none")]
    NoToken {
        /// The peer's node name.
        peer: String,
    },
    /// The peer's proof does not match this node's token: it holds another
    /// token, or none.
    #[error("peer claiming to be `{peer}` failed to prove it holds this node's token (wrong token)")]
    AuthFailed {
        /// The name the peer claimed.
        peer: String,
    },
    /// After its hello, the peer sent something other than its proof — a
    /// frame, say, before the handshake was over. It was not decoded.
    #[error(
        "peer `{peer}` sent something other than its proof before the handshake was over \
         (starts {starts:?}); nothing of it was decoded"
    )]
    NotAProof {
        /// The peer's node name (unproven).
        peer: String,
        /// The first bytes of what it sent.
        starts: String,
    },
    /// The peer refused the link during the handshake, and said why.
    #[error("peer `{peer}` refused the link: {reason}")]
    Refused {
        /// The peer's node name.
        peer: String,
        /// What it said.
        reason: String,
    },
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
/// agree on a codec. If both hold a token ([`Handshake::authenticated`]),
/// each then proves it holds the same one (see [`crate::auth`]): the
/// connecting side first, the accepting side only once that proof is good.
/// Nothing but handshake lines is decoded before the handshake passes;
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
///
/// With a token on each side, the proofs follow the hellos:
///
/// ```
/// use botbus_core::handshake::{Handshake, HandshakeError};
/// use botbus_core::{AuthToken, Hello, Role};
/// use bytes::BytesMut;
///
/// let token = AuthToken::new(b"a shared secret, 16+ bytes".to_vec()).unwrap();
/// let mut arm = Handshake::authenticated(Hello::new("arm"), Role::Connecting, token.clone(), [1; 32]);
/// let mut robot = Handshake::authenticated(Hello::new("robot"), Role::Accepting, token, [2; 32]);
/// let (mut to_robot, mut to_arm) = (BytesMut::new(), BytesMut::new());
/// let mut done = (None, None);
/// while done.0.is_none() || done.1.is_none() {
///     while let Some(bytes) = arm.poll_transmit() { to_robot.extend_from_slice(&bytes) }
///     while let Some(bytes) = robot.poll_transmit() { to_arm.extend_from_slice(&bytes) }
///     if done.0.is_none() { done.0 = arm.handle_input(&mut to_arm).unwrap() }
///     if done.1.is_none() { done.1 = robot.handle_input(&mut to_robot).unwrap() }
/// }
/// assert!(done.0.unwrap().authenticated && done.1.unwrap().peer.node == "arm");
///
/// let wrong = AuthToken::new(b"not the shared secret at all".to_vec()).unwrap();
/// let mut stranger = Handshake::authenticated(Hello::new("x"), Role::Connecting, wrong, [3; 32]);
/// let mut robot = Handshake::authenticated(
///     Hello::new("robot"), Role::Accepting, AuthToken::new(b"a shared secret, 16+ bytes".to_vec()).unwrap(), [4; 32]);
/// let mut to_robot = BytesMut::from(&stranger.poll_transmit().unwrap()[..]);
/// let mut to_stranger = BytesMut::from(&robot.poll_transmit().unwrap()[..]);
/// assert!(stranger.handle_input(&mut to_stranger).unwrap().is_none()); // it sends its proof...
/// to_robot.extend_from_slice(&stranger.poll_transmit().unwrap());
/// let refused = robot.handle_input(&mut to_robot).unwrap_err(); // ...which is wrong
/// assert!(matches!(refused, HandshakeError::AuthFailed { ref peer } if peer == "x"));
/// to_stranger.extend_from_slice(&robot.poll_transmit().unwrap()); // the robot says why
/// assert!(matches!(stranger.handle_input(&mut to_stranger), Err(HandshakeError::Refused { .. })));
/// ```
#[derive(Debug)]
pub struct Handshake {
    ours: Hello,
    hello_sent: bool,
    auth: Option<Auth>,
    outbox: VecDeque<Vec<u8>>,
    lines: LineReader,
    stage: Stage,
}

/// This side's part in authenticating.
#[derive(Debug)]
struct Auth {
    token: AuthToken,
    role: Role,
    nonce: [u8; NONCE_LEN],
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the peer's hello.
    Hello,
    /// Hellos exchanged; waiting for the peer's proof.
    Proof {
        peer: Hello,
        codec: CodecKind,
        nonce: [u8; NONCE_LEN],
    },
    /// Agreed, or failed: no more input is taken.
    Over,
}

/// A handshake line after the hello.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthLine {
    /// `{"proof":"<64 hex digits>"}`
    Proof(String),
    /// `{"refused":"<why>"}`: the sender gives up on the link.
    Refused(String),
}

impl AuthLine {
    fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a handshake line always encodes");
        line.push(b'\n');
        line
    }
}

/// What a finished handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The peer's hello (its name, its flow window).
    pub peer: Hello,
    /// The codec both sides use from now on.
    pub codec: CodecKind,
    /// Whether the peer proved it holds this side's token (its name is
    /// then what it proved).
    pub authenticated: bool,
}

impl Handshake {
    /// A handshake that introduces this side with `ours`, holding no token:
    /// a peer that requires one is refused (and refuses us).
    pub fn new(ours: Hello) -> Self {
        Self {
            ours,
            hello_sent: false,
            auth: None,
            outbox: VecDeque::new(),
            lines: LineReader::default(),
            stage: Stage::Hello,
        }
    }

    /// A handshake that requires the peer to prove it holds `token`, and
    /// proves this side does. `role` says which end of the link this is;
    /// `nonce` must be fresh random bytes for every link.
    pub fn authenticated(mut ours: Hello, role: Role, token: AuthToken, nonce: [u8; NONCE_LEN]) -> Self {
        ours.auth = vec![HMAC_SHA256.to_owned()];
        ours.nonce = Some(auth::to_hex(&nonce));
        Self {
            auth: Some(Auth { token, role, nonce }),
            ..Self::new(ours)
        }
    }

    /// This side's hello.
    pub fn ours(&self) -> &Hello {
        &self.ours
    }

    /// Whether there are bytes to send (see [`Handshake::poll_transmit`]).
    pub fn has_transmit(&self) -> bool {
        !self.hello_sent || !self.outbox.is_empty()
    }

    /// The bytes to send next, if any. After an error, what is left here
    /// tells the peer why (best effort).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.hello_sent {
            self.hello_sent = true;
            return Some(self.ours.to_line());
        }
        self.outbox.pop_front()
    }

    /// Takes the bytes that arrived. `Ok(Some(_))` once the link is agreed
    /// on (what follows the handshake stays in `input`); `Ok(None)` while
    /// more input is needed — or while this side has something to send
    /// first ([`Handshake::poll_transmit`]).
    pub fn handle_input(&mut self, input: &mut BytesMut) -> Result<Option<Agreed>, HandshakeError> {
        let result = self.step(input);
        if result.is_err() {
            self.stage = Stage::Over;
        }
        result
    }

    fn step(&mut self, input: &mut BytesMut) -> Result<Option<Agreed>, HandshakeError> {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Over) {
                Stage::Over => return Err(HandshakeError::BadHello("the handshake is already over".to_owned())),
                Stage::Hello => {
                    let Some(line) = self.lines.next(input)? else {
                        self.stage = Stage::Hello;
                        return Ok(None);
                    };
                    let theirs = read_hello(&line)?;
                    let codec = check_hello(&self.ours, &theirs)?;
                    if theirs.node == self.ours.node {
                        return Err(HandshakeError::SameName(theirs.node));
                    }
                    let they_prove = theirs.auth.iter().any(|m| m == HMAC_SHA256);
                    let Some(auth) = &self.auth else {
                        if they_prove {
                            return Err(HandshakeError::NoToken { peer: theirs.node });
                        }
                        return Ok(Some(Agreed {
                            peer: theirs,
                            codec,
                            authenticated: false,
                        }));
                    };
                    if !they_prove {
                        return Err(HandshakeError::AuthRequired { peer: theirs.node });
                    }
                    let nonce = theirs
                        .nonce
                        .as_deref()
                        .and_then(auth::from_hex::<NONCE_LEN>)
                        .ok_or_else(|| HandshakeError::BadHello("`nonce` must be 64 hex digits".to_owned()))?;
                    if auth.role == Role::Connecting {
                        self.outbox.push_back(self.proof_line(&theirs.node, &nonce));
                    }
                    self.stage = Stage::Proof {
                        peer: theirs,
                        codec,
                        nonce,
                    };
                }
                Stage::Proof { peer, codec, nonce } => {
                    let not_a_proof = |starts: &[u8]| HandshakeError::NotAProof {
                        peer: peer.node.clone(),
                        starts: String::from_utf8_lossy(&starts[..starts.len().min(32)]).into_owned(),
                    };
                    let line = match self.lines.next(input) {
                        Ok(Some(line)) => line,
                        Ok(None) => {
                            self.stage = Stage::Proof { peer, codec, nonce };
                            return Ok(None);
                        }
                        Err(HandshakeError::BadMagic(_)) => return Err(not_a_proof(input)),
                        Err(error) => return Err(error),
                    };
                    let auth = self
                        .auth
                        .as_ref()
                        .expect("only an authenticating handshake waits for a proof");
                    let proof = match serde_json::from_slice::<AuthLine>(&line) {
                        Ok(AuthLine::Proof(proof)) => proof,
                        Ok(AuthLine::Refused(reason)) => {
                            return Err(HandshakeError::Refused {
                                peer: peer.node,
                                reason,
                            })
                        }
                        Err(_) => return Err(not_a_proof(&line)),
                    };
                    let good = auth::from_hex::<32>(&proof).is_some_and(|proof| {
                        auth::verify(
                            &auth.token,
                            auth.role.peer(),
                            &peer.node,
                            &self.ours.node,
                            &nonce,
                            &auth.nonce,
                            &proof,
                        )
                    });
                    if !good {
                        if auth.role == Role::Accepting {
                            let refused = AuthLine::Refused("authentication failed: wrong token".to_owned());
                            self.outbox.push_back(refused.to_line());
                        }
                        return Err(HandshakeError::AuthFailed { peer: peer.node });
                    }
                    if auth.role == Role::Accepting {
                        self.outbox.push_back(self.proof_line(&peer.node, &nonce));
                    }
                    return Ok(Some(Agreed {
                        peer,
                        codec,
                        authenticated: true,
                    }));
                }
            }
        }
    }

    /// This side's proof line for the peer `peer` whose nonce is `nonce`.
    fn proof_line(&self, peer: &str, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let auth = self.auth.as_ref().expect("only an authenticating handshake proves");
        let proof = auth::proof(&auth.token, auth.role, &self.ours.node, peer, &auth.nonce, nonce);
        AuthLine::Proof(auth::to_hex(&proof)).to_line()
    }
}

/// Reads the handshake's lines: each at most [`MAX_HELLO_LEN`], each a
/// JSON object — a stream whose next byte cannot begin one is refused at
/// once, so a peer speaking something else (or sending frames before the
/// handshake is over) gets a clear error, not a timeout.
#[derive(Debug, Default)]
struct LineReader {
    scanned: usize,
}

impl LineReader {
    fn next(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, HandshakeError> {
        if let Some(&first) = src.iter().find(|b| !b.is_ascii_whitespace()) {
            if first != b'{' {
                let shown = &src[..src.len().min(32)];
                return Err(HandshakeError::BadMagic(String::from_utf8_lossy(shown).into_owned()));
            }
        }
        match crate::codec::next_line(src, &mut self.scanned, MAX_HELLO_LEN) {
            Ok(Some(end)) => {
                self.scanned = 0;
                Ok(Some(src.split_to(end + 1)))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(HandshakeError::TooLong),
        }
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
/// [`Decoder`] to use before the frame codec.
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
