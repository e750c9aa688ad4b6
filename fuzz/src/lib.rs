//! What the fuzz targets share: feeding bytes to a decoder in the pieces a
//! socket might deliver them in, the frames the seeds are made of, and the
//! message types the payload target decodes into.

use botbus_core::{Frame, Message};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

/// Feeds `data` to `decoder` in pieces whose sizes come from `splits`,
/// as reads from a socket would; returns every item until the first error
/// (which ends the stream, as it closes a link).
pub fn decode_in_pieces<D: Decoder>(decoder: &mut D, splits: &[u8], data: &[u8]) -> Vec<D::Item> {
    let mut buffer = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = data;
    let mut sizes = splits.iter().cycle();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .map_or(rest.len(), |&s| usize::from(s).max(1))
            .min(rest.len());
        buffer.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(_) => return items,
            }
        }
    }
    items
}

/// The token of the handshake target's authenticating side.
pub const HANDSHAKE_TOKEN: &[u8] = b"the fuzzing token, 16+ bytes";

/// The nonce of the handshake target's side (fixed, so that seeds can hold
/// a peer's correct proof).
pub const HANDSHAKE_NONCE: [u8; 32] = [1; 32];

#[path = "../../crates/core/tests/support/frames.rs"]
mod frames;

/// Every frame kind, with `body` as each payload's body (`json`: it is
/// JSON text; the list the protocol tests use).
pub fn every_frame(body: Bytes, json: bool) -> Vec<Frame> {
    frames::frames_with_body(body, json)
}

/// A recursive message: how deep it nests is up to the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    /// The end.
    Leaf(u8),
    /// One more level.
    Node(Box<Tree>),
    /// A fork.
    Fork(Vec<Tree>),
}

impl Message for Tree {
    const NAME: &'static str = "fuzz.Tree";
}

/// A message with the field types robots send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reading {
    /// A sequence number.
    pub seq: u64,
    /// A measurement (compared by bits: NaN is a value here).
    pub value: f64,
    /// A single-precision one.
    pub small: f32,
    /// A label.
    pub label: String,
    /// Optional raw data.
    pub raw: Option<Vec<u8>>,
    /// A signed count.
    pub delta: i32,
}

impl PartialEq for Reading {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.value.to_bits() == other.value.to_bits()
            && self.small.to_bits() == other.small.to_bits()
            && self.label == other.label
            && self.raw == other.raw
            && self.delta == other.delta
    }
}

impl Message for Reading {
    const NAME: &'static str = "fuzz.Reading";
}
