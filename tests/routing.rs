//! A node is a router: frames pass between its links. A triangle of nodes
//! delivers each publish exactly once with nothing circulating; a chain
//! whose middle node goes away ends the asks through it and tells the
//! monitors; a child module that is restarting keeps its messages waiting,
//! as an in-process module's mailbox does.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use botbus::{
    AskError, ChildCommand, Context, Down, DownReason, Message, Module, ModuleError, ModuleOptions, ModuleStatus, Node,
};
use serde::{Deserialize, Serialize};
use support::{kill_9, unique, Req, DEADLINE};
use tokio::sync::mpsc;

/// A numbered message from a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Tick {
    from: String,
    seq: u32,
}

impl Message for Tick {
    const NAME: &'static str = "routing.Tick";
}

/// Subscribes to `ticks/**` and hands every tick to the test.
struct Subscriber {
    ticks: mpsc::UnboundedSender<(String, Tick)>,
}

impl Module for Subscriber {
    type Message = Tick;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("ticks/**").map_err(|e| ModuleError::new(e.to_string()))
    }

    async fn process(&mut self, tick: Tick, ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.ticks.send((ctx.node().to_owned(), tick));
        Ok(())
    }
}

async fn link(from: &Node, to: &Node) {
    let endpoint = to.listen(&format!("mem://{}", unique("routing"))).await.unwrap();
    assert_eq!(from.connect(&endpoint.to_string()).await.unwrap(), to.name());
}

fn total_data_in(nodes: &[&Node]) -> u64 {
    nodes.iter().flat_map(|node| node.link_stats()).map(|s| s.data_in).sum()
}

#[tokio::test]
async fn in_a_triangle_every_publish_reaches_each_subscriber_exactly_once_and_nothing_circulates() {
    let (ticks, mut heard) = mpsc::unbounded_channel();
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let ticks = ticks.clone();
            Node::builder(name)
                .module("subscriber", move || Subscriber { ticks: ticks.clone() })
                .start()
                .unwrap()
        })
        .collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    link(a, b).await;
    link(b, c).await;
    link(c, a).await;
    for node in &nodes {
        for other in &nodes {
            if other.name() != node.name() {
                let qualified = format!("{}/subscriber", other.name());
                node.wait_for_module(&qualified, DEADLINE).await.unwrap();
            }
        }
    }
    // Each node knows of a subscriber at every node, itself included.
    for node in &nodes {
        node.wait_until("a subscriber at every node", DEADLINE, |node| {
            node.subscriber_nodes("ticks/x") == ["a", "b", "c"]
        })
        .await
        .unwrap();
    }
    let before = total_data_in(&[a, b, c]);

    const N: u32 = 200;
    for node in &nodes {
        let client = node.client("publisher");
        for seq in 0..N {
            let tick = Tick {
                from: node.name().to_owned(),
                seq,
            };
            client.publish(&format!("ticks/{}", node.name()), tick).await.unwrap();
        }
    }
    // Every subscriber hears every tick, once.
    let mut got: HashMap<(String, Tick), usize> = HashMap::new();
    let expected = 3 * 3 * N as usize;
    while got.values().sum::<usize>() < expected {
        let Ok(Some((at, tick))) = tokio::time::timeout(DEADLINE, heard.recv()).await else {
            // Say which subscriber missed whose ticks, and how many data
            // frames crossed links: a lost route and a lost frame differ.
            let mut heard_from: HashMap<(String, String), u32> = HashMap::new();
            for (at, tick) in got.keys() {
                *heard_from.entry((at.clone(), tick.from.clone())).or_default() += 1;
            }
            let mut short: Vec<String> = ["a", "b", "c"]
                .iter()
                .flat_map(|at| ["a", "b", "c"].map(|from| (at.to_string(), from.to_string())))
                .filter_map(|pair| {
                    let n = heard_from.get(&pair).copied().unwrap_or(0);
                    (n < N).then(|| format!("{} heard {n}/{N} from {}", pair.0, pair.1))
                })
                .collect();
            short.sort();
            panic!(
                "a tick never arrived: {}; {} data frames crossed links",
                short.join(", "),
                total_data_in(&[a, b, c]) - before
            );
        };
        *got.entry((at, tick)).or_default() += 1;
    }
    assert_eq!(got.len(), expected, "some subscriber missed a tick");
    assert!(got.values().all(|&n| n == 1), "a tick was delivered twice");

    // A last round from each node, then the count of data frames that
    // crossed links: each publish crossed exactly two links (one to each
    // other node) — nothing took a second path, nothing went round.
    for node in &nodes {
        let tick = Tick {
            from: node.name().to_owned(),
            seq: N,
        };
        node.client("publisher").publish("ticks/last", tick).await.unwrap();
    }
    for _ in 0..9 {
        let (_, tick) = tokio::time::timeout(DEADLINE, heard.recv()).await.unwrap().unwrap();
        assert_eq!(tick.seq, N, "a late duplicate: {tick:?}");
    }
    let crossed = total_data_in(&[a, b, c]) - before;
    assert_eq!(crossed, 3 * 2 * (u64::from(N) + 1));
    for node in nodes {
        node.shutdown().await;
    }
}

