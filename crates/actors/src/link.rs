//! A link to another node: the handshake, the reader that dispatches frames
//! into the router, and the writer that batches queued frames into few
//! system calls.
//!
//! Frames are encoded by whoever sends them (on their own thread); the writer
//! task only concatenates the bytes queued since its last write and writes
//! them at once. One queue keeps every frame in FIFO order; data frames
//! (tells, asks, publishes) hold a permit from a bounded pool until written,
//! so a slow peer makes senders wait instead of growing a queue without bound.
//! Control frames (replies, progress, cancels, announcements) take no permit:
//! they are bounded by the asks in flight, and a callee must never block on
//! answering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use botbus_core::handshake::{check_hello, HelloCodec};
use botbus_core::liveness::{LivenessAction, LivenessState};
use botbus_core::{
    AskEnvelope, AskError, CallerSink, CancelHook, CodecKind, Envelope, EnvelopeKind, Frame, FrameError,
    HandshakeError, Hello, Link, LinkWriter, Liveness, Payload, SendError, TopicPattern, TryDeliverError, WireCodec,
    WirePayload,
};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::router::{remaining_ms, Router};

/// Bytes the writer gathers before it writes.
const COALESCE_BYTES: usize = 256 * 1024;
/// Frames at least this large are written without being gathered.
const DIRECT_WRITE_BYTES: usize = 16 * 1024;
/// The block frames are encoded into, a slice each.
const ARENA_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where this thread encodes frames (see [`LinkHandle::encode`]).
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
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
    /// Tells, asks and publishes received.
    pub data_in: u64,
    /// Tells, asks and publishes sent.
    pub data_out: u64,
}

/// The counters behind [`LinkStats`]: one relaxed add per frame.
#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    data_in: AtomicU64,
    data_out: AtomicU64,
}

/// How links of a node behave.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The largest frame body accepted or sent.
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
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_frame_len: botbus_core::DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(5),
            queue_frames: 4096,
            codecs: CodecKind::PREFERENCE.to_vec(),
            liveness: Liveness::default(),
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
    /// The peer has this node's own name.
    #[error("peer {0} uses this node's own name")]
    SameName(String),
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
}

enum Outgoing {
    Frame {
        bytes: Bytes,
        _permit: Option<OwnedSemaphorePermit>,
    },
    Close,
}

/// Where a caller's answer to a callee's mid-request message goes.
type AnswerSender = oneshot::Sender<Result<Payload, AskError>>;

struct PendingAsk {
    caller: Box<dyn CallerSink>,
    callee: String,
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
}

/// An ask received over the link and still being handled here (or passed
/// on: then the hook cancels it where it went).
struct InboundAsk {
    cancel: CancellationToken,
    forwarded: Option<CancelHook>,
}

/// Flow control of the frames a peer sends: data frames for a module whose
/// mailbox is full wait here, in order, while the reader goes on reading —
/// replies, cancels and frames for other modules are never stuck behind a
/// busy module. The peer may have at most `window` data frames not yet
/// credited back; a peer that ignores the window finds the reader waiting
/// again once that many are parked, so memory stays bounded either way.
struct Inflow {
    window: u32,
    /// Data frames taken since the last credit.
    owed: AtomicU32,
    /// Per module, in order: each frame, and whether it is credited when handed on.
    parked: Mutex<HashMap<String, std::collections::VecDeque<Parked>>>,
    parked_total: AtomicUsize,
    /// Signalled whenever a parked frame has been handed on.
    room: tokio::sync::Notify,
}

/// The router's handle on one link.
pub(crate) struct LinkHandle {
    peer: String,
    describe: String,
    out: mpsc::UnboundedSender<Outgoing>,
    permits: Arc<Semaphore>,
    codec: WireCodec,
    next_id: AtomicU64,
    /// Asks this node sent over the link, by id.
    pending: Mutex<HashMap<u64, PendingAsk>>,
    /// Asks received over the link and still being handled here.
    inbound: Mutex<HashMap<u64, InboundAsk>>,
    /// Caller messages sent by callees here, awaiting the remote caller.
    caller_calls: Mutex<HashMap<(u64, u32), AnswerSender>>,
    remote: RwLock<RemoteState>,
    closed: CancellationToken,
    /// Set when this is the link to a child process hosting that module.
    child_of: Option<Arc<str>>,
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
    last_announce: Mutex<Option<Frame>>,
    counters: Counters,
}

