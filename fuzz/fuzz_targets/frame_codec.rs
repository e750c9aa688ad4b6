//! The postcard frame codec: any bytes, in any pieces, decode or fail
//! cleanly; whatever decodes re-encodes and decodes to the same frame. And
//! any bytes as one frame's body: the borrowed reading a link does
//! (`FrameIn::read`) takes exactly what the owned decoding takes, and reads
//! the same frame from it — alone, or in a run after a tell with the same
//! names (`RunReader`).
#![no_main]

use botbus_core::{DataIn, Frame, FrameCodec, FrameIn, PayloadIn, RunReader, WirePayload};
use botbus_fuzz::decode_in_pieces;
use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let (splits, stream) = data.split_at(data.len().min(4));
    let mut codec = FrameCodec::<Frame>::with_max_frame_len(64 * 1024);
    for frame in decode_in_pieces(&mut codec, splits, stream) {
        let mut wire = BytesMut::new();
        codec.encode(&frame, &mut wire).expect("a decoded frame encodes");
        let again = FrameCodec::<Frame>::new()
            .decode(&mut wire)
            .expect("re-decodes")
            .expect("whole");
        assert_eq!(again, frame);
        assert!(wire.is_empty());
    }
    let mut framed = BytesMut::new();
    framed.put_u32(stream.len() as u32);
    framed.put_slice(stream);
    let owned = FrameCodec::<Frame>::new().decode(&mut framed);
    match (FrameIn::read(stream), owned) {
        // Any frame but a tell, an ask or a reply that is no error, or
        // one whose variant index is not in its one-byte form, is read
        // whole.
        (Ok(FrameIn::Frame(frame)), Ok(Some(owned))) => assert_eq!(frame, owned),
        (Ok(borrowed), Ok(Some(owned))) => assert_eq!(borrowed, borrow(&owned)),
        (Err(_), Err(_)) => {}
        (borrowed, owned) => panic!("borrowed {borrowed:?} but owned {owned:?}"),
    }
    // In a run: the body, then its beginnings (cut where the first bytes
    // say), then the body again — each read as it is read alone.
    let cuts = splits.iter().map(|&cut| &stream[..usize::from(cut).min(stream.len())]);
    let mut reader = RunReader::default();
    for body in std::iter::once(stream).chain(cuts).chain([stream]) {
        match (reader.read(body).0, FrameIn::read(body)) {
            (Ok(in_run), Ok(alone)) => assert_eq!(in_run, alone),
            (Err(_), Err(_)) => {}
            (in_run, alone) => panic!("in a run {in_run:?} but alone {alone:?}"),
        }
    }
});

/// `frame` as `FrameIn::read` would give it.
fn borrow(frame: &Frame) -> FrameIn<'_> {
    fn payload(p: &WirePayload) -> PayloadIn<'_> {
        PayloadIn {
            name: &p.name,
            body: &p.body,
            json: p.json,
        }
    }
    match frame {
        Frame::Tell { to, from, payload: p } => FrameIn::Data(DataIn::Tell {
            to,
            from,
            payload: payload(p),
        }),
        Frame::Ask {
            id,
            to,
            from,
            timeout_ms,
            payload: p,
        } => FrameIn::Data(DataIn::Ask {
            id: *id,
            to,
            from,
            timeout_ms: *timeout_ms,
            payload: payload(p),
        }),
        Frame::Reply { id, result: Ok(p) } => FrameIn::Reply {
            id: *id,
            payload: payload(p),
        },
        other => FrameIn::Frame(other.clone()),
    }
}
