//! The pipe transport against real Unix domain sockets: the socket file's
//! life (owner-only, stale files replaced, live ones never taken over, gone
//! after a clean shutdown), and bad input from a peer that joined — each
//! such peer is dropped while the node goes on serving the others; peers
//! that read frames of different lengths, and a joined node that leaves.

#![cfg(unix)]

mod support;

use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use botbus::crates::core::{CodecKind, Frame, FrameCodec, Hello};
use botbus::crates::transport_pipe::PipeTransport;
use botbus::{
    async_trait, AskError, Context, Endpoint, Link, LinkConfig, LinkError, LinkReader, LinkWriter, Listener, Liveness,
    Module, ModuleError, ModuleOptions, Node, NodeBuilder, Transport, TransportError,
};
use support::services::Bouncer;
use support::{unique, Req, Service, DEADLINE};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::Encoder;

/// A socket path in a directory of the test's own, removed with it.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("botbus-pipe-test"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn endpoint(path: &Path) -> String {
    format!("pipe://{}", path.display())
}

#[tokio::test]
async fn a_socket_file_is_owner_only_never_taken_over_replaced_when_stale_and_removed_at_shutdown() {
    let dir = TempDir::new();
    let path = dir.socket("robot.sock");
    let hub = Node::builder("hub").start().unwrap();
    hub.listen(&endpoint(&path)).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is owner-only");

    // A second node on the same live endpoint: "in use", naming it.
    let second = Node::builder("second").start().unwrap();
    let error = second.listen(&endpoint(&path)).await.unwrap_err();
    assert!(
        matches!(&error, LinkError::Transport(TransportError::InUse(what)) if what.contains(&path.display().to_string())),
        "{error:?}"
    );
    assert!(error.to_string().contains("already in use"), "{error}");
    // The first one still serves.
    let peer = second.connect(&endpoint(&path)).await.unwrap();
    assert_eq!(peer, "hub");

    // A clean shutdown removes the file, before it returns.
    hub.shutdown().await;
    assert!(!path.exists(), "the socket file outlived its listener");

    // A file left by a process that died without cleaning up is replaced.
    let stale = dir.socket("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    second
        .listen(&endpoint(&stale))
        .await
        .expect("a stale socket is replaced");
    let third = Node::builder("third").start().unwrap();
    assert_eq!(third.connect(&endpoint(&stale)).await.unwrap(), "second");

    // A file that is not a socket is never removed.
    let precious = dir.socket("precious.sock");
    std::fs::write(&precious, b"not a socket").unwrap();
    let error = third.listen(&endpoint(&precious)).await.unwrap_err();
    assert!(error.to_string().contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"not a socket");

    // `pipe://name` lives in an owner-only runtime directory.
    let name = unique("named");
    let named = third.listen(&format!("pipe://{name}")).await.unwrap();
    let file = botbus::crates::transport_pipe::socket_path(&match named {
        botbus::Endpoint::Pipe(addr) => addr,
        other => panic!("{other}"),
    })
    .unwrap();
    let dir_mode = std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for node in [second, third] {
        node.shutdown().await;
    }
    assert!(!file.exists());
}

/// A hub with two well-behaved nodes joined to it, one hosting `echo`.
struct Joined {
    hub: Node,
    service: Node,
    client_node: Node,
    path: PathBuf,
    _dir: TempDir,
}

impl Joined {
    async fn new() -> Joined {
        let dir = TempDir::new();
        let path = dir.socket("hub.sock");
        let config = LinkConfig {
            handshake_timeout: Duration::from_millis(500),
            max_frame_len: 64 * 1024,
            ..LinkConfig::default()
        };
        let hub = Node::builder("hub").link_config(config).start().unwrap();
        hub.listen(&endpoint(&path)).await.unwrap();
        let service = Node::builder("service").module("echo", Service::new).start().unwrap();
        service.connect(&endpoint(&path)).await.unwrap();
        let client_node = Node::builder("client").start().unwrap();
        client_node.connect(&endpoint(&path)).await.unwrap();
        client_node.wait_for_module("echo", DEADLINE).await.unwrap();
        Joined {
            hub,
            service,
            client_node,
            path,
            _dir: dir,
        }
    }

    /// An ask between the two joined nodes, through the hub.
    async fn still_served(&self) {
        let sum: u32 = self
            .client_node
            .client("test")
            .ask("echo", Req::Add(20, 22))
            .timeout(DEADLINE)
            .await
            .unwrap();
        assert_eq!(sum, 42);
    }

    /// A raw connection to the hub's socket, reading with a deadline.
    fn raw(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }

    /// What the hub says to a raw connection that sends `writes`, read
    /// until the hub closes it; the hub then still serves its good peers.
    /// A write after the first may find the link already cut, which is
    /// fine: what the hub said shows how far it read.
    async fn says_to_raw(&self, writes: &[&[u8]]) -> String {
        let mut raw = self.raw();
        raw.write_all(writes[0]).unwrap();
        for bytes in &writes[1..] {
            let _ = raw.write_all(bytes);
        }
        let said = tokio::task::spawn_blocking(move || read_to_close(raw)).await.unwrap();
        self.still_served().await;
        said
    }

    async fn finish(self) {
        for node in [self.client_node, self.service, self.hub] {
            node.shutdown().await;
        }
    }
}

/// Reads until the hub closes the connection; returns what it sent.
fn read_to_close(mut stream: UnixStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&seen).into_owned()
            }
            Err(error) => panic!("the hub did not close the bad connection: {error}"),
        }
    }
}

