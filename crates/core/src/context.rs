//! [`Context`]: everything a module can do — tell, ask, publish, subscribe,
//! report progress, notice cancellation, talk back to its caller, monitor
//! other modules and run a control loop.
//!
//! An ask always ends: with the reply, or with a typed [`AskError`]
//! (timeout, unknown module, unreachable, stopped, cancelled, remote error).
//! Awaiting it directly ignores progress; [`Ask::start`] returns a [`Call`] that
//! streams progress and caller messages and can be cancelled.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::address::SenderAddress;
use crate::bus::{AskEnvelope, Bus, Caller, CancelHook, Ended, Envelope, EnvelopeKind, PendingReply, TryDeliverError};
use crate::error::{AskError, PayloadError, SendError};
use crate::message::{FromPayload, Message, Payload};
use crate::topic::{validate_topic, TopicError, TopicPattern};

/// How long an ask waits for its reply unless told otherwise.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the module is handling right now.
struct Request {
    from: SenderAddress,
    topic: Option<Arc<str>>,
    ask: Option<AskEnvelope>,
}

/// A module's handle on the node: passed to every hook.
pub struct Context {
    bus: Arc<dyn Bus>,
    module: Arc<str>,
    address: SenderAddress,
    ask_timeout: Duration,
    request: Option<Request>,
    tick_change: Option<Option<Duration>>,
    stop_requested: bool,
}

impl Context {
    /// This module's name.
    pub fn name(&self) -> &str {
        &self.module
    }

    /// This module's full address, `node/module`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The name of the node hosting this module.
    pub fn node(&self) -> &str {
        self.bus.node_name()
    }

    /// Sends `message` to module `to` (`module` or `node/module`), waiting for
    /// room if its mailbox is full. Delivery is at most once, in order per
    /// sender and target.
    pub async fn tell<M: Message>(&self, to: &str, message: M) -> Result<(), SendError> {
        match self
            .bus
            .try_deliver(to, self.envelope(Payload::new(message), EnvelopeKind::Tell))
        {
            Ok(_) => Ok(()),
            Err(TryDeliverError::Full(envelope)) => self.bus.deliver(to, *envelope).await.map(drop),
            Err(TryDeliverError::Failed(error)) => Err(error),
        }
    }

    /// Sends `message` to `to` without waiting: a full mailbox is
    /// [`SendError::MailboxFull`] and the message is not sent.
    pub fn try_tell<M: Message>(&self, to: &str, message: M) -> Result<(), SendError> {
        match self
            .bus
            .try_deliver(to, self.envelope(Payload::new(message), EnvelopeKind::Tell))
        {
            Ok(_) => Ok(()),
            Err(TryDeliverError::Full(_)) => Err(SendError::MailboxFull(to.to_owned())),
            Err(TryDeliverError::Failed(error)) => Err(error),
        }
    }

    /// Asks module `to` and expects a reply of type `R`. Await the returned
    /// [`Ask`] for the reply, or configure it first:
    ///
    /// ```text
    /// let speed: f32 = ctx.ask("motor", MotorCmd::Stop).timeout(Duration::from_millis(200)).await?;
    /// ```
    pub fn ask<'a, M: Message, R: Message>(&'a self, to: &'a str, message: M) -> Ask<'a, R> {
        self.ask_payload(to, Payload::new(message))
    }

    /// Asks with a payload as it is — say, JSON text a tool was given for a
    /// type it does not know ([`Payload::from_json`]); the node that takes
    /// it decodes it. `R` may be [`Payload`] too, for a reply left
    /// undecoded.
    pub fn ask_payload<'a, R: FromPayload>(&'a self, to: &'a str, payload: Payload) -> Ask<'a, R> {
        Ask {
            ctx: self,
            to,
            payload,
            timeout: self.ask_timeout,
            wait_for_room: true,
            _reply: PhantomData,
        }
    }