/// Replies to nothing: holds every ask until its asker gives up, after a
/// first progress update.
struct Sleeper;

impl Module for Sleeper {
    type Message = u32;
    type Reply = u32;

    async fn process(&mut self, _: u32, ctx: &mut Context) -> Result<u32, ModuleError> {
        ctx.progress(0u32);
        ctx.cancelled().await;
        Ok(0)
    }
}

/// Monitors `sleeper` and hands the down to the test.
struct Watcher {
    downs: mpsc::UnboundedSender<Down>,
}

impl Module for Watcher {
    type Message = ();
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.monitor("sleeper");
        Ok(())
    }

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn down(&mut self, down: Down, _ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.downs.send(down);
        Ok(())
    }
}

/// A chain a–b–c: `sleeper` on `c`, and on `a` a watcher that monitors it
/// (started once `sleeper` is reachable from `a`, through `b`).
async fn watched_chain() -> (Node, Node, Node, mpsc::UnboundedReceiver<Down>) {
    let c = Node::builder("c").module("sleeper", || Sleeper).start().unwrap();
    let b = Node::builder("b").start().unwrap();
    link(&b, &c).await;
    let a = Node::builder("a").start().unwrap();
    link(&a, &b).await;
    a.wait_for_module("sleeper", DEADLINE).await.unwrap();
    let (downs, heard) = mpsc::unbounded_channel();
    a.spawn(
        "watcher",
        move || Watcher { downs: downs.clone() },
        ModuleOptions::new(),
    )
    .await
    .unwrap();
    (a, b, c, heard)
}