#[tokio::test]
async fn bad_input_over_a_real_socket_drops_that_peer_and_the_hub_serves_the_others() {
    let joined = Joined::new().await;
    joined.still_served().await;

    // Random bytes instead of a hello.
    let said = joined
        .says_to_raw(&[&[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, b'\n']])
        .await;
    assert!(
        said.contains("\"magic\":\"BBUS\""),
        "the hub's hello came first: {said}"
    );

    // A hello of another protocol version: the peer reads the hub's own
    // hello, with its version, and the link closes.
    let said = joined
        .says_to_raw(&[b"{\"magic\":\"BBUS\",\"version\":99,\"node\":\"future\",\"codecs\":[\"postcard\"]}\n"])
        .await;
    assert!(said.contains("\"version\":1"), "{said}");

    // A hello that never finishes: dropped at the handshake deadline.
    joined.says_to_raw(&[b"{\"magic\":\"BBUS\",\"vers"]).await;

    // A good hello, then a frame over the hub's 64 KiB limit (the hub may
    // cut the link on the length alone, before its body arrives).
    let said = joined
        .says_to_raw(&[
            &Hello::new("oversize").to_line(),
            &(1_000_000u32).to_be_bytes(),
            &[0u8; 1024],
        ])
        .await;
    // It hears why, in a goodbye, before the link closes.
    assert!(
        said.contains("oversize frame: 1000000 bytes, the limit is 65536"),
        "{said:?}"
    );

    // A good hello, then a malformed frame.
    let mut wire = bytes::BytesMut::new();
    FrameCodec::<Frame>::new()
        .encode(&Frame::Ping { nonce: 1 }, &mut wire)
        .unwrap();
    wire[4] = 0xff; // no such frame kind
    let said = joined.says_to_raw(&[&Hello::new("malformed").to_line(), &wire]).await;
    assert!(said.contains("bad input from peer: malformed frame"), "{said:?}");

    // The hub lost none of its good peers.
    let mut peers = joined.hub.peers();
    peers.sort();
    assert_eq!(peers, ["client", "service"]);
    joined.finish().await;
}

#[tokio::test]
async fn many_silent_connections_cost_little_and_a_good_peer_still_joins() {
    let joined = Joined::new().await;
    // More silent connections than handshakes allowed at once.
    let silent: Vec<UnixStream> = (0..200).map(|_| joined.raw()).collect();
    let late = Node::builder("late").start().unwrap();
    late.connect(&endpoint(&joined.path))
        .await
        .expect("a good peer joins meanwhile");
    late.wait_for_module("echo", DEADLINE).await.unwrap();
    let sum: u32 = late.client("test").ask("echo", Req::Add(1, 2)).await.unwrap();
    assert_eq!(sum, 3);
    // Every silent one is closed, at the handshake deadline.
    for stream in silent {
        tokio::task::spawn_blocking(move || read_to_close(stream))
            .await
            .unwrap();
    }
    joined.still_served().await;
    late.shutdown().await;
    joined.finish().await;
}

