//! Bad input closes only the link it came on, with an error that names what
//! was wrong; the node and its other links keep running. The peer here is a
//! raw byte-level peer on a real `mem://` link, speaking (or not) the
//! protocol by hand — which also shows what a correct peer is sent back:
//! replies, and credit in batches.

mod support;

use std::time::Duration;

use botbus::crates::core::handshake::{check_hello, HandshakeError, HelloCodec};
use botbus::crates::core::{CodecKind, Frame, FrameCodec, Hello, LinkReader, LinkWriter, Transport, PROTOCOL_VERSION};
use botbus::{AskError, LinkConfig, LinkError, MemTransport, Node};
use bytes::{BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use support::{Placement, Req, World, DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

fn unique(name: &str) -> String {
    format!("mem://{name}-{}", std::process::id())
}

/// What the raw peer reads once the handshake is done.
type FrameReader = FramedRead<LinkReader, FrameCodec<Frame>>;

/// A raw peer that completes a correct handshake with the node at `endpoint`.
async fn handshaken_peer(endpoint: &str) -> (FrameReader, LinkWriter) {
    let link = MemTransport
        .connect(&endpoint.parse().unwrap())
        .await
        .expect("connects");
    let (read, mut write) = link.split();
    let ours = Hello::with_codecs("raw-peer", &[CodecKind::Postcard]);
    write.write_all(&ours.to_line()).await.unwrap();
    let mut reader = FramedRead::new(read, HelloCodec::default());
    let theirs = reader.next().await.expect("node says hello").unwrap();
    let codec = check_hello(&ours, &theirs).expect("the node's hello is valid");
    assert_eq!(codec, CodecKind::Postcard);
    // Keep what the node sent after its hello (its announcement) buffered.
    (reader.map_decoder(|_| FrameCodec::new()), write)
}

/// Reads until the node closes the link; panics if it does not within the deadline.
async fn expect_closed(mut reader: FrameReader) {
    tokio::time::timeout(DEADLINE, async { while let Some(Ok(_frame)) = reader.next().await {} })
        .await
        .expect("the node closes the bad link");
}

/// The node still serves: an ask across its healthy link succeeds.
async fn still_serves(world: &World) {
    let sum: u32 = world.client.ask("echo", Req::Add(20, 22)).await.unwrap();
    assert_eq!(sum, 42);
    assert_eq!(world.a.peers(), vec!["b".to_owned()]);
}

async fn listening_world(name: &str) -> (World, String) {
    let world = World::new(Placement::TwoNodesMem).await;
    let endpoint = world.b.listen(&unique(name)).await.unwrap().to_string();
    (world, endpoint)
}

/// A listening world and a raw peer handshaken with it, which sends frames
/// as a correct peer does.
async fn speaking_peer(name: &str) -> (World, FrameReader, FramedWrite<LinkWriter, FrameCodec<Frame>>) {
    let (world, endpoint) = listening_world(name).await;
    let (reader, write) = handshaken_peer(&endpoint).await;
    (world, reader, FramedWrite::new(write, FrameCodec::new()))
}

#[tokio::test]
async fn malformed_frame_closes_only_that_link() {
    let (world, endpoint) = listening_world("malformed").await;
    let (read, mut write) = handshaken_peer(&endpoint).await;
    world
        .b
        .wait_until("raw peer linked", DEADLINE, |n| {
            n.peers().contains(&"raw-peer".to_owned())
        })
        .await
        .unwrap();
    // A well-formed length prefix around a body that is no frame.
    let mut junk = BytesMut::new();
    junk.put_u32(5);
    junk.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
    write.write_all(&junk).await.unwrap();
    expect_closed(read).await;
    world
        .b
        .wait_until("raw peer dropped", DEADLINE, |n| {
            !n.peers().contains(&"raw-peer".to_owned())
        })
        .await
        .unwrap();
    still_serves(&world).await;
    world.finish().await;
}

#[tokio::test]
async fn oversize_frame_is_refused_before_it_is_read() {
    let (world, endpoint) = listening_world("oversize").await;
    let (read, mut write) = handshaken_peer(&endpoint).await;
    // Declares 4 GiB; nothing of the body is ever sent or buffered.
    write.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(read).await;
    still_serves(&world).await;
    world.finish().await;
}

#[tokio::test]
async fn valid_frames_from_a_raw_peer_are_served() {
    // The positive control for the tests above: the same raw peer, speaking
    // correctly, gets a reply. Asks for modules the node does not have are
    // answered `UnknownModule`, each naming the address asked, and the link
    // stays: the ask for `echo`, sent after them, is still served.
    let (world, mut reader, mut writer) = speaking_peer("raw-ok").await;
    let asks = [(10, "nobody"), (11, "b/nobody"), (9, "echo")];
    for (id, to) in asks {
        writer.send(&ask(id, to, Req::Add(1, 2))).await.unwrap();
    }
    let mut replies = std::collections::HashMap::new();
    while replies.len() < asks.len() {
        match next_frame(&mut reader).await {
            Frame::Reply { id, result } => assert!(replies.insert(id, result).is_none(), "one reply to ask {id}"),
            _announce_or_subscribe => continue,
        }
    }
    for (id, to) in &asks[..2] {
        assert_eq!(replies[id], Err(AskError::UnknownModule((*to).to_owned())), "ask {id}");
    }
    let body = replies.remove(&9).unwrap().unwrap();
    assert_eq!(postcard::from_bytes::<u32>(&body.body).unwrap(), 3);
    world.finish().await;
}

/// The next frame the node sends the raw peer, within the deadline.
async fn next_frame(reader: &mut FrameReader) -> Frame {
    tokio::time::timeout(DEADLINE, reader.next())
        .await
        .expect("the node sends in time")
        .expect("the link stays open")
        .expect("a valid frame")
}

/// The payload of `req`, as a raw peer sends it.
fn wire(req: Req) -> botbus::crates::core::WirePayload {
    let payload = botbus::Payload::new(req);
    botbus::crates::core::WirePayload {
        name: payload.name().to_owned(),
        body: payload.to_bytes().unwrap(),
        json: false,
    }
}

/// Ask `id` of `req` to `to`, from the raw peer.
fn ask(id: u64, to: &str, req: Req) -> Frame {
    Frame::Ask {
        id,
        to: to.into(),
        from: "raw-peer/test".into(),
        timeout_ms: 5_000,
        payload: wire(req),
    }
}

/// Reads until the reply to ask `id`, and returns the credits the node sent
/// on the way.
async fn credits_until_reply(reader: &mut FrameReader, id: u64) -> Vec<u32> {
    let mut credits = Vec::new();
    loop {
        match next_frame(reader).await {
            Frame::Reply { id: replied, result } => {
                assert_eq!(replied, id, "the replies come in the order of the asks");
                assert!(result.is_ok(), "ask {id}: {result:?}");
                return credits;
            }
            Frame::Credit { frames } => credits.push(frames),
            _announce_or_subscribe => continue,
        }
    }
}

#[tokio::test]
async fn a_peer_is_credited_in_batches_with_its_replies_or_alone_at_a_quarter_of_the_window() {
    // The node grants the default window of 4096 data frames. It credits
    // them back with the replies it writes once 256 are owed, not with
    // every reply; and alone, with nothing else to write, at 1024.
    let (world, mut reader, mut writer) = speaking_peer("credit").await;
    let mut credits = Vec::new();
    for id in 0..300 {
        writer.send(&ask(id, "echo", Req::Add(1, 1))).await.unwrap();
        credits.extend(credits_until_reply(&mut reader, id).await);
    }
    // An ask is owed once the link's reader has handed it on, and the
    // module, on its own thread, may reply before the reader counts it: the
    // 256th reply may go out with 255 owed, and the credit with the next.
    assert!(
        credits == [256] || credits == [257],
        "one credit, with the 256th or 257th reply: {credits:?}"
    );

    // 1024 tells: the node has nothing else to write, and credits them alone.
    for _ in 0..1024 {
        let tell = Frame::Tell {
            to: "echo".into(),
            from: "raw-peer/test".into(),
            payload: wire(Req::Add(2, 2)),
        };
        writer.send(&tell).await.unwrap();
    }
    writer.send(&ask(300, "echo", Req::Add(3, 3))).await.unwrap();
    let credits = credits_until_reply(&mut reader, 300).await;
    // Tells handed on together are credited together: past 1024, by less
    // than the 44 (or 43) already owed plus the tells.
    assert_eq!(credits.len(), 1, "{credits:?}");
    assert!((1024..=44 + 1024).contains(&credits[0]), "{credits:?}");
    world.finish().await;
}

/// The next frame from the node that is about an ask: a reply or a
/// progress update (announcements, subscriptions and credit are passed by).
async fn next_about_an_ask(reader: &mut FrameReader) -> Frame {
    loop {
        match next_frame(reader).await {
            frame @ (Frame::Reply { .. } | Frame::Progress { .. }) => return frame,
            _announce_subscribe_or_credit => continue,
        }
    }
}

#[tokio::test]
async fn an_ask_whose_id_is_in_flight_is_refused_and_a_cancelled_ask_is_not_answered() {
    // A peer must not use an id again before its reply: the second ask 5
    // is answered at once with an error naming the id, and the first goes
    // on. Once the peer cancels the first, nothing more is sent about it:
    // the next reply is ask 6's, which waited behind it for the module.
    let (world, mut reader, mut writer) = speaking_peer("id-in-flight").await;
    writer.send(&ask(5, "echo", Req::Sleep)).await.unwrap();
    // Its progress says the module works on it.
    assert!(matches!(
        next_about_an_ask(&mut reader).await,
        Frame::Progress { id: 5, .. }
    ));
    writer.send(&ask(5, "echo", Req::Add(1, 2))).await.unwrap();
    match next_about_an_ask(&mut reader).await {
        Frame::Reply {
            id: 5,
            result: Err(AskError::BadPayload(why)),
        } => assert!(why.contains("ask id 5 is still in flight"), "{why}"),
        other => panic!("expected ask 5 refused, got {other:?}"),
    }
    writer.send(&Frame::Cancel { id: 5 }).await.unwrap();
    writer.send(&ask(6, "echo", Req::Add(2, 2))).await.unwrap();
    match next_about_an_ask(&mut reader).await {
        Frame::Reply {
            id: 6,
            result: Ok(body),
        } => assert_eq!(postcard::from_bytes::<u32>(&body.body).unwrap(), 4),
        other => panic!("expected the reply to ask 6, and nothing about the cancelled ask 5; got {other:?}"),
    }
    world.finish().await;
}

/// A raw listener that answers the node's hello with `hello`, or with
/// nothing at all.
async fn raw_listener(name: &str, hello: Option<Hello>) -> (String, tokio::task::JoinHandle<Option<HandshakeError>>) {
    let endpoint = unique(name);
    let mut listener = MemTransport.listen(&endpoint.parse().unwrap()).await.unwrap();
    let task = tokio::spawn(async move {
        let link = listener.accept().await.unwrap();
        let (read, mut write) = link.split();
        let mut reader = FramedRead::new(read, HelloCodec::default());
        let Some(ours) = hello else {
            // Stay silent until the node gives up.
            let _ = reader.next().await;
            let _ = reader.next().await;
            return None;
        };
        write.write_all(&ours.to_line()).await.unwrap();
        let theirs = reader.next().await.unwrap().unwrap();
        check_hello(&ours, &theirs).err()
    });
    (endpoint, task)
}

#[tokio::test]
async fn version_mismatch_is_a_clear_error_on_both_sides() {
    let node = Node::builder("versioned").start().unwrap();
    let mut future = Hello::new("from-the-future");
    future.version = PROTOCOL_VERSION + 1;
    let (endpoint, peer) = raw_listener("version", Some(future)).await;
    let error = node.connect(&endpoint).await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(&error, LinkError::Handshake { source: HandshakeError::VersionMismatch { ours, theirs, .. }, .. }
            if *ours == PROTOCOL_VERSION && *theirs == PROTOCOL_VERSION + 1),
        "{error:?}"
    );
    assert!(
        text.contains(&format!("v{PROTOCOL_VERSION}")) && text.contains("from-the-future"),
        "{text}"
    );
    // The other side, reading our hello, reports the mismatch too.
    let theirs = peer.await.unwrap();
    assert!(
        matches!(theirs, Some(HandshakeError::VersionMismatch { .. })),
        "{theirs:?}"
    );
    assert!(node.peers().is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn bad_magic_and_silence_are_refused() {
    let node = Node::builder("picky")
        .link_config(LinkConfig {
            handshake_timeout: Duration::from_millis(300),
            ..LinkConfig::default()
        })
        .start()
        .unwrap();
    let mut stranger = Hello::new("stranger");
    stranger.magic = "HTTP".to_owned();
    let (endpoint, _peer) = raw_listener("magic", Some(stranger)).await;
    let error = node.connect(&endpoint).await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Handshake { source: HandshakeError::BadMagic(m), .. } if m.contains("HTTP")),
        "{error:?}"
    );

    let (endpoint, _peer) = raw_listener("silent", None).await;
    let error = node.connect(&endpoint).await.unwrap_err();
    assert!(
        matches!(
            &error,
            LinkError::Handshake {
                source: HandshakeError::Timeout(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(node.peers().is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn endpoints_without_a_transport_are_refused_by_name() {
    let node = Node::builder("plain").start().unwrap();
    // TLS needs certificates, so a node has no `tls` transport until one is added.
    let error = node.connect("tls://127.0.0.1:9").await.unwrap_err();
    assert!(
        matches!(&error, LinkError::NoTransport(scheme) if scheme == "tls"),
        "{error:?}"
    );
    let error = node.listen("carrier-pigeon://loft").await.unwrap_err();
    assert!(error.to_string().contains("carrier-pigeon://loft"), "{error}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_peer_with_our_own_name_is_refused() {
    let a = Node::builder("twin").start().unwrap();
    let b = Node::builder("twin").start().unwrap();
    let endpoint = b.listen(&unique("twin")).await.unwrap();
    let error = a.connect(&endpoint.to_string()).await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Handshake { source: HandshakeError::SameName(name), .. } if name == "twin"),
        "{error:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_ask_in_flight_ends_when_the_peer_node_goes_away() {
    let world = World::new(Placement::TwoNodesMem).await;
    let call = world.sleeping_call().await;
    world.b.shutdown().await;
    let outcome = tokio::time::timeout(DEADLINE, call.reply())
        .await
        .expect("the ask ends, not hangs");
    assert!(
        matches!(outcome, Err(AskError::Stopped(_) | AskError::Unreachable { .. })),
        "{outcome:?}"
    );
    // With the link gone, the module is unknown here, at once.
    world
        .a
        .wait_until("link to b gone", DEADLINE, |n| n.peers().is_empty())
        .await
        .unwrap();
    let outcome = world.client.ask::<_, u32>("echo", Req::Add(1, 1)).await;
    assert_eq!(outcome, Err(AskError::UnknownModule("echo".into())));
    world.a.shutdown().await;
}

#[test]
fn encoding_an_oversize_frame_is_refused() {
    let mut codec = FrameCodec::<Frame>::with_max_frame_len(16);
    let mut out = BytesMut::new();
    let error = codec
        .encode(&Frame::Bye { reason: "x".repeat(64) }, &mut out)
        .unwrap_err();
    assert!(error.to_string().contains("oversize"), "{error}");
    assert!(out.is_empty(), "nothing half-written");
}
