//! The wire unit: [`Frame`], and the [`Hello`] that opens every link.
//!
//! Every frame kind the protocol knows is a variant here. Payloads travel as
//! [`WirePayload`]: the message's stable name and its encoded body, so a node
//! routes a frame without knowing the message type.
//!
//! The same types serve both codecs. Postcard (length-prefixed, compact) is
//! for Rust peers; JSON lines let a peer in any language join with only its
//! standard library. In JSON a frame is `{"<kind>": {fields}}` and a payload
//! body is the message's own JSON value. `docs/PROTOCOL.md` spells out every
//! frame in both encodings.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AskError;
use crate::module::DownReason;

/// The `magic` every botbus hello carries.
pub const MAGIC: &str = "BBUS";

/// The protocol version this build speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// The encoding of frames (and message bodies) after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecKind {
    /// Length-prefixed postcard: compact and fast, for Rust peers.
    Postcard,
    /// One JSON object per line: for peers in any language.
    Json,
}

impl CodecKind {
    /// Every codec, most preferred first. The handshake picks the first one
    /// in this order that both sides offer, so both pick the same one.
    pub const PREFERENCE: [CodecKind; 2] = [CodecKind::Postcard, CodecKind::Json];

    /// The codec two peers offering `ours` and `theirs` agree on, if any.
    ///
    /// ```
    /// use botbus_core::CodecKind::{Json, Postcard};
    /// assert_eq!(botbus_core::CodecKind::negotiate(&[Postcard, Json], &[Json]), Some(Json));
    /// assert_eq!(botbus_core::CodecKind::negotiate(&[Json, Postcard], &[Postcard, Json]), Some(Postcard));
    /// assert_eq!(botbus_core::CodecKind::negotiate(&[Postcard], &[Json]), None);
    /// ```
    pub fn negotiate(ours: &[CodecKind], theirs: &[CodecKind]) -> Option<CodecKind> {
        Self::PREFERENCE
            .into_iter()
            .find(|codec| ours.contains(codec) && theirs.contains(codec))
    }

    /// The codec's name in a hello (`postcard`, `json`).
    pub fn as_str(self) -> &'static str {
        match self {
            CodecKind::Postcard => "postcard",
            CodecKind::Json => "json",
        }
    }
}

impl std::fmt::Display for CodecKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first thing each side sends on a new link: one line of JSON, whatever
/// codec follows, so that any peer can read it and a mismatch is reported
/// clearly on both ends.
///
/// ```text
/// {"magic":"BBUS","version":1,"node":"robot","codecs":["postcard","json"]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The sender's node name.
    pub node: String,
    /// The codecs the sender speaks; see [`CodecKind::negotiate`].
    pub codecs: Vec<CodecKind>,
    /// Flow control, if the sender does it: the most data frames (tells,
    /// asks, publishes) the peer may have sent that the sender has not yet
    /// credited back with [`Frame::Credit`]. Absent: the sender sends no
    /// credits, and the peer sends as fast as the byte stream takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// The longest frame the sender reads, in bytes (a postcard frame's
    /// length without its prefix, a JSON line's without its ending): the
    /// peer sends none longer, and refuses a message that would need one
    /// where it is sent, with the link left up. Absent: the sender does not
    /// say, and the peer sends up to its own maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<u32>,
    /// The authentication mechanisms the sender holds a token for
    /// (`hmac-sha256`; see [`crate::auth`]). Absent or empty: it holds none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<String>,
    /// With `auth`: the sender's fresh random nonce for this link, 32 bytes
    /// as 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl Hello {
    /// The hello this build sends for node `node`, offering every codec.
    pub fn new(node: impl Into<String>) -> Self {
        Self::with_codecs(node, &CodecKind::PREFERENCE)
    }

    /// A hello offering only `codecs`.
    pub fn with_codecs(node: impl Into<String>, codecs: &[CodecKind]) -> Self {
        Self {
            magic: MAGIC.to_owned(),
            version: PROTOCOL_VERSION,
            node: node.into(),
            codecs: codecs.to_vec(),
            window: None,
            max_frame: None,
            auth: Vec::new(),
            nonce: None,
        }
    }

    /// The hello as it goes on the wire: compact JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a hello always encodes");
        line.push(b'\n');
        line
    }
}