#[tokio::test]
async fn when_the_hub_dies_asks_through_it_end_and_the_joined_nodes_are_back_when_it_is() {
    let socket = support::socket_path("restart");
    let endpoint = format!("pipe://{}", socket.display());
    let hub = support::hub_process(&socket);
    let service = Node::builder("service")
        .module("echo", Service::new)
        .join(&endpoint)
        .start()
        .unwrap();
    let client = Node::builder("client").join(&endpoint).start().unwrap();
    client.wait_for_module("echo", DEADLINE).await.unwrap();
    let asker = client.client("test");
    let mut call = asker
        .ask::<_, u32>("echo", Req::Sleep)
        .timeout(DEADLINE * 3)
        .start()
        .await
        .unwrap();
    assert!(
        call.next_event().await.is_some(),
        "the service has the ask, through the hub"
    );

    support::kill_9(hub.child.id());
    let outcome = tokio::time::timeout(DEADLINE, call.reply())
        .await
        .expect("the ask ends");
    assert!(
        matches!(&outcome, Err(botbus::AskError::Unreachable { module, .. }) if module == "echo"),
        "{outcome:?}"
    );
    client
        .wait_until("echo gone with the hub", DEADLINE, |node| node.peers().is_empty())
        .await
        .unwrap();

    // A new hub on the same endpoint (over the file the dead one left):
    // both nodes join it again by themselves, and asks work again.
    let _hub = support::hub_process(&socket);
    client
        .wait_for_module("echo", DEADLINE)
        .await
        .expect("joined again within the backoff");
    let sum: u32 = asker.ask("echo", Req::Add(2, 2)).timeout(DEADLINE).await.unwrap();
    assert_eq!(sum, 4);
    drop(hub);
    for node in [client, service] {
        node.shutdown().await;
    }
}

/// Hands each peer's report to the test.
struct Collector {
    reports: tokio::sync::mpsc::UnboundedSender<u32>,
}

impl botbus::Module for Collector {
    type Message = u32;
    type Reply = ();

    async fn process(&mut self, index: u32, _ctx: &mut botbus::Context) -> Result<(), botbus::ModuleError> {
        let _ = self.reports.send(index);
        Ok(())
    }
}

