//! [`Blob`]: bytes a module receives without a copy.
//!
//! A message that crossed a link arrives as postcard bytes that a link read;
//! decoding a `Vec<u8>` out of them copies every byte once more. A [`Blob`]
//! field is instead decoded as a [`Bytes`] slice of what the link read,
//! when its body is large enough for the copy to matter — a camera frame, a
//! point cloud, a map tile. Anywhere in a message: the message itself, or a
//! field of a struct.
//!
//! ```
//! use botbus_core::{Blob, Message, Payload};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Image {
//!     width: u32,
//!     height: u32,
//!     pixels: Blob,
//! }
//!
//! impl Message for Image {
//!     const NAME: &'static str = "cam.Image";
//! }
//!
//! let image = Image { width: 640, height: 480, pixels: Blob::from(vec![7u8; 640 * 480]) };
//! // As a link would hand it on: encoded, then decoded where it is taken.
//! let received = Payload::from_encoded("cam.Image", Payload::new(image).to_bytes().unwrap());
//! let image: Image = received.decode().unwrap();
//! assert_eq!(image.pixels.len(), 640 * 480);
//! ```
//!
//! On the wire a `Blob` is a byte string, exactly as a `Vec<u8>` is in
//! postcard and as an array of numbers in JSON, so peers in other languages
//! read and write it as plain bytes.
//!
//! Sending is the mirror image: a large `Blob` in a message sent to another
//! process is not copied into the frame either. The frame is written around
//! it, and the link writes the blob's bytes from where they lie, in the
//! same system call as the frame's other bytes (see
//! [`WireCodec::encode_data_value_spliced`](crate::WireCodec::encode_data_value_spliced)).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::message::Message;

/// Bodies this large or larger lend their bytes to the [`Blob`]s decoded
/// from them; a smaller one's blobs are copies (cheaper than sharing).
const LEND_FROM: usize = 1024;

