//! The protocol pieces on their own: no runtime, no sockets.

use std::time::{Duration, Instant};

use botbus_core::handshake::{check_hello, read_hello, HandshakeError, HelloCodec};
use botbus_core::supervision::RestartTracker;
use botbus_core::{
    CodecKind, Endpoint, Frame, FrameCodec, FrameError, Hello, Incoming, IncomingCodec, JsonLinesCodec, Payload,
    PayloadError, PipeAddr, RestartBudget, TopicPattern, WireCodec, WirePayload,
};
use bytes::{BufMut, Bytes, BytesMut};

#[path = "support/frames.rs"]
mod frames;
use frames::frames_with_body;
use tokio_util::codec::{Decoder, Encoder};

fn every_frame_kind() -> Vec<Frame> {
    frames_with_body(Bytes::from_static(&[1, 2, 3]), false)
}

/// Every frame kind with JSON payload bodies, as a JSON-lines link carries them.
fn json_frames() -> Vec<Frame> {
    frames_with_body(Bytes::from_static(br#"{"x":[1,2.5,"three"]}"#), true)
}

#[test]
fn every_frame_kind_round_trips_even_byte_by_byte() {
    let frames = every_frame_kind();
    let mut codec = FrameCodec::<Frame>::new();
    let mut wire = BytesMut::new();
    for frame in &frames {
        codec.encode(frame, &mut wire).unwrap();
    }
    // All at once: many frames in one read.
    let mut all = wire.clone();
    let mut decoded = Vec::new();
    while let Some(frame) = codec.decode(&mut all).unwrap() {
        decoded.push(frame);
    }
    assert_eq!(decoded, frames);
    // One byte at a time: a reader never hangs on a split frame.
    let mut trickle = BytesMut::new();
    let mut decoded = Vec::new();
    for byte in wire {
        trickle.put_u8(byte);
        while let Some(frame) = codec.decode(&mut trickle).unwrap() {
            decoded.push(frame);
        }
    }
    assert_eq!(decoded, frames);
}

#[test]
fn oversize_length_is_refused_before_the_body_arrives() {
    let mut codec = FrameCodec::<Frame>::with_max_frame_len(1024);
    let mut wire = BytesMut::new();
    wire.put_u32(1025);
    match codec.decode(&mut wire) {
        Err(FrameError::Oversize { len: 1025, max: 1024 }) => {}
        other => panic!("expected an oversize error, got {other:?}"),
    }
}

#[test]
fn a_link_reads_every_whole_frame_at_once_and_an_oversize_one_after_them() {
    let mut codec = IncomingCodec::new(WireCodec::Postcard(FrameCodec::with_max_frame_len(1024)));
    let frames = [
        Frame::Ping { nonce: 1 },
        Frame::Pong { nonce: 2 },
        Frame::Credit { frames: 3 },
    ];
    let mut wire = BytesMut::new();
    for frame in &frames {
        FrameCodec::<Frame>::new().encode(frame, &mut wire).unwrap();
    }
    wire.put_u32(1025); // too long: refused, but only after the frames before it
    wire.put_slice(&[0; 8]);
    let Ok(Some(Incoming::Postcard(run))) = codec.decode(&mut wire) else {
        panic!("the whole frames come first")
    };
    let read: Vec<Frame> = botbus_core::codec::frame_bodies(&run)
        .map(|body| postcard::from_bytes(body).unwrap())
        .collect();
    assert_eq!(read, frames);
    assert!(matches!(
        codec.decode(&mut wire),
        Err(FrameError::Oversize { len: 1025, max: 1024 })
    ));

    // A frame not yet whole stays buffered until it is.
    let mut wire = BytesMut::new();
    FrameCodec::<Frame>::new().encode(&frames[0], &mut wire).unwrap();
    let whole = wire.len();
    FrameCodec::<Frame>::new().encode(&frames[1], &mut wire).unwrap();
    let mut partial = wire.split_to(whole + 5);
    let Ok(Some(Incoming::Postcard(run))) = codec.decode(&mut partial) else {
        panic!("the first frame is whole")
    };
    assert_eq!(botbus_core::codec::frame_bodies(&run).count(), 1);
    assert!(matches!(codec.decode(&mut partial), Ok(None)));
    partial.unsplit(wire);
    let Ok(Some(Incoming::Postcard(run))) = codec.decode(&mut partial) else {
        panic!("the second frame is whole now")
    };
    let second: Frame = postcard::from_bytes(botbus_core::codec::frame_bodies(&run).next().unwrap()).unwrap();
    assert_eq!(second, frames[1]);
}

#[test]
fn malformed_and_trailing_bodies_are_typed_errors() {
    let mut codec = FrameCodec::<Frame>::new();
    let mut junk = BytesMut::new();
    junk.put_u32(3);
    junk.put_slice(&[0xee, 0xee, 0xee]);
    assert!(matches!(
        codec.decode(&mut junk),
        Err(FrameError::Malformed { len: 3, .. })
    ));

    let mut body = postcard::to_allocvec(&Frame::Ping { nonce: 1 }).unwrap();
    body.extend_from_slice(&[0, 0]);
    let mut padded = BytesMut::new();
    padded.put_u32(body.len() as u32);
    padded.put_slice(&body);
    assert!(matches!(codec.decode(&mut padded), Err(FrameError::TrailingBytes(2))));
}

#[test]
fn hello_is_one_json_line_starting_with_magic_and_version() {
    let line = Hello::new("n").to_line();
    assert_eq!(
        std::str::from_utf8(&line).unwrap(),
        format!(
            "{{\"magic\":\"BBUS\",\"version\":{},\"node\":\"n\",\"codecs\":[\"postcard\",\"json\"]}}\n",
            botbus_core::PROTOCOL_VERSION
        )
    );
    assert_eq!(read_hello(&line).unwrap(), Hello::new("n"));
}

#[test]
fn a_hello_may_say_the_longest_frame_its_sender_reads_and_one_that_does_not_still_reads() {
    let small = Hello {
        max_frame: Some(65_536),
        ..Hello::new("small")
    };
    let line = small.to_line();
    assert!(
        std::str::from_utf8(&line).unwrap().ends_with(",\"max_frame\":65536}\n"),
        "{line:?}"
    );
    assert_eq!(read_hello(&line).unwrap().max_frame, Some(65_536));
    // A peer of an earlier build, or one in another language, says nothing.
    let silent = b"{\"magic\":\"BBUS\",\"version\":1,\"node\":\"py\",\"codecs\":[\"json\"]}\n";
    assert_eq!(read_hello(silent).unwrap().max_frame, None);
}

#[test]
fn hello_codec_refuses_non_json_at_once_and_reads_json_split_anywhere() {
    let mut codec = HelloCodec::default();
    let mut binary = BytesMut::from(&[0u8, 0, 0, 12, 4, b'B'][..]);
    assert!(matches!(codec.decode(&mut binary), Err(HandshakeError::BadMagic(_))));
    let line = Hello::new("n").to_line();
    for split in 1..line.len() {
        let mut codec = HelloCodec::default();
        let mut buf = BytesMut::from(&line[..split]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&line[split..]);
        buf.extend_from_slice(b"{\"ping\"");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Hello::new("n")));
        assert_eq!(&buf[..], b"{\"ping\"", "bytes after the hello stay for the frame codec");
    }
    let mut long = BytesMut::from(&b"{"[..]);
    long.extend_from_slice(&vec![b' '; botbus_core::handshake::MAX_HELLO_LEN + 1]);
    assert!(matches!(
        HelloCodec::default().decode(&mut long),
        Err(HandshakeError::TooLong)
    ));
}