    /// Publishes `message` on `topic` to every subscriber, local and remote,
    /// waiting for room in their mailboxes. Returns how many subscribers (and
    /// links) it went to; publishing with no subscribers is not an error.
    pub async fn publish<M: Message>(&self, topic: &str, message: M) -> Result<usize, SendError> {
        self.publish_payload(topic, Payload::new(message)).await
    }

    /// Publishes a payload as it is — JSON text a tool was given, say
    /// ([`Payload::from_json`]); each subscriber's node decodes it.
    pub async fn publish_payload(&self, topic: &str, payload: Payload) -> Result<usize, SendError> {
        validate_topic(topic).map_err(|e| SendError::InvalidName(e.to_string()))?;
        self.bus.publish(self.address.clone(), Arc::from(topic), payload).await
    }

    /// Subscribes this module to a topic pattern (`*` one level, `**` any
    /// depth). Matching publishes arrive in `process`, with [`Context::topic`]
    /// set.
    pub fn subscribe(&self, pattern: &str) -> Result<(), TopicError> {
        self.bus.subscribe(&self.module, TopicPattern::parse(pattern)?);
        Ok(())
    }

    /// Drops a subscription made with [`Context::subscribe`].
    pub fn unsubscribe(&self, pattern: &str) {
        self.bus.unsubscribe(&self.module, pattern);
    }

    /// Monitors module `target`: when it stops, fails for good or becomes
    /// unreachable, this module's [`Module::down`](crate::Module::down) runs.
    ///
    /// A stop or a failure ends the monitor. Unreachable does not: a link
    /// that is lost and comes back (a partition, a peer that reconnects)
    /// brings the monitor back with it, and a later stop or failure is told
    /// as usual — monitor once, and hear of every stop however the network
    /// behaves in between.
    pub fn monitor(&self, target: &str) {
        self.bus.monitor(&self.module, target);
    }

    /// Runs [`Module::tick`](crate::Module::tick) every `period` from now on:
    /// a control loop at `1/period` Hz. Calling it again changes the period.
    pub fn tick_every(&mut self, period: Duration) {
        self.tick_change = Some(Some(period));
    }

    /// Stops the ticks started by [`Context::tick_every`].
    pub fn stop_ticks(&mut self) {
        self.tick_change = Some(None);
    }

    /// Stops this module normally once the current hook returns.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Who sent the message being processed (`node/module`).
    pub fn sender(&self) -> Option<&str> {
        self.request.as_ref().map(|r| &*r.from)
    }

    /// The topic of the message being processed, if it was a publish.
    pub fn topic(&self) -> Option<&str> {
        self.request.as_ref().and_then(|r| r.topic.as_deref())
    }

    /// Whether the message being processed is an ask (someone awaits a reply).
    pub fn is_ask(&self) -> bool {
        self.current_ask().is_some()
    }

    /// Whether the asker of the current request gave up (cancelled, timed
    /// out, or went away). Always `false` outside an ask.
    pub fn is_cancelled(&self) -> bool {
        self.current_ask().is_some_and(|ask| ask.cancel().is_cancelled())
    }

    /// Completes when the current ask is cancelled; never, outside an ask.
    /// Use it in a `select!` against long work.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.current_ask().map(|ask| ask.cancel().clone());
        async move {
            match token {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        }
    }