thread_local! {
    /// The received body being decoded on this thread, while its blobs may
    /// borrow from it.
    static LENDING: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Blobs this large or larger are spliced into an outgoing frame (written
/// from where they lie) rather than copied into it.
pub(crate) const SPLICE_FROM: usize = 16 * 1024;

thread_local! {
    /// Whether a value is being encoded with its large blobs spliced.
    static SPLICING: Cell<bool> = const { Cell::new(false) };
    /// The large blob being serialized while splicing, offered to the
    /// encoder in place of its copy.
    static OFFERED: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `encode` with the large blobs it serializes offered to
/// [`take_offered`], so that the encoder can splice them in rather than
/// copy them.
pub(crate) fn splicing<R>(encode: impl FnOnce() -> R) -> R {
    let before = SPLICING.replace(true);
    let encoded = encode();
    SPLICING.set(before);
    OFFERED.take();
    encoded
}

/// Runs `encode` with `bytes` offered to [`take_offered`] from the start:
/// an encoder that meets them (a received body passed on in a frame)
/// splices them in rather than copies them.
pub(crate) fn splicing_bytes<R>(bytes: &Bytes, encode: impl FnOnce() -> R) -> R {
    splicing(|| {
        OFFERED.set(Some(bytes.clone()));
        encode()
    })
}

/// The blob whose bytes `part` are, if it was offered while being
/// serialized: shared, for the encoder to splice in.
pub(crate) fn take_offered(part: &[u8]) -> Option<Bytes> {
    OFFERED.with_borrow_mut(|offered| match offered {
        Some(blob) if blob.as_ptr() == part.as_ptr() && blob.len() == part.len() => offered.take(),
        _ => None,
    })
}

/// Runs `decode` on `body` with the body lent to the [`Blob`]s it decodes,
/// if it is large enough for that to pay.
pub(crate) fn lending<R>(body: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    if body.len() < LEND_FROM {
        return decode(body);
    }
    let before = LENDING.replace(Some(body.clone()));
    let decoded = decode(body);
    LENDING.set(before);
    decoded
}

/// `bytes` as a slice of the body being decoded if they lie in it, else a
/// copy.
fn share(bytes: &[u8]) -> Bytes {
    LENDING.with_borrow(|lent| match lent {
        Some(body) if within(body, bytes) => body.slice_ref(bytes),
        _ => Bytes::copy_from_slice(bytes),
    })
}

fn within(body: &[u8], part: &[u8]) -> bool {
    let range = body.as_ptr_range();
    let start = part.as_ptr();
    range.start <= start && start as usize + part.len() <= range.end as usize
}

/// Bytes that cross links without being copied into the module that takes
/// them: decoded from a received message as a slice of the bytes the link
/// read (see the [module docs](self)). Cloning is cheap: it shares the bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blob(pub Bytes);

impl Blob {
    /// The bytes, shared.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Self {
        Blob(bytes)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Self {
        Blob(bytes.into())
    }
}

impl From<&'static [u8]> for Blob {
    fn from(bytes: &'static [u8]) -> Self {
        Blob(Bytes::from_static(bytes))
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Message for Blob {
    const NAME: &'static str = "blob";
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() >= SPLICE_FROM && SPLICING.get() {
            OFFERED.set(Some(self.0.clone()));
        }
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BlobVisitor;

        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }

            fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<Blob, E> {
                Ok(Blob(share(bytes)))
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Blob, E> {
                Ok(Blob(Bytes::copy_from_slice(bytes)))
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(bytes.into()))
            }

            // JSON: an array of numbers, as serde writes bytes there.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Blob(bytes.into()))
            }
        }

        deserializer.deserialize_bytes(BlobVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Image {
        width: u32,
        pixels: Blob,
    }

    impl Message for Image {
        const NAME: &'static str = "test.Image";
    }

    fn received<M: Message>(message: M) -> (Bytes, Payload) {
        let body = Payload::new(message).to_bytes().unwrap();
        (body.clone(), Payload::from_encoded(M::NAME, body))
    }

    #[test]
    fn a_large_blob_is_a_slice_of_the_received_body_and_a_small_one_a_copy() {
        let (body, payload) = received(Image {
            width: 3,
            pixels: Blob::from(vec![9; 64 * 1024]),
        });
        let image: Image = payload.decode().unwrap();
        assert!(within(&body, &image.pixels), "the pixels are the body's own bytes");
        assert!(image.pixels.iter().all(|&b| b == 9) && image.pixels.len() == 64 * 1024);

        let (body, payload) = received(Blob::from(vec![1, 2, 3]));
        let small: Blob = payload.decode().unwrap();
        assert!(!within(&body, &small), "a small blob is copied");
        assert_eq!(&small[..], [1, 2, 3]);
        // Nothing stays lent once decoding is done.
        assert!(LENDING.with_borrow(Option::is_none));
    }

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Stereo {
        left: Blob,
        caption: String,
        right: Blob,
        thumbnail: Blob,
    }

    impl Message for Stereo {
        const NAME: &'static str = "test.Stereo";
    }

    #[test]
    fn large_blobs_are_spliced_into_a_frame_and_small_ones_copied() {
        use crate::{codec::Splices, CodecKind, DataHead, WireCodec};
        let stereo = Stereo {
            left: Blob::from(vec![1; SPLICE_FROM]),
            caption: "left and right".into(),
            right: Blob::from(vec![2; 100 * 1024]),
            thumbnail: Blob::from(vec![3; SPLICE_FROM - 1]),
        };
        let payload = Payload::new(stereo.clone());
        let body = payload.value_body().unwrap().unwrap();
        let head = DataHead::Tell {
            to: "viewer",
            from: "camera",
        };
        let postcard = WireCodec::new(CodecKind::Postcard, 1 << 20);

        let (mut encoded, mut splices) = (bytes::BytesMut::new(), Splices::new());
        postcard
            .encode_data_value_spliced(head, payload.name(), &body, &mut encoded, &mut splices)
            .unwrap();
        assert_eq!(
            splices.len(),
            SPLICE_FROM + 100 * 1024,
            "both large blobs, not the thumbnail"
        );
        let mut pieces = Vec::new();
        splices.interleave(encoded.freeze(), |piece| pieces.push(piece));
        assert_eq!(
            pieces.len(),
            5,
            "head, left, caption, right, the thumbnail and the rest"
        );
        assert_eq!(pieces[1].as_ptr(), stereo.left.as_ptr(), "the left image as it lies");
        assert_eq!(pieces[3].as_ptr(), stereo.right.as_ptr(), "the right image as it lies");
        let whole: Vec<u8> = pieces.concat();
        let mut copied = bytes::BytesMut::new();
        postcard
            .encode_data_value(head, payload.name(), &body, &mut copied)
            .unwrap();
        assert_eq!(whole, copied, "the same frame as encoded whole");
        // Nothing stays offered once encoding is done.
        assert!(OFFERED.with_borrow(Option::is_none) && !SPLICING.get());

        // Too long for the link: nothing encoded, nothing left noted.
        let (mut encoded, mut splices) = (bytes::BytesMut::new(), Splices::new());
        let short = WireCodec::new(CodecKind::Postcard, 64 * 1024);
        assert!(short
            .encode_data_value_spliced(head, payload.name(), &body, &mut encoded, &mut splices)
            .is_err());
        assert!(encoded.is_empty() && splices.is_empty());

        // JSON has no splices: the frame is whole.
        let json = WireCodec::new(CodecKind::Json, 1 << 22);
        let (mut encoded, mut splices) = (bytes::BytesMut::new(), Splices::new());
        json.encode_data_value_spliced(head, payload.name(), &body, &mut encoded, &mut splices)
            .unwrap();
        assert!(splices.is_empty() && encoded.len() > 100 * 1024);
    }

    #[test]
    fn a_blob_is_a_byte_string_on_the_wire_in_both_codecs() {
        let bytes = vec![0u8, 1, 254, 255];
        assert_eq!(
            postcard::to_allocvec(&Blob::from(bytes.clone())).unwrap(),
            postcard::to_allocvec(&serde_bytes_like(&bytes)).unwrap()
        );
        let json = serde_json::to_string(&Blob::from(bytes.clone())).unwrap();
        assert_eq!(json, "[0,1,254,255]");
        let back: Blob = serde_json::from_str(&json).unwrap();
        assert_eq!(&back[..], &bytes[..]);
        assert!(serde_json::from_str::<Blob>("[256]").is_err());
    }

    /// Bytes as serde writes a byte string.
    fn serde_bytes_like(bytes: &[u8]) -> impl Serialize + '_ {
        struct Raw<'a>(&'a [u8]);
        impl Serialize for Raw<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        Raw(bytes)
    }
}