impl LinkHandle {
    /// A payload as it crosses this link, in its codec.
    pub(crate) fn wire(&self, payload: &Payload) -> Result<WirePayload, SendError> {
        Ok(WirePayload {
            name: payload.name().to_owned(),
            body: payload
                .encoded(self.codec.kind())
                .map_err(|e| SendError::Encode(e.to_string()))?,
        })
    }

    fn unwire(&self, payload: WirePayload) -> Payload {
        match self.codec.kind() {
            CodecKind::Postcard => Payload::from_encoded(payload.name, payload.body),
            CodecKind::Json => Payload::from_json(payload.name, payload.body),
        }
    }

    /// The module this link's child process hosts, if it is a child's link.
    pub(crate) fn child_of(&self) -> Option<&str> {
        self.child_of.as_deref()
    }

    /// `frames` data frames were taken off the link: credit the peer once a
    /// quarter of its window has gathered, or sooner with the next frame
    /// written anyway. That is enough for progress: a peer that has used its
    /// whole window is owed at least a quarter of it once the parked frames
    /// drain.
    fn credit(&self, frames: u32) {
        let owed = self.inflow.owed.fetch_add(frames, Ordering::AcqRel) + frames;
        if owed >= (self.inflow.window / 4).max(1) {
            self.flush_credit();
        }
    }

    /// Credits the peer with every data frame taken so far.
    fn flush_credit(&self) {
        let frames = self.inflow.owed.swap(0, Ordering::AcqRel);
        if frames > 0 {
            self.send_control(&Frame::Credit { frames });
        }
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

    /// Sends `announcement` unless it is what the peer was told last.
    pub(crate) fn announce(&self, announcement: Frame) {
        let mut last = self.last_announce.lock().expect("link lock");
        if last.as_ref() != Some(&announcement) {
            self.send_control(&announcement);
            *last = Some(announcement);
        }
    }

    /// An ask received over this link was passed on; `hook` cancels it
    /// there. If it was cancelled (or answered) meanwhile, that happens now.
    fn forwarded(&self, id: u64, hook: CancelHook) {
        let mut inbound = self.inbound.lock().expect("link lock");
        match inbound.get_mut(&id) {
            Some(ask) if !ask.cancel.is_cancelled() => ask.forwarded = Some(hook),
            _ => {
                drop(inbound);
                hook();
            }
        }
    }

    /// Whether the peer has announced what lives behind it.
    pub(crate) fn announced(&self) -> bool {
        self.remote.read().expect("link lock").announced
    }

    /// Encodes a frame into the sending thread's arena and hands back its
    /// bytes: small frames share one allocation per 64 KiB instead of one
    /// each, and no lock is taken (every link on a thread shares its arena).
    fn encode(&self, frame: &Frame) -> Result<Bytes, FrameError> {
        ARENA.with_borrow_mut(|arena| {
            if arena.capacity() - arena.len() < 4096 {
                arena.reserve(ARENA_BYTES);
            }
            self.codec.clone().encode(frame, arena)?;
            Ok(arena.split().freeze())
        })
    }

    /// What crossed the link so far.
    pub(crate) fn stats(&self) -> LinkStats {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LinkStats {
            peer: self.peer.clone(),
            frames_in: count(&self.counters.frames_in),
            frames_out: count(&self.counters.frames_out),
            data_in: count(&self.counters.data_in),
            data_out: count(&self.counters.data_out),
        }
    }

    /// Queues encoded control bytes: never waits.
    fn send_bytes(&self, bytes: Bytes) {
        self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        let _ = self.out.send(Outgoing::Frame { bytes, _permit: None });
    }

    /// Queues a control frame: never waits.
    pub(crate) fn send_control(&self, frame: &Frame) {
        match self.encode(frame) {
            Ok(bytes) => self.send_bytes(bytes),
            Err(error) => tracing::warn!(peer = %self.peer, %error, "dropping a control frame that cannot be encoded"),
        }
    }

    fn queue(&self, frame: &Frame, permit: OwnedSemaphorePermit) -> Result<(), SendError> {
        let bytes = self.encode(frame).map_err(|e| SendError::Encode(e.to_string()))?;
        self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        self.counters.data_out.fetch_add(1, Ordering::Relaxed);
        self.out
            .send(Outgoing::Frame {
                bytes,
                _permit: Some(permit),
            })
            .map_err(|_| SendError::Stopped(format!("link to `{}`", self.peer)))
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, SendError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendError::Stopped(format!("link to `{}`", self.peer)))
    }

