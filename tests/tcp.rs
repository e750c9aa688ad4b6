//! The `tcp` and `tls` placements under hostile and unlucky conditions, over
//! real sockets on loopback: wrong tokens, frames before the handshake,
//! silent and slow connections by the hundred, version mismatches, wrong
//! certificates, and listening where other machines can reach.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use botbus::crates::core::auth::{to_hex, HMAC_SHA256};
use botbus::crates::core::{CodecKind, Frame, FrameCodec, Hello, WirePayload};
use botbus::{
    AskError, Context, HandshakeError, LinkConfig, LinkError, Module, ModuleError, Node, TlsConfig, TlsTransport,
};
use bytes::BytesMut;
use support::secrets::{mutual_tls, self_signed, Scratch};
use support::{logs, DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

const TOKEN: &str = "the robot's shared token";

/// Counts what reaches it; answers with the count so far.
struct Recorder(Arc<AtomicU32>);

impl Module for Recorder {
    type Message = u32;
    type Reply = u32;

    async fn process(&mut self, _n: u32, _ctx: &mut Context) -> Result<u32, ModuleError> {
        Ok(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

fn with_token(scratch: &Scratch, token: &str) -> LinkConfig {
    let file = scratch.token_file(&support::unique("token"), token);
    LinkConfig {
        token: Some(botbus::read_token(&file).expect("token file reads")),
        handshake_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    }
}

/// A node `robot` with a `recorder` module, listening on loopback with
/// `config`; returns it, the endpoint and the recorder's count.
async fn robot(name: &str, config: LinkConfig) -> (Node, String, Arc<AtomicU32>) {
    let count = Arc::new(AtomicU32::new(0));
    let counted = count.clone();
    let node = Node::builder(name)
        .link_config(config)
        .module("recorder", move || Recorder(counted.clone()))
        .start()
        .unwrap();
    let endpoint = node.listen("tcp://127.0.0.1:0").await.unwrap().to_string();
    (node, endpoint, count)
}

fn address(endpoint: &str) -> &str {
    endpoint.strip_prefix("tcp://").unwrap()
}

#[tokio::test]
async fn a_wrong_token_or_none_is_refused_and_logged_on_both_sides() {
    logs::capture();
    let scratch = Scratch::new("wrong-token");
    let (robot, endpoint, count) = robot("robot-t1", with_token(&scratch, TOKEN)).await;

    let intruder = Node::builder("intruder-t1")
        .link_config(with_token(&scratch, "some other token, long enough"))
        .start()
        .unwrap();
    let error = intruder.connect(&endpoint).await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Handshake { source: HandshakeError::Refused { peer, reason }, .. }
            if peer == "robot-t1" && reason.contains("wrong token")),
        "{error}"
    );
    logs::wait_for_line(
        &["robot-t1", "refused an incoming link", "intruder-t1", "wrong token"],
        DEADLINE,
    )
    .await;

    let tokenless = Node::builder("tokenless-t1").start().unwrap();
    let error = tokenless.connect(&endpoint).await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Handshake { source: HandshakeError::NoToken { peer }, .. } if peer == "robot-t1"),
        "{error}"
    );
    logs::wait_for_line(&["robot-t1", "tokenless-t1", "offers no authentication"], DEADLINE).await;

    // The right token links, and only then does anything reach a module.
    let friend = Node::builder("friend-t1")
        .link_config(with_token(&scratch, TOKEN))
        .start()
        .unwrap();
    assert_eq!(friend.connect(&endpoint).await.unwrap(), "robot-t1");
    friend.wait_for_module("recorder", DEADLINE).await.unwrap();
    let seen: u32 = friend.client("f").ask("recorder", 1u32).await.unwrap();
    assert_eq!(seen, 1, "nothing from the refused peers reached the module");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(robot.peers(), vec!["friend-t1".to_owned()]);
    for node in [friend, tokenless, intruder, robot] {
        node.shutdown().await;
    }
}