/// A node reachable through the sender of an [`Frame::Announce`], with what
/// lives there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// The node.
    pub node: String,
    /// The nodes a frame passes from the sender to `node`, `node` last (the
    /// sender itself not included): a direct peer of the sender has a path
    /// of one.
    pub path: Vec<String>,
    /// The node's own modules.
    pub modules: Vec<String>,
    /// The topic patterns its modules subscribe to.
    pub subscriptions: Vec<String>,
    /// The node speaks only JSON: a node that sends it a message it knows
    /// the type of encodes it as JSON, so the nodes between pass it on as
    /// it is.
    #[serde(default)]
    pub json: bool,
}

/// A message as it crosses a link: its stable name and its encoded body.
///
/// In JSON the body is the message's JSON value, inline
/// (`{"name":"motor.SetSpeed","body":0.5}`), or for postcard bytes (a type
/// the sending node does not know, so cannot write as JSON) the bytes as
/// hex (`{"name":"cam.Frame","hex":"0a0b"}`). In postcard it is the
/// message's postcard bytes — or, flagged with `json`, its JSON text: a
/// payload that came from a JSON peer crosses postcard links as it came,
/// so the nodes between never need to know its type, and only the node
/// that takes it decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePayload {
    /// The message's [`Message::NAME`](crate::Message::NAME).
    pub name: String,
    /// The encoded message.
    pub body: Bytes,
    /// Whether `body` is JSON text (always, in a JSON frame).
    pub json: bool,
}

/// A payload in a JSON frame: the body inline as JSON, or — a postcard body
/// the sending node cannot turn into JSON, because it does not know the
/// type — its bytes as hex.
#[derive(Deserialize)]
struct JsonPayload {
    name: String,
    #[serde(default, deserialize_with = "body::present")]
    body: Option<Bytes>,
    #[serde(default)]
    hex: Option<String>,
}

/// A payload in a postcard frame: the body's bytes and what they are.
#[derive(Deserialize)]
struct BinaryPayload {
    name: String,
    body: Bytes,
    json: bool,
}

impl Serialize for WirePayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PayloadRef {
            name: &self.name,
            body: &self.body,
            json: self.json,
        }
        .serialize(serializer)
    }
}

/// A payload to send, borrowing its name and body: it encodes exactly as a
/// [`WirePayload`] with the same fields, without copying either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadRef<'a> {
    /// The message's name.
    pub name: &'a str,
    /// The encoded message (JSON text if `json`).
    pub body: &'a [u8],
    /// Whether `body` is JSON text (it must be, in a JSON frame).
    pub json: bool,
}

impl Serialize for PayloadRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if serializer.is_human_readable() {
            if !self.json {
                let mut form = serializer.serialize_struct("JsonPayload", 2)?;
                form.serialize_field("name", self.name)?;
                form.serialize_field("hex", &crate::auth::to_hex(self.body))?;
                return form.end();
            }
            /// The body inline, borrowed.
            struct Inline<'a>(&'a [u8]);
            impl Serialize for Inline<'_> {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    body::serialize(self.0, serializer)
                }
            }
            let mut form = serializer.serialize_struct("JsonPayload", 2)?;
            form.serialize_field("name", self.name)?;
            form.serialize_field("body", &Inline(self.body))?;
            form.end()
        } else {
            /// The body as bytes (as `Bytes` serializes), borrowed.
            struct Raw<'a>(&'a [u8]);
            impl Serialize for Raw<'_> {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    serializer.serialize_bytes(self.0)
                }
            }
            let mut form = serializer.serialize_struct("BinaryPayload", 3)?;
            form.serialize_field("name", self.name)?;
            form.serialize_field("body", &Raw(self.body))?;
            form.serialize_field("json", &self.json)?;
            form.end()
        }
    }
}

/// A data frame to send — a tell, an ask or a publish — borrowing
/// everything it carries. It encodes exactly as the [`Frame`] variant of the
/// same name and fields, in either codec, so a sender builds no owned
/// [`Frame`] (no copy of its names, target or body) on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFrame<'a> {
    /// As [`Frame::Tell`].
    Tell {
        /// Target module.
        to: &'a str,
        /// Sending module (`node/module`).
        from: &'a str,
        /// The message.
        payload: PayloadRef<'a>,
    },
    /// As [`Frame::Ask`].
    Ask {
        /// The ask's id on this link.
        id: u64,
        /// Target module.
        to: &'a str,
        /// Asking module (`node/module`).
        from: &'a str,
        /// Milliseconds the asker will wait.
        timeout_ms: u64,
        /// The request.
        payload: PayloadRef<'a>,
    },
    /// As [`Frame::Publish`].
    Publish {
        /// The topic.
        topic: &'a str,
        /// Publishing module (`node/module`).
        from: &'a str,
        /// The message.
        payload: PayloadRef<'a>,
        /// The nodes this copy is for.
        to: &'a [String],
    },
}