#[test]
fn codecs_are_negotiated_by_one_preference_order() {
    let ours = Hello::new("a");
    let json_only = Hello::with_codecs("b", &[CodecKind::Json]);
    assert_eq!(check_hello(&ours, &json_only).unwrap(), CodecKind::Json);
    assert_eq!(check_hello(&json_only, &ours).unwrap(), CodecKind::Json);
    assert_eq!(check_hello(&ours, &Hello::new("c")).unwrap(), CodecKind::Postcard);
    let none = Hello::with_codecs("d", &[]);
    assert!(matches!(
        check_hello(&ours, &none),
        Err(HandshakeError::NoCommonCodec { .. })
    ));
}

#[test]
fn every_frame_round_trips_through_json_lines() {
    let mut codec = JsonLinesCodec::new();
    for frame in json_frames() {
        let mut wire = BytesMut::new();
        codec.encode(&frame, &mut wire).unwrap();
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "one line per frame");
        assert_eq!(codec.decode(&mut wire).unwrap(), Some(frame));
        assert!(wire.is_empty());
    }
}

#[test]
fn json_payload_bodies_are_inline_values() {
    let payload = Payload::new("hi".to_owned());
    let frame = Frame::Tell {
        to: "m".into(),
        from: "n/x".into(),
        payload: WirePayload {
            name: payload.name().into(),
            body: payload.encoded(CodecKind::Json).unwrap(),
            json: true,
        },
    };
    let mut wire = BytesMut::new();
    JsonLinesCodec::new().encode(&frame, &mut wire).unwrap();
    assert_eq!(
        &wire[..],
        &b"{\"tell\":{\"to\":\"m\",\"from\":\"n/x\",\"payload\":{\"name\":\"string\",\"body\":\"hi\"}}}\n"[..]
    );
    let Some(Frame::Tell { payload, .. }) = JsonLinesCodec::new().decode(&mut wire).unwrap() else {
        panic!("a tell")
    };
    assert_eq!(
        Payload::from_json("string", payload.body).decode::<String>().unwrap(),
        "hi"
    );
}