    /// Queues a data frame, waiting for room.
    pub(crate) async fn send_data(&self, frame: &Frame) -> Result<(), SendError> {
        let permit = self.permit().await?;
        self.queue(frame, permit)
    }

    pub(crate) fn try_send_envelope(
        self: &Arc<Self>,
        module: String,
        envelope: Envelope,
    ) -> Result<Option<CancelHook>, TryDeliverError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => self
                .push_envelope(module, envelope, permit)
                .map_err(TryDeliverError::Failed),
            Err(TryAcquireError::NoPermits) => Err(TryDeliverError::Full(Box::new(envelope))),
            Err(TryAcquireError::Closed) => Err(TryDeliverError::Failed(SendError::Stopped(module))),
        }
    }

    pub(crate) async fn send_envelope(
        self: &Arc<Self>,
        module: String,
        envelope: Envelope,
    ) -> Result<Option<CancelHook>, SendError> {
        let permit = self.permit().await?;
        self.push_envelope(module, envelope, permit)
    }

    fn push_envelope(
        self: &Arc<Self>,
        module: String,
        envelope: Envelope,
        permit: OwnedSemaphorePermit,
    ) -> Result<Option<CancelHook>, SendError> {
        let payload = match self.wire(&envelope.payload) {
            Ok(payload) => payload,
            Err(error) => {
                // An ask passed on from elsewhere hears why, not just `Stopped`.
                if let EnvelopeKind::Ask(ask) = envelope.kind {
                    ask.caller.reply(Err(AskError::BadPayload(error.to_string())));
                }
                return Err(error);
            }
        };
        let from = envelope.from.to_string();
        match envelope.kind {
            EnvelopeKind::Tell => {
                self.queue(
                    &Frame::Tell {
                        to: module,
                        from,
                        payload,
                    },
                    permit,
                )?;
                Ok(None)
            }
            EnvelopeKind::Publish { topic } => {
                // A publish handed to one module behind this link: for the
                // peer itself (publishes to many go by `Router::publish`).
                let frame = Frame::Publish {
                    topic: topic.to_string(),
                    from,
                    payload,
                    to: vec![self.peer.clone()],
                };
                self.queue(&frame, permit)?;
                Ok(None)
            }
            EnvelopeKind::Ask(ask) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = Frame::Ask {
                    id,
                    to: module.clone(),
                    from,
                    timeout_ms: remaining_ms(ask.deadline),
                    payload,
                };
                // Errors name the module, not the route it took.
                let callee = botbus_core::address::split(&module).1.to_owned();
                self.pending.lock().expect("link lock").insert(
                    id,
                    PendingAsk {
                        caller: ask.caller,
                        callee,
                    },
                );
                if let Err(error) = self.queue(&frame, permit) {
                    if let Some(pending) = self.pending.lock().expect("link lock").remove(&id) {
                        pending.caller.reply(Err(AskError::BadPayload(error.to_string())));
                    }
                    return Err(error);
                }
                let link = Arc::downgrade(self);
                Ok(Some(Box::new(move || cancel_ask(&link, id))))
            }
        }
    }

    /// The link is gone: end everything that waits on it.
    pub(crate) fn fail_all(&self, reason: &str) {
        self.close_reason
            .lock()
            .expect("link lock")
            .get_or_insert_with(|| reason.to_owned());
        self.closed.cancel();
        self.permits.close();
        let pending: Vec<PendingAsk> = self
            .pending
            .lock()
            .expect("link lock")
            .drain()
            .map(|(_, p)| p)
            .collect();
        for ask in pending {
            let error = if self.child_of.is_some() {
                // A child's link closes when its process ends: the module
                // stopped, as it would have in-process.
                AskError::Stopped(ask.callee.clone())
            } else {
                AskError::Unreachable {
                    module: ask.callee.clone(),
                    reason: format!("link to `{}` closed: {reason}", self.peer),
                }
            };
            ask.caller.reply(Err(error));
        }
        let inbound: Vec<InboundAsk> = self
            .inbound
            .lock()
            .expect("link lock")
            .drain()
            .map(|(_, a)| a)
            .collect();
        for ask in inbound {
            ask.cancel.cancel();
            if let Some(hook) = ask.forwarded {
                hook();
            }
        }
        for (_, answer) in self.caller_calls.lock().expect("link lock").drain() {
            let _ = answer.send(Err(AskError::Unreachable {
                module: "caller".to_owned(),
                reason: format!("link to `{}` closed: {reason}", self.peer),
            }));
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
        let _ = self.out.send(Outgoing::Close);
    }
}

