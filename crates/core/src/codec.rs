//! The codecs, as tokio-util [`Decoder`]/[`Encoder`]s with a bounded frame
//! length:
//!
//! * [`FrameCodec`]: each frame is a 4-byte big-endian body length followed
//!   by the postcard body. The length is checked against the codec's maximum
//!   *before* any of the body is buffered or decoded, so an oversize frame
//!   costs nothing.
//! * [`JsonLinesCodec`]: one JSON object per line, for peers in any
//!   language. A line longer than the maximum is refused as soon as that many
//!   bytes arrived without a newline; the limit is the same however the line
//!   was split across reads.
//! * [`WireCodec`]: whichever of the two the handshake chose.
//!
//! ```
//! use botbus_core::{Frame, FrameCodec};
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = FrameCodec::<Frame>::new();
//! let mut wire = BytesMut::new();
//! codec.encode(&Frame::Ping { nonce: 7 }, &mut wire).unwrap();
//! codec.encode(&Frame::Pong { nonce: 7 }, &mut wire).unwrap();
//! // Two frames in one buffer come out as two frames.
//! assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::Ping { nonce: 7 }));
//! assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::Pong { nonce: 7 }));
//! assert_eq!(codec.decode(&mut wire).unwrap(), None);
//! ```

use std::fmt;
use std::io;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::PayloadError;
use crate::frame::{CodecKind, DataFrame, DataHead, Frame, PayloadRef};
use crate::message::ValueBody;
use crate::read_buffer::{ReadRoom, READ_AHEAD};

/// The default maximum frame body: 8 MiB, as tokio-util's
/// `LengthDelimitedCodec`.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

const LEN_PREFIX: usize = 4;

/// What a partial frame may reserve beyond the bytes already buffered (as
/// much as tokio-util's `FramedRead` starts with).
const READ_CHUNK: usize = 8 * 1024;

/// Where the next line in `src` ends, searching from `*scanned` (the bytes
/// before it were searched already). A line's length is its content's,
/// without the `\n` or `\r\n` that ends it, and the limit holds however the
/// bytes were split across reads: a line is refused as soon as no ending
/// could keep it within `max`.
pub(crate) fn next_line(src: &[u8], scanned: &mut usize, max: usize) -> Result<Option<usize>, usize> {
    // A buffer shorter than what was scanned is not the one scanned (a
    // decoder reused on another buffer): search it whole rather than panic.
    let from = if *scanned > src.len() { 0 } else { *scanned };
    match memchr::memchr(b'\n', &src[from..]) {
        Some(offset) => {
            let end = from + offset;
            *scanned = 0;
            let content = src[..end].strip_suffix(b"\r").map_or(end, <[u8]>::len);
            if content > max {
                return Err(content);
            }
            Ok(Some(end))
        }
        None => {
            *scanned = src.len();
            // A trailing `\r` may still turn out to be part of the ending.
            let least = src.strip_suffix(b"\r").map_or(src.len(), <[u8]>::len);
            if least > max {
                return Err(least);
            }
            Ok(None)
        }
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame's declared length exceeds the maximum.
    #[error("oversize frame: {len} bytes, the limit is {max}")]
    Oversize {
        /// The length the frame declared (or would have had).
        len: usize,
        /// The codec's maximum.
        max: usize,
    },
    /// The frame body is not a valid postcard frame.
    #[error("malformed frame ({len} bytes): {source}")]
    Malformed {
        /// The body's length.
        len: usize,
        /// What postcard said.
        source: postcard::Error,
    },
    /// The body decoded but bytes were left over.
    #[error("malformed frame: {0} trailing bytes after the body")]
    TrailingBytes(usize),
    /// A frame could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(postcard::Error),
    /// A JSON line is not a valid frame.
    #[error("malformed JSON frame ({len} bytes): {source}")]
    MalformedJson {
        /// The line's length.
        len: usize,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// A message value could not be encoded into its frame.
    #[error("cannot encode frame: {0}")]
    Payload(#[source] PayloadError),
    /// A frame could not be encoded as JSON (a body that is not JSON text).
    #[error("cannot encode frame as JSON: {0}")]
    EncodeJson(serde_json::Error),
}

/// Length-prefixed postcard codec for `T` (a [`Frame`] unless stated).
pub struct FrameCodec<T = Frame> {
    max_frame_len: usize,
    _carries: PhantomData<fn() -> T>,
}

impl<T> FrameCodec<T> {
    /// A codec with the [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses frames whose body exceeds `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.min(u32::MAX as usize),
            _carries: PhantomData,
        }
    }

    /// The largest frame body this codec accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl<T> Default for FrameCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for FrameCodec<T> {
    fn clone(&self) -> Self {
        Self::with_max_frame_len(self.max_frame_len)
    }
}

impl<T> fmt::Debug for FrameCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("max_frame_len", &self.max_frame_len)
            .finish()
    }
}

