//! Messages and the type-erased [`Payload`] that carries them.
//!
//! A message is plain data with a stable name ([`Message::NAME`]). Inside one
//! process a payload carries the value itself (no serialisation on the
//! in-process hot path): in place when it is small, so that sending it
//! allocates nothing, in a `Box` otherwise, and behind an `Arc` when it is
//! shared by many. When it crosses a link it is postcard-encoded once, on
//! the sender's thread. Either way the receiver
//! checks the name before it decodes, so a type mismatch is the same typed
//! error in every placement.
//!
//! ```
//! use botbus_core::{Message, Payload};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct SetSpeed(f32);
//! impl Message for SetSpeed {
//!     const NAME: &'static str = "motor.SetSpeed";
//! }
//!
//! // In process: no encoding happens.
//! let local = Payload::new(SetSpeed(0.5));
//! assert_eq!(local.name(), "motor.SetSpeed");
//! // Across a link: encoded once, decoded by name on the other side.
//! let wire = Payload::from_encoded("motor.SetSpeed", local.to_bytes().unwrap());
//! assert_eq!(wire.decode::<SetSpeed>().unwrap(), SetSpeed(0.5));
//! // The wrong type is a typed error, not garbage.
//! assert!(Payload::new(SetSpeed(1.0)).decode::<u32>().is_err());
//! ```

use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::Splices;
use crate::depth::{Limit, MAX_NESTING};
use crate::error::PayloadError;
use crate::frame::CodecKind;
use in_place::InPlace;

mod in_place;

/// A message type modules exchange: plain, cloneable, serialisable data with a
/// stable name that identifies it on the wire.
///
/// The name is part of the protocol: two peers agree on a message by name, so
/// keep it stable across versions (a dotted `package.Type` works well).
pub trait Message: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// The stable wire name of this message type.
    const NAME: &'static str;
}

macro_rules! impl_message {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Message for $ty {
            const NAME: &'static str = $name;
        })*
    };
}

impl_message!(
    () => "()", bool => "bool",
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64",
    f32 => "f32", f64 => "f64", String => "string", Vec<u8> => "bytes",
);

/// How a module's inbox turns a [`Payload`] into the module's message type.
///
/// Every [`Message`] implements it by checking the name and decoding. A module
/// whose message type is [`Payload`] itself receives everything undecoded — a
/// logger subscribed to `**`, say.
pub trait FromPayload: Sized + Send + 'static {
    /// Decodes `payload`, or says why it is not this type.
    fn from_payload(payload: Payload) -> Result<Self, PayloadError>;

    /// Makes the type known to this process (see [`register_message`]); a
    /// node does this for each module's message type.
    fn register() {}

    /// The wire name of the messages it takes, if it takes one type (a
    /// module taking any [`Payload`] has none): what a node tells a tool
    /// that asks what its modules take.
    fn type_name() -> Option<&'static str> {
        None
    }
}

impl<M: Message> FromPayload for M {
    fn from_payload(payload: Payload) -> Result<Self, PayloadError> {
        payload.decode()
    }

    fn register() {
        register_message::<M>();
    }

    fn type_name() -> Option<&'static str> {
        Some(M::NAME)
    }
}

impl FromPayload for Payload {
    fn from_payload(payload: Payload) -> Result<Self, PayloadError> {
        Ok(payload)
    }
}

/// Re-encodes one message type's body from one codec to the other.
#[derive(Clone, Copy)]
struct Transcoder {
    to_json: fn(&[u8]) -> Result<Bytes, PayloadError>,
    to_postcard: fn(&[u8]) -> Result<Bytes, PayloadError>,
}

/// The message types this process knows by name.
static KNOWN: std::sync::LazyLock<std::sync::RwLock<std::collections::HashMap<&'static str, Transcoder>>> =
    std::sync::LazyLock::new(Default::default);