fn cancel_ask(link: &Weak<LinkHandle>, id: u64) {
    if let Some(link) = link.upgrade() {
        if link.pending.lock().expect("link lock").remove(&id).is_some() {
            link.send_control(&Frame::Cancel { id });
        }
    }
}

/// The remote asker of an ask being handled here.
struct LinkCaller {
    link: Arc<LinkHandle>,
    id: u64,
    callee: String,
    next_call: AtomicU32,
    replied: bool,
}

impl LinkCaller {
    fn send_reply(&mut self, result: Result<Payload, AskError>) {
        self.replied = true;
        self.link.inbound.lock().expect("link lock").remove(&self.id);
        let result = result.and_then(|p| self.link.wire(&p).map_err(|e| AskError::BadPayload(e.to_string())));
        let reply = Frame::Reply { id: self.id, result };
        match self.link.encode(&reply) {
            Ok(bytes) => self.link.send_bytes(bytes),
            // Too large for the link, say: the asker still gets an answer.
            Err(error) => self.link.send_control(&Frame::Reply {
                id: self.id,
                result: Err(AskError::BadPayload(format!(
                    "the reply of `{}` cannot be sent: {error}",
                    self.callee
                ))),
            }),
        }
    }
}

impl CallerSink for LinkCaller {
    fn progress(&self, payload: Payload) {
        match self.link.wire(&payload) {
            Ok(payload) => self.link.send_control(&Frame::Progress { id: self.id, payload }),
            Err(error) => tracing::warn!(%error, "dropping a progress update that cannot be encoded"),
        }
    }

    fn caller_ask(&self, payload: Payload) -> BoxFuture<'static, Result<Payload, AskError>> {
        let payload = match self.link.wire(&payload) {
            Ok(payload) => payload,
            Err(error) => {
                let error = AskError::BadPayload(error.to_string());
                return Box::pin(async move { Err(error) });
            }
        };
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.link
            .caller_calls
            .lock()
            .expect("link lock")
            .insert((self.id, call), answer);
        self.link.send_control(&Frame::CallerAsk {
            id: self.id,
            call,
            payload,
        });
        let peer = self.link.peer.clone();
        Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                Err(AskError::Unreachable {
                    module: "caller".to_owned(),
                    reason: format!("link to `{peer}` closed"),
                })
            })
        })
    }

    fn reply(mut self: Box<Self>, result: Result<Payload, AskError>) {
        self.send_reply(result);
    }
}

impl Drop for LinkCaller {
    fn drop(&mut self) {
        if !self.replied {
            let error = AskError::Stopped(self.callee.clone());
            self.send_reply(Err(error));
        }
    }
}

/// Runs the handshake on a fresh link, registers it with the router and
/// spawns its reader and writer on the current runtime. Returns the peer's
/// node name once the link is up.
pub(crate) async fn establish(
    router: Arc<Router>,
    link: Box<dyn Link>,
    config: &LinkConfig,
) -> Result<String, LinkError> {
    establish_link(router, link, config, None)
        .await
        .map(|link| link.peer().to_owned())
}