#[test]
fn json_frames_carry_postcard_bodies_as_hex_and_refuse_bad_hex() {
    let frame = Frame::Tell {
        to: "m".into(),
        from: "n/x".into(),
        payload: WirePayload {
            name: "cam.Frame".into(),
            body: vec![0x0a, 0xff, 0x00].into(),
            json: false,
        },
    };
    let mut wire = BytesMut::new();
    JsonLinesCodec::new().encode(&frame, &mut wire).unwrap();
    assert_eq!(
        &wire[..],
        &b"{\"tell\":{\"to\":\"m\",\"from\":\"n/x\",\"payload\":{\"name\":\"cam.Frame\",\"hex\":\"0aff00\"}}}\n"[..]
    );
    assert_eq!(JsonLinesCodec::new().decode(&mut wire).unwrap(), Some(frame));
    // `null` is the unit value's body, not a missing one.
    let mut unit = BytesMut::from(
        &b"{\"tell\":{\"to\":\"m\",\"from\":\"n/x\",\"payload\":{\"name\":\"()\",\"body\":null}}}\n"[..],
    );
    let Some(Frame::Tell { payload, .. }) = JsonLinesCodec::new().decode(&mut unit).unwrap() else {
        panic!("a tell")
    };
    assert_eq!((&payload.body[..], payload.json), (&b"null"[..], true));
    for (payload, said) in [
        (
            r#"{"name":"x","hex":"0g"}"#,
            "payload `x`: `hex` must be pairs of hex digits",
        ),
        (
            r#"{"name":"x","hex":"abc"}"#,
            "payload `x`: `hex` must be pairs of hex digits",
        ),
        (
            r#"{"name":"x","hex":"ab","body":1}"#,
            "payload `x` has both `body` and `hex`; it takes one",
        ),
        (r#"{"name":"x"}"#, "payload `x` has no `body`"),
    ] {
        let line = format!(r#"{{"tell":{{"to":"m","from":"n/x","payload":{payload}}}}}"#) + "\n";
        match JsonLinesCodec::new().decode(&mut BytesMut::from(line.as_bytes())) {
            Err(FrameError::MalformedJson { source, .. }) => {
                assert!(source.to_string().contains(said), "{payload}: {source}")
            }
            other => panic!("{payload}: {other:?}"),
        }
    }
}

#[test]
fn json_lines_refuse_malformed_and_oversize_lines() {
    let mut codec = JsonLinesCodec::with_max_frame_len(64);
    let mut wire = BytesMut::from(&b"\n{\"ping\":{\"nonce\":1}}\r\nnot json\n"[..]);
    assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::Ping { nonce: 1 }));
    assert!(matches!(codec.decode(&mut wire), Err(FrameError::MalformedJson { .. })));
    let mut long = BytesMut::from(&[b'x'; 65][..]);
    assert!(matches!(
        codec.decode(&mut long),
        Err(FrameError::Oversize { len: 65, max: 64 })
    ));
}