    /// When the asker of the current request stops waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.current_ask().map(AskEnvelope::deadline)
    }

    /// Sends a progress update to the asker of the current request. Does
    /// nothing outside an ask, or when the asker does not listen for progress.
    pub fn progress<M: Message>(&self, update: M) {
        if let Some(ask) = self.current_ask().filter(|ask| ask.listens()) {
            ask.progress(Payload::new(update));
        }
    }

    /// Sends `message` to the asker of the current request and waits for its
    /// answer — a question back mid-request ("confirm the grasp?"). Ends with
    /// [`AskError::Cancelled`] if the ask is cancelled meanwhile, and with
    /// [`AskError::Timeout`] at the ask's deadline.
    pub async fn ask_caller<M: Message, R: Message>(&self, message: M) -> Result<R, AskError> {
        let Some(ask) = self.current_ask() else {
            return Err(AskError::CallerNotListening(format!(
                "{} (no ask in progress)",
                self.module
            )));
        };
        let caller = self.sender().unwrap_or_default().to_owned();
        let deadline = ask.deadline();
        let after = deadline.saturating_duration_since(Instant::now());
        let answer = ask.caller_ask(Payload::new(message), &self.module);
        let outcome = tokio::select! {
            answer = answer => answer,
            () = ask.cancel().cancelled() => Err(AskError::Cancelled(caller.clone())),
            () = tokio::time::sleep_until(deadline) => Err(AskError::Timeout {
                module: caller,
                after,
            }),
        };
        outcome?.decode().map_err(|e| AskError::BadPayload(e.to_string()))
    }

    fn current_ask(&self) -> Option<&AskEnvelope> {
        self.request.as_ref().and_then(|r| r.ask.as_ref())
    }

    fn envelope(&self, payload: Payload, kind: EnvelopeKind) -> Envelope {
        Envelope {
            from: self.address.clone(),
            payload,
            kind,
        }
    }
}

/// Runtime side: how the node that hosts a module drives its context. Module
/// code has no need of these.
impl Context {
    /// A context for module `module` on the node behind `bus`.
    pub fn new(bus: Arc<dyn Bus>, module: &str) -> Self {
        let address = SenderAddress::interned(&format!("{}/{module}", bus.node_name()));
        Self {
            bus,
            module: Arc::from(module),
            address,
            ask_timeout: DEFAULT_ASK_TIMEOUT,
            request: None,
            tick_change: None,
            stop_requested: false,
        }
    }

    /// Sets the default timeout of this context's asks.
    pub fn set_ask_timeout(&mut self, timeout: Duration) {
        self.ask_timeout = timeout;
    }

    /// Starts handling `envelope`: records its sender, topic and ask, and
    /// hands back the payload.
    pub fn begin(&mut self, envelope: Envelope) -> Payload {
        let (topic, ask) = match envelope.kind {
            EnvelopeKind::Tell => (None, None),
            EnvelopeKind::Publish { topic } => (Some(topic), None),
            EnvelopeKind::Ask(ask) => (None, Some(ask)),
        };
        self.request = Some(Request {
            from: envelope.from,
            topic,
            ask,
        });
        envelope.payload
    }

    /// Ends the current request, handing back its caller if it was an ask.
    #[inline] // on every message's path: called, not inlined, it cost a tell 17 instructions (1.4 %)
    pub fn end(&mut self) -> Option<Caller> {
        self.request.take().and_then(|r| r.ask).map(AskEnvelope::into_caller)
    }

    /// A tick period change asked for since the last call: `Some(None)` stops
    /// ticking.
    pub fn take_tick_change(&mut self) -> Option<Option<Duration>> {
        self.tick_change.take()
    }

    /// Whether the module asked to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }
}

/// An ask being set up. Await it for the reply, or call [`Ask::start`] for a
/// [`Call`] with progress, caller messages and cancellation.
#[must_use = "an ask does nothing until awaited or started"]
pub struct Ask<'a, R> {
    ctx: &'a Context,
    to: &'a str,
    payload: Payload,
    timeout: Duration,
    wait_for_room: bool,
    _reply: PhantomData<fn() -> R>,
}

impl<'a, R: FromPayload> Ask<'a, R> {
    /// How long to wait for the reply (default [`DEFAULT_ASK_TIMEOUT`]),
    /// from the sending — to be exact, from the first time anyone needs the
    /// deadline: at the latest when the asker finds no reply after its
    /// callee had a turn ([`AskEnvelope::deadline`]). The callee sees the
    /// same deadline and the ask is cancelled when it passes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fails with [`AskError::MailboxFull`] instead of waiting for room.
    pub fn no_wait(mut self) -> Self {
        self.wait_for_room = false;
        self
    }

