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

use crate::bus::{AskEnvelope, Bus, CallerSink, CancelFlag, CancelHook, Envelope, EnvelopeKind, TryDeliverError};
use crate::error::{AskError, PayloadError, SendError};
use crate::message::{FromPayload, Message, Payload};
use crate::topic::{validate_topic, TopicError, TopicPattern};

/// How long an ask waits for its reply unless told otherwise.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the module is handling right now.
struct Request {
    from: Arc<str>,
    topic: Option<Arc<str>>,
    ask: Option<AskEnvelope>,
}

/// A module's handle on the node: passed to every hook.
pub struct Context {
    bus: Arc<dyn Bus>,
    module: Arc<str>,
    address: Arc<str>,
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
    pub fn ask<M: Message, R: Message>(&self, to: &str, message: M) -> Ask<'_, R> {
        self.ask_payload(to, Payload::new(message))
    }

    /// Asks with a payload as it is — say, JSON text a tool was given for a
    /// type it does not know ([`Payload::from_json`]); the node that takes
    /// it decodes it. `R` may be [`Payload`] too, for a reply left
    /// undecoded.
    pub fn ask_payload<R: FromPayload>(&self, to: &str, payload: Payload) -> Ask<'_, R> {
        Ask {
            ctx: self,
            to: Arc::from(to),
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
        self.current_ask().is_some_and(|ask| ask.cancel.is_cancelled())
    }

    /// Completes when the current ask is cancelled; never, outside an ask.
    /// Use it in a `select!` against long work.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.current_ask().map(|ask| ask.cancel.clone());
        async move {
            match token {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        }
    }

    /// When the asker of the current request stops waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.current_ask().map(|ask| ask.deadline)
    }

    /// Sends a progress update to the asker of the current request. Does
    /// nothing outside an ask, or when the asker does not listen for progress.
    pub fn progress<M: Message>(&self, update: M) {
        if let Some(ask) = self.current_ask() {
            ask.caller.progress(Payload::new(update));
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
        let after = ask.deadline.saturating_duration_since(Instant::now());
        let answer = ask.caller.caller_ask(Payload::new(message));
        let outcome = tokio::select! {
            answer = answer => answer,
            () = ask.cancel.cancelled() => Err(AskError::Cancelled(caller.clone())),
            () = tokio::time::sleep_until(ask.deadline) => Err(AskError::Timeout {
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
        let address = Arc::from(format!("{}/{module}", bus.node_name()));
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
    pub fn end(&mut self) -> Option<Box<dyn CallerSink>> {
        self.request.take().and_then(|r| r.ask).map(|ask| ask.caller)
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
    to: Arc<str>,
    payload: Payload,
    timeout: Duration,
    wait_for_room: bool,
    _reply: PhantomData<fn() -> R>,
}

impl<'a, R: FromPayload> Ask<'a, R> {
    /// How long to wait for the reply (default [`DEFAULT_ASK_TIMEOUT`]). The
    /// callee sees the same deadline and the ask is cancelled when it passes.
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
        self.launch(true).await
    }

    async fn launch(self, listen: bool) -> Result<Call<R>, AskError> {
        match self.try_launch(listen) {
            Launched::Sent(call) => Ok(call),
            Launched::Failed(error) => Err(error),
            Launched::Full(call, envelope) => call.wait_for_room(*envelope).await,
        }
    }

    /// Sends the ask if its target takes it now: the call, an error, or —
    /// its mailbox or link queue full — the call not sent yet and its
    /// envelope back, to wait for room with.
    fn try_launch(self, listen: bool) -> Launched<'a, R> {
        let deadline = Instant::now() + self.timeout;
        let (reply_tx, reply_rx) = oneshot::channel();
        let (events_tx, events_rx) = if listen {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let cancel = CancelFlag::new();
        let caller = LocalCaller {
            reply: reply_tx,
            events: events_tx,
            callee: self.to.clone(),
        };
        let envelope = self.ctx.envelope(
            self.payload,
            EnvelopeKind::Ask(AskEnvelope {
                caller: Box::new(caller),
                cancel: cancel.clone(),
                deadline,
            }),
        );
        let mut call = Call {
            callee: self.to,
            timeout: self.timeout,
            deadline,
            reply: reply_rx,
            events: events_rx,
            cancel,
            hook: None,
            outcome: None,
            sleep: None,
            gave_a_turn: false,
            finished: false,
            _reply: PhantomData,
        };
        match self.ctx.bus.try_deliver(&call.callee, envelope) {
            Ok(hook) => {
                call.hook = hook;
                Launched::Sent(call)
            }
            Err(TryDeliverError::Failed(error)) => {
                call.finished = true; // nothing was sent: nothing to cancel
                Launched::Failed(AskError::from_send(error))
            }
            Err(TryDeliverError::Full(_)) if !self.wait_for_room => {
                call.finished = true;
                Launched::Failed(AskError::MailboxFull(call.callee.to_string()))
            }
            Err(TryDeliverError::Full(envelope)) => Launched::Full(
                Pending {
                    call,
                    bus: &self.ctx.bus,
                },
                envelope,
            ),
        }
    }
}

/// What [`Ask::try_launch`] did.
enum Launched<'a, R> {
    Sent(Call<R>),
    Failed(AskError),
    Full(Pending<'a, R>, Box<Envelope>),
}

/// An ask not sent yet: its target had no room.
struct Pending<'a, R> {
    call: Call<R>,
    bus: &'a Arc<dyn Bus>,
}

impl<'a, R> Pending<'a, R> {
    /// Sends the ask once its target has room, or fails at its deadline.
    async fn wait_for_room(mut self, envelope: Envelope) -> Result<Call<R>, AskError> {
        let call = &mut self.call;
        let delivered = tokio::time::timeout_at(call.deadline, self.bus.deliver(&call.callee, envelope)).await;
        match delivered {
            Ok(Ok(hook)) => {
                call.hook = hook;
                Ok(self.call)
            }
            Ok(Err(error)) => {
                call.finished = true;
                Err(AskError::from_send(error))
            }
            Err(_) => {
                call.finished = true;
                Err(AskError::Timeout {
                    module: call.callee.to_string(),
                    after: call.timeout,
                })
            }
        }
    }
}

impl<'a, R: FromPayload> IntoFuture for Ask<'a, R> {
    type Output = Result<R, AskError>;
    type IntoFuture = AskFuture<'a, R>;

    fn into_future(self) -> Self::IntoFuture {
        AskFuture {
            state: AskState::Start(Some(self)),
        }
    }
}

/// An [`Ask`] being awaited: sent on its first poll (waiting for room in a
/// full mailbox only then, in a boxed future), then its reply or its
/// deadline — no boxed future on the way of an ask that is taken at once.
#[must_use = "futures do nothing unless polled"]
pub struct AskFuture<'a, R> {
    state: AskState<'a, R>,
}

enum AskState<'a, R> {
    Start(Option<Ask<'a, R>>),
    WaitingForRoom(BoxFuture<'a, Result<Call<R>, AskError>>),
    Sent(Call<R>),
    Done,
}

impl<R: FromPayload> Future for AskFuture<'_, R> {
    type Output = Result<R, AskError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        loop {
            match &mut self.state {
                AskState::Start(ask) => {
                    let ask = ask.take().expect("an ask starts once");
                    self.state = match ask.try_launch(false) {
                        Launched::Sent(call) => AskState::Sent(call),
                        Launched::Failed(error) => {
                            self.state = AskState::Done;
                            return Poll::Ready(Err(error));
                        }
                        Launched::Full(pending, envelope) => {
                            AskState::WaitingForRoom(Box::pin(pending.wait_for_room(*envelope)))
                        }
                    };
                }
                AskState::WaitingForRoom(delivering) => match delivering.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(call)) => self.state = AskState::Sent(call),
                    Poll::Ready(Err(error)) => {
                        self.state = AskState::Done;
                        return Poll::Ready(Err(error));
                    }
                },
                AskState::Sent(call) => {
                    let outcome = std::task::ready!(call.poll_outcome(cx));
                    self.state = AskState::Done;
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
    timeout: Duration,
    deadline: Instant,
    reply: oneshot::Receiver<Result<Payload, AskError>>,
    events: Option<mpsc::UnboundedReceiver<CallEvent>>,
    cancel: CancelFlag,
    hook: Option<CancelHook>,
    outcome: Option<Result<Payload, AskError>>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Whether the awaiting task gave the callee a turn before making the
    /// deadline's timer (see [`Call::poll_outcome`]).
    gave_a_turn: bool,
    finished: bool,
    _reply: PhantomData<fn() -> R>,
}

impl<R: FromPayload> Call<R> {
    /// The next progress update or caller message, in the order the callee
    /// sent them; `None` once the ask has ended (then [`Call::reply`] returns
    /// at once).
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        if self.finished {
            return None;
        }
        // Whatever is already there needs no deadline timer.
        if self.sleep.is_none() {
            if let Some(event) = self.ready_event() {
                return event;
            }
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        let outcome = tokio::select! {
            biased;
            Some(event) = recv_event(&mut self.events) => return Some(event),
            reply = &mut self.reply => reply.unwrap_or_else(|_| Err(AskError::Stopped(self.callee.to_string()))),
            () = sleep.as_mut() => Err(AskError::Timeout {
                module: self.callee.to_string(),
                after: self.timeout,
            }),
        };
        self.end(outcome)
    }

    /// The reply, or the deadline's passing, for a call that does not
    /// listen for events (an awaited [`Ask`]). Its deadline's timer is made
    /// only if the reply is not there after the callee had a turn: the
    /// first time the reply is missing, the awaiting task goes to the back
    /// of its thread's queue instead. A callee on the same thread is queued
    /// ahead of it (the ask woke it) and answers in that turn, and such an
    /// ask never registers a timer; one anywhere else costs one more poll.
    /// The deadline is a point in time, so the timer made a turn later
    /// still fires at it.
    fn poll_outcome(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<Payload, AskError>> {
        use std::task::Poll;
        let outcome = match std::pin::Pin::new(&mut self.reply).poll(cx) {
            Poll::Ready(outcome) => outcome.unwrap_or_else(|_| Err(AskError::Stopped(self.callee.to_string()))),
            Poll::Pending if !self.gave_a_turn => {
                self.gave_a_turn = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => {
                let deadline = self.deadline;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                std::task::ready!(sleep.as_mut().poll(cx));
                Err(AskError::Timeout {
                    module: self.callee.to_string(),
                    after: self.timeout,
                })
            }
        };
        self.end(outcome);
        Poll::Ready(self.outcome.take().expect("an ended call has an outcome"))
    }

    /// What is already there, without waiting: `Some(Some(event))`, or
    /// `Some(None)` once the ask has ended.
    fn ready_event(&mut self) -> Option<Option<CallEvent>> {
        if let Some(events) = &mut self.events {
            if let Ok(event) = events.try_recv() {
                return Some(Some(event));
            }
        }
        match self.reply.try_recv() {
            Ok(outcome) => Some(self.end(outcome)),
            Err(oneshot::error::TryRecvError::Closed) => {
                Some(self.end(Err(AskError::Stopped(self.callee.to_string()))))
            }
            Err(oneshot::error::TryRecvError::Empty) => None,
        }
    }

    fn end(&mut self, outcome: Result<Payload, AskError>) -> Option<CallEvent> {
        if matches!(outcome, Err(AskError::Timeout { .. })) {
            self.fire_cancel();
        }
        self.finished = true;
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
        self.fire_cancel();
        self.finished = true;
    }

    /// The module being asked.
    pub fn callee(&self) -> &str {
        &self.callee
    }
}

impl<R> Call<R> {
    /// Tells the callee (and, across a link, its node) that the asker gave up.
    fn fire_cancel(&mut self) {
        self.cancel.cancel();
        if let Some(hook) = self.hook.take() {
            hook();
        }
    }
}

impl<R> Drop for Call<R> {
    fn drop(&mut self) {
        if !self.finished {
            self.fire_cancel();
        }
    }
}

async fn recv_event(events: &mut Option<mpsc::UnboundedReceiver<CallEvent>>) -> Option<CallEvent> {
    match events {
        Some(events) => events.recv().await,
        None => None,
    }
}

/// The asker's end of a local ask.
struct LocalCaller {
    reply: oneshot::Sender<Result<Payload, AskError>>,
    events: Option<mpsc::UnboundedSender<CallEvent>>,
    callee: Arc<str>,
}

impl CallerSink for LocalCaller {
    fn progress(&self, payload: Payload) {
        if let Some(events) = &self.events {
            let _ = events.send(CallEvent::Progress(payload));
        }
    }

    fn caller_ask(&self, payload: Payload) -> BoxFuture<'static, Result<Payload, AskError>> {
        let Some(events) = &self.events else {
            let error = AskError::CallerNotListening(self.callee.to_string());
            return Box::pin(async move { Err(error) });
        };
        let (answer, answered) = oneshot::channel();
        let callee = self.callee.to_string();
        let _ = events.send(CallEvent::Message(CallerRequest { payload, answer }));
        Box::pin(async move { answered.await.unwrap_or(Err(AskError::Cancelled(callee))) })
    }

    fn reply(self: Box<Self>, result: Result<Payload, AskError>) {
        let _ = self.reply.send(result);
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
    pub fn ask<M: Message, R: Message>(&self, to: &str, message: M) -> Ask<'_, R> {
        self.ctx.ask(to, message)
    }

    /// See [`Context::ask_payload`].
    pub fn ask_payload<R: FromPayload>(&self, to: &str, payload: Payload) -> Ask<'_, R> {
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
