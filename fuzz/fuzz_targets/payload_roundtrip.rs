//! Typed payloads: the first byte picks a message type and a codec; the rest
//! is the body. Decoding never aborts (a deep tree is an error, not a stack
//! overflow), and anything that decodes re-encodes to the same value.
#![no_main]

use botbus_core::{CodecKind, Message, Payload};
use botbus_fuzz::{Reading, Tree};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn round_trip<M: Message + PartialEq>(codec: CodecKind, body: &[u8]) {
    let body = Bytes::copy_from_slice(body);
    let payload = match codec {
        CodecKind::Postcard => Payload::from_encoded(M::NAME, body),
        CodecKind::Json => Payload::from_json(M::NAME, body),
    };
    let Ok(value) = payload.decode::<M>() else { return };
    let again = Payload::new(value.clone())
        .encoded(codec)
        .expect("a decoded value encodes");
    let back = match codec {
        CodecKind::Postcard => Payload::from_encoded(M::NAME, again),
        CodecKind::Json => Payload::from_json(M::NAME, again),
    };
    assert_eq!(back.decode::<M>().expect("re-decodes"), value);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let codec = if selector & 1 == 0 {
        CodecKind::Postcard
    } else {
        CodecKind::Json
    };
    match selector % 8 / 2 {
        0 => round_trip::<Tree>(codec, body),
        1 => round_trip::<Reading>(codec, body),
        2 => round_trip::<String>(codec, body),
        _ => round_trip::<Vec<u8>>(codec, body),
    }
});