/// Connects by hand and sends a hello that offers authentication.
async fn raw_hello(endpoint: &str, node: &str, version: Option<u16>) -> (BufReader<TcpStream>, Hello) {
    let stream = TcpStream::connect(address(endpoint)).await.unwrap();
    let mut stream = BufReader::new(stream);
    let mut hello = Hello::with_codecs(node, &[CodecKind::Postcard]);
    hello.auth = vec![HMAC_SHA256.to_owned()];
    hello.nonce = Some(to_hex(&[7; 32]));
    if let Some(version) = version {
        hello.version = version;
    }
    stream.get_mut().write_all(&hello.to_line()).await.unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let theirs = botbus::crates::core::handshake::read_hello(line.as_bytes()).expect("the node's hello");
    (stream, theirs)
}

/// Reads until the node closes the connection; what it sent on the way.
async fn until_closed(stream: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("the node closes the connection")
        .ok();
    rest
}

#[tokio::test]
async fn a_tell_before_the_handshake_is_over_is_dropped_undecoded() {
    logs::capture();
    let scratch = Scratch::new("early-tell");
    let (robot, endpoint, count) = robot("robot-t2", with_token(&scratch, TOKEN)).await;

    // A peer says hello, then sends a tell where its proof belongs.
    let (mut stream, theirs) = raw_hello(&endpoint, "early-t2", None).await;
    assert_eq!(theirs.auth, vec![HMAC_SHA256.to_owned()]);
    let tell = Frame::Tell {
        to: "recorder".into(),
        from: "early-t2/x".into(),
        payload: WirePayload {
            name: "u32".into(),
            body: postcard::to_allocvec(&5u32).unwrap().into(),
            json: false,
        },
    };
    let mut bytes = BytesMut::new();
    FrameCodec::<Frame>::new().encode(&tell, &mut bytes).unwrap();
    stream.get_mut().write_all(&bytes).await.unwrap();
    until_closed(&mut stream).await;
    logs::wait_for_line(
        &[
            "robot-t2",
            "refused an incoming link",
            "`early-t2` sent something other than its proof",
        ],
        DEADLINE,
    )
    .await;

    // A tell in JSON, shaped like a handshake line, is not a proof either.
    let (mut stream, _) = raw_hello(&endpoint, "early-json-t2", None).await;
    let line = br#"{"tell":{"to":"recorder","from":"x/y","payload":{"name":"u32","body":5}}}"#;
    stream.get_mut().write_all(line).await.unwrap();
    stream.get_mut().write_all(b"\n").await.unwrap();
    until_closed(&mut stream).await;
    logs::wait_for_line(
        &[
            "robot-t2",
            "`early-json-t2` sent something other than its proof",
            "tell",
        ],
        DEADLINE,
    )
    .await;

    // Nothing reached the module: its first message is counted as the first.
    let first: u32 = robot.client("local").ask("recorder", 0u32).await.unwrap();
    assert_eq!(first, 1);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(robot.peers().is_empty());
    robot.shutdown().await;
}

#[tokio::test]
async fn a_protocol_version_mismatch_is_a_clear_error_on_both_sides() {
    logs::capture();
    let (robot, endpoint, _) = robot(
        "robot-t3",
        LinkConfig {
            handshake_timeout: Duration::from_secs(1),
            ..LinkConfig::default()
        },
    )
    .await;
    // A peer from the future: it reads our version in our hello, as any peer can...
    let (mut stream, theirs) = raw_hello(&endpoint, "future-t3", Some(9)).await;
    assert_eq!(theirs.version, botbus::crates::core::PROTOCOL_VERSION);
    until_closed(&mut stream).await;
    // ...and we say what happened.
    logs::wait_for_line(
        &[
            "robot-t3",
            "protocol version mismatch",
            "we speak v1",
            "`future-t3` speaks v9",
        ],
        DEADLINE,
    )
    .await;

    // The other way round: this node connects to a listener from the future.
    let future = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = format!("tcp://{}", future.local_addr().unwrap());
    let peer = tokio::spawn(async move {
        let (mut stream, _) = future.accept().await.unwrap();
        let mut hello = Hello::new("future-listener");
        hello.version = 9;
        stream.write_all(&hello.to_line()).await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let error = robot.connect(&at).await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Handshake { source: HandshakeError::VersionMismatch { ours: 1, theirs: 9, peer }, .. }
            if peer == "future-listener"),
        "{error}"
    );
    robot.shutdown().await;
    peer.await.unwrap();
}

