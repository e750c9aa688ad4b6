//! A link to another node, split by concern:
//!
//! * [`handshake`]: drives the core handshake state machine over the fresh
//!   byte stream, within the handshake deadline;
//! * [`writer`]: the outbox frames are encoded into on the sender's
//!   thread; a frame someone waits for written there at once, the rest by
//!   the task that writes what the outbox holds in few system calls;
//! * [`reader`]: reads frames, keeps the link's liveness, and hands every
//!   frame to the router;
//! * [`asks`]: the bookkeeping of asks that cross the link, both ways;
//! * [`flow`]: flow control — permits for what is sent, credits and parking
//!   for what arrives.
//!
//! Frames are encoded by whoever sends them (on their own thread), straight
//! into the link's outbox behind the frames queued before them. An ask, a
//! reply or a control frame that finds nothing ahead of it is written by
//! its sender then and there; otherwise (and for tells and publishes) the
//! writer task takes everything queued since its last write and writes it
//! at once.
//! Data frames (tells, asks, publishes) take a permit from the send window,
//! given back by the peer's credit, so a slow peer makes senders wait
//! instead of growing a queue without bound.
//! Control frames (replies, progress, cancels, announcements) take no permit:
//! they are bounded by the asks in flight, and a callee must never block on
//! answering.

mod admission;
mod asks;
mod deadlines;
mod flow;
mod handshake;
mod reader;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use botbus_core::announce::{Announcement, Gathering};
use botbus_core::handshake::Handshake;
pub(crate) use botbus_core::Role;
use botbus_core::{
    AuthToken, CodecKind, Frame, HandshakeError, Hello, IncomingCodec, Link, Liveness, Payload, SendError,
    TopicPattern, WireCodec, WirePayload,
};
use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::router::Router;

pub(crate) use admission::Admission;
use asks::{AnswerSender, InboundAsk, SentAsks};
use flow::Inflow;
pub(crate) use flow::Waiting;

/// Bodies shorter than this share a block of the body arena; longer ones
/// get an allocation of their own (see [`LinkHandle::unwire_in`]).
const ARENA_BODIES_BELOW: usize = 4 * 1024;

/// Bodies this long or longer are handed on as slices of the bytes they
/// were read in (see [`LinkHandle::unwire_in`]).
const SLICE_BODIES_FROM: usize = 16 * 1024;

/// The size of a body arena block.
const BODY_ARENA_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where this thread's link readers copy small bodies.
    static BODY_ARENA: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
}

thread_local! {
    /// The message names this thread's link readers met last, as their
    /// `'static` names: most frames find theirs here, without the lock of
    /// the process-wide message registry.
    static RECENT_NAMES: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many names [`RECENT_NAMES`] keeps.
const RECENT_NAMES_KEPT: usize = 16;

/// The `'static` name of a message type this process knows, if `name` is
/// one — from the recent names first, the registry after.
fn known_name(name: &str) -> Option<&'static str> {
    RECENT_NAMES.with_borrow_mut(|recent| {
        if let Some(found) = recent.iter().copied().find(|known| *known == name) {
            return Some(found);
        }
        let found = botbus_core::message::static_name(name)?;
        if recent.len() == RECENT_NAMES_KEPT {
            recent.remove(0);
        }
        recent.push(found);
        Some(found)
    })
}

/// The name of a message read from a link, as its payload keeps it: a
/// known message type's `'static` name, or a copy.
pub(crate) fn message_name(name: &str) -> std::borrow::Cow<'static, str> {
    match known_name(name) {
        Some(name) => name.into(),
        None => name.to_owned().into(),
    }
}

/// `body`, copied into this thread's body arena if it is small.
fn copy_body(body: &[u8]) -> Bytes {
    if body.len() >= ARENA_BODIES_BELOW {
        return Bytes::copy_from_slice(body);
    }
    BODY_ARENA.with_borrow_mut(|arena| {
        if arena.capacity() - arena.len() < body.len() {
            *arena = bytes::BytesMut::with_capacity(BODY_ARENA_BYTES);
        }
        arena.extend_from_slice(body);
        arena.split().freeze()
    })
}