#[tokio::test]
async fn fifty_processes_joined_to_one_hub_each_ask_another_and_all_are_answered() {
    const PEERS: u32 = 50;
    let socket = support::socket_path("fifty");
    let endpoint = format!("pipe://{}", socket.display());
    let _hub = support::hub_process(&socket);
    let (reports, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let test_node = Node::builder("test")
        .module("collector", move || Collector {
            reports: reports.clone(),
        })
        .join(&endpoint)
        .start()
        .unwrap();
    let peer = support::example_binary("pipe_peer");
    let _peers: Vec<support::Process> = (0..PEERS)
        .map(|index| support::Process {
            child: std::process::Command::new(&peer)
                .args([
                    "--join",
                    &endpoint,
                    "--index",
                    &index.to_string(),
                    "--count",
                    &PEERS.to_string(),
                ])
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("a peer starts"),
            socket: None,
        })
        .collect();
    // Each peer asked the next one, in another process, through the hub,
    // and was answered.
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < PEERS as usize {
        let index = tokio::time::timeout(DEADLINE * 3, heard.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {PEERS} peers were answered", answered.len()))
            .expect("collector up");
        answered.insert(index);
    }
    assert_eq!(answered, (0..PEERS).collect());
    test_node.shutdown().await;
}

/// Answers with the id of the thread it runs on.
struct WhereAmI;

impl Module for WhereAmI {
    type Message = ();
    type Reply = String;

    async fn process(&mut self, (): (), _ctx: &mut Context) -> Result<String, ModuleError> {
        Ok(thread_id())
    }
}

fn thread_id() -> String {
    format!("{:?}", std::thread::current().id())
}

/// What the links of a watched transport saw: the threads they were read
/// on (`"read"`) and written on (`"write"`).
type Seen = Arc<Watch>;

#[derive(Debug, Default)]
struct Watch {
    seen: Mutex<BTreeSet<(&'static str, String)>>,
    /// Every other write, and every other flush, finds the link busy: it
    /// wakes its waker and returns `Pending` (as tokio's writers do once a
    /// task has used up its budget, and a TLS stream's flush does while
    /// its records wait), so whoever wrote with a waker that wakes nobody
    /// must leave the write to someone who will be woken.
    stall: bool,
    writes: std::sync::atomic::AtomicU64,
    flushes: std::sync::atomic::AtomicU64,
}

/// The real pipe transport, noting the thread of every read and write of
/// the links it makes or accepts.
#[derive(Debug)]
struct Watched(Seen);

#[derive(Debug)]
struct WatchedLink(Box<dyn Link>, Seen);

#[derive(Debug)]
struct WatchedListener(Box<dyn Listener>, Seen);

/// One half of a watched link.
struct Noted<T>(T, Seen);

/// Counts one more call on `calls`: true for every other one, the first
/// included.
fn every_other(calls: &std::sync::atomic::AtomicU64) -> bool {
    calls
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .is_multiple_of(2)
}

impl<T> Noted<T> {
    fn note(&self, what: &'static str) {
        self.1.seen.lock().unwrap().insert((what, thread_id()));
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Noted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.note("read");
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Noted<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.note("write");
        if self.1.stall && every_other(&self.1.writes) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        self.note("write");
        if self.1.stall && every_other(&self.1.flushes) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Link for WatchedLink {
    fn peer(&self) -> String {
        self.0.peer()
    }

    async fn open(&mut self) -> Result<(), TransportError> {
        self.0.open().await
    }

    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        let (reader, writer) = self.0.split();
        (Box::pin(Noted(reader, self.1.clone())), Box::pin(Noted(writer, self.1)))
    }
}

#[async_trait]
impl Listener for WatchedListener {
    fn endpoint(&self) -> Endpoint {
        self.0.endpoint()
    }

    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        let link = self.0.accept().await?;
        Ok(Box::new(WatchedLink(link, self.1.clone())))
    }
}

#[async_trait]
impl Transport for Watched {
    fn scheme(&self) -> &'static str {
        PipeTransport.scheme()
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        let link = PipeTransport.connect(endpoint).await?;
        Ok(Box::new(WatchedLink(link, self.0.clone())))
    }

    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        let listener = PipeTransport.listen(endpoint).await?;
        Ok(Box::new(WatchedListener(listener, self.0.clone())))
    }
}

/// A node whose links (over a watched pipe transport) run on the thread
/// `io`, with the module `where` there too.
fn beside_its_link(name: &str, seen: &Seen) -> NodeBuilder {
    Node::builder(name)
        .transport(Arc::new(Watched(seen.clone())))
        .link_config(LinkConfig {
            thread: Some("io".to_owned()),
            ..LinkConfig::default()
        })
        .module_with("where", || WhereAmI, ModuleOptions::new().thread("io"))
}

#[tokio::test]
async fn a_link_placed_on_a_named_thread_is_read_there_beside_its_modules_and_an_asker_writes_its_own_ask() {
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("hub.sock"));
    // The hub accepts on `io`; the other joins from its own `io`.
    let (hub_seen, joined_seen) = (Seen::default(), Seen::default());
    let hub = beside_its_link("hub", &hub_seen).start().unwrap();
    hub.listen(&at).await.unwrap();
    let joined = beside_its_link("joined", &joined_seen).join(&at).start().unwrap();
    hub.wait_for_module("joined/where", DEADLINE).await.unwrap();
    joined.wait_for_module("hub/where", DEADLINE).await.unwrap();

    // Each asks the other's `where` across the link, and its own.
    for (asking, there) in [(&hub, "joined/where"), (&joined, "hub/where")] {
        let client = asking.client("tester");
        let remote: String = client.ask(there, ()).timeout(DEADLINE).await.unwrap();
        let local: String = client.ask("where", ()).timeout(DEADLINE).await.unwrap();
        assert_ne!(remote, local, "two nodes' `io` threads are two threads");
    }
    let hub_io: String = hub.client("tester").ask("where", ()).timeout(DEADLINE).await.unwrap();
    let joined_io: String = joined
        .client("tester")
        .ask("where", ())
        .timeout(DEADLINE)
        .await
        .unwrap();
    let tester = thread_id();
    for (seen, io) in [(&hub_seen, hub_io), (&joined_seen, joined_io)] {
        let seen = seen.seen.lock().unwrap().clone();
        let on = |what: &str| -> BTreeSet<String> {
            seen.iter()
                .filter(|(seen_what, _)| *seen_what == what)
                .map(|(_, thread)| thread.clone())
                .collect()
        };
        // Every read of the link, handshake included, ran on the thread
        // its module runs on; so did every write but the tester's ask,
        // which the tester's own thread wrote (no other thread was woken
        // to write it), and the module's reply was written where the
        // module runs.
        assert_eq!(on("read"), BTreeSet::from([io.clone()]));
        assert_eq!(on("write"), BTreeSet::from([io, tester.clone()]));
    }
    joined.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn an_ask_whose_write_finds_the_link_busy_is_written_by_the_links_writer_and_answered() {
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("hub.sock"));
    // No pings: nothing else is ever written on the link to carry a
    // stalled write along.
    let quiet = || LinkConfig {
        liveness: Liveness::new(Duration::from_secs(600), Duration::from_secs(600)),
        ..LinkConfig::default()
    };
    let hub = Node::builder("hub")
        .link_config(quiet())
        .module_with("service", Service::new, ModuleOptions::new())
        .module_with("bouncer", || Bouncer, ModuleOptions::new())
        .start()
        .unwrap();
    hub.listen(&at).await.unwrap();
    let stalling = Arc::new(Watch {
        stall: true,
        ..Watch::default()
    });
    let joined = Node::builder("joined")
        .transport(Arc::new(Watched(stalling.clone())))
        .link_config(quiet())
        .join(&at)
        .start()
        .unwrap();
    joined.wait_for_module("hub/bouncer", DEADLINE).await.unwrap();
    // One ask at a time, nothing else on the link: an ask whose write
    // stalls is written by nobody but the link's writer task. A large one
    // is written in pieces (a buffer of its own), which a stalled flush
    // leaves written but not yet settled.
    let client = joined.client("tester");
    for n in 0..50 {
        let sum: u32 = client
            .ask("hub/service", Req::Add(n, 1))
            .timeout(DEADLINE)
            .await
            .unwrap();
        assert_eq!(sum, n + 1);
        let bytes = vec![n as u8; 20 * 1024 + n as usize];
        let bounced: Vec<u8> = client
            .ask("hub/bouncer", bytes.clone())
            .timeout(DEADLINE)
            .await
            .unwrap();
        assert!(bounced == bytes, "ask {n}: the bytes came back changed");
    }
    let writes = stalling.writes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        writes >= 200,
        "the asks were written, half of them stalling ({writes} writes)"
    );
    joined.shutdown().await;
    hub.shutdown().await;
}