#[test]
fn endpoints_parse_and_print_back() {
    for text in [
        "mem://bench",
        "stdio:",
        "pipe://arm",
        "pipe:///run/botbus/arm.sock",
        "tcp://10.0.0.2:7000",
        "tcp://[::1]:7000",
        "tcp://robot.local:0",
        "tls://robot.local:7443",
        "tls://[fe80::1]:7443",
    ] {
        let endpoint: Endpoint = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(endpoint.to_string(), text);
    }
    assert_eq!(
        "pipe:///tmp/a.sock".parse::<Endpoint>().unwrap(),
        Endpoint::Pipe(PipeAddr::Path("/tmp/a.sock".into()))
    );
    assert_eq!(
        "tcp://[::1]:9".parse::<Endpoint>().unwrap(),
        Endpoint::Tcp {
            host: "::1".into(),
            port: 9
        }
    );
}

#[test]
fn bad_endpoints_name_the_input() {
    for bad in [
        "",
        "tcp://host",
        "tcp://host:99999",
        "tls://host",
        "tcp://:80",
        "udp://x:1",
        "mem://",
        "mem://a/b",
        "pipe://",
        "pipe:///",
        "pipe://a b",
        "stdio",
        "tcp://[::1:80",
        "tcp://::1:80",
    ] {
        let error = bad.parse::<Endpoint>().expect_err(bad);
        assert!(error.to_string().contains(&format!("`{bad}`")), "{bad}: {error}");
    }
}

#[test]
fn topic_wildcards() {
    let cases = [
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/*", "a/b", true),
        ("a/*", "a", false),
        ("a/*", "a/b/c", false),
        ("*/b", "a/b", true),
        ("a/**", "a", true),
        ("a/**", "a/b/c/d", true),
        ("**", "anything/at/all", true),
        ("a/**/z", "a/z", true),
        ("a/**/z", "a/b/c/z", true),
        ("a/**/z", "a/b/c", false),
        ("*/**", "a", true),
    ];
    for (pattern, topic, expected) in cases {
        assert_eq!(
            TopicPattern::parse(pattern).unwrap().matches(topic),
            expected,
            "{pattern} ~ {topic}"
        );
    }
    for bad in ["", "/a", "a/", "a//b", "a/b*", "a/***"] {
        assert!(TopicPattern::parse(bad).is_err(), "{bad}");
    }
    assert!(
        botbus_core::validate_topic("a/*").is_err(),
        "no wildcards when publishing"
    );
}

#[test]
fn restart_budget_window_slides() {
    let mut tracker = RestartTracker::new(RestartBudget::new(2, Duration::from_secs(10)));
    let t0 = Instant::now();
    assert!(tracker.try_restart(t0));
    assert!(tracker.try_restart(t0 + Duration::from_secs(1)));
    assert!(!tracker.try_restart(t0 + Duration::from_secs(2)));
    // Once the first restart leaves the window, there is room again.
    assert!(tracker.try_restart(t0 + Duration::from_secs(10)));
    assert!(!tracker.try_restart(t0 + Duration::from_secs(10)));
}

#[test]
fn payload_type_checks_are_the_same_local_and_remote() {
    let local = Payload::new(7u32);
    let remote = Payload::from_encoded("u32", local.to_bytes().unwrap());
    assert_eq!(local.clone().decode::<u32>().unwrap(), 7);
    assert_eq!(remote.clone().decode::<u32>().unwrap(), 7);
    for payload in [local, remote] {
        match payload.decode::<String>() {
            Err(PayloadError::TypeMismatch {
                expected: "string",
                found,
            }) => assert_eq!(found, "u32"),
            other => panic!("expected a type mismatch, got {other:?}"),
        }
    }
    let truncated = Payload::from_encoded("string", Bytes::from_static(&[10, b'a']));
    assert!(matches!(truncated.decode::<String>(), Err(PayloadError::Decode { .. })));
}

