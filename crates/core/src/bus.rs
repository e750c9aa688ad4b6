//! The seam between a module's [`Context`](crate::Context) and the runtime
//! that hosts it.
//!
//! [`Bus`] is what a runtime implements (botbus-actors' router does); an
//! [`Envelope`] is what it routes. A [`Caller`] is the asker's end of an
//! ask, as the callee sees it: an asker in this process, or a
//! [`CallerSink`] — a link back to another node. Module authors never touch
//! these directly.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::address::SenderAddress;
use crate::context::{CallEvent, CallerRequest};
use crate::error::{AskError, SendError};
use crate::message::Payload;
use crate::topic::TopicPattern;

mod local_ask;

pub(crate) use local_ask::PendingReply;
use local_ask::{LocalAsker, ReplySlot};

/// Where the askers of asks that came from elsewhere are answered: a link
/// back to another node, shared by every ask that came over it, each named
/// by its `id`. An ask holds the sink (an `Arc`), not a box of its own, so
/// taking an ask from elsewhere costs no allocation for its way back.
///
/// Every ask it was given ends through it once: with
/// [`reply`](CallerSink::reply), or with [`abandoned`](CallerSink::abandoned)
/// if its callee lets go of it unanswered, which must end the ask with
/// [`AskError::Stopped`]: that is how "the callee died" reaches the asker in
/// every placement.
pub trait CallerSink: Send + Sync {
    /// Sends a progress update to the asker of ask `id`.
    fn progress(&self, id: u64, payload: Payload);

    /// Sends a message to the asker of ask `id` mid-request and waits for
    /// its answer.
    fn caller_ask(&self, id: u64, payload: Payload) -> BoxFuture<'static, Result<Payload, AskError>>;

    /// Ends ask `id` with `result`.
    fn reply(&self, id: u64, result: Result<Payload, AskError>);

    /// Ask `id`'s callee let go of it unanswered (it stopped, or dropped
    /// the ask): it ends with [`AskError::Stopped`], naming the callee.
    fn abandoned(&self, id: u64);
}

/// An ask answered through a [`CallerSink`]: ended through it once, with a
/// reply or, when dropped unanswered, as abandoned.
struct SinkAsk {
    /// `None` once the ask has ended.
    sink: Option<Arc<dyn CallerSink>>,
    id: u64,
}

impl SinkAsk {
    fn sink(&self) -> &dyn CallerSink {
        self.sink.as_deref().expect("an ask not yet ended has its sink")
    }

    fn reply(mut self, result: Result<Payload, AskError>) {
        if let Some(sink) = self.sink.take() {
            sink.reply(self.id, result);
        }
    }
}

impl Drop for SinkAsk {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.abandoned(self.id);
        }
    }
}

/// The asker's end of an ask, held by the callee while it works: an asker
/// in this process (no allocation of its own: its reply, progress and
/// messages go back through the ask's [`CancelFlag`]), or an ask answered
/// through a [`CallerSink`] (none either: it shares the sink).
///
/// The callee takes it out of the ask's envelope
/// ([`AskEnvelope::into_caller`]). Dropping it without
/// [`reply`](Caller::reply) ends the ask with [`AskError::Stopped`].
pub struct Caller(CallerKind);

enum CallerKind {
    Local(LocalAsker),
    Sink(SinkAsk),
}

impl Caller {
    /// Whether the asker takes progress and caller messages. A caller across
    /// a link says so itself, when asked.
    pub fn listens(&self) -> bool {
        match &self.0 {
            CallerKind::Local(asker) => asker.flag().events().is_some(),
            CallerKind::Sink(_) => true,
        }
    }

    /// Sends a progress update to the asker.
    pub fn progress(&self, payload: Payload) {
        match &self.0 {
            CallerKind::Local(asker) => asker.flag().progress(payload),
            CallerKind::Sink(ask) => ask.sink().progress(ask.id, payload),
        }
    }