/// What crossed one link so far: frames of every kind, and of those the
/// data frames (tells, asks, publishes), each way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// The peer's node name.
    pub peer: String,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Tells, asks and publishes received: each counted before it is
    /// delivered, so a message a module has processed is already in here.
    pub data_in: u64,
    /// Tells, asks and publishes sent.
    pub data_out: u64,
}

/// The counters behind [`LinkStats`] for what is read (the outbox counts
/// what is sent): a data frame is counted before it is handed on, so that
/// anyone who has seen it delivered finds it counted; frames of every kind
/// are added once per run read.
#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    data_in: AtomicU64,
}

impl Counters {
    /// One more data frame read.
    fn data_read(&self) {
        Self::add(&self.data_in, 1);
    }

    /// `frames` more frames read.
    fn frames_read(&self, frames: u64) {
        Self::add(&self.frames_in, frames);
    }

    /// The link's reader is the one writer of these counters, so a load and
    /// a store add as a locked add would, without its cost per frame.
    fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// How links of a node behave.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The largest frame body read, and sent (8 MiB by default). A node
    /// tells its peers in its hello, and a peer that reads less is sent no
    /// larger frame: a message too large for it fails where it is sent
    /// (`SendError::Encode`, or `AskError::BadPayload` for an ask or a
    /// reply), naming the limit and the link, and the link stays up.
    pub max_frame_len: usize,
    /// How long the peer has to complete the handshake.
    pub handshake_timeout: Duration,
    /// The flow window, in data frames (tells, asks, publishes): how many
    /// this node lets a peer send before it credits them back (granted in
    /// the hello, and the most frames parked for busy modules), and how many
    /// it queues towards a peer that does not credit before senders wait.
    pub queue_frames: usize,
    /// The codecs this node offers in its hello. The first one in
    /// [`CodecKind::PREFERENCE`] that both sides offer is used.
    pub codecs: Vec<CodecKind>,
    /// When a quiet peer is pinged, and when a silent one is declared down
    /// and its link closed (see [`Liveness`]).
    pub liveness: Liveness,
    /// The token this node and its peers prove they hold (see
    /// [`botbus_core::auth`]). With one, a peer that cannot prove it holds
    /// the same token is refused; without one, a peer that requires a token
    /// refuses this node. Read it from a file ([`crate::read_token`]) or
    /// the environment ([`crate::env_token`]), never from a command line.
    /// Links to a node's own child processes never use it.
    pub token: Option<AuthToken>,
    /// Lets [`Node::listen`](crate::Node::listen) accept links on an
    /// address other machines can reach (`tcp://0.0.0.0:7000`) with no
    /// token. Without this, that is refused: anyone who can reach the port
    /// could join the robot. (`tls://` with client certificates required
    /// needs no token.)
    pub insecure: bool,
    /// Connections a listener lets handshake at once (each has
    /// `handshake_timeout` to finish). One more makes room by dropping the
    /// oldest still in its handshake — the likeliest never to finish — so a
    /// flood of silent connections cannot lock a good peer out.
    pub max_handshakes: usize,
    /// The named thread these links run on — their reads, their writer
    /// task and flow control, and a listener's accepting — shared with the
    /// modules that name the same thread
    /// ([`ModuleOptions::thread`](crate::ModuleOptions::thread)). (An ask
    /// or a reply is written by the thread that sends it, wherever that
    /// is, when nothing is queued ahead of it.)
    /// A module that a link mostly feeds, placed beside it, takes its
    /// frames and sends its replies with no hand-off between threads: no
    /// wake-up of another core per burst (tens of microseconds on a small
    /// machine). `None`, the default: the node's own thread. A child
    /// module's link runs on the thread its options name, if they name one.
    pub thread: Option<String>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_frame_len: botbus_core::DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(5),
            queue_frames: 4096,
            codecs: CodecKind::PREFERENCE.to_vec(),
            liveness: Liveness::default(),
            max_handshakes: 64,
            token: None,
            insecure: false,
            thread: None,
        }
    }
}