/// A data frame without its payload: what it is, where it goes, from whom.
/// With a payload's value, [`WireCodec::encode_data_value`] encodes the
/// value straight into the frame.
///
/// [`WireCodec::encode_data_value`]: crate::WireCodec::encode_data_value
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataHead<'a> {
    /// As [`DataFrame::Tell`].
    Tell {
        /// Target module.
        to: &'a str,
        /// Sending module (`node/module`).
        from: &'a str,
    },
    /// As [`DataFrame::Ask`].
    Ask {
        /// The ask's id on this link.
        id: u64,
        /// Target module.
        to: &'a str,
        /// Asking module (`node/module`).
        from: &'a str,
        /// Milliseconds the asker will wait.
        timeout_ms: u64,
    },
    /// As [`DataFrame::Publish`].
    Publish {
        /// The topic.
        topic: &'a str,
        /// Publishing module (`node/module`).
        from: &'a str,
        /// The nodes this copy is for.
        to: &'a [String],
    },
}

impl<'a> DataHead<'a> {
    /// The whole frame, with `payload`.
    pub fn with<'b>(self, payload: PayloadRef<'b>) -> DataFrame<'b>
    where
        'a: 'b,
    {
        match self {
            DataHead::Tell { to, from } => DataFrame::Tell { to, from, payload },
            DataHead::Ask {
                id,
                to,
                from,
                timeout_ms,
            } => DataFrame::Ask {
                id,
                to,
                from,
                timeout_ms,
                payload,
            },
            DataHead::Publish { topic, from, to } => DataFrame::Publish {
                topic,
                from,
                payload,
                to,
            },
        }
    }
}

/// The indices of the data frames' variants in [`Frame`], which
/// [`DataFrame`] and the in-place encoding of a value write themselves.
pub(crate) mod variant {
    pub(crate) const TELL: u32 = 0;
    pub(crate) const ASK: u32 = 1;
    pub(crate) const REPLY: u32 = 2;
    pub(crate) const PUBLISH: u32 = 7;
}

impl Serialize for DataFrame<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        use variant::{ASK, PUBLISH, TELL};
        match *self {
            DataFrame::Tell { to, from, payload } => {
                let mut form = serializer.serialize_struct_variant("Frame", TELL, "tell", 3)?;
                form.serialize_field("to", to)?;
                form.serialize_field("from", from)?;
                form.serialize_field("payload", &payload)?;
                form.end()
            }
            DataFrame::Ask {
                id,
                to,
                from,
                timeout_ms,
                payload,
            } => {
                let mut form = serializer.serialize_struct_variant("Frame", ASK, "ask", 5)?;
                form.serialize_field("id", &id)?;
                form.serialize_field("to", to)?;
                form.serialize_field("from", from)?;
                form.serialize_field("timeout_ms", &timeout_ms)?;
                form.serialize_field("payload", &payload)?;
                form.end()
            }
            DataFrame::Publish {
                topic,
                from,
                payload,
                to,
            } => {
                let mut form = serializer.serialize_struct_variant("Frame", PUBLISH, "publish", 4)?;
                form.serialize_field("topic", topic)?;
                form.serialize_field("from", from)?;
                form.serialize_field("payload", &payload)?;
                form.serialize_field("to", to)?;
                form.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for WirePayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            use serde::de::Error as _;
            let JsonPayload { name, body, hex } = JsonPayload::deserialize(deserializer)?;
            match (body, hex) {
                (Some(body), None) => Ok(WirePayload { name, body, json: true }),
                (None, Some(hex)) => match crate::auth::bytes_from_hex(&hex) {
                    Some(bytes) => Ok(WirePayload {
                        name,
                        body: bytes.into(),
                        json: false,
                    }),
                    None => Err(D::Error::custom(format!(
                        "payload `{name}`: `hex` must be pairs of hex digits"
                    ))),
                },
                (Some(_), Some(_)) => Err(D::Error::custom(format!(
                    "payload `{name}` has both `body` and `hex`; it takes one"
                ))),
                (None, None) => Err(D::Error::custom(format!("payload `{name}` has no `body`"))),
            }
        } else {
            let BinaryPayload { name, body, json } = BinaryPayload::deserialize(deserializer)?;
            Ok(WirePayload { name, body, json })
        }
    }
}

