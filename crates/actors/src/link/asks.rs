//! The bookkeeping of asks that cross the link: those this node sent (by
//! id, until their reply), those it received (with what cancels them,
//! wherever they were passed on), and the caller messages of both.

use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use botbus_core::{
    AskError, Caller, CallerSink, CancelAsk, CancelFlag, CancelHook, DataHead, Envelope, EnvelopeKind, Frame, Payload,
    SendError, SenderAddress, TryDeliverError,
};
use futures::future::BoxFuture;
use tokio::sync::{oneshot, SemaphorePermit, TryAcquireError};

use super::writer::QueueError;

use super::{ById, LinkHandle};
use crate::names::RecentNames;

impl LinkHandle {
    /// An ask arrived over this link for `callee`: files it (so a
    /// `cancel` for it finds it) and returns the envelope that carries it
    /// on, whose caller answers over this link. Nothing is allocated for
    /// it in the steady state: its flag is a spare one (see
    /// [`CancelFlag::until`]), and its way back is this link, shared.
    ///
    /// An ask whose id is still in flight on the link is refused (answered
    /// at once, `None` returned): a peer must not use an id again before
    /// the ask's reply, or one reply would end two asks.
    pub(crate) fn accept_ask(
        self: &Arc<Self>,
        id: u64,
        callee: Arc<str>,
        from: SenderAddress,
        timeout_ms: u64,
        payload: Payload,
    ) -> Option<Envelope> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        let cancel = CancelFlag::until(deadline);
        let inbound = InboundAsk {
            cancel: cancel.clone(),
            forwarded: None,
            callee,
            json: payload.encoding() == Some(botbus_core::CodecKind::Json),
            next_call: 0,
        };
        // The lock is let go of before the refusal is written.
        let filed = match self.inbound.lock().expect("link lock").entry(id) {
            Entry::Vacant(entry) => {
                entry.insert(inbound);
                true
            }
            Entry::Occupied(_) => false,
        };
        if !filed {
            tracing::warn!(peer = %self.peer, id, "refusing an ask whose id is still in flight");
            self.refuse_ask(
                id,
                AskError::BadPayload(format!(
                    "ask id {id} is still in flight on this link: an id is used again only after its ask has ended"
                )),
            );
            return None;
        }
        let sink: Arc<dyn CallerSink> = self.clone();
        Some(Envelope {
            from,
            payload,
            kind: EnvelopeKind::Ask(botbus_core::AskEnvelope::new(sink, id, cancel, deadline)),
        })
    }

    /// Answers ask `id` with `error` at once.
    pub(crate) fn refuse_ask(&self, id: u64, error: AskError) {
        self.send_control(&Frame::Reply { id, result: Err(error) });
    }

    /// The reply to ask `id`, which this node sent: to its asker, if it
    /// still waits.
    pub(crate) fn take_reply(&self, id: u64, result: Result<Payload, AskError>) {
        let pending = self.pending.lock().expect("link lock").by_id.remove(&id);
        if let Some(pending) = pending {
            pending.caller.reply(result);
        }
    }

    /// A frame about an ask: a `reply`, `progress` or `caller_ask` for one
    /// this node sent, or a `caller_reply` or `cancel` for one it received.
    pub(crate) fn on_ask_frame(self: &Arc<Self>, frame: Frame) {
        match frame {
            Frame::Reply { id, result } => self.take_reply(id, result.map(|p| self.unwire(p))),
            Frame::Progress { id, payload } => {
                if let Some(pending) = self.pending.lock().expect("link lock").by_id.get(&id) {
                    pending.caller.progress(self.unwire(payload));
                }
            }
            Frame::CallerAsk { id, call, payload } => {
                let answer = self
                    .pending
                    .lock()
                    .expect("link lock")
                    .by_id
                    .get(&id)
                    .map(|p| p.caller.caller_ask(self.unwire(payload), &p.callee));
                let link = self.clone();
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
                let answer = self.caller_calls.lock().expect("link lock").remove(&(id, call));
                if let Some(answer) = answer {
                    let _ = answer.send(result.map(|p| self.unwire(p)));
                }
            }
            Frame::Cancel { id } => {
                let ask = self.inbound.lock().expect("link lock").remove(&id);
                if let Some(ask) = ask {
                    ask.cancel.cancel();
                    if let Some(hook) = ask.forwarded {
                        hook.cancel();
                    }
                }
            }
            other => tracing::warn!(peer = %self.peer, frame = ?other, "not a frame about an ask"),
        }
    }
}

/// Where a caller's answer to a callee's mid-request message goes.
pub(super) type AnswerSender = oneshot::Sender<Result<Payload, AskError>>;

/// The asks this node sent over a link and waits on: by id, with the names
/// of the modules asked most.
#[derive(Default)]
pub(super) struct SentAsks {
    pub(super) by_id: ById<u64, PendingAsk>,
    /// Shared by the asks that name them: asking a module asked recently
    /// costs no allocation for its name.
    pub(super) callees: RecentNames,
}