/// Why a link could not be set up, or why it closed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The handshake failed.
    #[error("handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer's description.
        peer: String,
        /// What went wrong.
        source: HandshakeError,
    },
    /// A link to that node is already up.
    #[error("{0}")]
    Duplicate(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] botbus_core::TransportError),
    /// The endpoint is not valid.
    #[error(transparent)]
    Endpoint(#[from] botbus_core::EndpointError),
    /// No transport serves the endpoint's scheme on this node.
    #[error("no transport for scheme `{0}` on this node")]
    NoTransport(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    NodeStopped,
    /// Listening where other machines can reach, with nothing to tell who
    /// may join (see [`LinkConfig::insecure`]).
    #[error(
        "refusing to listen at `{0}` without a token: other machines can reach it, and anyone who can \
         would join. Give the node a token (a file or an environment variable), listen on loopback, \
         or say it is meant to be insecure (`LinkConfig::insecure`, `--insecure`)"
    )]
    Insecure(String),
}

/// What the peer announced it can reach.
#[derive(Default)]
pub(crate) struct RemoteState {
    /// Whether the peer's first announcement has arrived.
    pub(crate) announced: bool,
    /// The peer's own modules.
    pub(crate) modules: Vec<String>,
    /// The peer's own subscriptions.
    pub(crate) subscriptions: Vec<TopicPattern>,
    /// Other nodes reachable through the peer.
    pub(crate) reach: Vec<RemoteReach>,
}

/// A node reachable through the peer, as it announced it.
pub(crate) struct RemoteReach {
    pub(crate) node: String,
    /// From the peer's next hop to the node.
    pub(crate) path: Vec<String>,
    pub(crate) modules: Vec<String>,
    pub(crate) subscriptions: Vec<TopicPattern>,
    /// The node speaks only JSON.
    pub(crate) json: bool,
}

/// A map keyed by ask ids (and caller message numbers), hashed with
/// [`IdHasher`].
type ById<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Hashes numbers — ask ids, caller message numbers — with a multiply
/// each, where the standard SipHash takes about a hundred instructions, and
/// every ask over a link looks its id up at least twice on each side. The
/// product of an odd constant spreads consecutive ids over the whole table
/// (its low bits stay distinct) and over the control bits a lookup compares
/// (its high bits mix). SipHash's resistance to chosen keys buys nothing
/// here: a peer that picks ids to collide slows only its own link's
/// lookups, and only across the asks it has in flight.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The router's handle on one link.
pub(crate) struct LinkHandle {
    peer: String,
    describe: String,
    /// Frames queued for the writer.
    outbox: writer::Outbox,
    /// The send window: a data frame takes one until the peer credits it
    /// back (or, towards a peer that does not credit, until it is written).
    permits: Semaphore,
    codec: WireCodec,
    next_id: AtomicU64,
    /// Asks this node sent over the link, by id.
    pending: Mutex<SentAsks>,
    /// Set, under `pending`'s lock, when the link closed and its pending
    /// asks were ended: none is filed after that.
    asks_ended: AtomicBool,
    /// The deadlines of those whose askers are in this process.
    deadlines: deadlines::Deadlines,
    /// Asks received over the link and still being handled here.
    inbound: Mutex<ById<u64, InboundAsk>>,
    /// Caller messages sent by callees here, awaiting the remote caller.
    caller_calls: Mutex<ById<(u64, u32), AnswerSender>>,
    remote: RwLock<RemoteState>,
    closed: CancellationToken,
    /// Set when this is the link to a child process hosting that module.
    child_of: Option<Arc<str>>,
    /// The peer connected to this node (not this node to the peer).
    accepted: bool,
    /// Whether the peer credits data frames back (its hello granted a
    /// window): then a data frame's permit comes back with the credit, not
    /// when it is written.
    peer_credits: bool,
    /// Flow control of what the peer sends here.
    inflow: Inflow,
    /// Why the link closed, once it has.
    close_reason: Mutex<Option<String>>,
    /// This node began closing the link (a goodbye was queued).
    closing: AtomicBool,
    /// The peer broke the link: bad input, or silence past the liveness
    /// limit. Nothing it sends can be trusted any more.
    broken: AtomicBool,
    /// The announcement last sent, so an unchanged one is not sent again.
    last_announce: Mutex<Option<Announcement>>,
    /// The parts of the peer's announcement received so far.
    announce_parts: Mutex<Gathering>,
    counters: Counters,
}