/// A payload body: bytes in postcard, an inline JSON value in JSON (the body
/// bytes of a JSON link are the value's JSON text).
mod body {
    use super::*;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde_json::value::RawValue;

    pub(super) fn serialize<S: Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(body);
        }
        let text = std::str::from_utf8(body).map_err(S::Error::custom)?;
        // A frame is one line. A line break in valid JSON text can only be
        // white space between tokens (inside a string it must be escaped),
        // so pretty-printed JSON goes out with its breaks as spaces.
        let text = match text.contains(['\n', '\r']) {
            false => std::borrow::Cow::Borrowed(text),
            true => std::borrow::Cow::Owned(text.replace(['\n', '\r'], " ")),
        };
        let raw: &RawValue = serde_json::from_str(&text).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }

    /// [`deserialize`], for a field that may be missing: present, even as
    /// `null` (the unit value's body), it is `Some`.
    pub(super) fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Bytes>, D::Error> {
        deserialize(deserializer).map(Some)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        if !deserializer.is_human_readable() {
            return Bytes::deserialize(deserializer);
        }
        let raw = Box::<RawValue>::deserialize(deserializer).map_err(D::Error::custom)?;
        Ok(Bytes::copy_from_slice(raw.get().as_bytes()))
    }
}

/// One unit on the wire after the handshake.
///
/// Ask ids are chosen by the asking side and are unique per link and
/// direction; every frame about an ask (reply, progress, caller messages,
/// cancel) carries its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        /// The nodes this copy is for: the receiver delivers it to its own
        /// subscribers if it is listed, and passes it on towards the others,
        /// each by its best route, so that every subscriber gets exactly one
        /// copy. Empty (as a simple peer sends it): the receiver is the
        /// first router, and sends it to every subscriber it knows of.
        #[serde(default)]
        to: Vec<String>,
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
    /// What can be reached through the sender: its own modules and
    /// subscriptions, and those of the nodes it routes to. Replaces whatever
    /// was announced before, together with the [`Frame::AnnouncePart`]s
    /// just before it, if any (see [`crate::announce`]).
    Announce {
        /// The sender's own modules (those of its child processes included).
        modules: Vec<String>,
        /// Topic patterns the sender's own modules subscribe to.
        subscriptions: Vec<String>,
        /// Other nodes reachable through the sender, each with the path it
        /// takes: a receiver refuses a route whose path holds its own name
        /// (a loop) and prefers the shortest. A simple peer sends none.
        #[serde(default)]
        reach: Vec<Reach>,
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
    /// The sender has taken `frames` more data frames (tells, asks,
    /// publishes) off the link: the peer may send that many more. Sent only
    /// by a side whose hello granted a `window`.
    Credit {
        /// How many data frames were taken.
        frames: u32,
    },
    /// The sender is closing the link on purpose.
    Bye {
        /// Why.
        reason: String,
    },
    /// A part of an announcement too long for one frame the peer reads:
    /// more parts follow, the last of them a [`Frame::Announce`], and the
    /// receiver takes them all together as that one announce (see
    /// [`crate::announce`]). Last of the kinds, so that a peer that knows
    /// none still reads every announce that fits one frame.
    AnnouncePart {
        /// Some of the sender's own modules.
        modules: Vec<String>,
        /// Some of the topic patterns they subscribe to.
        subscriptions: Vec<String>,
        /// Some of the nodes reachable through the sender: an entry whose
        /// names go on in the next part is named again there.
        reach: Vec<Reach>,
    },
}

impl Frame {
    /// The length of the message body the frame carries (0 if none): most
    /// of what it takes to encode it.
    pub fn body_len(&self) -> usize {
        match self {
            Frame::Tell { payload, .. }
            | Frame::Ask { payload, .. }
            | Frame::Progress { payload, .. }
            | Frame::CallerAsk { payload, .. }
            | Frame::Publish { payload, .. }
            | Frame::Reply {
                result: Ok(payload), ..
            }
            | Frame::CallerReply {
                result: Ok(payload), ..
            } => payload.body.len(),
            _ => 0,
        }
    }
}

/// A payload as read from a postcard frame, borrowing from the frame's
/// bytes (see [`Incoming`](crate::codec::Incoming)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PayloadIn<'a> {
    /// The message's name.
    pub name: &'a str,
    /// The encoded message, inside the frame's bytes.
    pub body: &'a [u8],
    /// Whether `body` is JSON text.
    pub json: bool,
}