/// Random and mutated input never panics the decoder: it yields frames, asks
/// for more bytes, or returns a typed error. (A deterministic stand-in for a
/// fuzz target; the seed makes any failure reproducible.)
#[test]
fn arbitrary_bytes_never_panic_the_decoder() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut valid = BytesMut::new();
    for frame in every_frame_kind() {
        FrameCodec::<Frame>::new().encode(&frame, &mut valid).unwrap();
    }
    for round in 0..20_000 {
        let mut input = if round % 2 == 0 {
            // Pure noise, with a plausible small length prefix half the time.
            let len = (next() % 64) as usize;
            let mut noise: BytesMut = (0..len).map(|_| next() as u8).collect();
            if round % 4 == 0 && noise.len() >= 4 {
                let body = (noise.len() - 4) as u32;
                noise[..4].copy_from_slice(&body.to_be_bytes());
            }
            noise
        } else {
            // Valid frames with a few bytes flipped.
            let mut mutated = valid.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % mutated.len();
                mutated[at] ^= (next() as u8) | 1;
            }
            mutated
        };
        let mut codec = FrameCodec::<Frame>::with_max_frame_len(4096);
        while let Ok(Some(_)) = codec.decode(&mut input) {}
    }
}

#[test]
fn the_handshake_state_machine_agrees_byte_by_byte_and_leaves_what_follows() {
    use botbus_core::handshake::Handshake;
    let mut ours = Handshake::new(Hello::new("robot"));
    assert!(ours.has_transmit());
    let line = ours.poll_transmit().expect("our hello first");
    assert_eq!(line, Hello::new("robot").to_line());
    assert!(ours.poll_transmit().is_none() && !ours.has_transmit());

    let mut theirs = Hello::new("arm").to_line();
    theirs.extend_from_slice(&[0, 0, 0, 2, 12, 1]); // a postcard ping right behind it
    let mut input = BytesMut::new();
    let mut agreed = None;
    for byte in &theirs {
        input.put_u8(*byte);
        if let Some(done) = ours.handle_input(&mut input).unwrap() {
            agreed = Some(done);
            break;
        }
    }
    let agreed = agreed.expect("agreed once the hello's line is complete");
    assert_eq!((agreed.peer.node.as_str(), agreed.codec), ("arm", CodecKind::Postcard));
    assert!(input.is_empty(), "nothing past the hello was taken");
    input.extend_from_slice(&theirs[input.len() + Hello::new("arm").to_line().len()..]);
    assert_eq!(
        FrameCodec::<Frame>::new().decode(&mut input).unwrap(),
        Some(Frame::Ping { nonce: 1 })
    );
}

#[test]
fn the_handshake_state_machine_refuses_a_peer_by_what_is_wrong() {
    use botbus_core::handshake::Handshake;
    let refuse = |line: &[u8]| {
        let mut machine = Handshake::new(Hello::new("robot"));
        machine.poll_transmit();
        machine.handle_input(&mut BytesMut::from(line)).unwrap_err()
    };
    assert!(matches!(refuse(&Hello::new("robot").to_line()), HandshakeError::SameName(n) if n == "robot"));
    assert!(matches!(
        refuse(b"{\"magic\":\"BBUS\",\"version\":2,\"node\":\"arm\"}\n"),
        HandshakeError::VersionMismatch { theirs: 2, .. }
    ));
    assert!(matches!(refuse(b"HTTP/1.1 200 OK\r\n"), HandshakeError::BadMagic(_)));
    let json_only = Hello::with_codecs("arm", &[CodecKind::Json]).to_line();
    let mut postcard_only = Handshake::new(Hello::with_codecs("robot", &[CodecKind::Postcard]));
    assert!(matches!(
        postcard_only.handle_input(&mut BytesMut::from(&json_only[..])),
        Err(HandshakeError::NoCommonCodec { .. })
    ));
}