    /// Sends the ask and returns its [`Call`]: stream its progress and caller
    /// messages with [`Call::next_event`], cancel it, or await [`Call::reply`].
    pub async fn start(self) -> Result<Call<R>, AskError> {
        let callee: Arc<str> = Arc::from(self.to);
        let (ask, events) = match self.try_launch(true) {
            Launched::Sent(ask, events) => (ask, events),
            Launched::Failed(error) => return Err(error),
            Launched::Full(unsent, envelope) => unsent.wait_for_room(*envelope).await?,
        };
        Ok(Call {
            callee,
            ask,
            events,
            outcome: None,
            _reply: PhantomData,
        })
    }

    /// Sends the ask if its target takes it now: the ask in flight, an
    /// error, or — its mailbox or link queue full — the ask not sent yet
    /// and its envelope back, to wait for room with.
    fn try_launch(self, listen: bool) -> Launched<'a> {
        let (events_tx, events_rx) = if listen {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (reply, ask_envelope) = AskEnvelope::here(self.timeout, events_tx);
        let envelope = self.ctx.envelope(self.payload, EnvelopeKind::Ask(ask_envelope));
        let mut ask = InFlight {
            reply,
            hook: None,
            sleep: None,
            gave_a_turn: false,
            finished: false,
        };
        match self.ctx.bus.try_deliver(self.to, envelope) {
            Ok(hook) => {
                ask.hook = hook;
                Launched::Sent(ask, events_rx)
            }
            Err(TryDeliverError::Failed(error)) => {
                ask.finished = true; // nothing was sent: nothing to cancel
                Launched::Failed(AskError::from_send(error))
            }
            Err(TryDeliverError::Full(_)) if !self.wait_for_room => {
                ask.finished = true;
                Launched::Failed(AskError::MailboxFull(self.to.to_owned()))
            }
            Err(TryDeliverError::Full(envelope)) => Launched::Full(
                Unsent {
                    ask,
                    events: events_rx,
                    to: self.to,
                    bus: &self.ctx.bus,
                },
                envelope,
            ),
        }
    }
}

/// Where a [`Call`] hears its callee's progress and messages (none for an
/// awaited [`Ask`], which does not listen).
type Events = Option<mpsc::UnboundedReceiver<CallEvent>>;

/// What [`Ask::try_launch`] did.
enum Launched<'a> {
    Sent(InFlight, Events),
    Failed(AskError),
    Full(Unsent<'a>, Box<Envelope>),
}

/// An ask not sent yet: its target had no room.
struct Unsent<'a> {
    ask: InFlight,
    events: Events,
    to: &'a str,
    bus: &'a Arc<dyn Bus>,
}

impl Unsent<'_> {
    /// Sends the ask once its target has room, or fails at its deadline.
    async fn wait_for_room(mut self, envelope: Envelope) -> Result<(InFlight, Events), AskError> {
        let ask = &mut self.ask;
        let delivered = tokio::time::timeout_at(ask.reply.flag().deadline(), self.bus.deliver(self.to, envelope)).await;
        match delivered {
            Ok(Ok(hook)) => {
                ask.hook = hook;
                Ok((self.ask, self.events))
            }
            Ok(Err(error)) => {
                ask.finished = true;
                Err(AskError::from_send(error))
            }
            Err(_) => {
                ask.finished = true;
                Err(AskError::Timeout {
                    module: self.to.to_owned(),
                    after: ask.reply.flag().timeout(),
                })
            }
        }
    }
}