/// Makes message type `M` known to this process, so that its nodes can pass
/// an `M` between links of different codecs — from a JSON-lines peer (a
/// Python child) to a postcard one (a Rust child), say — by decoding and
/// re-encoding it. A payload passed between links of the *same* codec is
/// never decoded, so only types that cross codecs need this.
///
/// Every module's message and reply types are registered when the module is
/// added to a node; register the others (a topic's message that no module
/// here takes, a progress update) once, at start.
///
/// ```
/// use botbus_core::{register_message, CodecKind, Message, Payload};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Reading { celsius: f64 }
/// impl Message for Reading { const NAME: &'static str = "doc.Reading"; }
///
/// let postcard = Payload::new(Reading { celsius: 21.5 }).to_bytes().unwrap();
/// let received = Payload::from_encoded(Reading::NAME, postcard);
/// assert!(received.encoded(CodecKind::Json).is_err()); // unknown: cannot re-encode
/// register_message::<Reading>();
/// assert_eq!(&received.encoded(CodecKind::Json).unwrap()[..], br#"{"celsius":21.5}"#);
/// ```
pub fn register_message<M: Message>() {
    fn to_json<M: Message>(postcard: &[u8]) -> Result<Bytes, PayloadError> {
        let value: M = decode_postcard(postcard)?;
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|source| PayloadError::EncodeJson {
                name: M::NAME.to_owned(),
                source,
            })
    }
    fn to_postcard<M: Message>(json: &[u8]) -> Result<Bytes, PayloadError> {
        let value: M = decode_json(json)?;
        encode_postcard(&value).map_err(|source| PayloadError::Encode {
            name: M::NAME.to_owned(),
            source,
        })
    }
    let transcoder = Transcoder {
        to_json: to_json::<M>,
        to_postcard: to_postcard::<M>,
    };
    KNOWN
        .write()
        .expect("message registry")
        .entry(M::NAME)
        .or_insert(transcoder);
}

/// The `'static` name of a message type known to this process, if `name`
/// is one: a payload read off a link names its type without allocating.
pub fn static_name(name: &str) -> Option<&'static str> {
    KNOWN
        .read()
        .expect("message registry")
        .get_key_value(name)
        .map(|(name, _)| *name)
}

fn known(name: &str) -> Option<Transcoder> {
    KNOWN.read().expect("message registry").get(name).copied()
}