/// [`establish`], returning the link itself; `child_of` marks the link to a
/// child process hosting that module.
pub(crate) async fn establish_link(
    router: Arc<Router>,
    link: Box<dyn Link>,
    config: &LinkConfig,
    child_of: Option<Arc<str>>,
) -> Result<Arc<LinkHandle>, LinkError> {
    let describe = link.peer();
    let handshake_error = |source| LinkError::Handshake {
        peer: describe.clone(),
        source,
    };
    let (read, mut write) = link.split();
    let window = u32::try_from(config.queue_frames).unwrap_or(u32::MAX).max(1);
    let ours = Hello {
        window: Some(window),
        ..Hello::with_codecs(router.node(), &config.codecs)
    };
    let sent: std::io::Result<()> = async {
        write.write_all(&ours.to_line()).await?;
        write.flush().await
    }
    .await;
    sent.map_err(|e| handshake_error(e.into()))?;

    let mut reader = FramedRead::new(read, HelloCodec::default());
    let theirs = match tokio::time::timeout(config.handshake_timeout, reader.next()).await {
        Err(_) => return Err(handshake_error(HandshakeError::Timeout(config.handshake_timeout))),
        Ok(None) => return Err(handshake_error(HandshakeError::Closed)),
        Ok(Some(Err(error))) => return Err(handshake_error(error)),
        Ok(Some(Ok(theirs))) => theirs,
    };
    let codec = check_hello(&ours, &theirs).map_err(handshake_error)?;
    if theirs.node == router.node() {
        return Err(LinkError::SameName(describe));
    }
    let codec = WireCodec::new(codec, config.max_frame_len);
    let reader = reader.map_decoder(|_| codec.clone());

    let (out, queued) = mpsc::unbounded_channel();
    // Towards a peer that credits, send at most its window; towards one that
    // does not, at most our own queue.
    let send_window = theirs.window.map_or(config.queue_frames, |w| w as usize).max(1);
    let handle = Arc::new(LinkHandle {
        peer: theirs.node.clone(),
        describe,
        out,
        permits: Arc::new(Semaphore::new(send_window)),
        codec,
        next_id: AtomicU64::new(1),
        pending: Mutex::default(),
        inbound: Mutex::default(),
        caller_calls: Mutex::default(),
        remote: RwLock::default(),
        closed: CancellationToken::new(),
        child_of,
        peer_credits: theirs.window.is_some(),
        inflow: Inflow {
            window,
            owed: AtomicU32::new(0),
            parked: Mutex::default(),
            parked_total: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
        },
        close_reason: Mutex::default(),
        closing: AtomicBool::new(false),
        broken: AtomicBool::new(false),
        last_announce: Mutex::default(),
        counters: Counters::default(),
    });
    router.add_link(handle.clone()).map_err(LinkError::Duplicate)?;
    tracing::info!(node = router.node(), peer = %handle.peer, via = %handle.describe, codec = %handle.codec(), "link up");

    tokio::spawn(write_loop(write, queued, handle.clone()));
    tokio::spawn(read_loop(router, handle.clone(), reader, config.liveness));
    Ok(handle)
}

async fn write_loop(mut write: LinkWriter, mut queued: mpsc::UnboundedReceiver<Outgoing>, link: Arc<LinkHandle>) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    let mut held: Vec<Outgoing> = Vec::new();
    let result: std::io::Result<()> = async {
        loop {
            let first = tokio::select! {
                () = link.closed.cancelled() => return Ok(()),
                next = queued.recv() => next,
            };
            let mut closing = false;
            let mut next = first;
            // Gather everything queued since the last write into one write.
            while let Some(outgoing) = next.take() {
                match &outgoing {
                    // A large frame is written from where it lies, after
                    // what was gathered before it: copying it costs more
                    // than the extra write.
                    Outgoing::Frame { bytes, .. } if bytes.len() >= DIRECT_WRITE_BYTES => {
                        if !batch.is_empty() {
                            write.write_all(&batch).await?;
                            batch.clear();
                        }
                        write.write_all(bytes).await?;
                    }
                    Outgoing::Frame { bytes, .. } => batch.extend_from_slice(bytes),
                    Outgoing::Close => closing = true,
                }
                held.push(outgoing);
                if closing || batch.len() >= COALESCE_BYTES {
                    break;
                }
                next = queued.try_recv().ok();
            }
            // Credit owed to the peer rides along with whatever is written.
            let owed = link.inflow.owed.swap(0, Ordering::AcqRel);
            if owed > 0 {
                if let Ok(credit) = link.encode(&Frame::Credit { frames: owed }) {
                    batch.extend_from_slice(&credit);
                }
            }
            if !batch.is_empty() {
                write.write_all(&batch).await?;
                batch.clear();
            }
            write.flush().await?;
            for outgoing in held.drain(..) {
                // Written: the permit comes back now, or with the peer's credit.
                if let Outgoing::Frame {
                    _permit: Some(permit), ..
                } = outgoing
                {
                    if link.peer_credits {
                        permit.forget();
                    }
                }
            }
            if closing {
                return write.shutdown().await;
            }
        }
    }
    .await;
    let reason = match result {
        Err(error) => {
            tracing::debug!(peer = %link.peer, %error, "link writer stopped");
            format!("writing to the peer failed: {error}")
        }
        Ok(()) => "closed by this node".to_owned(),
    };
    link.close_reason.lock().expect("link lock").get_or_insert(reason);
    link.closed.cancel();
}