    /// Sends a message to the asker mid-request and waits for its answer;
    /// `callee` names the module asking, for the error if the asker does
    /// not listen.
    pub fn caller_ask(&self, payload: Payload, callee: &str) -> BoxFuture<'static, Result<Payload, AskError>> {
        match &self.0 {
            CallerKind::Local(asker) => ask_local_caller(asker.flag().events(), payload, callee),
            CallerKind::Sink(ask) => ask.sink().caller_ask(ask.id, payload),
        }
    }

    /// Ends the ask.
    pub fn reply(self, result: Result<Payload, AskError>) {
        match self.0 {
            CallerKind::Local(asker) => asker.answer(result),
            CallerKind::Sink(ask) => ask.reply(result),
        }
    }

    /// Whether the asker is in this process. Only such an ask's deadline
    /// may be kept by whoever carries it ([`CancelHook::keeping_deadline`]);
    /// an asker elsewhere keeps its own.
    pub fn is_here(&self) -> bool {
        matches!(self.0, CallerKind::Local(_))
    }

    /// Ends the ask at its deadline, kept by whoever carries it: the asker
    /// in this process hears [`AskError::Timeout`] as from a timer of its
    /// own. (An asker elsewhere keeps its own deadline: its end is only
    /// dropped, and says [`AskError::Stopped`] if it still waits.)
    pub fn time_out(self) {
        match self.0 {
            CallerKind::Local(asker) => asker.time_out(),
            CallerKind::Sink(ask) => drop(ask),
        }
    }
}

/// Sends a message to an asker in this process that listens on `events`.
fn ask_local_caller(
    events: Option<&mpsc::UnboundedSender<CallEvent>>,
    payload: Payload,
    callee: &str,
) -> BoxFuture<'static, Result<Payload, AskError>> {
    let Some(events) = events else {
        let error = AskError::CallerNotListening(callee.to_owned());
        return Box::pin(async move { Err(error) });
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let callee = callee.to_owned();
    let _ = events.send(CallEvent::Message(CallerRequest::new(payload, answer)));
    Box::pin(async move { answered.await.unwrap_or(Err(AskError::Cancelled(callee))) })
}

/// The ask-specific part of an [`Envelope`]: who asked, how they give up,
/// and until when they wait.
///
/// The deadline of an ask made in this process is fixed the first time
/// anyone needs it ([`AskEnvelope::deadline`]), and the asker and its
/// callee see the same one.
pub struct AskEnvelope {
    asker: Asker,
}

/// Who asked.
enum Asker {
    /// A module (or client) of this process: the ask's one flag is both
    /// the way back and the cancel, so the ask shares it once, not twice —
    /// two atomic operations fewer on every ask. It holds the deadline too.
    Here(LocalAsker),
    /// Anyone else — over a link, say — with a flag of its own raised
    /// when it gives up, which holds the ask's deadline too (so that an
    /// envelope stays small enough to move without a `memcpy` call).
    Elsewhere { ask: SinkAsk, cancel: CancelFlag },
}

impl AskEnvelope {
    /// Ask `id`, answered through `sink`, given up on when `cancel` is
    /// raised, and waited for until `deadline`, which `cancel` keeps: made
    /// with it ([`CancelFlag::until`]), it costs nothing more here. (A flag
    /// that keeps another deadline already keeps its own.)
    pub fn new(sink: Arc<dyn CallerSink>, id: u64, cancel: CancelFlag, deadline: Instant) -> Self {
        if cancel.0.deadline_given != Some(deadline) {
            let _ = cancel.0.deadline.set(deadline);
        }
        Self {
            asker: Asker::Elsewhere {
                ask: SinkAsk { sink: Some(sink), id },
                cancel,
            },
        }
    }

    /// A new ask made in this process, whose asker waits `timeout` for
    /// the reply, and whose callee's progress and messages go to `events`
    /// if the asker listens for them: the asker's hold on the reply, and
    /// the envelope's part for the callee. They share one flag, which
    /// carries the reply back and holds the deadline.
    pub(crate) fn here(timeout: Duration, events: Option<mpsc::UnboundedSender<CallEvent>>) -> (PendingReply, Self) {
        let (reply, asker) = local_ask::ends(timeout, events);
        (
            reply,
            Self {
                asker: Asker::Here(asker),
            },
        )
    }