impl<T: DeserializeOwned> Decoder for FrameCodec<T> {
    type Item = T;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, FrameError> {
        let Some(body) = self.next_body(src)? else {
            return Ok(None);
        };
        let len = body.len();
        let (item, rest) = postcard::take_from_bytes(&body).map_err(|source| FrameError::Malformed { len, source })?;
        if !rest.is_empty() {
            return Err(FrameError::TrailingBytes(rest.len()));
        }
        Ok(Some(item))
    }
}

impl<T> FrameCodec<T> {
    /// The frame at the start of `src`: its length, prefix included, if all
    /// of it has arrived, else how many bytes it still lacks. Its declared
    /// length is checked against the maximum before anything of it is
    /// buffered.
    fn first_frame(&self, src: &[u8]) -> Result<First, FrameError> {
        let Some(prefix) = src.get(..LEN_PREFIX) else {
            return Ok(First::Lacks(LEN_PREFIX - src.len()));
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4-byte prefix")) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::Oversize {
                len,
                max: self.max_frame_len,
            });
        }
        match (LEN_PREFIX + len).checked_sub(src.len()) {
            Some(missing) if missing > 0 => Ok(First::Lacks(missing)),
            _ => Ok(First::Whole(LEN_PREFIX + len)),
        }
    }

    /// The next whole frame's body, split off `src`; a partial frame makes
    /// room for more of itself.
    fn next_body(&self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.first_frame(src)? {
            First::Whole(whole) => {
                src.advance(LEN_PREFIX);
                Ok(Some(src.split_to(whole - LEN_PREFIX)))
            }
            First::Lacks(missing) => {
                src.reserve(room_for(missing, src.len()));
                Ok(None)
            }
        }
    }

    /// Every whole frame buffered in `src`, split off as one run (prefixes
    /// included; read it with [`frame_bodies`]), each length checked against
    /// the maximum. A frame too long ends the run before it, and is refused
    /// on the next call, once the frames before it were taken.
    fn next_run(&self, src: &mut BytesMut) -> Result<Run, FrameError> {
        let mut end = match self.first_frame(src)? {
            First::Whole(len) => len,
            First::Lacks(missing) => return Ok(Run::Lacks(missing)),
        };
        let mut largest = end;
        while let Some(prefix) = src.get(end..end + LEN_PREFIX) {
            let len = u32::from_be_bytes(prefix.try_into().expect("4-byte prefix")) as usize;
            if len > self.max_frame_len || src.len() < end + LEN_PREFIX + len {
                break;
            }
            end += LEN_PREFIX + len;
            largest = largest.max(LEN_PREFIX + len);
        }
        Ok(Run::Frames {
            run: src.split_to(end),
            largest,
        })
    }
}

/// The frame at the start of a buffer.
enum First {
    /// It has all arrived: its length, prefix included.
    Whole(usize),
    /// It lacks this many bytes.
    Lacks(usize),
}

/// What [`FrameCodec::next_run`] found.
enum Run {
    /// Whole frames, and the longest of them, prefix included.
    Frames { run: BytesMut, largest: usize },
    /// The first frame lacks this many bytes.
    Lacks(usize),
}