/// A tell or an ask as read from a postcard frame, borrowing every name and
/// the body from the frame's bytes: what a link takes on its hot path, with
/// nothing copied or allocated to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataIn<'a> {
    /// As [`Frame::Tell`].
    Tell {
        /// Target module.
        to: &'a str,
        /// Sending module (`node/module`).
        from: &'a str,
        /// The message.
        payload: PayloadIn<'a>,
    },
    /// As [`Frame::Ask`].
    Ask {
        /// The ask's id on this link.
        id: u64,
        /// Target module.
        to: &'a str,
        /// Asking module (`node/module`).
        from: &'a str,
        /// Milliseconds the asker will wait.
        timeout_ms: u64,
        /// The request.
        payload: PayloadIn<'a>,
    },
}

impl<'a> DataIn<'a> {
    /// Who sent it (`node/module`).
    pub fn from(&self) -> &'a str {
        match *self {
            DataIn::Tell { from, .. } | DataIn::Ask { from, .. } => from,
        }
    }

    /// Whom it is for.
    pub fn to(&self) -> &'a str {
        match *self {
            DataIn::Tell { to, .. } | DataIn::Ask { to, .. } => to,
        }
    }
}

/// A postcard frame body, read: a tell, an ask or a reply borrowed from
/// the bytes, or any other frame, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameIn<'a> {
    /// A tell or an ask.
    Data(DataIn<'a>),
    /// As [`Frame::Reply`] with its reply (a reply that is an error is read
    /// owned, as any other frame).
    Reply {
        /// The ask this answers.
        id: u64,
        /// The reply.
        payload: PayloadIn<'a>,
    },
    /// Any other frame.
    Frame(Frame),
}

impl<'a> FrameIn<'a> {
    /// Reads one postcard frame body (without its length prefix), checked
    /// as the frame codec checks it: malformed or with bytes left over, it
    /// is an error naming what was wrong.
    ///
    /// ```
    /// use botbus_core::frame::{DataIn, FrameIn};
    /// use botbus_core::{Frame, WirePayload};
    ///
    /// let tell = Frame::Tell {
    ///     to: "motor".into(),
    ///     from: "a/ctl".into(),
    ///     payload: WirePayload { name: "u32".into(), body: vec![7].into(), json: false },
    /// };
    /// let bytes = postcard::to_allocvec(&tell).unwrap();
    /// match FrameIn::read(&bytes).unwrap() {
    ///     FrameIn::Data(DataIn::Tell { to, payload, .. }) => assert_eq!((to, payload.body), ("motor", &[7][..])),
    ///     other => panic!("{other:?}"),
    /// }
    /// let ping = postcard::to_allocvec(&Frame::Ping { nonce: 1 }).unwrap();
    /// assert_eq!(FrameIn::read(&ping).unwrap(), FrameIn::Frame(Frame::Ping { nonce: 1 }));
    /// assert!(FrameIn::read(&[0, 200]).is_err());
    /// ```
    pub fn read(body: &'a [u8]) -> Result<FrameIn<'a>, crate::codec::FrameError> {
        // The names are read as bytes and checked as UTF-8 by `texts`, in
        // as few passes as their layout allows.
        #[derive(Deserialize)]
        struct PayloadBytes<'a> {
            name: &'a [u8],
            body: &'a [u8],
            json: bool,
        }
        #[derive(Deserialize)]
        struct TellIn<'a> {
            to: &'a [u8],
            from: &'a [u8],
            #[serde(borrow)]
            payload: PayloadBytes<'a>,
        }
        #[derive(Deserialize)]
        struct AskIn<'a> {
            id: u64,
            to: &'a [u8],
            from: &'a [u8],
            timeout_ms: u64,
            #[serde(borrow)]
            payload: PayloadBytes<'a>,
        }
        #[derive(Deserialize)]
        struct ReplyIn<'a> {
            id: u64,
            #[serde(borrow)]
            result: Result<PayloadBytes<'a>, AskError>,
        }
        // A variant index below 128 is its own one-byte varint, as those of
        // a tell, an ask and a reply are.
        match body.split_first().map(|(&index, rest)| (u32::from(index), rest)) {
            Some((variant::TELL, rest)) => {
                let TellIn { to, from, payload } = whole(rest, body.len())?;
                let [to, from, name] = texts(body, [to, from, payload.name])?;
                Ok(FrameIn::Data(DataIn::Tell {
                    to,
                    from,
                    payload: PayloadIn {
                        name,
                        body: payload.body,
                        json: payload.json,
                    },
                }))
            }
            Some((variant::ASK, rest)) => {
                let AskIn {
                    id,
                    to,
                    from,
                    timeout_ms,
                    payload,
                } = whole(rest, body.len())?;
                // The timeout's varint between `from` and the name is
                // rarely ASCII: the name is checked on its own.
                let [to, from] = texts(body, [to, from])?;
                let [name] = texts(body, [payload.name])?;
                Ok(FrameIn::Data(DataIn::Ask {
                    id,
                    to,
                    from,
                    timeout_ms,
                    payload: PayloadIn {
                        name,
                        body: payload.body,
                        json: payload.json,
                    },
                }))
            }
            Some((variant::REPLY, rest)) => match whole(rest, body.len())? {
                ReplyIn {
                    id,
                    result: Ok(payload),
                } => {
                    let [name] = texts(body, [payload.name])?;
                    Ok(FrameIn::Reply {
                        id,
                        payload: PayloadIn {
                            name,
                            body: payload.body,
                            json: payload.json,
                        },
                    })
                }
                ReplyIn { id, result: Err(error) } => Ok(FrameIn::Frame(Frame::Reply { id, result: Err(error) })),
            },
            _ => whole(body, body.len()).map(FrameIn::Frame),
        }
    }
}