/// One of a sender's numbered messages, some with a large blob that fills
/// the socket (so writes at once meet a link that would block).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Numbered {
    sender: u32,
    n: u32,
    blob: botbus::Blob,
}

impl botbus::Message for Numbered {
    const NAME: &'static str = "test.Numbered";
}

/// Checks that each sender's messages arrive in the order they were sent,
/// and answers an ask with how many it has taken from that sender (a
/// negative answer: one arrived out of order).
#[derive(Default)]
struct Ledger {
    next: std::collections::HashMap<u32, u32>,
    out_of_order: bool,
}

impl Module for Ledger {
    type Message = Numbered;
    type Reply = i64;

    async fn process(&mut self, message: Numbered, _ctx: &mut Context) -> Result<i64, ModuleError> {
        let next = self.next.entry(message.sender).or_default();
        self.out_of_order |= message.n != *next || message.blob.len() != blob_len(message.n);
        *next = message.n + 1;
        Ok(if self.out_of_order { -1 } else { i64::from(*next) })
    }
}

/// Every tenth message carries 64 KiB.
fn blob_len(n: u32) -> usize {
    if n % 10 == 9 {
        64 * 1024
    } else {
        16
    }
}

/// Sends `ledger` its numbered messages as the test says: tells, and every
/// third an ask whose answer it checks.
struct Numberer(u32);

impl Module for Numberer {
    type Message = u32;
    type Reply = ();