async fn read_loop(
    router: Arc<Router>,
    link: Arc<LinkHandle>,
    mut reader: FramedRead<botbus_core::LinkReader, WireCodec>,
    liveness: Liveness,
) {
    let mut alive = LivenessState::new(liveness, std::time::Instant::now());
    // Frames are counted, not timed: the timer looks at the count when it
    // fires, so a busy link pays one increment per frame for its liveness.
    let (mut frames, mut frames_checked) = (0u64, 0u64);
    let check = tokio::time::sleep(liveness.ping_after);
    tokio::pin!(check);
    let reason = loop {
        // The reader first: while frames are buffered, the close signal
        // (a lock inside the token) and the timer are not polled at all.
        let next = tokio::select! {
            biased;
            next = reader.next() => next,
            () = link.closed.cancelled() => break "closed by this node".to_owned(),
            () = &mut check => {
                let now = std::time::Instant::now();
                if frames != frames_checked {
                    frames_checked = frames;
                    alive.heard(now);
                }
                let next = match alive.poll(now) {
                    LivenessAction::Wait(next) => next,
                    LivenessAction::Ping { nonce, next } => {
                        link.send_control(&Frame::Ping { nonce });
                        next
                    }
                    LivenessAction::Down { silent_for } => {
                        tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, ?silent_for, "peer silent: closing the link");
                        link.broken.store(true, Ordering::Release);
                        break format!(
                            "peer silent for {silent_for:.1?}: no whole frame arrived, not even a pong (liveness: ping after {:?}, down after {:?})",
                            liveness.ping_after, liveness.down_after
                        );
                    }
                };
                check.as_mut().reset(tokio::time::Instant::from_std(next));
                continue;
            }
        };
        frames += 1;
        link.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        match next {
            None => break "peer closed the link".to_owned(),
            Some(Err(error)) => {
                tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, %error, "bad input: closing the link");
                link.broken.store(true, Ordering::Release);
                break format!("bad input from peer: {error}");
            }
            Some(Ok(Frame::Bye { reason })) => break format!("peer said goodbye: {reason}"),
            Some(Ok(frame)) => dispatch(&router, &link, frame).await,
        }
    };
    tracing::info!(node = router.node(), peer = %link.peer, %reason, "link down");
    router.remove_link(&link, &reason);
}