/// Reads the frames of one run of postcard frames ([`Incoming::Postcard`])
/// in order, as [`FrameIn::read`] does — except a tell that begins with the
/// same bytes as the last tell read: its target, sender and message name
/// are that tell's (the bytes that encode them are the same), so only its
/// body is read after them. A stream of tells from one module to another
/// has its names checked once a run, not once a frame.
///
/// ```
/// use botbus_core::frame::{DataIn, FrameIn, PayloadIn, RunReader};
///
/// // Two tells from `robot/cam` to `sink`, the second with a longer body.
/// let first = [0, 4, b's', b'i', b'n', b'k', 9, b'r', b'o', b'b', b'o', b't', b'/', b'c', b'a', b'm', 1, b'F', 1, 7, 0];
/// let mut second = first[..18].to_vec();
/// second.extend([2, 7, 8, 0]);
/// let mut reader = RunReader::default();
/// assert_eq!(reader.read(&first).1, false);
/// let (read, same_names) = reader.read(&second);
/// assert!(same_names);
/// let expected = DataIn::Tell { to: "sink", from: "robot/cam", payload: PayloadIn { name: "F", body: &[7, 8], json: false } };
/// assert_eq!(read.unwrap(), FrameIn::Data(expected));
/// assert_eq!(FrameIn::read(&second).unwrap(), FrameIn::Data(expected));
/// ```
///
/// [`Incoming::Postcard`]: crate::codec::Incoming::Postcard
#[derive(Debug, Default)]
pub struct RunReader<'a> {
    /// The last tell read: its bytes up to the end of its message name,
    /// and its target, sender and message name.
    last_tell: Option<(&'a [u8], [&'a str; 3])>,
}

impl<'a> RunReader<'a> {
    /// The frame in `body` (one of the run's, without its length prefix),
    /// and whether it is a tell with the same names as the last tell read.
    pub fn read(&mut self, body: &'a [u8]) -> (Result<FrameIn<'a>, crate::codec::FrameError>, bool) {
        if let Some((head, [to, from, name])) = self.last_tell {
            if let Some(rest) = body.strip_prefix(head) {
                let read = whole::<(&[u8], bool)>(rest, body.len()).map(|(message, json)| {
                    FrameIn::Data(DataIn::Tell {
                        to,
                        from,
                        payload: PayloadIn {
                            name,
                            body: message,
                            json,
                        },
                    })
                });
                return (read, true);
            }
        }
        let read = FrameIn::read(body);
        if let Ok(FrameIn::Data(DataIn::Tell { to, from, payload })) = read {
            let head = payload.name.as_ptr() as usize + payload.name.len() - body.as_ptr() as usize;
            self.last_tell = Some((&body[..head], [to, from, payload.name]));
        }
        (read, false)
    }
}