    async fn process(&mut self, count: u32, ctx: &mut Context) -> Result<(), ModuleError> {
        for n in 0..count {
            let message = Numbered {
                sender: self.0,
                n,
                blob: vec![n as u8; blob_len(n)].into(),
            };
            if n % 3 == 2 {
                let taken: i64 = ctx.ask("hub/ledger", message).timeout(DEADLINE).await?;
                if taken != i64::from(n) + 1 {
                    return Err(ModuleError::new(format!(
                        "sender {}: ledger answered {taken} after {n}",
                        self.0
                    )));
                }
            } else {
                ctx.tell("hub/ledger", message).await?;
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn senders_on_four_threads_share_one_link_and_each_ones_asks_and_tells_arrive_in_order() {
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("hub.sock"));
    let hub = Node::builder("hub")
        .module_with("ledger", Ledger::default, ModuleOptions::new())
        .start()
        .unwrap();
    hub.listen(&at).await.unwrap();
    // Four senders, each on a thread of its own, none on the link's: asks
    // written at once by their senders' threads, tells by the link's
    // writer, large frames that fill the socket, all on one link.
    let mut joined = Node::builder("joined").join(&at);
    for sender in 0..4 {
        let options = ModuleOptions::new().thread(&format!("sender-{sender}"));
        joined = joined.module_with(&format!("numberer-{sender}"), move || Numberer(sender), options);
    }
    let joined = joined.start().unwrap();
    joined.wait_for_module("hub/ledger", DEADLINE).await.unwrap();

    const COUNT: u32 = 2000;
    let client = joined.client("tester");
    let numberers: Vec<String> = (0..4).map(|sender| format!("numberer-{sender}")).collect();
    let sends = numberers
        .iter()
        .map(|numberer| client.ask::<_, ()>(numberer, COUNT).timeout(DEADLINE).into_future());
    for (sender, sent) in futures::future::join_all(sends).await.into_iter().enumerate() {
        sent.unwrap_or_else(|error| panic!("sender {sender}: {error}"));
    }
    joined.shutdown().await;
    hub.shutdown().await;
}

/// A body of the size the sender chose, and the size of the answer it
/// wants back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Sized {
    body: botbus::Blob,
    answer_len: u32,
}

impl botbus::Message for Sized {
    const NAME: &'static str = "test.Sized";
}

/// Answers a [`Sized`] with a blob of the length it asks for.
struct SizedAnswer;

impl Module for SizedAnswer {
    type Message = Sized;
    type Reply = botbus::Blob;

    async fn process(&mut self, message: Sized, _ctx: &mut Context) -> Result<botbus::Blob, ModuleError> {
        Ok(vec![7u8; message.answer_len as usize].into())
    }
}

fn sized(body_len: usize, answer_len: usize) -> Sized {
    Sized {
        body: vec![1u8; body_len].into(),
        answer_len: answer_len as u32,
    }
}

/// The most a node of [`small_frames`] reads in one frame.
const SMALL_FRAMES: usize = 64 * 1024;

/// A node that reads frames of at most [`SMALL_FRAMES`], speaking `codecs`.
fn small_frames(name: &str, codecs: &[CodecKind]) -> NodeBuilder {
    Node::builder(name).link_config(LinkConfig {
        max_frame_len: SMALL_FRAMES,
        codecs: codecs.to_vec(),
        ..LinkConfig::default()
    })
}

/// Whether `error` names the limit of a node of [`small_frames`] named
/// `small`, and the link to it.
fn names_smalls_limit(error: &str) -> bool {
    error.contains("the limit is 65536") && error.contains("`small`")
}

/// How many data frames `node` has sent on its link to `peer`: a count
/// that starts again at zero if the link was closed and made anew.
fn data_sent(node: &Node, peer: &str) -> u64 {
    let stats = node.link_stats();
    let to_peer: Vec<_> = stats.iter().filter(|s| s.peer == peer).collect();
    assert_eq!(to_peer.len(), 1, "one link from {} to {peer}: {stats:?}", node.name());
    to_peer[0].data_out
}

#[tokio::test]
async fn a_peer_that_reads_smaller_frames_is_sent_none_too_large_each_sender_hears_why_and_the_link_stays_up() {
    // A 63 KiB blob fits in a postcard frame of 64 KiB.
    smaller_frames_are_refused_where_they_are_sent(&[CodecKind::Postcard], SMALL_FRAMES - 1024).await;
}

#[tokio::test]
async fn a_json_peer_that_reads_smaller_frames_is_sent_none_too_large_each_sender_hears_why_and_the_link_stays_up() {
    // A blob goes as hex in JSON, two characters a byte.
    smaller_frames_are_refused_where_they_are_sent(&[CodecKind::Json], SMALL_FRAMES / 2 - 1024).await;
}

/// Node `small` reads frames of at most [`SMALL_FRAMES`] and speaks
/// `codecs`; `big` reads the default 8 MiB. Blobs of `fits` bytes fit in a
/// frame between them.
async fn smaller_frames_are_refused_where_they_are_sent(codecs: &[CodecKind], fits: usize) {
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("small.sock"));
    let small = small_frames("small", codecs)
        .module("sized_small", || SizedAnswer)
        .start()
        .unwrap();
    small.listen(&at).await.unwrap();
    let big = Node::builder("big")
        .module("sized_big", || SizedAnswer)
        .join(&at)
        .start()
        .unwrap();
    big.wait_for_module("sized_small", DEADLINE).await.unwrap();
    small.wait_for_module("sized_big", DEADLINE).await.unwrap();
    let (from_big, from_small) = (big.client("tester"), small.client("tester"));
    let too_large = SMALL_FRAMES + 1024;

    // Big's tell and ask larger than small reads are refused at big.
    match from_big.tell("sized_small", sized(too_large, 0)).await {
        Err(botbus::SendError::Encode(error)) => assert!(names_smalls_limit(&error), "{error}"),
        other => panic!("a tell too large for the peer: {other:?}"),
    }
    match from_big
        .ask::<_, botbus::Blob>("sized_small", sized(too_large, 0))
        .timeout(DEADLINE)
        .await
    {
        Err(AskError::BadPayload(error)) => assert!(names_smalls_limit(&error), "{error}"),
        other => panic!("an ask too large for the peer: {other:?}"),
    }
    // A reply larger than small reads is refused where it is made, and
    // small's asker hears why.
    match from_small
        .ask::<_, botbus::Blob>("sized_big", sized(16, too_large))
        .timeout(DEADLINE)
        .await
    {
        Err(AskError::BadPayload(error)) => assert!(
            error.contains("the reply of `sized_big` cannot be sent") && names_smalls_limit(&error),
            "{error}"
        ),
        other => panic!("a reply too large for the asker's node: {other:?}"),
    }

    // The link is the one it was, and carries what fits, both ways.
    let answer: botbus::Blob = from_big
        .ask("sized_small", sized(fits, fits))
        .timeout(DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer.len(), fits);
    let answer: botbus::Blob = from_small
        .ask("sized_big", sized(fits, fits))
        .timeout(DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer.len(), fits);
    assert_eq!(data_sent(&big, "small"), 1, "big's one ask that fit, on the first link");
    assert_eq!(data_sent(&small, "big"), 2, "small's two asks, on the first link");
    big.shutdown().await;
    small.shutdown().await;
}

#[tokio::test]
async fn a_hub_passes_on_no_frame_larger_than_the_next_node_reads_and_the_asker_hears_why() {
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("hub.sock"));
    let hub = Node::builder("hub").start().unwrap();
    hub.listen(&at).await.unwrap();
    let small = small_frames("small", &[CodecKind::Postcard])
        .module("sized_small", || SizedAnswer)
        .join(&at)
        .start()
        .unwrap();
    let big = Node::builder("big").join(&at).start().unwrap();
    big.wait_for_module("sized_small", DEADLINE).await.unwrap();
    let from_big = big.client("tester");
    let too_large = SMALL_FRAMES + 1024;

