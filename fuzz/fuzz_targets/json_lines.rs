//! The JSON-lines codec: any bytes, in any pieces, decode or fail cleanly;
//! whatever decodes re-encodes as exactly one line that decodes again, and
//! encoding is then a fixed point. (Not byte-equal to the input: line breaks
//! between a body's JSON tokens go out as spaces, the same JSON value.)
#![no_main]

use botbus_core::JsonLinesCodec;
use botbus_fuzz::decode_in_pieces;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let (splits, stream) = data.split_at(data.len().min(4));
    let mut codec = JsonLinesCodec::with_max_frame_len(64 * 1024);
    for frame in decode_in_pieces(&mut codec, splits, stream) {
        let mut wire = BytesMut::new();
        if codec.encode(&frame, &mut wire).is_err() {
            continue; // e.g. over the limit once re-encoded
        }
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "a frame is one line");
        let first = wire.clone();
        let again = JsonLinesCodec::new()
            .decode(&mut wire)
            .expect("re-decodes")
            .expect("whole");
        assert_eq!(std::mem::discriminant(&again), std::mem::discriminant(&frame));
        let mut second = BytesMut::new();
        codec.encode(&again, &mut second).expect("encodes again");
        assert_eq!(first, second, "encoding is a fixed point");
    }
});
