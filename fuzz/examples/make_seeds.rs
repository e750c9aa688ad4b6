//! Writes the seed corpus: a valid frame of every kind in each codec, hellos,
//! and payloads of the fuzzed message types. `fuzz/run.sh` runs it first.

use std::path::Path;

use botbus_core::auth::{self, AuthToken, Role};
use botbus_core::{CodecKind, Frame, FrameCodec, Hello, JsonLinesCodec, Payload};
use botbus_fuzz::{every_frame, Reading, Tree, HANDSHAKE_NONCE, HANDSHAKE_TOKEN};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "corpus".to_owned());
    let root = Path::new(&root);
    let postcard_body = Payload::new(Reading {
        seq: 7,
        value: 0.1,
        small: 0.8,
        label: "front".into(),
        raw: Some(vec![1, 2, 3]),
        delta: -3,
    })
    .to_bytes()
    .expect("encodes");
    let all: Vec<Frame> = every_frame(postcard_body, false);
    let mut stream = BytesMut::new();
    for (i, frame) in all.iter().enumerate() {
        let mut one = BytesMut::new();
        FrameCodec::<Frame>::new().encode(frame, &mut one).expect("encodes");
        write(&root.join("frame_codec"), &format!("kind-{i:02}"), &one);
        stream.extend_from_slice(&one);
    }
    write(&root.join("frame_codec"), "every-kind", &stream);

    let json_body =
        Bytes::from_static(br#"{"seq":7,"value":0.1,"small":0.8,"label":"front","raw":[1,2,3],"delta":-3}"#);
    let mut stream = BytesMut::new();
    for (i, frame) in every_frame(json_body, true).iter().enumerate() {
        let mut one = BytesMut::new();
        JsonLinesCodec::new().encode(frame, &mut one).expect("encodes");
        write(&root.join("json_lines"), &format!("kind-{i:02}"), &one);
        stream.extend_from_slice(&one);
    }
    write(&root.join("json_lines"), "every-kind", &stream);

    write(&root.join("hello"), "hello", &Hello::new("robot").to_line());

    // The handshake target: its first byte picks the role (bit 0: 1 =
    // connecting) and whether it authenticates (bit 1: 0 = it does); four
    // bytes of piece sizes follow. A connecting peer's honest exchange, to
    // the accepting, authenticating side...
    let token = AuthToken::new(HANDSHAKE_TOKEN.to_vec()).unwrap();
    let peer_nonce = [2u8; 32];
    let mut peer = Hello::new("peer");
    peer.auth = vec![auth::HMAC_SHA256.to_owned()];
    peer.nonce = Some(auth::to_hex(&peer_nonce));
    let proof = auth::proof(&token, Role::Connecting, "peer", "fuzz", &peer_nonce, &HANDSHAKE_NONCE);
    let mut honest = vec![0, 7, 64, 3, 200];
    honest.extend_from_slice(&peer.to_line());
    honest.extend_from_slice(format!("{{\"proof\":\"{}\"}}\n", auth::to_hex(&proof)).as_bytes());
    honest.extend_from_slice(b"{\"ping\":{\"nonce\":1}}\n");
    write(&root.join("handshake"), "honest-connecting-peer", &honest);
    // ...an accepting peer's hello, then its refusal, to the connecting side...
    let mut refused = vec![1, 255, 255, 255, 255];
    refused.extend_from_slice(&peer.to_line());
    refused.extend_from_slice(b"{\"refused\":\"authentication failed: wrong token\"}\n");
    write(&root.join("handshake"), "refused", &refused);
    // ...and a plain hello to a side without a token.
    let mut plain = vec![2, 1, 1, 1, 1];
    plain.extend_from_slice(&Hello::new("peer").to_line());
    write(&root.join("handshake"), "plain", &plain);
    let windowed = Hello {
        window: Some(4096),
        ..Hello::with_codecs("arm", &[CodecKind::Json])
    };
    write(&root.join("hello"), "hello-json-window", &windowed.to_line());
    write(
        &root.join("hello"),
        "hello-crlf",
        b"{\"magic\":\"BBUS\",\"version\":1,\"node\":\"a\",\"codecs\":[\"postcard\"]}\r\n",
    );

    // payload_roundtrip: the first byte picks the type and codec.
    let tree = Tree::Fork(vec![Tree::Node(Box::new(Tree::Leaf(1))), Tree::Leaf(2)]);
    let reading = Reading {
        seq: 1,
        value: -2.5e-7,
        small: 3.25,
        label: "ü".into(),
        raw: None,
        delta: 9,
    };
    let seeds: [(u8, Bytes); 4] = [
        (0, Payload::new(tree.clone()).to_bytes().expect("encodes")),
        (1, Payload::new(tree).encoded(CodecKind::Json).expect("encodes")),
        (2, Payload::new(reading.clone()).to_bytes().expect("encodes")),
        (3, Payload::new(reading).encoded(CodecKind::Json).expect("encodes")),
    ];
    for (selector, body) in seeds {
        let mut seed = vec![selector];
        seed.extend_from_slice(&body);
        write(&root.join("payload_roundtrip"), &format!("type-{selector}"), &seed);
    }
    println!("seeds written under {}", root.display());
}