#[tokio::test]
async fn silent_and_byte_a_second_connections_are_dropped_and_a_flood_of_them_does_not_lock_out_a_good_peer() {
    let config = LinkConfig {
        handshake_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    };
    let (robot, endpoint, _) = robot("robot-t4", config.clone()).await;

    // One silent connection: dropped by the deadline (the node says its
    // hello, then closes).
    let mut silent = BufReader::new(TcpStream::connect(address(&endpoint)).await.unwrap());
    let said = until_closed(&mut silent).await;
    assert!(
        said.starts_with(b"{\"magic\":\"BBUS\""),
        "{}",
        String::from_utf8_lossy(&said)
    );

    // 200 at once: half silent, half sending a hello a byte a second.
    let mut flood = Vec::new();
    for i in 0..200 {
        let stream = TcpStream::connect(address(&endpoint)).await.unwrap();
        flood.push(tokio::spawn(async move {
            let mut stream = stream;
            if i % 2 == 1 {
                for byte in Hello::new(format!("slow-{i}")).to_line() {
                    if stream.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }));
    }
    // A good peer links and asks while they hold on.
    let good = Node::builder("good-t4").link_config(config).start().unwrap();
    assert_eq!(good.connect(&endpoint).await.unwrap(), "robot-t4");
    good.wait_for_module("recorder", DEADLINE).await.unwrap();
    let seen: u32 = good.client("g").ask("recorder", 1u32).await.unwrap();
    assert_eq!(seen, 1);
    // And every one of the 200 is dropped, none linked.
    tokio::time::timeout(DEADLINE, futures::future::join_all(flood))
        .await
        .expect("every flooding connection is dropped within the handshake deadline");
    assert_eq!(robot.peers(), vec!["good-t4".to_owned()]);
    good.shutdown().await;
    robot.shutdown().await;
}

#[tokio::test]
async fn listening_where_other_machines_reach_needs_a_token_or_says_it_is_insecure() {
    let scratch = Scratch::new("insecure");
    let node = Node::builder("open-t5").start().unwrap();
    let error = node.listen("tcp://0.0.0.0:0").await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Insecure(at) if at == "tcp://0.0.0.0:0"),
        "{error}"
    );
    assert!(error.to_string().contains("without a token"), "{error}");
    let insecure = LinkConfig {
        insecure: true,
        ..LinkConfig::default()
    };
    node.listen_with("tcp://0.0.0.0:0", insecure).await.unwrap();
    node.listen_with("tcp://0.0.0.0:0", with_token(&scratch, TOKEN))
        .await
        .unwrap();
    node.listen("tcp://127.0.0.1:0").await.unwrap(); // loopback is this machine's own
    node.shutdown().await;

    // A token file others can read is refused, naming the file.
    let open = scratch.path().join("open.token");
    std::fs::write(&open, TOKEN).unwrap();
    let error = botbus::read_token(&open).unwrap_err();
    assert!(
        error.to_string().contains("open.token") && error.to_string().contains("chmod 600"),
        "{error}"
    );
    let short = scratch.token_file("short.token", "tiny");
    assert!(botbus::read_token(&short)
        .unwrap_err()
        .to_string()
        .contains("at least 16 bytes"));
}