/// Room to make for a partial frame that lacks `missing` bytes, with
/// `buffered` bytes of it here: it grows with what has arrived (at most
/// doubling it), never by the length a peer merely declared — 4 bytes must
/// not reserve 8 MiB.
fn room_for(missing: usize, buffered: usize) -> usize {
    missing.min(buffered.max(READ_CHUNK))
}

/// The bodies of a run of whole postcard frames (each a 4-byte big-endian
/// length and that many bytes), as [`IncomingCodec`] reads them; a
/// truncated frame at the end is not one.
///
/// ```
/// let run = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
/// let bodies: Vec<&[u8]> = botbus_core::codec::frame_bodies(&run).collect();
/// assert_eq!(bodies, [&b"hi"[..], &b""[..]]);
/// ```
pub fn frame_bodies(run: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = run;
    std::iter::from_fn(move || {
        let (prefix, after) = rest.split_first_chunk::<LEN_PREFIX>()?;
        let len = u32::from_be_bytes(*prefix) as usize;
        let body = after.get(..len)?;
        rest = &after[len..];
        Some(body)
    })
}

impl<T: Serialize> Encoder<&T> for FrameCodec<T> {
    type Error = FrameError;

    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_postcard_frame(item, dst, self.max_frame_len)
    }
}

/// Appends `item` to `dst` as one length-prefixed postcard frame.
fn encode_postcard_frame(item: &impl Serialize, dst: &mut BytesMut, max_frame_len: usize) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    if let Err(error) = postcard::serialize_with_flavor(item, Append(dst)) {
        dst.truncate(start);
        return Err(FrameError::Encode(error));
    }
    end_postcard_frame(start, dst, 0, max_frame_len)
}