    /// When the asker stops waiting.
    ///
    /// An ask made in this process reads no clock when it is sent: its
    /// deadline is its timeout from the first time anyone asks for it —
    /// the asker, when the reply is not there after its callee had a turn
    /// (or when it waits for room in a full mailbox); the link that
    /// carries the ask; the callee, here. The asker and the callee see
    /// the same deadline. An ask answered in its callee's first turn never
    /// fixes one, and costs no clock read.
    pub fn deadline(&self) -> Instant {
        match &self.asker {
            Asker::Here(asker) => asker.flag().deadline(),
            Asker::Elsewhere { cancel, .. } => cancel.deadline(),
        }
    }

    /// How long the asker still waits: its whole timeout if this fixes the
    /// deadline (see [`AskEnvelope::deadline`]), with one clock read.
    pub fn remaining(&self) -> Duration {
        match &self.asker {
            Asker::Here(asker) => asker.flag().remaining(),
            Asker::Elsewhere { cancel, .. } => cancel.deadline().saturating_duration_since(Instant::now()),
        }
    }

    /// Raised when the asker gives up.
    pub fn cancel(&self) -> &CancelFlag {
        match &self.asker {
            Asker::Here(asker) => asker.flag(),
            Asker::Elsewhere { cancel, .. } => cancel,
        }
    }

    /// Whether the asker takes progress and caller messages (see
    /// [`Caller::listens`]).
    pub fn listens(&self) -> bool {
        match &self.asker {
            Asker::Here(asker) => asker.flag().events().is_some(),
            Asker::Elsewhere { .. } => true,
        }
    }

    /// Sends a progress update to the asker, if it listens.
    pub fn progress(&self, payload: Payload) {
        match &self.asker {
            Asker::Here(asker) => asker.flag().progress(payload),
            Asker::Elsewhere { ask, .. } => ask.sink().progress(ask.id, payload),
        }
    }

    /// Sends a message to the asker mid-request and waits for its answer
    /// (see [`Caller::caller_ask`]).
    pub fn caller_ask(&self, payload: Payload, callee: &str) -> BoxFuture<'static, Result<Payload, AskError>> {
        match &self.asker {
            Asker::Here(asker) => ask_local_caller(asker.flag().events(), payload, callee),
            Asker::Elsewhere { ask, .. } => ask.sink().caller_ask(ask.id, payload),
        }
    }

    /// The asker's end, to answer with: dropping it unanswered ends the
    /// ask with [`AskError::Stopped`].
    pub fn into_caller(self) -> Caller {
        match self.asker {
            Asker::Here(asker) => Caller(CallerKind::Local(asker)),
            Asker::Elsewhere { ask, .. } => Caller(CallerKind::Sink(ask)),
        }
    }
}

/// Whether an ask was given up on: shared by the asker, which raises it,
/// and whoever works on the ask, which looks at it or waits for it.
///
/// Lighter than a general cancellation token — one allocation, and a
/// clone, a drop or a look is one atomic operation, with no lock and no
/// tree of children — because every ask makes one. For an ask within this
/// process the same allocation carries the reply back, so the ask needs
/// no channel of its own.
///
/// ```
/// # tokio_test_block_on(async {
/// use botbus_core::bus::CancelFlag;
/// let flag = CancelFlag::new();
/// let seen = flag.clone();
/// assert!(!seen.is_cancelled());
/// flag.cancel();
/// seen.cancelled().await; // at once: it is raised
/// assert!(seen.is_cancelled());
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct CancelFlag(Arc<AskShared>);

impl Default for CancelFlag {
    fn default() -> Self {
        Self::new()
    }
}

/// What the two ends of an ask share.
#[derive(Default)]
struct AskShared {
    raised: AtomicBool,
    waiters: Notify,
    /// The reply of an ask made in this process.
    reply: ReplySlot,
    /// Where the callee's progress and messages go, for an ask made in
    /// this process whose asker listens for them.
    events: Option<mpsc::UnboundedSender<CallEvent>>,
    /// How long the asker of an ask made in this process waits, and the
    /// deadline, once fixed ([`AskEnvelope::deadline`]).
    timeout: Duration,
    deadline: OnceLock<Instant>,
    /// The deadline of an ask from elsewhere, which came with it
    /// ([`CancelFlag::until`]). Written only while nobody else holds the
    /// flag: a plain field, cheaper to set than the `OnceLock`.
    deadline_given: Option<Instant>,
}