/// A message value with its type erased: what the router moves around.
trait ErasedMessage: Any + Send + Sync + fmt::Debug {
    /// Appends the postcard encoding to `out`.
    fn encode(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error>;
    /// The length of the postcard encoding.
    fn encoded_len(&self) -> Result<usize, postcard::Error>;
    /// Appends the postcard encoding to `out`.
    fn encode_into(&self, out: &mut BytesMut) -> Result<(), postcard::Error>;
    /// Appends the postcard encoding to `out`, its large blobs left out and
    /// noted in `splices`.
    fn encode_spliced(&self, out: &mut BytesMut, splices: &mut Splices) -> Result<(), postcard::Error>;
    fn encode_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    fn into_any_shared(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn clone_value(&self) -> Value;
}

impl<M: Message> ErasedMessage for M {
    fn encode(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_extend(self, out)
    }

    fn encoded_len(&self) -> Result<usize, postcard::Error> {
        postcard::experimental::serialized_size(self)
    }

    fn encode_into(&self, out: &mut BytesMut) -> Result<(), postcard::Error> {
        postcard::serialize_with_flavor(self, crate::codec::Append(out))
    }

    fn encode_spliced(&self, out: &mut BytesMut, splices: &mut Splices) -> Result<(), postcard::Error> {
        crate::blob::splicing(|| postcard::serialize_with_flavor(self, crate::codec::Splicing { out, splices }))
    }

    fn encode_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }

    fn into_any_shared(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn clone_value(&self) -> Value {
        Value::new(self.clone())
    }
}

/// An in-process message value: owned by one payload (a tell or an ask,
/// taken back out without an atomic operation) — in place if it is small,
/// boxed if not — or shared by many (the copies of a publish).
enum Value {
    InPlace(InPlace),
    Boxed(Box<dyn ErasedMessage>),
    Shared(Arc<dyn ErasedMessage>),
}

impl Value {
    /// Owns `value`: in place if its type fits there, boxed if not.
    fn new<M: Message>(value: M) -> Self {
        if InPlace::fits::<M>() {
            Value::InPlace(InPlace::new(value))
        } else {
            Value::Boxed(Box::new(value))
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self {
            Value::InPlace(value) => value.get().clone_value(),
            Value::Boxed(value) => value.clone_value(),
            Value::Shared(value) => Value::Shared(value.clone()),
        }
    }
}

impl std::ops::Deref for Value {
    type Target = dyn ErasedMessage;

    fn deref(&self) -> &Self::Target {
        match self {
            Value::InPlace(value) => value.get(),
            Value::Boxed(value) => value.as_ref(),
            Value::Shared(value) => value.as_ref(),
        }
    }
}

#[derive(Clone)]
enum Body {
    /// The value itself: in-process delivery, no encoding.
    Local(Value),
    /// Postcard bytes, as received from a postcard link.
    Encoded(Bytes),
    /// JSON text, as received from a JSON-lines link.
    Json(Bytes),
}

/// A named message: either the in-process value or its encoded bytes.
///
/// A payload made by [`Payload::new`] owns its value, so the module it is
/// for takes the value out as it is. Cloning such a payload clones the
/// value; [`Payload::shared`] makes clones cheap instead (an `Arc`), as a
/// publish does to reach many subscribers without copying the message.
/// Clones of an encoded payload share its bytes.
#[derive(Clone)]
pub struct Payload {
    name: Cow<'static, str>,
    body: Body,
}

impl Payload {
    /// Wraps a message value for in-process delivery.
    pub fn new<M: Message>(message: M) -> Self {
        Self {
            name: Cow::Borrowed(M::NAME),
            body: Body::Local(Value::new(message)),
        }
    }

    /// The same payload, made cheap to clone: an in-process value is moved
    /// behind an `Arc` that its clones share (an encoded body's bytes
    /// always are). Whoever decodes a shared value gets a clone of it,
    /// except the last one, who gets the value.
    ///
    /// ```
    /// use botbus_core::Payload;
    /// let one = Payload::new(String::from("cam/front")).shared();
    /// let two = one.clone(); // no copy of the string
    /// assert_eq!(one.decode::<String>().unwrap(), "cam/front");
    /// assert_eq!(two.decode::<String>().unwrap(), "cam/front");
    /// ```
    pub fn shared(self) -> Self {
        match self.body {
            Body::Local(Value::InPlace(value)) => Self {
                name: self.name,
                body: Body::Local(Value::Shared(value.into_shared())),
            },
            Body::Local(Value::Boxed(value)) => Self {
                name: self.name,
                body: Body::Local(Value::Shared(Arc::from(value))),
            },
            body => Self { name: self.name, body },
        }
    }

    /// A payload received from a link: the message name and its postcard bytes.
    pub fn from_encoded(name: impl Into<Cow<'static, str>>, bytes: Bytes) -> Self {
        Self {
            name: name.into(),
            body: Body::Encoded(bytes),
        }
    }

    /// A payload received from a JSON-lines link: the message name and the
    /// JSON text of its value.
    pub fn from_json(name: impl Into<Cow<'static, str>>, json: Bytes) -> Self {
        Self {
            name: name.into(),
            body: Body::Json(json),
        }
    }

    /// The message's wire name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The codec the payload's body is in: `None` for the in-process value
    /// (not encoded yet).
    pub fn encoding(&self) -> Option<CodecKind> {
        match self.body {
            Body::Local(_) => None,
            Body::Encoded(_) => Some(CodecKind::Postcard),
            Body::Json(_) => Some(CodecKind::Json),
        }
    }

    /// Whether this payload still holds the in-process value (never encoded).
    pub fn is_local(&self) -> bool {
        matches!(self.body, Body::Local(_))
    }

    /// Whether the body can be had in `codec` here: an in-process value
    /// encodes to either; an encoded body is in its own codec already, and
    /// goes to the other only if this process knows its type (see
    /// [`register_message`]).
    ///
    /// ```
    /// use botbus_core::{CodecKind, Payload};
    /// let unknown = Payload::from_encoded("cam.Frame", vec![1, 2].into());
    /// assert!(unknown.converts_to(CodecKind::Postcard));
    /// assert!(!unknown.converts_to(CodecKind::Json));
    /// assert!(Payload::new(7u32).converts_to(CodecKind::Json));
    /// ```
    pub fn converts_to(&self, codec: CodecKind) -> bool {
        match (&self.body, codec) {
            (Body::Local(_), _) | (Body::Encoded(_), CodecKind::Postcard) | (Body::Json(_), CodecKind::Json) => true,
            _ => known(&self.name).is_some(),
        }
    }

    /// Decodes the payload as `M`, checking the name first.
    pub fn decode<M: Message>(self) -> Result<M, PayloadError> {
        // In process the name is the very `&'static str` of the type: compare
        // the pointer before the bytes.
        let same_static = matches!(&self.name, Cow::Borrowed(name) if std::ptr::eq(*name, M::NAME));
        if !same_static && self.name != M::NAME {
            return Err(PayloadError::TypeMismatch {
                expected: M::NAME,
                found: self.name.into_owned(),
            });
        }
        match self.body {
            Body::Local(value) => {
                let value = match value {
                    Value::InPlace(value) => value.take::<M>(),
                    Value::Boxed(value) => value.into_any().downcast::<M>().map(|value| *value).ok(),
                    Value::Shared(value) => value
                        .into_any_shared()
                        .downcast::<M>()
                        .map(|value| Arc::try_unwrap(value).unwrap_or_else(|shared| (*shared).clone()))
                        .ok(),
                };
                value.ok_or_else(|| PayloadError::TypeMismatch {
                    expected: M::NAME,
                    found: format!("{} (a different Rust type under the same name)", self.name),
                })
            }
            Body::Encoded(bytes) => crate::blob::lending(&bytes, decode_postcard),
            Body::Json(json) => decode_json(&json),
        }
    }

    /// The payload's postcard bytes: encodes a local value, or hands back the
    /// bytes it was received with.
    pub fn to_bytes(&self) -> Result<Bytes, PayloadError> {
        self.encoded(CodecKind::Postcard)
    }

    /// Calls `f` with the payload's body in `codec`, keeping no copy: an
    /// encoded body is lent as it is, and an in-process value is encoded
    /// into a buffer this thread reuses — what a link does to write a
    /// message straight into its outgoing frame. (Transcoding between
    /// codecs still makes the body anew.)
    ///
    /// ```
    /// use botbus_core::{CodecKind, Payload};
    /// let payload = Payload::new(7u32);
    /// let len = payload.with_body(CodecKind::Postcard, |body| body.len()).unwrap();
    /// assert_eq!(len, 1);
    /// ```
    pub fn with_body<R>(&self, codec: CodecKind, f: impl FnOnce(&[u8]) -> R) -> Result<R, PayloadError> {
        match (&self.body, codec) {
            (Body::Local(value), CodecKind::Postcard) => {
                let mut scratch = SCRATCH.take();
                scratch.clear();
                let encoded = value.encode(scratch).map_err(|source| PayloadError::Encode {
                    name: self.name.to_string(),
                    source,
                })?;
                let result = f(&encoded);
                if encoded.capacity() <= 1024 * 1024 {
                    SCRATCH.set(encoded); // keep a moderate buffer for the next one
                }
                Ok(result)
            }
            (Body::Encoded(bytes), CodecKind::Postcard) | (Body::Json(bytes), CodecKind::Json) => Ok(f(bytes)),
            _ => self.encoded(codec).map(|bytes| f(&bytes)),
        }
    }

    /// The bytes the payload was received as, if they are in `codec`: what
    /// a frame passing it on can splice in as they are
    /// ([`WireCodec::encode_data_spliced`](crate::WireCodec::encode_data_spliced)).
    ///
    /// ```
    /// use botbus_core::{CodecKind, Payload};
    /// let received = Payload::from_encoded("count", bytes::Bytes::from_static(&[7]));
    /// assert_eq!(received.received_body(CodecKind::Postcard).map(|b| &b[..]), Some(&[7u8][..]));
    /// assert!(received.received_body(CodecKind::Json).is_none());
    /// assert!(Payload::new(7u32).received_body(CodecKind::Postcard).is_none());
    /// ```
    pub fn received_body(&self, codec: CodecKind) -> Option<&Bytes> {
        match (&self.body, codec) {
            (Body::Encoded(bytes), CodecKind::Postcard) | (Body::Json(bytes), CodecKind::Json) => Some(bytes),
            _ => None,
        }
    }

    /// The payload's value, measured for postcard, if it is a value here
    /// rather than bytes received: a frame can then have it encoded straight
    /// into its own buffer ([`WireCodec::encode_data_value`]), with no copy
    /// through a scratch buffer first.
    ///
    /// ```
    /// use botbus_core::Payload;
    /// let payload = Payload::new(300u32);
    /// let body = payload.value_body().unwrap().unwrap();
    /// assert_eq!(body.len(), 2); // a varint
    /// let mut out = bytes::BytesMut::new();
    /// body.write(&mut out, None).unwrap();
    /// assert_eq!(&out[..], &[0xac, 0x02]);
    /// ```
    ///
    /// [`WireCodec::encode_data_value`]: crate::WireCodec::encode_data_value
    pub fn value_body(&self) -> Option<Result<ValueBody<'_>, PayloadError>> {
        let Body::Local(value) = &self.body else {
            return None;
        };
        Some(
            value
                .encoded_len()
                .map(|len| ValueBody {
                    name: self.name(),
                    value: &**value,
                    len,
                })
                .map_err(|source| PayloadError::Encode {
                    name: self.name.to_string(),
                    source,
                }),
        )
    }

    /// The payload's body in `codec`: encodes a local value, or hands back the
    /// bytes it was received with if they are in that codec already.
    pub fn encoded(&self, codec: CodecKind) -> Result<Bytes, PayloadError> {
        let name = || self.name.to_string();
        match (&self.body, codec) {
            (Body::Local(value), CodecKind::Postcard) => {
                encode_postcard(&**value).map_err(|source| PayloadError::Encode { name: name(), source })
            }
            (Body::Local(value), CodecKind::Json) => value
                .encode_json()
                .map(Bytes::from)
                .map_err(|source| PayloadError::EncodeJson { name: name(), source }),
            (Body::Encoded(bytes), CodecKind::Postcard) | (Body::Json(bytes), CodecKind::Json) => Ok(bytes.clone()),
            (Body::Encoded(bytes), CodecKind::Json) => match known(&self.name) {
                Some(transcoder) => (transcoder.to_json)(bytes),
                None => Err(PayloadError::Transcode {
                    name: name(),
                    from: CodecKind::Postcard,
                    to: CodecKind::Json,
                }),
            },
            (Body::Json(json), CodecKind::Postcard) => match known(&self.name) {
                Some(transcoder) => (transcoder.to_postcard)(json),
                None => Err(PayloadError::Transcode {
                    name: name(),
                    from: CodecKind::Json,
                    to: CodecKind::Postcard,
                }),
            },
        }
    }
}

/// Decodes a postcard body: all of it (trailing bytes are an error, as in a
/// frame), and no deeper than [`MAX_NESTING`] levels.
fn decode_postcard<M: Message>(bytes: &[u8]) -> Result<M, PayloadError> {
    let tripped = Cell::new(false);
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let decoded = M::deserialize(Limit::new(&mut deserializer, MAX_NESTING, &tripped));
    let value = match decoded {
        Ok(value) => value,
        Err(_) if tripped.get() => return Err(PayloadError::TooDeep { name: M::NAME }),
        Err(source) => return Err(PayloadError::Decode { name: M::NAME, source }),
    };
    match deserializer.finalize() {
        Ok([]) => Ok(value),
        Ok(rest) => Err(PayloadError::TrailingBytes {
            name: M::NAME,
            count: rest.len(),
        }),
        Err(source) => Err(PayloadError::Decode { name: M::NAME, source }),
    }
}

/// Decodes a JSON body under the same nesting limit as postcard, counted
/// the same way (serde_json's own limit, one level shallower, is off here).
fn decode_json<M: Message>(json: &[u8]) -> Result<M, PayloadError> {
    let tripped = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    deserializer.disable_recursion_limit();
    let decoded = M::deserialize(Limit::new(&mut deserializer, MAX_NESTING, &tripped)).and_then(|value| {
        deserializer.end()?; // only white space may follow
        Ok(value)
    });
    decoded.map_err(|source| match tripped.get() {
        true => PayloadError::TooDeep { name: M::NAME },
        false => PayloadError::DecodeJson { name: M::NAME, source },
    })
}

thread_local! {
    /// Where messages are encoded before being copied out at their exact
    /// size: no reallocation while the encoding grows, one allocation each.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn encode_postcard(value: &(impl ErasedMessage + ?Sized)) -> Result<Bytes, postcard::Error> {
    let mut scratch = SCRATCH.take();
    scratch.clear();
    let result = value.encode(scratch);
    match result {
        Ok(encoded) => {
            let bytes = Bytes::copy_from_slice(&encoded);
            if encoded.capacity() <= 1024 * 1024 {
                SCRATCH.set(encoded); // keep a moderate buffer for the next one
            }
            Ok(bytes)
        }
        Err(error) => Err(error),
    }
}

/// A payload's value with the length of its postcard encoding, from
/// [`Payload::value_body`]: what a frame needs to encode it in place.
pub struct ValueBody<'a> {
    name: &'a str,
    value: &'a dyn ErasedMessage,
    len: usize,
}

impl ValueBody<'_> {
    /// The length of the value's postcard encoding.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the encoding is empty (a unit value).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Appends the value's postcard encoding to `out`: exactly
    /// [`len`](Self::len) bytes, or an error and nothing appended. With
    /// `splices`, its large [`Blob`](crate::Blob)s are left out of `out` and
    /// noted there instead.
    pub fn write(&self, out: &mut BytesMut, splices: Option<&mut Splices>) -> Result<(), PayloadError> {
        let start = out.len();
        let written = match splices {
            None => self.value.encode_into(out).map(|()| out.len() - start),
            Some(splices) => {
                let first = splices.parts_len();
                let written = self.value.encode_spliced(out, splices);
                let spliced = splices.len_from(first);
                if written.is_err() || out.len() - start + spliced != self.len {
                    splices.truncate(first);
                }
                written.map(|()| out.len() - start + spliced)
            }
        };
        let error = match written {
            Ok(written) if written == self.len => return Ok(()),
            Ok(written) => PayloadError::Unstable {
                name: self.name.to_owned(),
                measured: self.len,
                written,
            },
            Err(source) => PayloadError::Encode {
                name: self.name.to_owned(),
                source,
            },
        };
        out.truncate(start);
        Err(error)
    }

    /// The value as JSON text.
    pub fn json(&self) -> Result<Vec<u8>, PayloadError> {
        self.value.encode_json().map_err(|source| PayloadError::EncodeJson {
            name: self.name.to_owned(),
            source,
        })
    }
}

impl fmt::Debug for ValueBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({} bytes)", self.value, self.len)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            Body::Local(value) => write!(f, "{:?}", &**value),
            Body::Encoded(bytes) => write!(f, "{}(<{} bytes>)", self.name, bytes.len()),
            Body::Json(json) => write!(f, "{}({})", self.name, String::from_utf8_lossy(json)),
        }
    }
}