/// Fills in the length prefix of the postcard frame that begins at `start`
/// of `dst` (with `spliced` bytes of it to be written from elsewhere), or
/// takes the frame back out if it is longer than `max_frame_len`.
fn end_postcard_frame(
    start: usize,
    dst: &mut BytesMut,
    spliced: usize,
    max_frame_len: usize,
) -> Result<(), FrameError> {
    let len = dst.len() - start - LEN_PREFIX + spliced;
    if len > max_frame_len {
        dst.truncate(start);
        return Err(FrameError::Oversize {
            len,
            max: max_frame_len,
        });
    }
    dst[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// A postcard flavor that appends to a `BytesMut`: bytes go straight into
/// the buffer, not one `io::Write` call at a time.
pub(crate) struct Append<'a>(pub(crate) &'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard data frame `head` with a payload named `name` whose
/// body is `body`, encoded in place: the frame's fields before the body,
/// the body's length, the body straight from the value, then the fields
/// after it. The same bytes as [`DataFrame`] with the body encoded first
/// (postcard writes a struct as its fields one after another, a variant as
/// its index first).
fn encode_postcard_data_value(
    head: DataHead<'_>,
    name: &str,
    body: &ValueBody<'_>,
    dst: &mut BytesMut,
    splices: Option<&mut Splices>,
    max_frame_len: usize,
) -> Result<(), FrameError> {
    use crate::frame::variant::{ASK, PUBLISH, TELL};
    let before = |dst: &mut BytesMut| match head {
        DataHead::Tell { to, from } => {
            fields::index(dst, TELL);
            fields::text(dst, to);
            fields::text(dst, from);
        }
        DataHead::Ask {
            id,
            to,
            from,
            timeout_ms,
        } => {
            fields::index(dst, ASK);
            fields::varint(dst, id);
            fields::text(dst, to);
            fields::text(dst, from);
            fields::varint(dst, timeout_ms);
        }
        DataHead::Publish { topic, from, .. } => {
            fields::index(dst, PUBLISH);
            fields::text(dst, topic);
            fields::text(dst, from);
        }
    };
    // After the payload, a publish's nodes.
    let after = |dst: &mut BytesMut| {
        if let DataHead::Publish { to, .. } = head {
            fields::varint(dst, to.len() as u64);
            for node in to {
                fields::text(dst, node);
            }
        }
    };
    encode_postcard_value_frame(before, name, body, after, dst, splices, max_frame_len)
}

/// Appends a postcard frame that carries one payload named `name` whose
/// body is `body`, encoded in place: `before` writes the frame's fields
/// before the payload, then come the payload's name, the body's length,
/// the body straight from the value and its `json` flag (a postcard body
/// is not JSON), then `after` writes the fields after the payload. A frame
/// too long for `max_frame_len`, or a value that does not encode as it
/// measured, leaves nothing in `dst`.
fn encode_postcard_value_frame(
    before: impl FnOnce(&mut BytesMut),
    name: &str,
    body: &ValueBody<'_>,
    after: impl FnOnce(&mut BytesMut),
    dst: &mut BytesMut,
    mut splices: Option<&mut Splices>,
    max_frame_len: usize,
) -> Result<(), FrameError> {
    if body.len() > max_frame_len {
        return Err(FrameError::Oversize {
            len: body.len(),
            max: max_frame_len,
        });
    }
    let start = dst.len();
    let spliced_before = splices.as_ref().map_or(0, |splices| splices.parts_len());
    dst.reserve(LEN_PREFIX + if splices.is_some() { 256 } else { body.len() + 256 });
    dst.put_u32(0);
    before(dst);
    fields::text(dst, name);
    fields::varint(dst, body.len() as u64);
    let written = body.write(dst, splices.as_deref_mut()).map_err(FrameError::Payload);
    if written.is_ok() {
        fields::flag(dst, false);
        after(dst);
    }
    let spliced = splices.as_ref().map_or(0, |splices| splices.len_from(spliced_before));
    let ended = written.and_then(|()| end_postcard_frame(start, dst, spliced, max_frame_len));
    if ended.is_err() {
        dst.truncate(start);
        if let Some(splices) = splices {
            splices.truncate(spliced_before);
        }
    }
    ended
}

/// postcard's encoding of the fields around a frame's body, written
/// straight into the buffer: an unsigned integer (an id, a length, a
/// variant's index) as a varint, a string as its length and its bytes, a
/// `bool` as one byte. The same bytes as postcard's serializer writes for
/// them (the frame tests compare the two), without a generic serializer
/// call and a `Result` per field — which cost a 64-byte tell more than its
/// body's encoding.
mod fields {
    use bytes::{BufMut, BytesMut};

    /// An unsigned integer, 7 bits a byte, the lowest first; every byte
    /// but the last has its top bit set.
    pub(super) fn varint(dst: &mut BytesMut, mut n: u64) {
        while n >= 0x80 {
            dst.put_u8(n as u8 | 0x80);
            n >>= 7;
        }
        dst.put_u8(n as u8);
    }

    /// An enum variant's index, which begins its fields.
    pub(super) fn index(dst: &mut BytesMut, variant: u32) {
        varint(dst, u64::from(variant));
    }

    /// A string: its length, then its bytes.
    pub(super) fn text(dst: &mut BytesMut, text: &str) {
        varint(dst, text.len() as u64);
        dst.extend_from_slice(text.as_bytes());
    }

    /// A `bool`: one byte, 0 or 1.
    pub(super) fn flag(dst: &mut BytesMut, flag: bool) {
        dst.put_u8(u8::from(flag));
    }
}

/// The large byte strings of a frame left out of its encoding, to be
/// written from where they lie: each with the offset in the encoded bytes
/// where it belongs. Filled by [`WireCodec::encode_data_value_spliced`];
/// [`Splices::interleave`] gives the frame's pieces in order.
#[derive(Debug, Default)]
pub struct Splices {
    parts: Vec<(usize, Bytes)>,
}

impl Splices {
    /// No byte strings left out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The bytes left out, in all.
    pub fn len(&self) -> usize {
        self.len_from(0)
    }

    /// The bytes left out from the `first`-th byte string on.
    pub(crate) fn len_from(&self, first: usize) -> usize {
        self.parts[first..].iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// How many byte strings were left out.
    pub(crate) fn parts_len(&self) -> usize {
        self.parts.len()
    }

    /// Forgets the byte strings left out from the `first`-th on.
    pub(crate) fn truncate(&mut self, first: usize) {
        self.parts.truncate(first);
    }

    /// The whole frame's pieces in order, each handed to `piece`: `encoded`
    /// (the buffer the frame was encoded into, from its start) cut at each
    /// offset, with what was left out there in between. No piece is empty.
    ///
    /// ```
    /// use botbus_core::codec::Splices;
    /// use botbus_core::{Blob, CodecKind, DataHead, Payload, WireCodec};
    /// use bytes::BytesMut;
    ///
    /// let codec = WireCodec::new(CodecKind::Postcard, 1 << 20);
    /// let payload = Payload::new(Blob::from(vec![7u8; 64 * 1024]));
    /// let head = DataHead::Tell { to: "sink", from: "camera" };
    /// let body = payload.value_body().unwrap().unwrap();
    ///
    /// let (mut encoded, mut splices) = (BytesMut::new(), Splices::new());
    /// codec.encode_data_value_spliced(head, payload.name(), &body, &mut encoded, &mut splices).unwrap();
    /// assert_eq!(splices.len(), 64 * 1024, "the blob was left out");
    /// assert!(encoded.len() < 64);
    ///
    /// // Put back together, the same bytes as the frame encoded whole.
    /// let mut whole = Vec::new();
    /// splices.interleave(encoded.freeze(), |piece| whole.extend_from_slice(&piece));
    /// let mut copied = BytesMut::new();
    /// codec.encode_data_value(head, payload.name(), &body, &mut copied).unwrap();
    /// assert_eq!(whole, copied);
    /// ```
    pub fn interleave(self, encoded: Bytes, mut piece: impl FnMut(Bytes)) {
        let mut at = 0;
        for (offset, bytes) in self.parts {
            if offset > at {
                piece(encoded.slice(at..offset));
            }
            if !bytes.is_empty() {
                piece(bytes);
            }
            at = offset;
        }
        if encoded.len() > at {
            piece(encoded.slice(at..));
        }
    }
}

/// A postcard flavor that appends to a `BytesMut`, but leaves out the
/// large [`Blob`](crate::Blob)s offered while it encodes, noting in
/// `splices` where each belongs.
pub(crate) struct Splicing<'a> {
    pub(crate) out: &'a mut BytesMut,
    pub(crate) splices: &'a mut Splices,
}

impl postcard::ser_flavors::Flavor for Splicing<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.out.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() >= crate::blob::SPLICE_FROM {
            if let Some(blob) = crate::blob::take_offered(bytes) {
                self.splices.parts.push((self.out.len(), blob));
                return Ok(());
            }
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// One JSON object per line: the codec for peers in any language.
///
/// ```
/// use botbus_core::{Frame, JsonLinesCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = JsonLinesCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(&Frame::Ping { nonce: 7 }, &mut wire).unwrap();
/// assert_eq!(&wire[..], b"{\"ping\":{\"nonce\":7}}\n");
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::Ping { nonce: 7 }));
/// ```
#[derive(Debug, Clone)]
pub struct JsonLinesCodec {
    max_frame_len: usize,
    /// Bytes of the buffer already searched for a newline.
    scanned: usize,
}

impl JsonLinesCodec {
    /// A codec with the [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses lines longer than `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            scanned: 0,
        }
    }
}