#[test]
fn a_borrowed_data_frame_encodes_exactly_as_the_owned_frame_in_both_codecs() {
    use botbus_core::{DataFrame, PayloadRef, WireCodec, WirePayload};
    use bytes::Bytes;
    let postcard_body = postcard::to_allocvec(&(7u32, "seven")).unwrap();
    let json_body = br#"{"speed": 0.5, "note":"a b"}"#.to_vec();
    let cases: Vec<(Vec<u8>, bool)> = vec![(postcard_body, false), (json_body, true)];
    let to_nodes = vec!["c".to_owned(), "d".to_owned()];
    for (body, json) in cases {
        let owned = WirePayload {
            name: "robot.Speed".into(),
            body: Bytes::from(body.clone()),
            json,
        };
        let borrowed = PayloadRef {
            name: "robot.Speed",
            body: &body,
            json,
        };
        let pairs = [
            (
                Frame::Tell {
                    to: "motor".into(),
                    from: "a/ctl".into(),
                    payload: owned.clone(),
                },
                DataFrame::Tell {
                    to: "motor",
                    from: "a/ctl",
                    payload: borrowed,
                },
            ),
            (
                Frame::Ask {
                    id: 300,
                    to: "b/motor".into(),
                    from: "a/ctl".into(),
                    timeout_ms: 5000,
                    payload: owned.clone(),
                },
                DataFrame::Ask {
                    id: 300,
                    to: "b/motor",
                    from: "a/ctl",
                    timeout_ms: 5000,
                    payload: borrowed,
                },
            ),
            (
                Frame::Publish {
                    topic: "arm/joint".into(),
                    from: "a/ctl".into(),
                    payload: owned.clone(),
                    to: to_nodes.clone(),
                },
                DataFrame::Publish {
                    topic: "arm/joint",
                    from: "a/ctl",
                    payload: borrowed,
                    to: &to_nodes,
                },
            ),
        ];
        // In a JSON frame a postcard body goes as hex, and reads back as it was.
        for kind in [CodecKind::Postcard, CodecKind::Json] {
            let codec = WireCodec::new(kind, 1 << 20);
            for (frame, data) in &pairs {
                let (mut from_owned, mut from_borrowed) = (BytesMut::new(), BytesMut::new());
                codec.clone().encode(frame, &mut from_owned).unwrap();
                codec.encode_data(data, &mut from_borrowed).unwrap();
                assert_eq!(from_borrowed, from_owned, "{kind} {data:?}");
                assert_eq!(codec.clone().decode(&mut from_borrowed).unwrap().as_ref(), Some(frame));
            }
        }
    }
}

#[test]
fn a_reply_encoded_in_place_is_the_same_frame_as_one_encoded_first() {
    use botbus_core::{Blob, Splices, WirePayload};
    let payloads = [
        Payload::new(42u64),
        Payload::new(vec![9u8; 70_000]),
        Payload::new(Blob::from(vec![5u8; 70_000])),
    ];
    for codec_kind in [CodecKind::Postcard, CodecKind::Json] {
        let codec = WireCodec::new(codec_kind, 1 << 20);
        for (id, payload) in [0, 300, u64::MAX].into_iter().zip(&payloads) {
            let body = payload.value_body().expect("a value here").expect("it measures");
            let reply = Frame::Reply {
                id,
                result: Ok(WirePayload {
                    name: payload.name().to_owned(),
                    body: payload.encoded(codec_kind).expect("it encodes"),
                    json: codec_kind == CodecKind::Json,
                }),
            };
            let mut copied = BytesMut::new();
            codec.clone().encode(&reply, &mut copied).expect("it encodes");
            let mut in_place = BytesMut::new();
            codec
                .encode_reply_value(id, payload.name(), &body, &mut in_place, None)
                .expect("it encodes");
            assert_eq!(in_place, copied, "{codec_kind:?} {id}");
            // With the large blobs left out: put back together, the same.
            let (mut encoded, mut splices) = (BytesMut::new(), Splices::new());
            codec
                .encode_reply_value(id, payload.name(), &body, &mut encoded, Some(&mut splices))
                .expect("it encodes");
            let mut whole = Vec::new();
            splices.interleave(encoded.freeze(), |piece| whole.extend_from_slice(&piece));
            assert_eq!(whole, copied, "{codec_kind:?} {id} spliced");
        }
    }
    // Too long for the link: refused, and nothing of it left behind.
    let codec = WireCodec::new(CodecKind::Postcard, 1024);
    let large = Payload::new(vec![1u8; 2048]);
    let body = large.value_body().unwrap().unwrap();
    let mut dst = BytesMut::from(&b"before"[..]);
    let refused = codec.encode_reply_value(1, large.name(), &body, &mut dst, None);
    assert!(
        matches!(refused, Err(FrameError::Oversize { max: 1024, .. })),
        "{refused:?}"
    );
    assert_eq!(&dst[..], b"before");
}

