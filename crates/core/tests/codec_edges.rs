//! Regression tests for the codec edge cases fuzzing found: each was a
//! frame, payload or hello that one side accepted and the other did not, or
//! that cost far more than its bytes.

use botbus_core::handshake::{HandshakeError, HelloCodec, MAX_HELLO_LEN};
use botbus_core::{
    CodecKind, Frame, FrameCodec, FrameError, Hello, JsonLinesCodec, Message, Payload, PayloadError, WirePayload,
};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// A recursive message type: nesting is limited only by the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

impl Message for Tree {
    const NAME: &'static str = "test.Tree";
}

impl Tree {
    /// A tree `depth` levels deep, built and dropped without recursion
    /// trouble only for modest depths: tests build big ones as bytes.
    fn nested(depth: usize) -> Tree {
        (0..depth).fold(Tree::Leaf, |tree, _| Tree::Node(Box::new(tree)))
    }
}

#[test]
fn a_pretty_printed_json_body_still_goes_out_as_one_line() {
    let pretty = serde_json::to_vec_pretty(&serde_json::json!({"speed": 0.5, "note": "a\nb", "list": [1, 2]})).unwrap();
    assert!(pretty.contains(&b'\n'));
    let frame = Frame::Tell {
        to: "motor".into(),
        from: "robot/main".into(),
        payload: WirePayload {
            name: "any".into(),
            body: Bytes::from(pretty.clone()),
            json: true,
        },
    };
    let mut wire = BytesMut::new();
    JsonLinesCodec::new().encode(&frame, &mut wire).unwrap();
    assert_eq!(
        wire.iter().filter(|&&b| b == b'\n').count(),
        1,
        "{:?}",
        String::from_utf8_lossy(&wire)
    );
    assert_eq!(wire.last(), Some(&b'\n'));
    let Some(Frame::Tell { payload, .. }) = JsonLinesCodec::new().decode(&mut wire).unwrap() else {
        panic!("a tell comes back")
    };
    // The same value (the escaped "\n" inside the string is kept).
    let back: serde_json::Value = serde_json::from_slice(&payload.body).unwrap();
    assert_eq!(back, serde_json::from_slice::<serde_json::Value>(&pretty).unwrap());
    assert_eq!(back["note"], "a\nb");
}

#[test]
fn doubles_cross_a_json_link_exactly() {
    // A spread of awkward doubles: many need 17 significant digits.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut values = vec![
        0.1 + 0.2,
        1e-308,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        -0.0,
        123_456.789_012_345_67,
    ];
    for _ in 0..10_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let value = f64::from_bits(state);
        if value.is_finite() {
            values.push(value);
        }
    }
    for value in values {
        let json = Payload::new(value).encoded(CodecKind::Json).unwrap();
        let back: f64 = Payload::from_json("f64", json).decode().unwrap();
        assert_eq!(back.to_bits(), value.to_bits(), "{value:e} changed across JSON");
    }
}

/// Feeds `bytes` to `decode` split at `split`, as two reads.
fn in_two_reads<D: Decoder>(decoder: &mut D, bytes: &[u8], split: usize) -> Result<Option<D::Item>, D::Error> {
    let mut buffer = BytesMut::from(&bytes[..split]);
    if let Some(item) = decoder.decode(&mut buffer)? {
        return Ok(Some(item));
    }
    buffer.extend_from_slice(&bytes[split..]);
    decoder.decode(&mut buffer)
}