impl LinkHandle {
    /// A payload as it crosses this link: in the link's codec, except that
    /// a JSON body stays JSON (flagged) on a postcard link — it came from a
    /// JSON peer, and only the node that takes it needs to know its type.
    pub(crate) fn wire(&self, payload: &Payload) -> Result<WirePayload, SendError> {
        self.wire_as(payload, false)
    }

    /// Whether a payload goes over this link as JSON: on a JSON link; when
    /// it came from a JSON peer (it stays JSON, flagged); or when `json`
    /// says it is for a node that speaks only JSON — unless it is postcard
    /// bytes of a type this process does not know, which go as they are
    /// (as hex, in a JSON frame) for whoever knows the type.
    pub(crate) fn sends_json(&self, payload: &Payload, json: bool) -> bool {
        let wanted = json || self.codec.kind() == CodecKind::Json || payload.encoding() == Some(CodecKind::Json);
        wanted && payload.converts_to(CodecKind::Json)
    }

    /// [`LinkHandle::wire`], in JSON if `json`: the payload is for a node
    /// that speaks only JSON, and this node, which knows its type, encodes
    /// it so that the nodes between pass it on as it is.
    pub(crate) fn wire_as(&self, payload: &Payload, json: bool) -> Result<WirePayload, SendError> {
        let json = self.sends_json(payload, json);
        let codec = if json { CodecKind::Json } else { CodecKind::Postcard };
        Ok(WirePayload {
            name: payload.name().to_owned(),
            body: payload.encoded(codec).map_err(|e| SendError::Encode(e.to_string()))?,
            json,
        })
    }

    /// A payload received on this link.
    pub(crate) fn unwire(&self, payload: WirePayload) -> Payload {
        match payload.json {
            true => Payload::from_json(payload.name, payload.body),
            false => Payload::from_encoded(payload.name, payload.body),
        }
    }

    /// A payload read borrowed from a postcard frame's body in `run`: a
    /// known message type's name becomes its `'static` name. A small body
    /// is copied into this thread's body arena — one allocation per 64 KiB
    /// of small bodies, not one per message; a large one is handed on as a
    /// slice of `run`, not copied at all.
    ///
    /// A small body is not left as a slice, though that would spare the
    /// copy: a slice keeps its whole read buffer alive (and shared, so the
    /// reader cannot reuse it) until the module is done with the message.
    /// Thousands of small messages parked behind a busy module would then
    /// hold thousands of read buffers — up to 64 KiB each for a 64-byte
    /// message — where the arena holds their bytes and little more. A body
    /// of [`SLICE_BODIES_FROM`] or more is most of what it keeps alive.
    pub(crate) fn unwire_in(&self, payload: botbus_core::PayloadIn<'_>, run: &Bytes) -> Payload {
        Self::unwire_named(message_name(payload.name), payload, run)
    }

    /// [`LinkHandle::unwire_in`], its name already taken ([`message_name`]).
    pub(crate) fn unwire_named(
        name: std::borrow::Cow<'static, str>,
        payload: botbus_core::PayloadIn<'_>,
        run: &Bytes,
    ) -> Payload {
        let body = match payload.body.len() {
            len if len >= SLICE_BODIES_FROM => run.slice_ref(payload.body),
            _ => copy_body(payload.body),
        };
        match payload.json {
            true => Payload::from_json(name, body),
            false => Payload::from_encoded(name, body),
        }
    }