/// The asker's side of an ask in flight, whatever awaits it: an awaited
/// [`Ask`] or a [`Call`]. Dropping it before the ask ends cancels the ask.
struct InFlight {
    /// The reply, through the ask's flag: raised to cancel, it holds the
    /// timeout and the deadline too.
    reply: PendingReply,
    /// Cancels the ask where a link took it.
    hook: Option<CancelHook>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Whether the awaiting task gave the callee a turn before making the
    /// deadline's timer (see [`InFlight::poll_outcome`]).
    gave_a_turn: bool,
    finished: bool,
}

impl InFlight {
    /// The reply, or the deadline's passing.
    ///
    /// An ask whose link keeps its deadline ([`CancelHook::keeps_deadline`])
    /// makes no timer: the link ends it when the deadline passes. Any other
    /// makes the deadline's timer only if the reply is not there after the
    /// callee had a turn: polled first, the awaiting task goes to the back
    /// of its thread's queue instead. A callee on the same thread is queued
    /// ahead of it (the ask woke it) and answers in that turn, and such an
    /// ask never registers a timer, nor reads the clock; one anywhere else
    /// costs one more poll. The timer fires at the ask's deadline, fixed
    /// when it is made unless the callee or the link that carried the ask
    /// fixed it before ([`AskEnvelope::deadline`]). `callee` names the
    /// module asked, for the errors.
    fn poll_outcome(
        &mut self,
        cx: &mut std::task::Context<'_>,
        callee: &str,
    ) -> std::task::Poll<Result<Payload, AskError>> {
        use std::task::Poll;
        let link_keeps_deadline = self.hook.as_ref().is_some_and(CancelHook::keeps_deadline);
        if !self.gave_a_turn && !link_keeps_deadline {
            // Polled in the turn that sent the ask: the callee has not had
            // its own yet (one on another thread seldom answers this fast),
            // so the reply is looked for — under a lock — only after it had.
            self.gave_a_turn = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let outcome = match self.reply.poll(Some(cx.waker())) {
            Poll::Ready(ended) => self.outcome(ended, callee),
            Poll::Pending if link_keeps_deadline => return Poll::Pending,
            Poll::Pending => {
                let deadline = self.reply.flag().deadline();
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                std::task::ready!(sleep.as_mut().poll(cx));
                self.timed_out(callee)
            }
        };
        self.end(&outcome);
        Poll::Ready(outcome)
    }

    /// The reply if it is there, without waiting.
    fn ready_outcome(&mut self, callee: &str) -> Option<Result<Payload, AskError>> {
        match self.reply.poll(None) {
            std::task::Poll::Ready(ended) => {
                let outcome = self.outcome(ended, callee);
                self.end(&outcome);
                Some(outcome)
            }
            std::task::Poll::Pending => None,
        }
    }

    /// What the asker hears of how the ask ended.
    fn outcome(&self, ended: Ended, callee: &str) -> Result<Payload, AskError> {
        match ended {
            Ended::Replied(outcome) => outcome,
            Ended::Dropped => Err(AskError::Stopped(callee.to_owned())),
            Ended::TimedOut => self.timed_out(callee),
        }
    }

    fn timed_out(&self, callee: &str) -> Result<Payload, AskError> {
        Err(AskError::Timeout {
            module: callee.to_owned(),
            after: self.reply.flag().timeout(),
        })
    }

    fn end(&mut self, outcome: &Result<Payload, AskError>) {
        if matches!(outcome, Err(AskError::Timeout { .. })) {
            self.fire_cancel();
        }
        self.finished = true;
    }

    /// Tells the callee (and, across a link, its node) that the asker gave up.
    fn fire_cancel(&mut self) {
        self.reply.flag().cancel();
        if let Some(hook) = self.hook.take() {
            hook.cancel();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.fire_cancel();
        }
    }
}

impl<'a, R: FromPayload> IntoFuture for Ask<'a, R> {
    type Output = Result<R, AskError>;
    type IntoFuture = AskFuture<'a, R>;