pub(super) struct PendingAsk {
    pub(super) caller: Caller,
    /// The module asked, for the errors that name it.
    pub(super) callee: Arc<str>,
    /// The deadline the link keeps for the ask (for an asker in this
    /// process; see [`super::deadlines`]).
    pub(super) deadline: Option<tokio::time::Instant>,
}

/// An ask received over the link and still being handled here (or passed
/// on: then the hook cancels it where it went).
pub(super) struct InboundAsk {
    pub(super) cancel: CancelFlag,
    pub(super) forwarded: Option<CancelHook>,
    /// The module asked, for the errors that name it.
    pub(super) callee: Arc<str>,
    /// The ask came in JSON: what goes back to the asker (reply, progress,
    /// caller messages) goes in JSON too, so that the nodes between pass it
    /// on to a JSON-only asker without knowing its type.
    pub(super) json: bool,
    /// The number of the callee's next message to the asker.
    pub(super) next_call: u32,
}

impl LinkHandle {
    /// An ask received over this link was passed on; `hook` cancels it
    /// there. If it was cancelled (or answered) meanwhile, that happens now.
    pub(super) fn forwarded(&self, id: u64, hook: CancelHook) {
        let mut inbound = self.inbound.lock().expect("link lock");
        match inbound.get_mut(&id) {
            Some(ask) if !ask.cancel.is_cancelled() => ask.forwarded = Some(hook),
            _ => {
                drop(inbound);
                hook.cancel();
            }
        }
    }

    pub(crate) fn try_send_envelope(
        self: &Arc<Self>,
        module: &str,
        envelope: Envelope,
        json: bool,
    ) -> Result<Option<CancelHook>, TryDeliverError> {
        if !self.outbox.backlog.has_room() {
            return Err(TryDeliverError::Full(Box::new(envelope)));
        }
        match self.permits.try_acquire() {
            Ok(permit) => self
                .push_envelope(module, envelope, permit, json)
                .map_err(TryDeliverError::Failed),
            Err(TryAcquireError::NoPermits) => Err(TryDeliverError::Full(Box::new(envelope))),
            Err(TryAcquireError::Closed) => Err(TryDeliverError::Failed(SendError::Stopped(module.to_owned()))),
        }
    }

    pub(crate) async fn send_envelope(
        self: &Arc<Self>,
        module: &str,
        envelope: Envelope,
        json: bool,
    ) -> Result<Option<CancelHook>, SendError> {
        let permit = self.permit().await?;
        self.push_envelope(module, envelope, permit, json)
    }