/// `bytes` read as one `T`, all of them: malformed or with bytes left
/// over, an error naming what was wrong (`len`: the frame body's length).
fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8], len: usize) -> Result<T, crate::codec::FrameError> {
    let (item, rest) =
        postcard::take_from_bytes(bytes).map_err(|source| crate::codec::FrameError::Malformed { len, source })?;
    if !rest.is_empty() {
        return Err(crate::codec::FrameError::TrailingBytes(rest.len()));
    }
    Ok(item)
}

/// `names` — slices of `body`, in order — as text, each checked to be UTF-8
/// as reading it as a `&str` would. A check costs most per call for names
/// this short, so the span from the first name to the last is checked once:
/// if it is text, so is each name in it that starts and ends on a character
/// boundary, as every name does when only ASCII lies between them. That is
/// a tell: postcard writes each name after its length, a varint whose last
/// byte is below 128. A name that is no such piece is checked on its own.
fn texts<'a, const N: usize>(body: &'a [u8], names: [&'a [u8]; N]) -> Result<[&'a str; N], crate::codec::FrameError> {
    let at = |name: &[u8]| name.as_ptr() as usize - body.as_ptr() as usize;
    let (first, last) = (names[0], names[N - 1]);
    let start = at(first);
    let span = std::str::from_utf8(&body[start..at(last) + last.len()]).ok();
    let mut texts = [""; N];
    for (text, name) in texts.iter_mut().zip(names) {
        let within = at(name) - start;
        *text = match span.and_then(|span| span.get(within..within + name.len())) {
            Some(text) => text,
            None => std::str::from_utf8(name).map_err(|_| crate::codec::FrameError::Malformed {
                len: body.len(),
                source: postcard::Error::DeserializeBadUtf8,
            })?,
        };
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameError;

    /// A tell's bytes as postcard lays them out, with any bytes as names.
    fn tell_bytes(to: &[u8], from: &[u8], name: &[u8]) -> Vec<u8> {
        postcard::to_allocvec(&(0u8, to, from, (name, &[7u8][..], false))).unwrap()
    }

    /// An ask's bytes, likewise: its timeout's varint lies between `from`
    /// and the message's name.
    fn ask_bytes(to: &[u8], from: &[u8], timeout_ms: u64, name: &[u8]) -> Vec<u8> {
        postcard::to_allocvec(&(1u8, 9u64, to, from, timeout_ms, (name, &[7u8][..], false))).unwrap()
    }

    /// What the owned decoding makes of the same bytes.
    fn owned(bytes: &[u8]) -> Frame {
        postcard::from_bytes(bytes).unwrap()
    }

    #[test]
    fn data_frames_read_borrowed_agree_with_the_owned_decoding_whatever_lies_between_the_names() {
        let names: [&[u8]; 3] = ["arm".as_bytes(), "bâti/contrôle".as_bytes(), "ü.Mesure".as_bytes()];
        let tell = tell_bytes(names[0], names[1], names[2]);
        let Frame::Tell { to, from, payload } = owned(&tell) else {
            panic!()
        };
        assert_eq!(
            FrameIn::read(&tell).unwrap(),
            FrameIn::Data(DataIn::Tell {
                to: &to,
                from: &from,
                payload: PayloadIn {
                    name: &payload.name,
                    body: &[7],
                    json: false
                },
            })
        );
        // A timeout below 128 ms is one ASCII byte; above, its varint is not.
        for timeout_ms in [5, 5_000] {
            let ask = ask_bytes(names[0], names[1], timeout_ms, names[2]);
            let Frame::Ask {
                id, to, from, payload, ..
            } = owned(&ask)
            else {
                panic!()
            };
            assert_eq!(
                FrameIn::read(&ask).unwrap(),
                FrameIn::Data(DataIn::Ask {
                    id,
                    to: &to,
                    from: &from,
                    timeout_ms,
                    payload: PayloadIn {
                        name: &payload.name,
                        body: &[7],
                        json: false
                    },
                })
            );
        }
        // Empty names are text too.
        assert!(matches!(
            FrameIn::read(&tell_bytes(b"", b"", b"")),
            Ok(FrameIn::Data(DataIn::Tell { to: "", .. }))
        ));
    }

    #[test]
    fn a_reply_is_read_borrowed_and_one_that_is_an_error_owned() {
        let reply = Frame::Reply {
            id: 300,
            result: Ok(WirePayload {
                name: "arm.Pose".into(),
                body: vec![1, 2, 3].into(),
                json: false,
            }),
        };
        let bytes = postcard::to_allocvec(&reply).unwrap();
        assert_eq!(
            FrameIn::read(&bytes).unwrap(),
            FrameIn::Reply {
                id: 300,
                payload: PayloadIn {
                    name: "arm.Pose",
                    body: &[1, 2, 3],
                    json: false
                },
            }
        );
        let failed = Frame::Reply {
            id: 301,
            result: Err(AskError::Stopped("arm".into())),
        };
        let bytes = postcard::to_allocvec(&failed).unwrap();
        assert_eq!(FrameIn::read(&bytes).unwrap(), FrameIn::Frame(failed));
        // A name that is not text, bytes left over, or a reply cut short.
        let bad_name = postcard::to_allocvec(&(2u8, 7u64, 0u8, (&[0xffu8][..], &[1u8][..], false))).unwrap();
        assert!(matches!(FrameIn::read(&bad_name), Err(FrameError::Malformed { .. })));
        let mut long = postcard::to_allocvec(&reply).unwrap();
        long.push(0);
        assert!(matches!(FrameIn::read(&long), Err(FrameError::TrailingBytes(1))));
        let short = &long[..long.len() - 3];
        assert!(matches!(FrameIn::read(short), Err(FrameError::Malformed { .. })));
    }

    #[test]
    fn a_run_reads_as_its_frames_one_by_one_whatever_follows_a_tell() {
        let tell = |to: &[u8], from: &[u8], name: &[u8], body: &[u8], json: bool| {
            postcard::to_allocvec(&(0u8, to, from, (name, body, json))).unwrap()
        };
        let base = tell(b"sink", b"robot/cam", b"cam.Frame", &[7; 3], false);
        let mut trailing = tell(b"sink", b"robot/cam", b"cam.Frame", &[7], true);
        trailing.push(0);
        let mut cut = base.clone();
        cut.pop();
        let frames = [
            base.clone(),
            tell(b"sink", b"robot/cam", b"cam.Frame", &[], true),
            tell(b"sink", b"robot/cam", b"cam.Frame", &[1; 300], false),
            // Another target, sender or name; a name the last one begins.
            tell(b"sinks", b"robot/cam", b"cam.Frame", &[7], false),
            tell(b"sink", b"robot/cams", b"cam.Frame", &[7], false),
            tell(b"sink", b"robot/cam", b"cam.Frames", &[7], false),
            tell(b"sink", b"robot/cam", b"cam.Frame", &[7], false),
            // The same names, and then nothing whole, or too much.
            cut,
            trailing,
            tell(b"sink", b"robot/cam", b"cam.Frame", &[8], false),
            ask_bytes(b"sink", b"robot/cam", 5, b"cam.Frame"),
            tell(b"sink", b"robot/cam", b"cam.Frame", &[9], false),
            base,
        ];
        let mut reader = RunReader::default();
        let mut repeated = 0;
        for (at, frame) in frames.iter().enumerate() {
            let (read, same_names) = reader.read(frame);
            let alone = FrameIn::read(frame);
            match (&read, &alone) {
                (Ok(read), Ok(alone)) => assert_eq!(read, alone, "frame {at}"),
                (Err(_), Err(_)) => {}
                _ => panic!("frame {at}: {read:?} in a run, {alone:?} alone"),
            }
            repeated += usize::from(same_names);
        }
        // Each tell after one with the same names (an ask between them
        // changes nothing): 1, 2, 7, 8, 9, 11 and 12.
        assert_eq!(repeated, 7);
    }

    #[test]
    fn a_data_frame_with_a_name_that_is_not_utf8_is_malformed() {
        let good: &[u8] = b"arm";
        // Bytes that are not UTF-8, and each half of a two-byte character.
        for bad in [&b"\xff"[..], &b"a\xc3"[..], &b"\xa9b"[..]] {
            let frames = [
                tell_bytes(bad, good, good),
                tell_bytes(good, bad, good),
                tell_bytes(good, good, bad),
                ask_bytes(good, bad, 5, good),
                ask_bytes(good, good, 5_000, bad),
                ask_bytes(bad, good, 5_000, good),
            ];
            for frame in frames {
                assert!(
                    matches!(
                        FrameIn::read(&frame),
                        Err(FrameError::Malformed { source: postcard::Error::DeserializeBadUtf8, len }) if len == frame.len()
                    ),
                    "{bad:?} in {frame:?}"
                );
                assert!(
                    postcard::from_bytes::<Frame>(&frame).is_err(),
                    "the owned decoding refuses it too"
                );
            }
        }
    }
}
