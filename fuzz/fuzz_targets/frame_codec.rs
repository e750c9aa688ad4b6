//! The postcard frame codec: any bytes, in any pieces, decode or fail
//! cleanly; whatever decodes re-encodes and decodes to the same frame.
#![no_main]

use botbus_core::{Frame, FrameCodec};
use botbus_fuzz::decode_in_pieces;
use bytes::BytesMut;
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
});