#[tokio::test]
async fn tls_refuses_a_client_with_the_wrong_certificate_and_a_listener_it_does_not_trust() {
    logs::capture();
    let scratch = Scratch::new("tls-wrong");
    let tls = mutual_tls(&scratch);
    let config = LinkConfig {
        handshake_timeout: Duration::from_secs(2),
        ..LinkConfig::default()
    };
    let robot = Node::builder("robot-t6")
        .link_config(config.clone())
        .transport(Arc::new(TlsTransport::new(tls.listener).unwrap()))
        .module("recorder", || Recorder(Arc::default()))
        .start()
        .unwrap();
    // Client certificates are required, so no token is needed anywhere.
    let endpoint = robot.listen("tls://localhost:0").await.unwrap().to_string();

    // A client whose certificate the listener does not trust.
    let (stranger_cert, stranger_key) = self_signed(&scratch, "stranger", &["stranger.botbus.test"]);
    let stranger_tls = TlsConfig::default()
        .identity(&stranger_cert, &stranger_key)
        .and_then(|c| c.trust(&tls.server_cert))
        .unwrap();
    let stranger = Node::builder("stranger-t6")
        .link_config(config.clone())
        .transport(Arc::new(TlsTransport::new(stranger_tls).unwrap()))
        .start()
        .unwrap();
    let error = stranger.connect(&endpoint).await.unwrap_err();
    assert!(
        matches!(error, LinkError::Handshake { .. } | LinkError::Transport(_)),
        "{error}"
    );
    logs::wait_for_line(
        &["robot-t6", "refused an incoming link", "TLS handshake failed"],
        DEADLINE,
    )
    .await;

    // A client with no certificate at all.
    let anonymous_tls = TlsConfig::default().trust(&tls.server_cert).unwrap();
    let anonymous = Node::builder("anonymous-t6")
        .link_config(config.clone())
        .transport(Arc::new(TlsTransport::new(anonymous_tls).unwrap()))
        .start()
        .unwrap();
    assert!(anonymous.connect(&endpoint).await.is_err());

    // A client that does not trust the listener's certificate refuses it.
    let doubtful_tls = TlsConfig::default()
        .identity(&tls.client_cert, &tls.client_key)
        .and_then(|c| c.trust(&stranger_cert))
        .unwrap();
    let doubtful = Node::builder("doubtful-t6")
        .link_config(config.clone())
        .transport(Arc::new(TlsTransport::new(doubtful_tls).unwrap()))
        .start()
        .unwrap();
    let error = doubtful.connect(&endpoint).await.unwrap_err();
    assert!(
        error.to_string().contains("TLS handshake failed") && error.to_string().contains("certificate"),
        "{error}"
    );

    // The right client links and asks.
    let friend = Node::builder("friend-t6")
        .link_config(config)
        .transport(Arc::new(TlsTransport::new(tls.client).unwrap()))
        .start()
        .unwrap();
    assert_eq!(friend.connect(&endpoint).await.unwrap(), "robot-t6");
    friend.wait_for_module("recorder", DEADLINE).await.unwrap();
    let seen: Result<u32, AskError> = friend.client("f").ask("recorder", 1u32).await;
    assert_eq!(seen, Ok(1));
    assert_eq!(robot.peers(), vec!["friend-t6".to_owned()]);
    for node in [friend, doubtful, anonymous, stranger, robot] {
        node.shutdown().await;
    }
}

/// Hears of downs and passes them to the test; monitors whatever it is told.
struct Watcher(tokio::sync::mpsc::UnboundedSender<botbus::Down>);

impl Module for Watcher {
    type Message = String;
    type Reply = ();

    async fn process(&mut self, target: String, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.monitor(&target);
        Ok(())
    }

    async fn down(&mut self, down: botbus::Down, _ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.0.send(down);
        Ok(())
    }
}

/// Answers `n` with `n`, after `n` seconds, unless the ask is cancelled
/// (its asker is gone); says it started with a progress.
struct Slow;

impl Module for Slow {
    type Message = u32;
    type Reply = u32;

    async fn process(&mut self, n: u32, ctx: &mut Context) -> Result<u32, ModuleError> {
        ctx.progress(0u32);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(u64::from(n))) => Ok(n),
            () = ctx.cancelled() => Err(ModuleError::new("cancelled")),
        }
    }
}