async fn dispatch(router: &Arc<Router>, link: &Arc<LinkHandle>, frame: Frame) {
    if let Frame::Tell { .. } | Frame::Ask { .. } | Frame::Publish { .. } = frame {
        link.counters.data_in.fetch_add(1, Ordering::Relaxed);
    }
    match frame {
        Frame::Tell { to, from, payload } => {
            let envelope = Envelope {
                from: from.into(),
                payload: link.unwire(payload),
                kind: EnvelopeKind::Tell,
            };
            take_data(router, link, to, envelope, None).await;
        }
        Frame::Ask {
            id,
            to,
            from,
            timeout_ms,
            payload,
        } => {
            if !router.routable(&to) {
                link.send_control(&Frame::Reply {
                    id,
                    result: Err(AskError::UnknownModule(to)),
                });
                return;
            }
            let cancel = CancellationToken::new();
            link.inbound.lock().expect("link lock").insert(
                id,
                InboundAsk {
                    cancel: cancel.clone(),
                    forwarded: None,
                },
            );
            let caller = LinkCaller {
                link: link.clone(),
                id,
                callee: to.clone(),
                next_call: AtomicU32::new(0),
                replied: false,
            };
            let envelope = Envelope {
                from: from.into(),
                payload: link.unwire(payload),
                kind: EnvelopeKind::Ask(AskEnvelope {
                    caller: Box::new(caller),
                    cancel,
                    deadline: Instant::now() + Duration::from_millis(timeout_ms),
                }),
            };
            take_data(router, link, to, envelope, Some(id)).await;
        }
        Frame::Reply { id, result } => {
            let pending = link.pending.lock().expect("link lock").remove(&id);
            if let Some(pending) = pending {
                pending.caller.reply(result.map(|p| link.unwire(p)));
            }
        }
        Frame::Progress { id, payload } => {
            if let Some(pending) = link.pending.lock().expect("link lock").get(&id) {
                pending.caller.progress(link.unwire(payload));
            }
        }
        Frame::CallerAsk { id, call, payload } => {
            let answer = link
                .pending
                .lock()
                .expect("link lock")
                .get(&id)
                .map(|p| p.caller.caller_ask(link.unwire(payload)));
            let link = link.clone();
            match answer {
                None => link.send_control(&Frame::CallerReply {
                    id,
                    call,
                    result: Err(AskError::Cancelled(link.peer.clone())),
                }),
                Some(answer) => {
                    tokio::spawn(async move {
                        let result = answer
                            .await
                            .and_then(|p| link.wire(&p).map_err(|e| AskError::BadPayload(e.to_string())));
                        link.send_control(&Frame::CallerReply { id, call, result });
                    });
                }
            }
        }
        Frame::CallerReply { id, call, result } => {
            let answer = link.caller_calls.lock().expect("link lock").remove(&(id, call));
            if let Some(answer) = answer {
                let _ = answer.send(result.map(|p| link.unwire(p)));
            }
        }
        Frame::Cancel { id } => {
            let ask = link.inbound.lock().expect("link lock").remove(&id);
            if let Some(ask) = ask {
                ask.cancel.cancel();
                if let Some(hook) = ask.forwarded {
                    hook();
                }
            }
        }
        Frame::Publish {
            topic,
            from,
            payload,
            to,
        } => {
            let (here, onward) = router.inbound_publish(link, &topic, &to);
            let (from, topic, payload) = (Arc::<str>::from(from), Arc::<str>::from(topic), link.unwire(payload));
            if here {
                for module in router.local_subscriber_names(&topic) {
                    let envelope = Envelope {
                        from: from.clone(),
                        payload: payload.clone(),
                        kind: EnvelopeKind::Publish { topic: topic.clone() },
                    };
                    let owed = Owed {
                        credit: false,
                        ask: None,
                    };
                    park_or_deliver(router, link, module.to_string(), envelope, owed).await;
                }
            }
            if !onward.is_empty() {
                router.forward_publish(&topic, &from, &payload, onward).await;
            }
            link.credit(1);
        }
        Frame::Subscribe { pattern } => match TopicPattern::parse(&pattern) {
            Ok(pattern) => {
                let mut remote = link.remote.write().expect("link lock");
                if !remote.subscriptions.contains(&pattern) {
                    remote.subscriptions.push(pattern);
                }
                drop(remote);
                router.refresh();
            }
            Err(error) => tracing::warn!(peer = %link.peer, %error, "ignoring a bad subscription"),
        },
        Frame::Unsubscribe { pattern } => {
            link.remote
                .write()
                .expect("link lock")
                .subscriptions
                .retain(|p| p.as_str() != pattern);
            router.refresh();
        }
        Frame::Announce {
            modules,
            subscriptions,
            reach,
        } => {
            let patterns = |patterns: Vec<String>| -> Vec<TopicPattern> {
                patterns
                    .iter()
                    .filter_map(|p| match TopicPattern::parse(p) {
                        Ok(p) => Some(p),
                        Err(error) => {
                            tracing::warn!(peer = %link.peer, %error, "ignoring a bad subscription");
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
                })
                .collect();
            *link.remote.write().expect("link lock") = RemoteState {
                announced: true,
                modules,
                subscriptions: patterns(subscriptions),
                reach,
            };
            router.refresh();
        }
        Frame::Down { module, reason } => router.remote_down(link, &module, reason),
        Frame::Ping { nonce } => link.send_control(&Frame::Pong { nonce }),
        Frame::Pong { .. } => {}
        Frame::Credit { frames } => {
            if link.peer_credits {
                link.permits.add_permits(frames as usize);
            }
        }
        Frame::Bye { .. } => unreachable!("handled by the read loop"),
    }
}

/// What is owed for a data frame once it is handed on.
#[derive(Debug, Clone, Copy)]
struct Owed {
    /// Credit the peer one frame (tells, asks and publishes are credited
    /// once; a publish's copies for local subscribers are not).
    credit: bool,
    /// The ask's id on this link, if it is an ask: if it is passed on to
    /// another link, the hook that cancels it there is filed under it.
    ask: Option<u64>,
}

/// A data frame parked while its target is busy.
struct Parked {
    envelope: Envelope,
    owed: Owed,
}

/// A tell or ask for `to` arrived: hand it on, or park it behind its busy
/// target. The peer is credited once it is handed on.
async fn take_data(router: &Arc<Router>, link: &Arc<LinkHandle>, to: String, envelope: Envelope, ask: Option<u64>) {
    park_or_deliver(router, link, to, envelope, Owed { credit: true, ask }).await;
}

/// Settles what is owed for a frame handed on (or dropped).
fn handed_on(link: &LinkHandle, owed: Owed, outcome: Result<Option<CancelHook>, SendError>) {
    match outcome {
        Ok(Some(hook)) => match owed.ask {
            Some(id) => link.forwarded(id, hook),
            None => drop(hook),
        },
        Ok(None) => {}
        Err(error) => tracing::warn!(peer = %link.peer, %error, "dropping a frame from the link"),
    }
    if owed.credit {
        link.credit(1);
    }
}

/// Hands `envelope` on to `to` — a module here, a child, or the next link
/// towards another node — without waiting if it can; if `to` is busy (or
/// frames for it are already waiting), parks it in order and lets a drain
/// task wait for room. Past the window, waits here. A frame that cannot be
/// handed on is dropped (an ask in it ends `Stopped`).
async fn park_or_deliver(router: &Arc<Router>, link: &Arc<LinkHandle>, to: String, envelope: Envelope, owed: Owed) {
    let inflow = &link.inflow;
    let mut envelope = Some(envelope);
    // Nothing parked anywhere (the usual case): no lock to take.
    while inflow.parked_total.load(Ordering::Acquire) > 0 {
        let room = inflow.room.notified();
        {
            let mut waiting = inflow.parked.lock().expect("link lock");
            let Some(queue) = waiting.get_mut(&to) else {
                break; // nothing waits for this target: try to hand it on now
            };
            if inflow.parked_total.load(Ordering::Acquire) < inflow.window as usize {
                let envelope = envelope.take().expect("not parked yet");
                queue.push_back(Parked { envelope, owed });
                inflow.parked_total.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
        // Frames wait for this target, and the window is full: wait for room.
        room.await;
    }
    let envelope = envelope.expect("not parked yet");
    let envelope = match router.try_route(&to, envelope, Some(link)) {
        Ok(hook) => return handed_on(link, owed, Ok(hook)),
        Err(TryDeliverError::Failed(error)) => return handed_on(link, owed, Err(error)),
        Err(TryDeliverError::Full(envelope)) => *envelope,
    };
    if inflow.parked_total.load(Ordering::Acquire) >= inflow.window as usize {
        // The peer sends past its window: hold the whole link until there is room.
        let outcome = router.route(&to, envelope, Some(link)).await;
        return handed_on(link, owed, outcome);
    }
    // A queue exists exactly while its drain task runs: start one with it.
    let first = {
        let mut waiting = inflow.parked.lock().expect("link lock");
        inflow.parked_total.fetch_add(1, Ordering::AcqRel);
        match waiting.entry(to.clone()) {
            std::collections::hash_map::Entry::Occupied(mut queue) => {
                queue.get_mut().push_back(Parked { envelope, owed });
                false
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert([Parked { envelope, owed }].into());
                true
            }
        }
    };
    if first {
        tokio::spawn(drain_parked(router.clone(), link.clone(), to));
    }
}

/// Hands the frames parked for `to` on in order, waiting for room.
async fn drain_parked(router: Arc<Router>, link: Arc<LinkHandle>, to: String) {
    let inflow = &link.inflow;
    // The frame being handed on still counts as parked, and the count drops
    // under the same lock that removes an emptied queue: a count of zero
    // means no queue exists, so a frame that finds it zero may skip the lock.
    let mut next = {
        let mut waiting = inflow.parked.lock().expect("link lock");
        waiting.get_mut(&to).and_then(|queue| queue.pop_front())
    };
    while let Some(Parked { envelope, owed }) = next.take() {
        let delivered = tokio::select! {
            () = link.closed.cancelled() => None,
            delivered = router.route(&to, envelope, Some(&link)) => Some(delivered),
        };
        let mut waiting = inflow.parked.lock().expect("link lock");
        inflow.parked_total.fetch_sub(1, Ordering::AcqRel);
        match delivered {
            // The link is gone: what is parked for it goes too (asks in it end `Stopped`).
            None => {
                if let Some(dropped) = waiting.remove(&to) {
                    inflow.parked_total.fetch_sub(dropped.len(), Ordering::AcqRel);
                }
            }
            Some(outcome) => {
                handed_on(&link, owed, outcome);
                next = waiting.get_mut(&to).and_then(|queue| queue.pop_front());
                if next.is_none() {
                    waiting.remove(&to);
                }
            }
        }
        drop(waiting);
        inflow.room.notify_waiters();
    }
}