fn hello_line(len: usize, ending: &str) -> Vec<u8> {
    let mut line = Hello::new("robot").to_line();
    line.pop(); // the newline
    let padding = len - line.len();
    // Padding inside the JSON object keeps it a valid hello of any length.
    line.pop(); // the closing brace
    line.extend_from_slice(br#","pad":""#);
    line.extend(std::iter::repeat_n(b'x', padding - br#","pad":""#.len() - 1));
    line.extend_from_slice(b"\"}");
    assert_eq!(line.len(), len);
    line.extend_from_slice(ending.as_bytes());
    line
}

#[test]
fn the_hello_limit_holds_whatever_the_read_split() {
    let huge = hello_line(100_000, "\n");
    assert!(
        matches!(
            HelloCodec::default().decode(&mut BytesMut::from(&huge[..])),
            Err(HandshakeError::TooLong)
        ),
        "a 100 KB hello in one read is refused"
    );
    for ending in ["\n", "\r\n"] {
        let longest = hello_line(MAX_HELLO_LEN, ending);
        let over = hello_line(MAX_HELLO_LEN + 1, ending);
        for split in 1..longest.len() {
            let ok = in_two_reads(&mut HelloCodec::default(), &longest, split);
            assert!(matches!(ok, Ok(Some(_))), "{ending:?} split at {split}: {ok:?}");
            let refused = in_two_reads(&mut HelloCodec::default(), &over, split);
            assert!(
                matches!(refused, Err(HandshakeError::TooLong)),
                "{ending:?} split at {split}: {refused:?}"
            );
        }
    }
}

fn ping_line(len: usize, ending: &str) -> Vec<u8> {
    let mut line = br#"{"ping":{"nonce":7}}"#.to_vec();
    line.extend(std::iter::repeat_n(b' ', len - line.len()));
    line.extend_from_slice(ending.as_bytes());
    line
}

#[test]
fn the_json_line_limit_holds_whatever_the_read_split() {
    const MAX: usize = 64;
    for ending in ["\n", "\r\n"] {
        let longest = ping_line(MAX, ending);
        let over = ping_line(MAX + 1, ending);
        for split in 1..longest.len() {
            let mut codec = JsonLinesCodec::with_max_frame_len(MAX);
            let ok = in_two_reads(&mut codec, &longest, split);
            assert!(
                matches!(ok, Ok(Some(Frame::Ping { nonce: 7 }))),
                "{ending:?} split at {split}: {ok:?}"
            );
            let mut codec = JsonLinesCodec::with_max_frame_len(MAX);
            let refused = in_two_reads(&mut codec, &over, split);
            assert!(
                matches!(refused, Err(FrameError::Oversize { len, max: MAX }) if len > MAX),
                "{ending:?} split at {split}: {refused:?}"
            );
        }
    }
}

#[test]
fn trailing_bytes_after_a_payload_are_refused_in_both_codecs() {
    // `05` is the u8 5; `63 62` follow it.
    let postcard = Payload::from_encoded("u8", Bytes::from_static(&[0x05, 0x63, 0x62]));
    assert!(
        matches!(
            postcard.decode::<u8>(),
            Err(PayloadError::TrailingBytes { name: "u8", count: 2 })
        ),
        "postcard"
    );
    assert_eq!(
        Payload::from_encoded("u8", Bytes::from_static(&[5]))
            .decode::<u8>()
            .unwrap(),
        5
    );
    let json = Payload::from_json("u8", Bytes::from_static(b"5 cb"));
    assert!(
        matches!(json.decode::<u8>(), Err(PayloadError::DecodeJson { .. })),
        "json"
    );
    // White space after a JSON value is not a trailing byte.
    assert_eq!(
        Payload::from_json("u8", Bytes::from_static(b"5 \n"))
            .decode::<u8>()
            .unwrap(),
        5
    );
}

#[test]
fn a_declared_length_reserves_only_what_has_arrived() {
    let mut codec = FrameCodec::<Frame>::new();
    let mut buffer = BytesMut::new();
    buffer.put_u32(8 * 1024 * 1024 - 1); // within the limit, body still to come
    assert!(codec.decode(&mut buffer).unwrap().is_none());
    assert!(
        buffer.capacity() <= 16 * 1024,
        "4 bytes reserved {} bytes",
        buffer.capacity()
    );
    // As the body arrives, the buffer grows with it, and the frame decodes.
    let mut wire = BytesMut::new();
    codec
        .encode(
            &Frame::Bye {
                reason: "x".repeat(3 * 1024 * 1024),
            },
            &mut wire,
        )
        .unwrap();
    let mut buffer = BytesMut::new();
    let mut decoded = None;
    for chunk in wire.chunks(64 * 1024) {
        buffer.extend_from_slice(chunk);
        if let Some(frame) = codec.decode(&mut buffer).unwrap() {
            decoded = Some(frame);
        } else {
            // The codec reserves at most what arrived again; `BytesMut`
            // may double that when the next chunk is appended. The old
            // codec held the whole declared 3 MiB from the first chunk.
            assert!(
                buffer.capacity() <= 4 * buffer.len() + 16 * 1024,
                "{} for {}",
                buffer.capacity(),
                buffer.len()
            );
        }
    }
    assert!(matches!(decoded, Some(Frame::Bye { reason }) if reason.len() == 3 * 1024 * 1024));
}

/// Postcard bytes of a `Tree` nested `depth` deep: variant 1 (`Node`)
/// `depth` times, then variant 0 (`Leaf`).
fn deep_tree_postcard(depth: usize) -> Bytes {
    let mut bytes = vec![1u8; depth];
    bytes.push(0);
    Bytes::from(bytes)
}

#[test]
fn a_deeply_nested_payload_is_an_error_not_a_stack_overflow() {
    // Well within the limit: decodes, in both codecs.
    let tree = Tree::nested(100);
    let postcard = Payload::new(tree.clone()).to_bytes().unwrap();
    assert_eq!(
        Payload::from_encoded(Tree::NAME, postcard).decode::<Tree>().unwrap(),
        tree
    );
    let json = Payload::new(tree.clone()).encoded(CodecKind::Json).unwrap();
    assert_eq!(Payload::from_json(Tree::NAME, json).decode::<Tree>().unwrap(), tree);

    // 20,000 deep overflowed the stack (and aborted the process) before.
    // Run on a thread with a small stack, so a regression shows as a crash.
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let postcard = Payload::from_encoded(Tree::NAME, deep_tree_postcard(20_000)).decode::<Tree>();
            let json_text = "{\"Node\":".repeat(20_000) + "\"Leaf\"" + &"}".repeat(20_000);
            let json = Payload::from_json(Tree::NAME, Bytes::from(json_text)).decode::<Tree>();
            (postcard.map(drop), json.map(drop))
        })
        .unwrap()
        .join()
        .expect("decoding a deep payload returns, it does not crash");
    for outcome in [result.0, result.1] {
        let error = outcome.unwrap_err();
        assert!(
            matches!(error, PayloadError::TooDeep { name: "test.Tree" }),
            "{error:?}"
        );
        assert!(error.to_string().contains("nested deeper than 128 levels"), "{error}");
    }
}

#[test]
fn a_line_decoder_handed_a_shorter_buffer_does_not_panic() {
    // Found by fuzzing: the codec remembers how far it searched; a buffer
    // shorter than that (a codec reused elsewhere) panicked on the slice.
    let mut codec = JsonLinesCodec::new();
    let mut long = BytesMut::from(&[b' '; 100][..]);
    assert!(codec.decode(&mut long).unwrap().is_none());
    let mut short = BytesMut::from(&b"{\"ping\":{\"nonce\":1}}\n"[..]);
    assert_eq!(codec.decode(&mut short).unwrap(), Some(Frame::Ping { nonce: 1 }));
}
