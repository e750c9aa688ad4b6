//! The protocol pieces on their own: no runtime, no sockets.

use std::time::{Duration, Instant};

use botbus_core::supervision::RestartTracker;
use botbus_core::{
    AskError, DownReason, Endpoint, Frame, FrameCodec, FrameError, Hello, Payload, PayloadError, PipeAddr,
    RestartBudget, TopicPattern, WirePayload,
};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

fn every_frame_kind() -> Vec<Frame> {
    let payload = WirePayload {
        name: "t.Msg".into(),
        body: Bytes::from_static(&[1, 2, 3]),
    };
    vec![
        Frame::Tell {
            to: "m".into(),
            from: "n/a".into(),
            payload: payload.clone(),
        },
        Frame::Ask {
            id: 1,
            to: "m".into(),
            from: "n/a".into(),
            timeout_ms: 50,
            payload: payload.clone(),
        },
        Frame::Reply {
            id: 1,
            result: Ok(payload.clone()),
        },
        Frame::Reply {
            id: 2,
            result: Err(AskError::Stopped("m".into())),
        },
        Frame::Progress {
            id: 1,
            payload: payload.clone(),
        },
        Frame::CallerAsk {
            id: 1,
            call: 0,
            payload: payload.clone(),
        },
        Frame::CallerReply {
            id: 1,
            call: 0,
            result: Err(AskError::CallerNotListening("m".into())),
        },
        Frame::Cancel { id: 1 },
        Frame::Publish {
            topic: "a/b".into(),
            from: "n/a".into(),
            payload,
        },
        Frame::Subscribe { pattern: "a/*".into() },
        Frame::Unsubscribe { pattern: "a/*".into() },
        Frame::Announce {
            modules: vec!["m".into()],
            subscriptions: vec!["**".into()],
        },
        Frame::Down {
            module: "m".into(),
            reason: DownReason::Failed("boom".into()),
        },
        Frame::Ping { nonce: 3 },
        Frame::Pong { nonce: 3 },
        Frame::Bye { reason: "done".into() },
    ]
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
fn hello_starts_with_magic_and_version() {
    let mut wire = BytesMut::new();
    FrameCodec::<Hello>::new().encode(&Hello::new("n"), &mut wire).unwrap();
    assert_eq!(&wire[4..8], b"BBUS", "magic right after the length prefix");
    assert_eq!(
        wire[8],
        botbus_core::PROTOCOL_VERSION as u8,
        "then the version (varint)"
    );
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