    pub(super) fn push_envelope(
        self: &Arc<Self>,
        module: &str,
        envelope: Envelope,
        permit: SemaphorePermit<'_>,
        json: bool,
    ) -> Result<Option<CancelHook>, SendError> {
        let json = self.sends_json(&envelope.payload, json);
        let Envelope { from, payload, kind } = envelope;
        match kind {
            EnvelopeKind::Tell => {
                let tell = DataHead::Tell {
                    to: module,
                    from: &from,
                };
                self.queue_data(tell, &payload, json, permit)?;
                Ok(None)
            }
            EnvelopeKind::Publish { topic } => {
                // A publish handed to one module behind this link: for the
                // peer itself (publishes to many go by `Router::publish`).
                let publish = DataHead::Publish {
                    topic: &topic,
                    from: &from,
                    to: std::slice::from_ref(&self.peer),
                };
                self.queue_data(publish, &payload, json, permit)?;
                Ok(None)
            }
            EnvelopeKind::Ask(ask) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                // The remaining time first: it fixes an unfixed deadline
                // with one clock read, not two.
                let timeout_ms = ask.remaining().as_millis() as u64;
                let deadline = ask.deadline();
                let caller = ask.into_caller();
                // An asker here has its deadline kept by the link.
                let deadline = caller.is_here().then_some(deadline);
                // Registered before it is sent: the reply may come at once.
                let mut pending = self.pending.lock().expect("link lock");
                if self.asks_ended.load(Ordering::Relaxed) {
                    // The link closed since the permit was taken, and its
                    // asks were ended: no reply would come, and no deadline
                    // would be kept.
                    return Err(SendError::Stopped(module.to_owned()));
                }
                // Errors name the module, not the route it took.
                let callee = pending.callees.intern(botbus_core::address::split(module).1);
                pending.by_id.insert(
                    id,
                    PendingAsk {
                        caller,
                        callee,
                        deadline,
                    },
                );
                if let Some(deadline) = deadline {
                    self.deadlines.filed(deadline, &pending.by_id);
                }
                drop(pending);
                let request = DataHead::Ask {
                    id,
                    to: module,
                    from: &from,
                    timeout_ms,
                };
                if let Err(error) = self.queue_data(request, &payload, json, permit) {
                    // The asker hears why (an ask passed on from elsewhere
                    // too), not just `Stopped`.
                    if let Some(pending) = self.pending.lock().expect("link lock").by_id.remove(&id) {
                        pending.caller.reply(Err(AskError::BadPayload(error.to_string())));
                    }
                    return Err(error);
                }
                let link: Weak<dyn CancelAsk> = Arc::downgrade(self) as Weak<LinkHandle>;
                let hook = CancelHook::new(link, id);
                Ok(Some(match deadline {
                    Some(_) => hook.keeping_deadline(),
                    None => hook,
                }))
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
        let pending: Vec<PendingAsk> = {
            let mut pending = self.pending.lock().expect("link lock");
            self.asks_ended.store(true, Ordering::Relaxed);
            pending.by_id.drain().map(|(_, p)| p).collect()
        };
        for ask in pending {
            let error = if self.child_of.is_some() {
                // A child's link closes when its process ends: the module
                // stopped, as it would have in-process.
                AskError::Stopped(ask.callee.to_string())
            } else {
                AskError::Unreachable {
                    module: ask.callee.to_string(),
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
                hook.cancel();
            }
        }
        for (_, answer) in self.caller_calls.lock().expect("link lock").drain() {
            let _ = answer.send(Err(AskError::Unreachable {
                module: "caller".to_owned(),
                reason: format!("link to `{}` closed: {reason}", self.peer),
            }));
        }
    }
}

impl CancelAsk for LinkHandle {
    fn cancel_ask(&self, id: u64) {
        if self.pending.lock().expect("link lock").by_id.remove(&id).is_some() {
            self.send_control(&Frame::Cancel { id });
        }
    }
}

/// The askers of the asks received over this link, answered over it.
impl CallerSink for LinkHandle {
    fn progress(&self, id: u64, payload: Payload) {
        // An ask cancelled meanwhile has no asker waiting for its progress.
        let Some(json) = self.inbound.lock().expect("link lock").get(&id).map(|ask| ask.json) else {
            return;
        };
        match self.wire_as(&payload, json) {
            Ok(payload) => self.send_control(&Frame::Progress { id, payload }),
            Err(error) => tracing::warn!(%error, "dropping a progress update that cannot be encoded"),
        }
    }

    fn caller_ask(&self, id: u64, payload: Payload) -> BoxFuture<'static, Result<Payload, AskError>> {
        let numbered = self.inbound.lock().expect("link lock").get_mut(&id).map(|ask| {
            ask.next_call += 1;
            (ask.next_call - 1, ask.json)
        });
        let peer = self.peer.clone();
        let Some((call, json)) = numbered else {
            // Cancelled meanwhile, or the link closed.
            return Box::pin(async move { Err(AskError::Cancelled(peer)) });
        };
        let payload = match self.wire_as(&payload, json) {
            Ok(payload) => payload,
            Err(error) => {
                let error = AskError::BadPayload(error.to_string());
                return Box::pin(async move { Err(error) });
            }
        };
        let (answer, answered) = oneshot::channel();
        self.caller_calls.lock().expect("link lock").insert((id, call), answer);
        self.send_control(&Frame::CallerAsk { id, call, payload });
        Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                Err(AskError::Unreachable {
                    module: "caller".to_owned(),
                    reason: format!("link to `{peer}` closed"),
                })
            })
        })
    }

    fn reply(&self, id: u64, result: Result<Payload, AskError>) {
        self.end_inbound(id, |_| result);
    }

    fn abandoned(&self, id: u64) {
        self.end_inbound(id, |callee| Err(AskError::Stopped(callee.to_owned())));
    }
}

impl LinkHandle {
    /// Ends ask `id`, received over this link, with what `result` makes
    /// of its callee's name, and lets go of its flag for a later ask. An
    /// ask no longer filed — cancelled meanwhile, or the link closed —
    /// has nobody waiting for a reply: none is sent.
    fn end_inbound(&self, id: u64, result: impl FnOnce(&str) -> Result<Payload, AskError>) {
        let Some(ask) = self.inbound.lock().expect("link lock").remove(&id) else {
            return;
        };
        let InboundAsk {
            cancel, callee, json, ..
        } = ask;
        cancel.retire();
        let result = result(&callee);
        let in_place = match &result {
            Ok(payload) => self.queue_reply_value(id, payload, json),
            Err(_) => None,
        };
        let queued = in_place.unwrap_or_else(|| {
            let result = result.and_then(|p| self.wire_as(&p, json).map_err(|e| AskError::BadPayload(e.to_string())));
            self.queue_control(&Frame::Reply { id, result })
        });
        match queued {
            Ok(()) | Err(QueueError::Stopped) => {}
            // Too large for the link, say: the asker still gets an answer.
            Err(QueueError::Encode(error)) => self.send_control(&Frame::Reply {
                id,
                result: Err(AskError::BadPayload(format!(
                    "the reply of `{callee}` cannot be sent: {}",
                    self.cannot_send(&error)
                ))),
            }),
        }
    }
}