#[tokio::test]
async fn a_partition_ends_pending_asks_and_tells_monitors_and_once_healed_everything_holds_again() {
    let scratch = Scratch::new("partition");
    let config = LinkConfig {
        liveness: botbus::Liveness::new(Duration::from_millis(200), Duration::from_millis(800)),
        ..with_token(&scratch, TOKEN)
    };
    let far = Node::builder("far-t7")
        .link_config(config.clone())
        .module("slow", || Slow)
        .start()
        .unwrap();
    let endpoint = far.listen("tcp://127.0.0.1:0").await.unwrap().to_string();
    let proxy = support::proxy::Proxy::start(address(&endpoint).to_owned()).await;
    let (downs_tx, mut downs) = tokio::sync::mpsc::unbounded_channel();
    let near = Node::builder("near-t7")
        .link_config(config)
        .module("watcher", move || Watcher(downs_tx.clone()))
        .join(&format!("tcp://{}", proxy.addr))
        .start()
        .unwrap();
    near.wait_for_module("slow", DEADLINE).await.unwrap();
    let client = near.client("test");
    client.ask::<_, ()>("watcher", "slow".to_owned()).await.unwrap();
    assert_eq!(client.ask::<_, u32>("slow", 0u32).await, Ok(0));

    // The cable is pulled while an ask is in flight.
    let mut pending = client
        .ask::<_, u32>("slow", 30u32)
        .timeout(DEADLINE * 6)
        .start()
        .await
        .unwrap();
    assert!(
        matches!(pending.next_event().await, Some(botbus::CallEvent::Progress(_))),
        "slow is on it"
    );
    proxy.pause();
    let ended = tokio::time::timeout(DEADLINE, pending.reply())
        .await
        .expect("the pending ask ends");
    assert!(
        matches!(&ended, Err(AskError::Unreachable { module, .. }) if module == "slow"),
        "{ended:?}"
    );
    let down = tokio::time::timeout(DEADLINE, downs.recv()).await.unwrap().unwrap();
    assert_eq!(down.module, "slow");
    assert!(matches!(down.reason, botbus::DownReason::Unreachable(_)), "{down:?}");
    assert!(matches!(
        client.ask::<_, u32>("slow", 0u32).await,
        Err(AskError::Unreachable { .. } | AskError::UnknownModule(_))
    ));

    // The cable is back: the link comes back by itself, asks work again...
    proxy.resume();
    near.wait_for_module("slow", DEADLINE).await.unwrap();
    assert_eq!(client.ask::<_, u32>("slow", 0u32).await, Ok(0));
    // ...and the monitor set before the partition hears of a later stop.
    far.stop_module("slow").await.unwrap();
    let down = tokio::time::timeout(DEADLINE, downs.recv()).await.unwrap().unwrap();
    assert_eq!(
        (down.module.as_str(), &down.reason),
        ("slow", &botbus::DownReason::Stopped)
    );
    near.shutdown().await;
    far.shutdown().await;
}

/// Runs `ip` with `args`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace joined to this one by a veth pair, removed (with
/// its end of the pair) when dropped.
struct Namespace {
    name: String,
    near_veth: String,
}

impl Namespace {
    /// `None` (and why) where namespaces cannot be made: not root, no `ip`.
    fn new(tag: u32) -> Result<Namespace, String> {
        if !rustix::process::getuid().is_root() {
            return Err("the test does not run as root".to_owned());
        }
        let name = format!("bbtest{tag}");
        let (near_veth, far_veth) = (format!("bbn{tag}"), format!("bbf{tag}"));
        if !ip(&["netns", "add", &name]) {
            return Err("`ip netns add` is not available here".to_owned());
        }
        let namespace = Namespace { name, near_veth };
        let subnet = format!("10.{}.{}", 200 + tag % 50, tag % 250);
        let ok = ip(&[
            "link",
            "add",
            &namespace.near_veth,
            "type",
            "veth",
            "peer",
            "name",
            &far_veth,
        ]) && ip(&["link", "set", &far_veth, "netns", &namespace.name])
            && ip(&["addr", "add", &format!("{subnet}.1/30"), "dev", &namespace.near_veth])
            && ip(&["link", "set", &namespace.near_veth, "up"])
            && ip(&[
                "netns",
                "exec",
                &namespace.name,
                "ip",
                "addr",
                "add",
                &format!("{subnet}.2/30"),
                "dev",
                &far_veth,
            ])
            && ip(&["netns", "exec", &namespace.name, "ip", "link", "set", &far_veth, "up"])
            && ip(&["netns", "exec", &namespace.name, "ip", "link", "set", "lo", "up"]);
        match ok {
            true => Ok(namespace),
            false => Err("could not wire a veth pair into the namespace".to_owned()),
        }
    }