impl AskShared {
    /// The flag of a new ask made in this process, whose asker waits
    /// `timeout` and listens for the callee's `events` if it has them.
    fn here(timeout: Duration, events: Option<mpsc::UnboundedSender<CallEvent>>) -> Self {
        Self {
            events,
            timeout,
            ..Self::default()
        }
    }

    /// Makes this flag, which nobody else holds, as new (what `default`
    /// makes) in place, for [`local_ask`]'s spare flags: what it held —
    /// a reply never taken, the asker's waker, the way to its events — is
    /// dropped now. Every field is named, so that a new one cannot be
    /// forgotten here.
    fn clear(&mut self) {
        let Self {
            raised,
            waiters,
            reply,
            events,
            timeout,
            deadline,
            deadline_given,
        } = self;
        *raised.get_mut() = false;
        *waiters = Notify::new();
        reply.clear();
        *events = None;
        *timeout = Duration::ZERO;
        deadline.take();
        *deadline_given = None;
    }
}

impl CancelFlag {
    /// A flag not raised: one this thread kept from an ask that ended
    /// (see [`CancelFlag::retire`]), or a new one.
    pub fn new() -> Self {
        Self(local_ask::take_spare().unwrap_or_default())
    }

    /// A flag not raised, for an ask from elsewhere waited for until
    /// `deadline` (see [`AskEnvelope::new`]).
    pub fn until(deadline: Instant) -> Self {
        let mut shared = local_ask::take_spare().unwrap_or_default();
        Arc::get_mut(&mut shared)
            .expect("a new or spare flag is nobody else's")
            .deadline_given = Some(deadline);
        Self(shared)
    }

    /// Lets go of the flag. If nobody else holds it, it is cleared and kept
    /// for a later [`CancelFlag::new`] on this thread (a few are kept),
    /// instead of being freed: for the holder that is, as a rule, the last
    /// of an ask that ended, such as a link's table of the asks it received.
    pub fn retire(self) {
        local_ask::keep_spare(self.0);
    }

    /// How long the asker of the ask made in this process that this flag
    /// belongs to waits.
    pub(crate) fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// The deadline of the ask this flag belongs to: one made in this
    /// process has it fixed by the first call (see
    /// [`AskEnvelope::deadline`]), one from elsewhere came with it
    /// ([`AskEnvelope::new`]).
    pub(crate) fn deadline(&self) -> Instant {
        match self.0.deadline_given {
            Some(given) => given,
            None => *self.0.deadline.get_or_init(|| Instant::now() + self.0.timeout),
        }
    }

    /// How long until [`CancelFlag::deadline`]: the whole timeout if this
    /// call fixes it, without reading the clock twice.
    fn remaining(&self) -> Duration {
        if let Some(given) = self.0.deadline_given {
            return given.saturating_duration_since(Instant::now());
        }
        let mut fixed_here = false;
        let deadline = *self.0.deadline.get_or_init(|| {
            fixed_here = true;
            Instant::now() + self.0.timeout
        });
        match fixed_here {
            true => self.0.timeout,
            false => deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// Where the callee's progress and messages go, if the asker in this
    /// process listens for them.
    fn events(&self) -> Option<&mpsc::UnboundedSender<CallEvent>> {
        self.0.events.as_ref()
    }

    /// Sends a progress update to the asker in this process, if it listens.
    fn progress(&self, update: Payload) {
        if let Some(events) = self.events() {
            let _ = events.send(CallEvent::Progress(update));
        }
    }

    /// Raises the flag, waking whoever waits for it; raising it again does
    /// nothing.
    pub fn cancel(&self) {
        if !self.0.raised.swap(true, Ordering::AcqRel) {
            self.0.waiters.notify_waiters();
        }
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Completes once the flag is raised (at once if it is).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.waiters.notified();
            tokio::pin!(notified);
            // Registered before the look, so a raise between the two is
            // not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// [`CancelFlag::cancelled`], owning its flag (for a `'static` future).
    pub async fn cancelled_owned(self) {
        self.cancelled().await;
    }
}

/// How an ask made in this process ended, as its asker finds it
/// ([`PendingReply::poll`]).
pub(crate) enum Ended {
    /// The callee replied.
    Replied(Result<Payload, AskError>),
    /// The callee's end was dropped without a reply.
    Dropped,
    /// Its link ended it at its deadline.
    TimedOut,
}

impl fmt::Debug for CancelFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelFlag").field(&self.is_cancelled()).finish()
    }
}

/// What kind of delivery an [`Envelope`] is.
pub enum EnvelopeKind {
    /// A one-way message.
    Tell,
    /// A message published on `topic`.
    Publish {
        /// The topic it was published on.
        topic: Arc<str>,
    },
    /// A request that expects one reply.
    Ask(AskEnvelope),
}

/// A message on its way to a module.
pub struct Envelope {
    /// The sender, `node/module`.
    pub from: SenderAddress,
    /// The message.
    pub payload: Payload,
    /// Tell, publish or ask.
    pub kind: EnvelopeKind,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            EnvelopeKind::Tell => "tell",
            EnvelopeKind::Publish { .. } => "publish",
            EnvelopeKind::Ask(_) => "ask",
        };
        f.debug_struct("Envelope")
            .field("kind", &kind)
            .field("from", &self.from)
            .field("payload", &self.payload)
            .finish()
    }
}