    /// The module this link's child process hosts, if it is a child's link.
    pub(crate) fn child_of(&self) -> Option<&str> {
        self.child_of.as_deref()
    }

    /// Whether the link has closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Waits until the link has closed; returns why.
    pub(crate) async fn closed(&self) -> String {
        self.closed.cancelled().await;
        self.close_reason()
    }

    /// Why the link closed (or that it has not).
    pub(crate) fn close_reason(&self) -> String {
        self.close_reason
            .lock()
            .expect("link lock")
            .clone()
            .unwrap_or_else(|| "the link is still up".to_owned())
    }

    /// The codec the handshake chose for this link.
    pub(crate) fn codec(&self) -> CodecKind {
        self.codec.kind()
    }

    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// What the link runs over, as its transport says (an endpoint, a
    /// child's pid…).
    pub(crate) fn via(&self) -> &str {
        &self.describe
    }

    /// Whether the peer connected to this node (rather than this node to
    /// the peer).
    pub(crate) fn accepted(&self) -> bool {
        self.accepted
    }

    /// Whether the peer announced `module` as its own.
    pub(crate) fn serves(&self, module: &str) -> bool {
        self.remote
            .read()
            .expect("link lock")
            .modules
            .iter()
            .any(|m| m == module)
    }

    /// What the peer announced.
    pub(crate) fn remote(&self) -> std::sync::RwLockReadGuard<'_, RemoteState> {
        self.remote.read().expect("link lock")
    }

    /// Takes a part of the peer's announcement (a single announce is its
    /// own last part); once it is whole, it replaces what the peer
    /// announced before, and this answers true: the routes must be
    /// refreshed.
    pub(crate) fn gather_announce(&self, part: Announcement, more: bool) -> bool {
        let taken = self.announce_parts.lock().expect("link lock").take(part, more);
        match taken {
            Ok(Some(whole)) => {
                self.set_announced(whole);
                true
            }
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(peer = %self.peer, %error, "dropping the peer's announce: its last one stands");
                false
            }
        }
    }

    /// What the peer announced, in full (replacing what it said before).
    fn set_announced(
        &self,
        Announcement {
            modules,
            subscriptions,
            reach,
        }: Announcement,
    ) {
        let patterns = |patterns: Vec<String>| -> Vec<TopicPattern> {
            patterns
                .iter()
                .filter_map(|p| match TopicPattern::parse(p) {
                    Ok(p) => Some(p),
                    Err(error) => {
                        tracing::warn!(peer = %self.peer, %error, "ignoring a bad subscription");
                        None
                    }
                })
                .collect()
        };
        let reach = reach
            .into_iter()
            .map(|r| RemoteReach {
                node: r.node,
                path: r.path,
                modules: r.modules,
                subscriptions: patterns(r.subscriptions),
                json: r.json,
            })
            .collect();
        *self.remote.write().expect("link lock") = RemoteState {
            announced: true,
            modules,
            subscriptions: patterns(subscriptions),
            reach,
        };
    }

    /// The peer subscribed to `pattern` (a simple peer's way), or dropped it.
    pub(crate) fn set_subscribed(&self, pattern: &str, subscribed: bool) {
        let mut remote = self.remote.write().expect("link lock");
        if !subscribed {
            remote.subscriptions.retain(|p| p.as_str() != pattern);
            return;
        }
        match TopicPattern::parse(pattern) {
            Ok(pattern) if !remote.subscriptions.contains(&pattern) => remote.subscriptions.push(pattern),
            Ok(_) => {}
            Err(error) => tracing::warn!(peer = %self.peer, %error, "ignoring a bad subscription"),
        }
    }

    /// Sends `announcement` unless it is what the peer was told last: in
    /// one frame, or in parts where it is longer than the peer reads (see
    /// [`botbus_core::announce`]).
    pub(crate) fn announce(&self, announcement: Announcement) {
        let mut last = self.last_announce.lock().expect("link lock");
        if last.as_ref() == Some(&announcement) {
            return;
        }
        // A frame fits when the link's own codec, which is held to the
        // peer's limit, encodes it.
        let (mut codec, mut scratch) = (self.codec.clone(), bytes::BytesMut::new());
        let parts = announcement.clone().into_parts(|frame| {
            scratch.clear();
            tokio_util::codec::Encoder::encode(&mut codec, frame, &mut scratch).is_ok()
        });
        if !parts.left_out.is_empty() {
            tracing::warn!(
                peer = %self.peer,
                limit = self.codec.max_frame_len(),
                left_out = ?parts.left_out,
                "announcing without what fits in no frame the peer reads"
            );
        }
        if parts.frames.len() > 1 {
            tracing::debug!(peer = %self.peer, parts = parts.frames.len(), "announcing in parts");
        }
        for frame in &parts.frames {
            self.send_control(frame);
        }
        *last = Some(announcement);
    }

    /// Whether the peer has announced what lives behind it.
    pub(crate) fn announced(&self) -> bool {
        self.remote.read().expect("link lock").announced
    }

    /// What crossed the link so far.
    pub(crate) fn stats(&self) -> LinkStats {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (frames_out, data_out) = self.outbox.sent();
        LinkStats {
            peer: self.peer.clone(),
            frames_in: count(&self.counters.frames_in),
            frames_out,
            data_in: count(&self.counters.data_in),
            data_out,
        }
    }

    /// Queues a control frame: never waits.
    pub(crate) fn send_control(&self, frame: &Frame) {
        match self.queue_control(frame) {
            Ok(()) | Err(writer::QueueError::Stopped) => {}
            Err(writer::QueueError::Encode(error)) => {
                tracing::warn!(peer = %self.peer, %error, "dropping a control frame that cannot be encoded")
            }
        }
    }

    /// Whether this node began closing the link.
    pub(crate) fn closed_by_us(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether the peer broke the link (bad input, or silence past the
    /// liveness limit) rather than closing it or going away.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Says goodbye and closes the link once the queue is written.
    pub(crate) fn close(&self, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.send_control(&Frame::Bye {
            reason: reason.to_owned(),
        });
        self.queue_close();
    }
}

/// 32 bytes from the system's random source, for one handshake.
fn fresh_nonce() -> [u8; botbus_core::auth::NONCE_LEN] {
    let mut nonce = [0; botbus_core::auth::NONCE_LEN];
    getrandom::getrandom(&mut nonce).expect("the system's random source works");
    nonce
}

/// Runs the handshake on a fresh link, registers it with the router and
/// spawns its reader and writer on the current runtime. Returns the peer's
/// node name once the link is up.
pub(crate) async fn establish(
    router: Arc<Router>,
    link: Box<dyn Link>,
    config: &LinkConfig,
    role: Role,
) -> Result<String, LinkError> {
    establish_link(router, link, config, role, None)
        .await
        .map(|link| link.peer().to_owned())
}

/// [`establish`], returning the link itself; `child_of` marks the link to a
/// child process hosting that module.
pub(crate) async fn establish_link(
    router: Arc<Router>,
    link: Box<dyn Link>,
    config: &LinkConfig,
    role: Role,
    child_of: Option<Arc<str>>,
) -> Result<Arc<LinkHandle>, LinkError> {
    let describe = link.peer();
    let mut link = link;
    // One deadline covers the transport's own handshake (TLS) and ours.
    let deadline = tokio::time::Instant::now() + config.handshake_timeout;
    let failed = |source| LinkError::Handshake {
        peer: describe.clone(),
        source,
    };
    match tokio::time::timeout_at(deadline, link.open()).await {
        Err(_) => return Err(failed(HandshakeError::Timeout(config.handshake_timeout))),
        Ok(Err(error)) => return Err(LinkError::Transport(error)),
        Ok(Ok(())) => {}
    }
    let (read, mut write) = link.split();
    let window = u32::try_from(config.queue_frames).unwrap_or(u32::MAX).max(1);
    let ours = Hello {
        window: Some(window),
        max_frame: Some(u32::try_from(config.max_frame_len).unwrap_or(u32::MAX)),
        ..Hello::with_codecs(router.node(), &config.codecs)
    };
    let handshake = match &config.token {
        None => Handshake::new(ours),
        Some(token) => Handshake::authenticated(ours, role, token.clone(), fresh_nonce()),
    };
    let (agreed, reader) = handshake::run(read, &mut write, handshake, deadline, config.handshake_timeout)
        .await
        .map_err(failed)?;
    let authenticated = agreed.authenticated;
    let theirs = agreed.peer;
    // Frames are read up to our maximum and sent up to the peer's, if it
    // said it reads fewer: a message too large for it is refused where it
    // is sent, rather than closing the link when it arrives.
    let reader = reader.map_decoder(|_| IncomingCodec::new(WireCodec::new(agreed.codec, config.max_frame_len)));
    let send_limit = theirs
        .max_frame
        .map_or(config.max_frame_len, |theirs| config.max_frame_len.min(theirs as usize));
    let codec = WireCodec::new(agreed.codec, send_limit);

    let (drains, started) = mpsc::unbounded_channel();
    // Towards a peer that credits, send at most its window; towards one that
    // does not, at most our own queue.
    let send_window = theirs.window.map_or(config.queue_frames, |w| w as usize).max(1);
    let handle = Arc::new(LinkHandle {
        peer: theirs.node.clone(),
        describe,
        outbox: writer::Outbox::new(write),
        permits: Semaphore::new(send_window),
        codec,
        next_id: AtomicU64::new(1),
        pending: Mutex::default(),
        asks_ended: AtomicBool::new(false),
        deadlines: deadlines::Deadlines::new(),
        inbound: Mutex::default(),
        caller_calls: Mutex::default(),
        remote: RwLock::default(),
        closed: CancellationToken::new(),
        child_of,
        accepted: role == Role::Accepting,
        peer_credits: theirs.window.is_some(),
        inflow: Inflow {
            window,
            owed: AtomicU32::new(0),
            parked: Mutex::default(),
            parked_total: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
            drains,
        },
        close_reason: Mutex::default(),
        closing: AtomicBool::new(false),
        broken: AtomicBool::new(false),
        last_announce: Mutex::default(),
        announce_parts: Mutex::default(),
        counters: Counters::default(),
    });
    router.add_link(handle.clone()).map_err(LinkError::Duplicate)?;
    tracing::info!(node = router.node(), peer = %handle.peer, via = %handle.describe, codec = %handle.codec(), authenticated, "link up");

    // Beside the modules on this thread, in the thread's own task set (an
    // arbiter's): a frame read for one of them, its reply and the write of
    // that reply all run in one turn of the thread, with no look at the
    // operating system in between.
    tokio::task::spawn_local(writer::write_loop(handle.clone()));
    tokio::task::spawn_local(flow::drainer(router.clone(), handle.clone(), started));
    tokio::task::spawn_local(deadlines::keep(handle.clone()));
    tokio::task::spawn_local(reader::read_loop(router, handle.clone(), reader, config.liveness));
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::IdHasher;

    #[test]
    fn consecutive_ids_hash_to_distinct_buckets_and_varied_control_bits() {
        let hash = |id: u64| BuildHasherDefault::<IdHasher>::default().hash_one(id);
        // A table of 1024 buckets indexes by the low 10 bits; a lookup
        // compares the top 7.
        let buckets: std::collections::HashSet<u64> = (0..1024).map(|id| hash(id) & 1023).collect();
        assert_eq!(buckets.len(), 1024, "every id a bucket of its own");
        let controls: std::collections::HashSet<u64> = (0..1024).map(|id| hash(id) >> 57).collect();
        assert!(controls.len() > 100, "only {} of 128 control values", controls.len());
        // Caller messages: the same ask, consecutive numbers.
        let calls: std::collections::HashSet<u64> = (0..64u32)
            .map(|call| BuildHasherDefault::<IdHasher>::default().hash_one((7u64, call)) & 63)
            .collect();
        assert_eq!(calls.len(), 64);
    }
}