impl Default for JsonLinesCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for JsonLinesCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            let end = match next_line(src, &mut self.scanned, self.max_frame_len) {
                Ok(Some(end)) => end,
                Ok(None) => return Ok(None),
                Err(len) => {
                    return Err(FrameError::Oversize {
                        len,
                        max: self.max_frame_len,
                    })
                }
            };
            let line = src.split_to(end + 1);
            let line = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines are allowed between frames
            }
            return serde_json::from_slice(line)
                .map(Some)
                .map_err(|source| FrameError::MalformedJson {
                    len: line.len(),
                    source,
                });
        }
    }
}

impl Encoder<&Frame> for JsonLinesCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_json_line(item, dst, self.max_frame_len)
    }
}

/// Appends `item` to `dst` as one JSON line.
fn encode_json_line(item: &impl Serialize, dst: &mut BytesMut, max_frame_len: usize) -> Result<(), FrameError> {
    let start = dst.len();
    if let Err(error) = serde_json::to_writer(dst.writer(), item) {
        dst.truncate(start);
        return Err(FrameError::EncodeJson(error));
    }
    let len = dst.len() - start;
    if len > max_frame_len {
        dst.truncate(start);
        return Err(FrameError::Oversize {
            len,
            max: max_frame_len,
        });
    }
    dst.put_u8(b'\n');
    Ok(())
}