#[tokio::test]
async fn when_the_middle_of_a_chain_goes_away_asks_through_it_end_unreachable_and_monitors_hear() {
    let (a, b, c, mut heard) = watched_chain().await;
    // Both ways: `c` reaches `a`'s watcher through `b` too.
    c.wait_for_module("watcher", DEADLINE).await.unwrap();
    let () = c.client("test").ask("watcher", ()).await.unwrap();
    let () = c.client("test").ask("a/watcher", ()).await.unwrap();

    let client = a.client("test");
    let mut call = client
        .ask::<_, u32>("sleeper", 1u32)
        .timeout(DEADLINE * 3)
        .start()
        .await
        .unwrap();
    assert!(
        call.next_event().await.is_some(),
        "the sleeper has the ask, two hops away"
    );

    b.shutdown().await;
    let outcome = tokio::time::timeout(DEADLINE, call.reply())
        .await
        .expect("the ask ends");
    assert!(
        matches!(&outcome, Err(AskError::Unreachable { module, .. }) if module == "sleeper"),
        "{outcome:?}"
    );
    let down = tokio::time::timeout(DEADLINE, heard.recv()).await.unwrap().unwrap();
    assert_eq!(down.module, "sleeper");
    assert!(matches!(down.reason, DownReason::Unreachable(_)), "{down:?}");
    // And a new ask knows at once that there is no way there.
    assert_eq!(
        client.ask::<_, u32>("sleeper", 1u32).await,
        Err(AskError::UnknownModule("sleeper".into()))
    );
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_monitor_across_a_chain_hears_why_the_module_went_down() {
    let (a, b, c, mut heard) = watched_chain().await;
    c.stop_module("sleeper").await.unwrap();
    let down = tokio::time::timeout(DEADLINE, heard.recv()).await.unwrap().unwrap();
    assert_eq!((down.module.as_str(), down.reason), ("sleeper", DownReason::Stopped));
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_tell_and_an_ask_to_a_restarting_child_wait_for_the_new_instance() {
    let node = support::echo_child_node();
    let client = node.client("test");
    for _ in 0..3 {
        let pid = node.child_pid("echo").unwrap();
        kill_9(pid);
        // Once the node knows the child is gone, and before the new one is up.
        node.wait_until("echo restarting", DEADLINE, |node| {
            node.status("echo") != Some(ModuleStatus::Running)
        })
        .await
        .unwrap();
        client
            .tell("echo", Req::Add(0, 0))
            .await
            .expect("the tell waits, it does not fail");
        let sum: u32 = client
            .ask("echo", Req::Add(20, 22))
            .timeout(DEADLINE)
            .await
            .expect("the ask waits for the new instance");
        assert_eq!(sum, 42);
        assert_ne!(node.child_pid("echo"), Some(pid));
        // The tell reached the new instance too: it counted two messages.
        let tally: u32 = client.ask("echo", Req::Tally).await.unwrap();
        assert_eq!(tally, 2);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn an_ask_to_a_restarting_child_still_ends_by_its_deadline() {
    // A child that never comes back (its starts always fail, slowly).
    let silent = ChildCommand::new("sh")
        .arg("-c")
        .arg(r#"printf '%s\n' '{"magic":"BBUS","version":1,"node":"mute","codecs":["json"]}'; exec sleep 60"#);
    let node = Node::builder("host").start().unwrap();
    let options = ModuleOptions::new().start_timeout(Duration::from_secs(30));
    let spawner = node.clone();
    let starting = tokio::spawn(async move { spawner.spawn_child("mute", silent, options).await });
    node.wait_until("mute starting", DEADLINE, |node| {
        node.status("mute") == Some(ModuleStatus::Starting)
    })
    .await
    .unwrap();
    let began = std::time::Instant::now();
    let outcome = node
        .client("test")
        .ask::<_, u32>("mute", Req::Add(1, 1))
        .timeout(Duration::from_millis(300))
        .await;
    assert!(
        matches!(&outcome, Err(AskError::Timeout { .. } | AskError::Stopped(_))),
        "{outcome:?}"
    );
    assert!(began.elapsed() < DEADLINE, "{:?}", began.elapsed());
    node.shutdown().await;
    let _ = starting.await;
}

/// A message type no module in this process takes: nothing registers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Opaque {
    words: Vec<String>,
}

impl Message for Opaque {
    const NAME: &'static str = "routing.Opaque";
}

/// Takes any payload undecoded; replies with the length of its name.
struct Sink;

impl Module for Sink {
    type Message = botbus::Payload;
    type Reply = u32;

    async fn process(&mut self, payload: botbus::Payload, _ctx: &mut Context) -> Result<u32, ModuleError> {
        Ok(payload.name().len() as u32)
    }
}

#[tokio::test]
async fn a_payload_crosses_nodes_undecoded_in_either_codec() {
    let json_only = botbus::LinkConfig {
        codecs: vec![botbus::crates::core::CodecKind::Json],
        ..botbus::LinkConfig::default()
    };
    let c = Node::builder("c").module("sink", || Sink).start().unwrap();
    let b = Node::builder("b").start().unwrap();
    link(&b, &c).await; // postcard
    let a = Node::builder("a").start().unwrap();
    link(&a, &b).await; // postcard
    let a_json = Node::builder("a-json").link_config(json_only).start().unwrap();
    link(&a_json, &b).await; // JSON
    for node in [&a, &a_json] {
        node.wait_for_module("sink", DEADLINE).await.unwrap();
    }
    let message = || Opaque {
        words: vec!["no".into(), "one".into(), "here".into(), "knows".into(), "me".into()],
    };
    // Postcard in, postcard out: `b` passes the bytes on as they came,
    // without knowing the type.
    let name_len: u32 = a.client("test").ask("sink", message()).await.unwrap();
    assert_eq!(name_len as usize, Opaque::NAME.len());
    // JSON in, postcard out: the JSON body crosses `b` and the postcard link
    // to `c` as it came (flagged as JSON), so nobody between needs the
    // type; and the answer goes back to the JSON asker in JSON.
    let name_len: u32 = a_json.client("test").ask("sink", message()).await.unwrap();
    assert_eq!(name_len as usize, Opaque::NAME.len());
    // Only a node that still holds a postcard body it cannot read, and must
    // hand it to a JSON link, needs the type; the origin, which knows it,
    // encodes JSON for a JSON-only node in the first place.
    for node in [a, a_json, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_never_announces_a_peers_own_modules_back_to_it() {
    use botbus::crates::core::handshake::Handshake;
    use botbus::crates::core::{Frame, FrameCodec, Hello};
    use botbus::{Link, Transport};
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{FramedRead, FramedWrite};

    let b = Node::builder("b").module("n", || Sleeper).start().unwrap();
    let a = Node::builder("a").module("m", || Sleeper).start().unwrap();
    link(&a, &b).await;
    let endpoint = a.listen(&format!("mem://{}", unique("echo"))).await.unwrap();
    // A raw peer: a correct handshake, then its own module `x`.
    let raw: Box<dyn Link> = botbus::MemTransport.connect(&endpoint).await.unwrap();
    let (read, mut write) = raw.split();
    let mut handshake = Handshake::new(Hello::new("raw"));
    write.write_all(&handshake.poll_transmit().unwrap()).await.unwrap();
    let mut reader = FramedRead::new(read, FrameCodec::<Frame>::new());
    let mut input = bytes::BytesMut::new();
    while handshake.handle_input(&mut input).unwrap().is_none() {
        let mut byte = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(reader.get_mut(), &mut byte)
            .await
            .unwrap();
        input.extend_from_slice(&byte);
    }
    reader.read_buffer_mut().extend_from_slice(&input);
    let mut writer = FramedWrite::new(write, FrameCodec::<Frame>::new());
    let own = Frame::Announce {
        modules: vec!["x".into()],
        subscriptions: vec!["raw/**".into()],
        reach: vec![],
    };
    writer.send(&own).await.unwrap();
    a.wait_for_module("x", DEADLINE).await.unwrap();
    b.wait_for_module("x", DEADLINE).await.unwrap(); // and a passes it on to b
                                                     // Everything `a` sent after taking our announcement arrives before the
                                                     // pong to this ping: the link keeps order.
    writer.send(&Frame::Ping { nonce: 9 }).await.unwrap();
    let mut announced = Vec::new();
    loop {
        let frame = tokio::time::timeout(DEADLINE, reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match frame {
            Frame::Pong { nonce: 9 } => break,
            Frame::Announce {
                modules,
                subscriptions,
                reach,
            } => announced.push((modules, subscriptions, reach)),
            _ => {}
        }
    }
    assert!(!announced.is_empty(), "a announced itself to the raw peer");
    for (modules, subscriptions, reach) in &announced {
        // (and the framework's own `botbus.node`, which every node runs)
        let own: Vec<&String> = modules.iter().filter(|m| !m.starts_with("botbus.")).collect();
        assert_eq!(own, ["m"], "a's own modules only");
        assert!(subscriptions.is_empty());
        assert!(
            reach.iter().all(|r| r.node != "raw"
                && !r.path.contains(&"raw".to_owned())
                && !r.modules.contains(&"x".to_owned())),
            "{reach:?}"
        );
    }
    // What it did announce of others: b, one hop past a, with b's module.
    let (_, _, reach) = announced.last().unwrap();
    assert_eq!(reach.len(), 1);
    let modules: Vec<&str> = reach[0]
        .modules
        .iter()
        .map(String::as_str)
        .filter(|m| !m.starts_with("botbus."))
        .collect();
    assert_eq!(
        (reach[0].node.as_str(), &reach[0].path[..], modules),
        ("b", &["b".to_owned()][..], vec!["n"])
    );
    a.shutdown().await;
    b.shutdown().await;
}