    // Big may send it to the hub, which reads as much as big: the hub is
    // the one that cannot pass it on, and says so.
    match from_big
        .ask::<_, botbus::Blob>("sized_small", sized(too_large, 0))
        .timeout(DEADLINE)
        .await
    {
        Err(AskError::BadPayload(error)) => assert!(names_smalls_limit(&error), "{error}"),
        other => panic!("an ask too large for the node behind the hub: {other:?}"),
    }
    // A tell too large is dropped at the hub (its sender is told nothing
    // of a tell passed on, as of one taken); the links stay up.
    from_big.tell("sized_small", sized(too_large, 0)).await.unwrap();
    let fits = SMALL_FRAMES - 1024;
    let answer: botbus::Blob = from_big
        .ask("sized_small", sized(fits, fits))
        .timeout(DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer.len(), fits);
    assert_eq!(
        data_sent(&hub, "small"),
        1,
        "the hub passed small one ask, on the first link"
    );
    assert_eq!(
        data_sent(&big, "hub"),
        3,
        "big sent the hub two asks and a tell, on the first link"
    );
    for node in [big, small, hub] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_that_shuts_down_leaves_the_node_it_joined_without_trying_to_join_again() {
    support::logs::capture();
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("hub.sock"));
    let hub = Node::builder("hub-left").start().unwrap();
    hub.listen(&at).await.unwrap();
    let leaver = Node::builder("leaver")
        .module("leavers_echo", Service::new)
        .join(&at)
        .start()
        .unwrap();
    hub.wait_for_module("leavers_echo", DEADLINE).await.unwrap();
    // From the node's own thread, where its joined link lives too.
    tokio::task::spawn_blocking(move || leaver.shutdown_blocking())
        .await
        .unwrap();
    // The hub saw the link end: the leaver's side of it ended before.
    hub.wait_until("the leaver gone", DEADLINE, |hub| hub.peers().is_empty())
        .await
        .unwrap();
    support::logs::wait_for_line(&["hub-left", "leaver", "link down"], DEADLINE).await;
    // (Before the shutdown said it was leaving first, the node saw its link
    // close and its stop at once, and took either: about half of the runs
    // logged a lost link and a rejoin.)
    let rejoins = support::logs::lines_with(&["leaver", "joining again"]);
    assert!(
        rejoins.is_empty(),
        "a node shutting down tried to join again: {rejoins:?}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_reads_small_frames_learns_an_announce_longer_than_one_frame_in_parts() {
    announce_in_parts(CodecKind::Postcard, Between::Nothing).await;
}

#[tokio::test]
async fn a_json_peer_that_reads_small_frames_learns_an_announce_longer_than_one_frame_in_parts() {
    announce_in_parts(CodecKind::Json, Between::Nothing).await;
}

#[tokio::test]
async fn a_hub_announces_a_joined_node_of_many_modules_in_parts_to_a_peer_that_reads_small_frames() {
    announce_in_parts(CodecKind::Postcard, Between::Hub).await;
}

/// What links the node of many modules to the peer that reads small frames.
#[derive(Clone, Copy, PartialEq)]
enum Between {
    /// The peer joins it.
    Nothing,
    /// Both join a hub: the hub announces the node's modules to the peer
    /// as a reached node's, whose entry is then cut across parts.
    Hub,
}

/// Node `big` runs 200 modules with long names, some 7 KiB to announce,
/// to node `tiny`, which reads frames of 2 KiB and speaks `codec`.
async fn announce_in_parts(codec: CodecKind, between: Between) {
    const MODULES: usize = 200;
    const TINY_FRAMES: usize = 2048;
    let name = |i: usize| format!("camera-{i:03}-on-the-left-arm-mount");
    let dir = TempDir::new();
    let at = endpoint(&dir.socket("bus.sock"));
    let mut builder = Node::builder("big");
    for i in 0..MODULES {
        builder = builder.module_with(&name(i), || WhereAmI, ModuleOptions::new().thread("cameras"));
    }
    let big = builder.start().unwrap();
    let hub = match between {
        Between::Nothing => {
            big.listen(&at).await.unwrap();
            None
        }
        Between::Hub => {
            let hub = Node::builder("hub").start().unwrap();
            hub.listen(&at).await.unwrap();
            big.join_to(&at).await.unwrap();
            Some(hub)
        }
    };
    let tiny = Node::builder("tiny")
        .link_config(LinkConfig {
            max_frame_len: TINY_FRAMES,
            codecs: vec![codec],
            ..LinkConfig::default()
        })
        .join(&at)
        .start()
        .unwrap();

    // Every module is known at `tiny`, the last part's as the first's...
    for i in [0, MODULES / 2, MODULES - 1] {
        tiny.wait_for_module(&name(i), DEADLINE).await.unwrap();
    }
    let unknown: Vec<String> = (0..MODULES).map(name).filter(|m| !tiny.reaches(m)).collect();
    assert!(unknown.is_empty(), "not announced to tiny: {unknown:?}");
    // ...and answers over the link.
    let client = tiny.client("tester");
    let first: String = client.ask(&name(0), ()).timeout(DEADLINE).await.unwrap();
    let last: String = client.ask(&name(MODULES - 1), ()).timeout(DEADLINE).await.unwrap();
    assert_eq!(first, last, "both on big's thread `cameras`");

    // A module gone is gone at `tiny` too: the next announce, in parts
    // again, replaces the last whole.
    big.stop_module(&name(MODULES / 2)).await.unwrap();
    let gone = name(MODULES / 2);
    tiny.wait_until("the stopped module forgotten", DEADLINE, |tiny| !tiny.reaches(&gone))
        .await
        .unwrap();
    let unknown: Vec<String> = (0..MODULES).map(name).filter(|m| !tiny.reaches(m)).collect();
    assert_eq!(unknown, [gone], "only the stopped module is forgotten");
    tiny.shutdown().await;
    big.shutdown().await;
    if let Some(hub) = hub {
        hub.shutdown().await;
    }
}