/// The codec a link's handshake chose.
#[derive(Debug, Clone)]
pub enum WireCodec {
    /// Length-prefixed postcard.
    Postcard(FrameCodec<Frame>),
    /// JSON lines.
    Json(JsonLinesCodec),
}

impl WireCodec {
    /// The codec of `kind`, refusing frames over `max_frame_len` bytes.
    pub fn new(kind: CodecKind, max_frame_len: usize) -> Self {
        match kind {
            CodecKind::Postcard => WireCodec::Postcard(FrameCodec::with_max_frame_len(max_frame_len)),
            CodecKind::Json => WireCodec::Json(JsonLinesCodec::with_max_frame_len(max_frame_len)),
        }
    }

    /// The longest frame body (or line) this codec writes and reads.
    pub fn max_frame_len(&self) -> usize {
        match self {
            WireCodec::Postcard(codec) => codec.max_frame_len,
            WireCodec::Json(codec) => codec.max_frame_len,
        }
    }

    /// Appends a data frame that borrows what it carries: the same bytes
    /// as encoding the matching [`Frame`], with nothing copied first.
    pub fn encode_data(&self, frame: &DataFrame<'_>, dst: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            WireCodec::Postcard(codec) => encode_postcard_frame(frame, dst, codec.max_frame_len),
            WireCodec::Json(codec) => encode_json_line(frame, dst, codec.max_frame_len),
        }
    }

    /// [`encode_data`](WireCodec::encode_data) for a frame whose payload
    /// borrows `body`, with `body` left out of `dst` and noted in `splices`
    /// if it is large: what a node passing a received message on to another
    /// link does, so that a camera frame crosses a hub without a copy. A
    /// JSON frame, or a small body, is encoded whole.
    ///
    /// ```
    /// use botbus_core::{CodecKind, DataHead, PayloadRef, Splices, WireCodec};
    /// use bytes::{Bytes, BytesMut};
    ///
    /// let codec = WireCodec::new(CodecKind::Postcard, 1 << 20);
    /// let body = Bytes::from(vec![7u8; 64 * 1024]); // as a link read it
    /// let frame = DataHead::Tell { to: "viewer", from: "camera" }.with(PayloadRef {
    ///     name: "cam.Image",
    ///     body: &body,
    ///     json: false,
    /// });
    /// let (mut encoded, mut splices) = (BytesMut::new(), Splices::new());
    /// codec.encode_data_spliced(&frame, &body, &mut encoded, &mut splices).unwrap();
    /// assert_eq!(splices.len(), body.len());
    ///
    /// let mut whole = Vec::new();
    /// splices.interleave(encoded.freeze(), |piece| whole.extend_from_slice(&piece));
    /// let mut copied = BytesMut::new();
    /// codec.encode_data(&frame, &mut copied).unwrap();
    /// assert_eq!(whole, copied);
    /// ```
    pub fn encode_data_spliced(
        &self,
        frame: &DataFrame<'_>,
        body: &Bytes,
        dst: &mut BytesMut,
        splices: &mut Splices,
    ) -> Result<(), FrameError> {
        let WireCodec::Postcard(codec) = self else {
            return self.encode_data(frame, dst);
        };
        if body.len() < crate::blob::SPLICE_FROM {
            return self.encode_data(frame, dst);
        }
        let (start, first) = (dst.len(), splices.parts_len());
        dst.put_u32(0);
        let encoded = crate::blob::splicing_bytes(body, || {
            postcard::serialize_with_flavor(frame, Splicing { out: dst, splices })
        });
        let spliced = splices.len_from(first);
        let ended = encoded
            .map_err(FrameError::Encode)
            .and_then(|()| end_postcard_frame(start, dst, spliced, codec.max_frame_len));
        if ended.is_err() {
            dst.truncate(start);
            splices.truncate(first);
        }
        ended
    }

    /// Appends the data frame `head` with a payload named `name` whose body
    /// is the value `body`: the same bytes as [`encode_data`] with the
    /// value encoded first. In postcard the value is encoded straight into
    /// `dst` — one copy of the body fewer; in JSON it is encoded as JSON text
    /// first, as a JSON frame needs it.
    ///
    /// ```
    /// use botbus_core::{CodecKind, DataFrame, DataHead, Payload, PayloadRef, WireCodec};
    /// use bytes::BytesMut;
    ///
    /// let codec = WireCodec::new(CodecKind::Postcard, 1024);
    /// let payload = Payload::new(String::from("hello"));
    /// let head = DataHead::Tell { to: "sink", from: "robot/driver" };
    ///
    /// let mut in_place = BytesMut::new();
    /// let body = payload.value_body().unwrap().unwrap();
    /// codec.encode_data_value(head, payload.name(), &body, &mut in_place).unwrap();
    ///
    /// // The same bytes as the frame with the body encoded first.
    /// let mut copied = BytesMut::new();
    /// let encoded = payload.encoded(CodecKind::Postcard).unwrap();
    /// let frame = head.with(PayloadRef { name: payload.name(), body: &encoded, json: false });
    /// codec.encode_data(&frame, &mut copied).unwrap();
    /// assert_eq!(in_place, copied);
    /// ```
    ///
    /// [`encode_data`]: WireCodec::encode_data
    pub fn encode_data_value(
        &self,
        head: DataHead<'_>,
        name: &str,
        body: &ValueBody<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        match self {
            WireCodec::Postcard(codec) => encode_postcard_data_value(head, name, body, dst, None, codec.max_frame_len),
            WireCodec::Json(codec) => {
                let json = body.json().map_err(FrameError::Payload)?;
                let frame = head.with(PayloadRef {
                    name,
                    body: &json,
                    json: true,
                });
                encode_json_line(&frame, dst, codec.max_frame_len)
            }
        }
    }

    /// [`encode_data_value`](WireCodec::encode_data_value), with the large
    /// [`Blob`](crate::Blob)s in the value left out of `dst` and noted in
    /// `splices`, for the frame to be written around them: a camera frame
    /// goes from the module that sent it to the socket with no copy in
    /// between. What is left out counts in the frame's length prefix. A JSON
    /// frame is encoded whole.
    pub fn encode_data_value_spliced(
        &self,
        head: DataHead<'_>,
        name: &str,
        body: &ValueBody<'_>,
        dst: &mut BytesMut,
        splices: &mut Splices,
    ) -> Result<(), FrameError> {
        match self {
            WireCodec::Postcard(codec) => {
                encode_postcard_data_value(head, name, body, dst, Some(splices), codec.max_frame_len)
            }
            WireCodec::Json(_) => self.encode_data_value(head, name, body, dst),
        }
    }

    /// Appends [`Frame::Reply`] to ask `id` with a payload named `name`
    /// whose body is the value `body`: the same bytes as the reply with the
    /// value encoded first. In postcard the value is encoded straight into
    /// `dst`, its large [`Blob`](crate::Blob)s left out and noted in
    /// `splices` if given any, as a data frame's are
    /// ([`encode_data_value_spliced`]); in JSON it is encoded as JSON text
    /// first.
    ///
    /// ```
    /// use botbus_core::{CodecKind, Frame, Payload, WireCodec, WirePayload};
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Encoder;
    ///
    /// let codec = WireCodec::new(CodecKind::Postcard, 1024);
    /// let payload = Payload::new(42u64);
    /// let body = payload.value_body().unwrap().unwrap();
    /// let mut in_place = BytesMut::new();
    /// codec.encode_reply_value(7, payload.name(), &body, &mut in_place, None).unwrap();
    ///
    /// // The same bytes as the reply with its body encoded first.
    /// let encoded = payload.encoded(CodecKind::Postcard).unwrap();
    /// let reply = Frame::Reply { id: 7, result: Ok(WirePayload { name: payload.name().to_owned(), body: encoded, json: false }) };
    /// let mut copied = BytesMut::new();
    /// codec.clone().encode(&reply, &mut copied).unwrap();
    /// assert_eq!(in_place, copied);
    /// ```
    ///
    /// [`encode_data_value_spliced`]: WireCodec::encode_data_value_spliced
    pub fn encode_reply_value(
        &self,
        id: u64,
        name: &str,
        body: &ValueBody<'_>,
        dst: &mut BytesMut,
        splices: Option<&mut Splices>,
    ) -> Result<(), FrameError> {
        match self {
            WireCodec::Postcard(codec) => {
                let before = |dst: &mut BytesMut| {
                    fields::index(dst, crate::frame::variant::REPLY);
                    fields::varint(dst, id);
                    fields::index(dst, 0); // `Ok`
                };
                encode_postcard_value_frame(before, name, body, |_| {}, dst, splices, codec.max_frame_len)
            }
            WireCodec::Json(codec) => {
                let json = body.json().map_err(FrameError::Payload)?;
                let reply = Frame::Reply {
                    id,
                    result: Ok(crate::WirePayload {
                        name: name.to_owned(),
                        body: Bytes::from(json),
                        json: true,
                    }),
                };
                encode_json_line(&reply, dst, codec.max_frame_len)
            }
        }
    }

    /// Which codec this is.
    pub fn kind(&self) -> CodecKind {
        match self {
            WireCodec::Postcard(_) => CodecKind::Postcard,
            WireCodec::Json(_) => CodecKind::Json,
        }
    }
}