    fn into_future(self) -> Self::IntoFuture {
        AskFuture {
            to: self.to,
            state: AskState::Start(Some(self)),
        }
    }
}

/// An [`Ask`] being awaited: sent on its first poll (waiting for room in a
/// full mailbox only then, in a boxed future), then its reply or its
/// deadline — no boxed future on the way of an ask that is taken at once,
/// and nothing allocated for it but its one shared flag.
#[must_use = "futures do nothing unless polled"]
pub struct AskFuture<'a, R> {
    to: &'a str,
    state: AskState<'a, R>,
}

enum AskState<'a, R> {
    Start(Option<Ask<'a, R>>),
    WaitingForRoom(BoxFuture<'a, Result<(InFlight, Events), AskError>>),
    Sent(InFlight),
    Done,
}

impl<R: FromPayload> Future for AskFuture<'_, R> {
    type Output = Result<R, AskError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            match &mut this.state {
                AskState::Start(ask) => {
                    let ask = ask.take().expect("an ask starts once");
                    this.state = match ask.try_launch(false) {
                        Launched::Sent(ask, _) => AskState::Sent(ask),
                        Launched::Failed(error) => {
                            this.state = AskState::Done;
                            return Poll::Ready(Err(error));
                        }
                        Launched::Full(unsent, envelope) => {
                            AskState::WaitingForRoom(Box::pin(unsent.wait_for_room(*envelope)))
                        }
                    };
                }
                AskState::WaitingForRoom(delivering) => match delivering.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok((ask, _))) => this.state = AskState::Sent(ask),
                    Poll::Ready(Err(error)) => {
                        this.state = AskState::Done;
                        return Poll::Ready(Err(error));
                    }
                },
                AskState::Sent(ask) => {
                    let outcome = std::task::ready!(ask.poll_outcome(cx, this.to));
                    this.state = AskState::Done;
                    return Poll::Ready(
                        outcome
                            .and_then(|reply| R::from_payload(reply).map_err(|e| AskError::BadPayload(e.to_string()))),
                    );
                }
                AskState::Done => panic!("an ask polled after it ended"),
            }
        }
    }
}

/// Something the callee sent while an ask is in flight.
#[derive(Debug)]
pub enum CallEvent {
    /// A progress update ([`Context::progress`]).
    Progress(Payload),
    /// A message from the callee that waits for an answer
    /// ([`Context::ask_caller`]).
    Message(CallerRequest),
}

/// A message from a callee to its caller, waiting for the caller's answer.
#[derive(Debug)]
pub struct CallerRequest {
    payload: Payload,
    answer: oneshot::Sender<Result<Payload, AskError>>,
}

impl CallerRequest {
    pub(crate) fn new(payload: Payload, answer: oneshot::Sender<Result<Payload, AskError>>) -> Self {
        Self { payload, answer }
    }

    /// The message.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Decodes the message as `M`.
    pub fn decode<M: Message>(&self) -> Result<M, PayloadError> {
        self.payload.clone().decode()
    }

    /// Answers the callee.
    pub fn reply<M: Message>(self, answer: M) {
        let _ = self.answer.send(Ok(Payload::new(answer)));
    }

    /// Refuses to answer: the callee's [`Context::ask_caller`] gets
    /// [`AskError::Remote`] with `message`.
    pub fn fail(self, message: impl Into<String>) {
        let _ = self.answer.send(Err(AskError::Remote {
            module: "caller".to_owned(),
            message: message.into(),
        }));
    }
}

/// An ask in flight. Dropping it before the reply cancels the ask.
#[must_use = "dropping a call cancels the ask"]
pub struct Call<R> {
    callee: Arc<str>,
    ask: InFlight,
    events: Events,
    outcome: Option<Result<Payload, AskError>>,
    _reply: PhantomData<fn() -> R>,
}