/// What sent an ask across a link, as its asker's [`CancelHook`] reaches
/// it: the link, which tells the callee's node.
pub trait CancelAsk: Send + Sync {
    /// The asker gave up ask `id`: tell the callee's node, if the ask is
    /// still open.
    fn cancel_ask(&self, id: u64);
}

/// Gives up an ask that crossed a link, so the callee's node hears of it.
/// Asks within this process need none: the shared [`CancelFlag`] is
/// enough. It holds its link weakly, and no allocation of its own.
///
/// A link may also keep the ask's deadline ([`CancelHook::keeping_deadline`]):
/// it ends the ask with [`Caller::time_out`] when the deadline passes, one
/// timer for all the asks it carries, and the asker makes no timer of its
/// own.
pub struct CancelHook {
    link: Weak<dyn CancelAsk>,
    id: u64,
    keeps_deadline: bool,
}

impl CancelHook {
    /// Cancels ask `id` through `link`.
    pub fn new(link: Weak<dyn CancelAsk>, id: u64) -> Self {
        Self {
            link,
            id,
            keeps_deadline: false,
        }
    }

    /// The hook of an ask whose deadline its link keeps: the link ends it
    /// with [`Caller::time_out`] when the deadline passes.
    pub fn keeping_deadline(self) -> Self {
        Self {
            keeps_deadline: true,
            ..self
        }
    }

    /// Whether the link keeps the ask's deadline.
    pub fn keeps_deadline(&self) -> bool {
        self.keeps_deadline
    }

    /// Gives up the ask.
    pub fn cancel(self) {
        if let Some(link) = self.link.upgrade() {
            link.cancel_ask(self.id);
        }
    }
}

impl fmt::Debug for CancelHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHook")
            .field("id", &self.id)
            .field("keeps_deadline", &self.keeps_deadline)
            .finish()
    }
}

/// Why [`Bus::try_deliver`] did not deliver.
pub enum TryDeliverError {
    /// The target's mailbox (or link queue) is full: here is the envelope
    /// back (boxed: this is the slow path, and it keeps the result small).
    Full(Box<Envelope>),
    /// It cannot be delivered at all.
    Failed(SendError),
}

/// What a runtime offers to the modules it hosts.
pub trait Bus: Send + Sync + 'static {
    /// This node's name.
    fn node_name(&self) -> &str;

    /// Delivers to `to` (`module` or `node/module`) without waiting. On
    /// success returns the ask's cancel hook, if it crossed a link.
    fn try_deliver(&self, to: &str, envelope: Envelope) -> Result<Option<CancelHook>, TryDeliverError>;

    /// Delivers to `to`, waiting for room in its mailbox or link queue.
    fn deliver<'a>(&'a self, to: &'a str, envelope: Envelope) -> BoxFuture<'a, Result<Option<CancelHook>, SendError>>;

    /// Delivers `payload` to every subscriber of `topic`, here and behind
    /// links, waiting for room. Returns how many local subscribers and links
    /// it went to.
    fn publish(
        &self,
        from: SenderAddress,
        topic: Arc<str>,
        payload: Payload,
    ) -> BoxFuture<'_, Result<usize, SendError>>;

    /// Subscribes module `module` (hosted here) to `pattern`.
    fn subscribe(&self, module: &str, pattern: TopicPattern);

    /// Drops module `module`'s subscription to `pattern`.
    fn unsubscribe(&self, module: &str, pattern: &str);

    /// Tells `watcher` (hosted here) when `target` goes down.
    fn monitor(&self, watcher: &str, target: &str);
}