/// A value whose encoding grows each time it is encoded: measuring it and
/// then encoding it gives two lengths.
#[derive(Debug)]
struct Growing(std::sync::atomic::AtomicUsize);

impl Clone for Growing {
    fn clone(&self) -> Self {
        Growing(self.0.load(std::sync::atomic::Ordering::Relaxed).into())
    }
}

impl serde::Serialize for Growing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let times = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        serializer.serialize_bytes(&vec![7; times + 1])
    }
}

impl<'de> serde::Deserialize<'de> for Growing {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <Vec<u8>>::deserialize(deserializer)?;
        Ok(Growing(bytes.len().into()))
    }
}

impl botbus_core::Message for Growing {
    const NAME: &'static str = "test.Growing";
}

#[test]
fn a_value_encoded_in_place_makes_the_same_frame_as_one_encoded_first() {
    use botbus_core::{DataHead, PayloadRef};
    let nodes = vec!["a".to_owned(), "b".to_owned()];
    let long = "m".repeat(300);
    let many_nodes: Vec<String> = (0..200).map(|n| format!("node{n}")).collect();
    let heads = [
        DataHead::Tell {
            to: "sink",
            from: "robot/driver",
        },
        DataHead::Ask {
            id: 300,
            to: "arm",
            from: "robot/planner",
            timeout_ms: 70_000,
        },
        DataHead::Publish {
            topic: "scan",
            from: "robot/lidar",
            to: &nodes,
        },
        // Names and numbers too long for one byte of length.
        DataHead::Ask {
            id: u64::MAX,
            to: &long,
            from: &long,
            timeout_ms: 1 << 35,
        },
        DataHead::Publish {
            topic: &long,
            from: "robot/lidar",
            to: &many_nodes,
        },
    ];
    // A small body, and one past every single-byte length.
    let payloads = [Payload::new(String::from("hello")), Payload::new(vec![9u8; 70_000])];
    for codec_kind in [CodecKind::Postcard, CodecKind::Json] {
        let codec = WireCodec::new(codec_kind, 1 << 20);
        let json = codec_kind == CodecKind::Json;
        for head in heads {
            for payload in &payloads {
                let body = payload.value_body().expect("a value here").expect("it measures");
                let mut in_place = BytesMut::new();
                codec
                    .encode_data_value(head, payload.name(), &body, &mut in_place)
                    .expect("it encodes");
                let encoded = payload.encoded(codec_kind).expect("it encodes");
                let frame = head.with(PayloadRef {
                    name: payload.name(),
                    body: &encoded,
                    json,
                });
                let mut copied = BytesMut::new();
                codec.encode_data(&frame, &mut copied).expect("it encodes");
                assert_eq!(in_place, copied, "{codec_kind:?} {head:?} {}", body.len());
            }
        }
    }

    // Refused, and nothing of it left in the buffer: too long for the
    // link, or encoded to another length than it measured.
    let codec = WireCodec::new(CodecKind::Postcard, 1024);
    let mut dst = BytesMut::from(&b"before"[..]);
    let large = Payload::new(vec![1u8; 2048]);
    let body = large.value_body().unwrap().unwrap();
    let refused = codec.encode_data_value(heads[0], large.name(), &body, &mut dst);
    assert!(
        matches!(refused, Err(FrameError::Oversize { max: 1024, .. })),
        "{refused:?}"
    );
    let growing = Payload::new(Growing(0.into()));
    let body = growing.value_body().unwrap().unwrap();
    let refused = codec.encode_data_value(heads[0], growing.name(), &body, &mut dst);
    match refused {
        Err(FrameError::Payload(PayloadError::Unstable { measured, written, .. })) => {
            assert!(written > measured, "{measured} then {written}")
        }
        other => panic!("expected an unstable encoding, got {other:?}"),
    }
    assert_eq!(&dst[..], b"before");
    // Bytes received have no value to encode in place.
    let received = Payload::from_encoded("test.Bytes", Bytes::from_static(&[1, 2]));
    assert!(received.value_body().is_none());
}