    fn near_address(&self, tag: u32) -> String {
        format!("10.{}.{}.1", 200 + tag % 50, tag % 250)
    }

    /// Cuts (`false`) or restores (`true`) the cable between the two.
    fn cable(&self, up: bool) {
        assert!(ip(&["link", "set", &self.near_veth, if up { "up" } else { "down" }]));
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["link", "del", &self.near_veth]);
        ip(&["netns", "del", &self.name]);
    }
}

#[tokio::test]
async fn a_partition_across_two_network_namespaces_heals_by_itself() {
    let tag = std::process::id() % 10_000;
    let namespace = match Namespace::new(tag) {
        Ok(namespace) => namespace,
        Err(why) => {
            eprintln!("SKIPPED: the network-namespace partition test needs root and `ip netns`: {why}");
            return;
        }
    };
    let scratch = Scratch::new("netns");
    // The robot listens on its end of the cable, where the other namespace
    // — another machine, as far as the network goes — reaches it: a token
    // is required there.
    let (downs_tx, mut downs) = tokio::sync::mpsc::unbounded_channel();
    let robot = Node::builder("robot-t8")
        .link_config(LinkConfig {
            liveness: botbus::Liveness::new(Duration::from_millis(200), Duration::from_millis(800)),
            ..with_token(&scratch, TOKEN)
        })
        .module("watcher", move || Watcher(downs_tx.clone()))
        .start()
        .unwrap();
    let at = format!("tcp://{}:0", namespace.near_address(tag));
    let endpoint = robot.listen(&at).await.unwrap().to_string();
    let worker = std::process::Command::new("ip")
        .args(["netns", "exec", &namespace.name, env!("CARGO_BIN_EXE_botbus")])
        .args([
            "worker",
            "--connect",
            &endpoint,
            "--name",
            "far-t8",
            "--token-env",
            "ROBOT_TOKEN",
        ])
        .env("ROBOT_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the worker starts in the namespace");
    let _worker = support::Process {
        child: worker,
        socket: None,
    };
    let options = botbus::ModuleOptions::new().start_timeout(DEADLINE);
    robot
        .spawn_on_worker("echo", "far-t8", "echo", &(), options)
        .await
        .unwrap();
    let client = robot.client("test");
    client.ask::<_, ()>("watcher", "echo".to_owned()).await.unwrap();
    assert_eq!(
        client.ask::<_, String>("echo", "before".to_owned()).await,
        Ok("before".to_owned())
    );

    namespace.cable(false);
    let down = tokio::time::timeout(DEADLINE, downs.recv()).await.unwrap().unwrap();
    assert!(matches!(down.reason, botbus::DownReason::Unreachable(_)), "{down:?}");
    assert!(client.ask::<_, String>("echo", "during".to_owned()).await.is_err());

    namespace.cable(true);
    robot
        .wait_until("echo back on the worker", DEADLINE * 3, |robot| {
            robot.status("echo") == Some(botbus::ModuleStatus::Running)
        })
        .await
        .unwrap();
    assert_eq!(
        client.ask::<_, String>("echo", "after".to_owned()).await,
        Ok("after".to_owned())
    );
    robot.stop_module("echo").await.unwrap();
    let down = tokio::time::timeout(DEADLINE, downs.recv()).await.unwrap().unwrap();
    assert_eq!(
        down.reason,
        botbus::DownReason::Stopped,
        "the monitor held across the partition"
    );
    robot.shutdown().await;
}