#[cfg(test)]
mod tests {
    use super::{AskEnvelope, CallerSink, CancelFlag};
    use crate::error::AskError;
    use crate::message::Payload;
    use futures::future::BoxFuture;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::time::Instant;

    /// A sink that notes how each ask ended.
    #[derive(Default)]
    struct Ends(Mutex<Vec<(u64, &'static str)>>);

    impl CallerSink for Ends {
        fn progress(&self, _: u64, _: Payload) {}
        fn caller_ask(&self, _: u64, _: Payload) -> BoxFuture<'static, Result<Payload, AskError>> {
            Box::pin(async { Err(AskError::CallerNotListening("test".into())) })
        }
        fn reply(&self, id: u64, _: Result<Payload, AskError>) {
            self.0.lock().unwrap().push((id, "replied"));
        }
        fn abandoned(&self, id: u64) {
            self.0.lock().unwrap().push((id, "abandoned"));
        }
    }

    #[test]
    fn an_ask_from_elsewhere_ends_through_its_sink_once_replied_or_abandoned() {
        let ends = Arc::new(Ends::default());
        let deadline = Instant::now() + Duration::from_secs(5);
        let ask = |id| AskEnvelope::new(ends.clone(), id, CancelFlag::until(deadline), deadline);
        ask(1).into_caller().reply(Ok(Payload::new(1u32)));
        drop(ask(2).into_caller()); // the callee let go of it
        drop(ask(3)); // never taken: a mailbox closed, say
        ask(4).into_caller().time_out(); // its asker keeps its own deadline
        let envelope = ask(5);
        assert_eq!(envelope.deadline(), deadline);
        assert!(envelope.remaining() <= Duration::from_secs(5));
        envelope.into_caller().reply(Err(AskError::Stopped("m".into())));
        assert_eq!(
            *ends.0.lock().unwrap(),
            [
                (1, "replied"),
                (2, "abandoned"),
                (3, "abandoned"),
                (4, "abandoned"),
                (5, "replied")
            ]
        );
        assert_eq!(Arc::strong_count(&ends), 1, "no ask holds the sink once it ended");
    }

    /// Sending reads no clock: the deadline of an ask made in this process
    /// is its timeout from the first look at it, and every later look, at
    /// either end, sees that same deadline.
    #[test]
    fn a_local_asks_deadline_is_fixed_by_the_first_look_and_kept() {
        let timeout = Duration::from_secs(30);
        let (reply, envelope) = AskEnvelope::here(timeout, None);
        let sent = Instant::now();
        while Instant::now() < sent + Duration::from_millis(5) {
            std::hint::spin_loop(); // time passes after the sending
        }
        let looked = Instant::now();
        assert_eq!(envelope.remaining(), timeout, "the first look fixes it");
        let deadline = envelope.deadline();
        assert!(deadline >= looked + timeout, "fixed at the look, not the sending");
        assert!(deadline <= Instant::now() + timeout);
        assert_eq!(reply.flag().deadline(), deadline, "the asker's end sees the same");
        while Instant::now() < looked + Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        assert!(envelope.remaining() < timeout, "a later look counts down");
        assert_eq!(envelope.deadline(), deadline);
    }

    #[tokio::test]
    async fn a_raised_flag_wakes_every_waiter_and_stays_raised() {
        let flag = CancelFlag::new();
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(flag.clone().cancelled_owned())).collect();
        tokio::task::yield_now().await; // let them wait first
        assert!(!flag.is_cancelled());
        flag.cancel();
        flag.cancel(); // again: nothing more
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .unwrap();
        }
        // A late waiter does not wait.
        tokio::time::timeout(Duration::from_secs(5), flag.cancelled())
            .await
            .expect("at once");
    }
}