impl Decoder for WireCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self {
            WireCodec::Postcard(codec) => codec.decode(src),
            WireCodec::Json(codec) => codec.decode(src),
        }
    }
}

/// What a link reads at once: the postcard frames that had arrived, each
/// body to be read with [`FrameIn::read`](crate::frame::FrameIn::read) — a
/// tell or an ask borrowed from these bytes, any other frame owned — or one
/// JSON frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A run of whole postcard frames, prefixes included, every length
    /// already checked: its bodies are [`frame_bodies`]. One run per read
    /// costs one split of the read buffer, not one per frame.
    Postcard(bytes::Bytes),
    /// A JSON-lines frame.
    Json(Frame),
}

/// [`WireCodec`] as a link reads with it: postcard frames come out as their
/// bytes, all that had arrived at once ([`Incoming::Postcard`]), so that
/// the reader can borrow from them. Its read buffers are reused once the
/// frames read into them are dropped, rather than new memory taken for the
/// reads after a frame still held.
#[derive(Debug, Clone)]
pub struct IncomingCodec {
    codec: WireCodec,
    room: ReadRoom,
}

impl IncomingCodec {
    /// Reads with `codec`.
    pub fn new(codec: WireCodec) -> Self {
        IncomingCodec {
            codec,
            room: ReadRoom::default(),
        }
    }
}

impl Decoder for IncomingCodec {
    type Item = Incoming;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        // The next read takes whatever has arrived, up to `READ_AHEAD`: a
        // busy link reads many frames per system call.
        let wanted = match &mut self.codec {
            WireCodec::Postcard(codec) => match codec.next_run(src)? {
                Run::Frames { run, largest } => {
                    self.room.read_frame(largest);
                    return Ok(Some(Incoming::Postcard(run.freeze())));
                }
                Run::Lacks(missing) => room_for(missing, src.len()),
            },
            WireCodec::Json(codec) => match codec.decode(src)? {
                Some(frame) => return Ok(Some(Incoming::Json(frame))),
                None => READ_AHEAD / 2,
            },
        };
        self.room.make_room(src, wanted);
        Ok(None)
    }
}

impl Encoder<&Frame> for WireCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            WireCodec::Postcard(codec) => codec.encode(item, dst),
            WireCodec::Json(codec) => codec.encode(item, dst),
        }
    }
}