impl<R: FromPayload> Call<R> {
    /// The next progress update or caller message, in the order the callee
    /// sent them; `None` once the ask has ended (then [`Call::reply`] returns
    /// at once).
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        if self.ask.finished {
            return None;
        }
        if let Some(events) = &mut self.events {
            if let Ok(event) = events.try_recv() {
                return Some(event);
            }
        }
        // Whatever is already there needs no deadline timer.
        if self.ask.sleep.is_none() {
            if let Some(outcome) = self.ask.ready_outcome(&self.callee) {
                self.outcome = Some(outcome);
                return None;
            }
        }
        self.ask.gave_a_turn = true; // a call that listens makes its timer at once
        let callee = &self.callee;
        let ask = &mut self.ask;
        let outcome = tokio::select! {
            biased;
            Some(event) = recv_event(&mut self.events) => return Some(event),
            outcome = std::future::poll_fn(|cx| ask.poll_outcome(cx, callee)) => outcome,
        };
        self.outcome = Some(outcome);
        None
    }

    /// Waits for the reply. Progress still queued is skipped, and caller
    /// messages are refused with [`AskError::CallerNotListening`].
    pub async fn reply(mut self) -> Result<R, AskError> {
        while let Some(event) = self.next_event().await {
            if let CallEvent::Message(request) = event {
                let _ = request
                    .answer
                    .send(Err(AskError::CallerNotListening(self.callee.to_string())));
            }
        }
        let outcome = self.outcome.take().expect("an ended call has an outcome");
        R::from_payload(outcome?).map_err(|e| AskError::BadPayload(e.to_string()))
    }

    /// Cancels the ask: the callee sees [`Context::is_cancelled`]. The asker
    /// is done with it; the callee's late reply, if any, is dropped.
    pub fn cancel(mut self) {
        self.ask.fire_cancel();
        self.ask.finished = true;
    }

    /// The module being asked.
    pub fn callee(&self) -> &str {
        &self.callee
    }
}

async fn recv_event(events: &mut Events) -> Option<CallEvent> {
    match events {
        Some(events) => events.recv().await,
        None => None,
    }
}

/// A handle for code outside any module — `main`, a test, a CLI — to tell,
/// ask and publish as if it were a module named `name`. It has no mailbox:
/// it cannot be told or asked, and does not subscribe.
pub struct Client {
    ctx: Context,
}

impl Client {
    /// A client on the node behind `bus`, sending as `node/name`.
    pub fn new(bus: Arc<dyn Bus>, name: &str) -> Self {
        Self {
            ctx: Context::new(bus, name),
        }
    }

    /// See [`Context::tell`].
    pub async fn tell<M: Message>(&self, to: &str, message: M) -> Result<(), SendError> {
        self.ctx.tell(to, message).await
    }

    /// See [`Context::try_tell`].
    pub fn try_tell<M: Message>(&self, to: &str, message: M) -> Result<(), SendError> {
        self.ctx.try_tell(to, message)
    }

    /// See [`Context::ask`].
    pub fn ask<'a, M: Message, R: Message>(&'a self, to: &'a str, message: M) -> Ask<'a, R> {
        self.ctx.ask(to, message)
    }

    /// See [`Context::ask_payload`].
    pub fn ask_payload<'a, R: FromPayload>(&'a self, to: &'a str, payload: Payload) -> Ask<'a, R> {
        self.ctx.ask_payload(to, payload)
    }

    /// See [`Context::publish`].
    pub async fn publish<M: Message>(&self, topic: &str, message: M) -> Result<usize, SendError> {
        self.ctx.publish(topic, message).await
    }

    /// See [`Context::publish_payload`].
    pub async fn publish_payload(&self, topic: &str, payload: Payload) -> Result<usize, SendError> {
        self.ctx.publish_payload(topic, payload).await
    }

    /// The address this client sends as, `node/name`.
    pub fn address(&self) -> &str {
        self.ctx.address()
    }
}
