//! Flow control, both ways. What this node sends: a data frame holds a
//! permit until the peer credits it back (or until it is written, towards a
//! peer that does not credit). What arrives: a data frame for a busy target
//! waits, in order, while the reader goes on reading, and is credited back
//! once handed on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use botbus_core::{CancelHook, CodecKind, DataHead, Envelope, Frame, Payload, PayloadRef, SendError, TryDeliverError};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, SemaphorePermit};

use super::writer::Urgency;
use super::LinkHandle;
use crate::router::Router;

/// Flow control of the frames a peer sends: data frames for a module whose
/// mailbox is full wait here, in order, while the reader goes on reading —
/// replies, cancels and frames for other modules are never stuck behind a
/// busy module. The peer may have at most `window` data frames not yet
/// credited back; a peer that ignores the window finds the reader waiting
/// again once that many are parked, so memory stays bounded either way.
pub(super) struct Inflow {
    pub(super) window: u32,
    /// Data frames taken since the last credit.
    pub(super) owed: AtomicU32,
    /// Per module, in order: each frame, and whether it is credited when handed on.
    pub(super) parked: Mutex<HashMap<String, std::collections::VecDeque<Parked>>>,
    pub(super) parked_total: AtomicUsize,
    /// Signalled whenever a parked frame has been handed on.
    pub(super) room: tokio::sync::Notify,
    /// Targets whose queue was just started, for the link's drainer.
    pub(super) drains: mpsc::UnboundedSender<String>,
}

impl LinkHandle {
    /// `frames` data frames were taken off the link: credit the peer once a
    /// quarter of its window has gathered, or sooner with the next frame
    /// written anyway once a sixteenth has ([`Self::credit_to_piggyback`]).
    /// That is enough for progress: a peer that has used its whole window is
    /// owed at least a quarter of it once the parked frames drain.
    pub(super) fn credit(&self, frames: u32) {
        let owed = self.inflow.owed.fetch_add(frames, Ordering::AcqRel) + frames;
        if owed >= (self.inflow.window / 4).max(1) {
            self.flush_credit();
        }
    }

    /// The credit to send along with frames written anyway: every data
    /// frame taken so far once a sixteenth of the window has gathered, else
    /// none. One credit frame per reply (an encode here; a decode off the
    /// borrowed path and a lock of the send window there) cost a round trip
    /// over stdio 5 % of its instructions; a sixteenth of the window still
    /// comes back long before the peer could run short.
    pub(super) fn credit_to_piggyback(&self) -> u32 {
        let owed = self.inflow.owed.load(Ordering::Acquire);
        if owed == 0 || owed < (self.inflow.window / 16).max(1) {
            return 0;
        }
        self.inflow.owed.swap(0, Ordering::AcqRel)
    }

    /// Credits the peer with every data frame taken so far.
    pub(super) fn flush_credit(&self) {
        let frames = self.inflow.owed.swap(0, Ordering::AcqRel);
        if frames > 0 {
            self.send_control(&Frame::Credit { frames });
        }
    }

    /// Queues a data frame that borrows what it carries, encoded straight
    /// into the link's outbox: no owned frame, name or body is made on the
    /// way. A value here bound for a postcard peer is encoded in place in
    /// the frame, its large blobs spliced in rather than copied; a body
    /// received is passed on as it is, spliced in if it is large; any other
    /// is lent as this thread's scratch encoding of it.
    pub(super) fn queue_data(
        &self,
        head: DataHead<'_>,
        payload: &Payload,
        json: bool,
        permit: SemaphorePermit<'_>,
    ) -> Result<(), SendError> {
        let name = payload.name();
        // An asker waits for its ask: it is written at once if it can be.
        let urgency = match head {
            DataHead::Ask { .. } => Urgency::Now,
            DataHead::Tell { .. } | DataHead::Publish { .. } => Urgency::Batched,
        };
        if !json && self.codec.kind() == CodecKind::Postcard {
            if let Some(value) = payload.value_body() {
                let value = value.map_err(|e| SendError::Encode(e.to_string()))?;
                return self
                    .queue_data_with(value.len(), permit, urgency, |dst, splices| match splices {
                        Some(splices) => self.codec.encode_data_value_spliced(head, name, &value, dst, splices),
                        None => self.codec.encode_data_value(head, name, &value, dst),
                    })
                    .map_err(|e| e.for_send(self));
            }
        }
        let codec = if json { CodecKind::Json } else { CodecKind::Postcard };
        if let Some(body) = payload.received_body(codec) {
            // Passed on as it was received: a large body is spliced in.
            let frame = head.with(PayloadRef { name, body, json });
            return self
                .queue_data_with(body.len(), permit, urgency, |dst, splices| match splices {
                    Some(splices) => self.codec.encode_data_spliced(&frame, body, dst, splices),
                    None => self.codec.encode_data(&frame, dst),
                })
                .map_err(|e| e.for_send(self));
        }
        payload
            .with_body(codec, |body| {
                let frame = head.with(PayloadRef { name, body, json });
                self.queue_data_with(body.len(), permit, urgency, |dst, _| {
                    self.codec.encode_data(&frame, dst)
                })
            })
            .map_err(|e| SendError::Encode(e.to_string()))?
            .map_err(|e| e.for_send(self))
    }

    /// Waits for room to queue a data frame: a permit from the window, and
    /// room in the writer's backlog.
    pub(super) async fn permit(&self) -> Result<SemaphorePermit<'_>, SendError> {
        let stopped = || SendError::Stopped(format!("link to `{}`", self.peer));
        tokio::select! {
            () = self.outbox.backlog.room() => {}
            () = self.closed.cancelled() => return Err(stopped()),
        }
        self.permits.acquire().await.map_err(|_| stopped())
    }

    /// Queues a data frame, waiting for room.
    pub(crate) async fn send_data(&self, frame: &Frame) -> Result<(), SendError> {
        let permit = self.permit().await?;
        self.queue_data_frame(frame, permit).map_err(|e| e.for_send(self))
    }
}

/// What is owed for a data frame once it is handed on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owed {
    /// Credit the peer one frame (tells, asks and publishes are credited
    /// once; a publish's copies for local subscribers are not).
    pub(super) credit: bool,
    /// The ask's id on this link, if it is an ask: if it is passed on to
    /// another link, the hook that cancels it there is filed under it.
    pub(super) ask: Option<u64>,
}

/// A data frame parked while its target is busy.
pub(super) struct Parked {
    pub(super) envelope: Envelope,
    pub(super) owed: Owed,
}

impl LinkHandle {
    /// A tell or ask for `to` arrived on this link: hand it on, or park it
    /// behind its busy target. The peer is credited once it is handed on.
    /// `ask`: its id on this link, if it is an ask.
    pub(crate) async fn take_data(
        self: &Arc<Self>,
        router: &Arc<Router>,
        to: &str,
        envelope: Envelope,
        ask: Option<u64>,
    ) {
        park_or_deliver(router, self, to, envelope, Owed { credit: true, ask }).await;
    }

    /// [`LinkHandle::take_data`] without waiting: the frame back, with
    /// what to wait for, only if it must wait (the peer is past its window).
    pub(crate) fn take_data_now<'to>(
        self: &Arc<Self>,
        router: &Arc<Router>,
        to: &'to str,
        envelope: Envelope,
        ask: Option<u64>,
    ) -> Option<Waiting<'to>> {
        let owed = Owed { credit: true, ask };
        hand_on_or_park(router, self, to, envelope, owed)
            .err()
            .map(|blocked| Waiting {
                to,
                envelope: match blocked {
                    Blocked::WindowFull(envelope) | Blocked::TargetFull(envelope) => envelope,
                },
                owed,
            })
    }

    /// Tells for `to` that arrived on this link one after another, in order.
    /// While nothing is parked and `to` is a module of this process, as many
    /// as its mailbox has room for go in at once — one look at the route
    /// table, one lock of the mailbox, one wake of the module, one credit —
    /// and the rest one by one, as [`LinkHandle::take_data_now`] takes each:
    /// handed on or parked. Only a peer past its window stops it: the tell
    /// that must wait comes back, and those after it stay in `tells`, to be
    /// taken once it is in.
    pub(crate) fn take_tells_now<'to>(
        self: &Arc<Self>,
        router: &Arc<Router>,
        to: &'to str,
        tells: &mut VecDeque<Envelope>,
    ) -> Option<Waiting<'to>> {
        if self.inflow.parked_total.load(Ordering::Acquire) == 0 {
            if let Some(queued) = router.try_send_here(to, tells) {
                if queued > 0 {
                    self.credit(queued as u32);
                }
            }
        }
        while let Some(envelope) = tells.pop_front() {
            if let Some(waiting) = self.take_data_now(router, to, envelope, None) {
                return Some(waiting);
            }
        }
        None
    }

    /// A copy of a publish that arrived on this link, for local module
    /// `module` (the publish itself is credited once, by `credit_one`).
    pub(crate) async fn deliver_published(self: &Arc<Self>, router: &Arc<Router>, module: String, envelope: Envelope) {
        let owed = Owed {
            credit: false,
            ask: None,
        };
        park_or_deliver(router, self, &module, envelope, owed).await;
    }

    /// One data frame was taken off the link.
    pub(crate) fn credit_one(&self) {
        self.credit(1);
    }

    /// The peer credited `frames` data frames back.
    pub(crate) fn on_credit(&self, frames: u32) {
        if self.peer_credits {
            self.permits.add_permits(frames as usize);
        }
    }
}

/// A data frame that must wait to be handed on: the peer sent past its
/// window. [`Waiting::wait`] waits, as [`LinkHandle::take_data`] would have.
pub(crate) struct Waiting<'to> {
    to: &'to str,
    envelope: Envelope,
    owed: Owed,
}

impl Waiting<'_> {
    /// Waits for room and hands the frame on.
    pub(crate) async fn wait(self, router: &Arc<Router>, link: &Arc<LinkHandle>) {
        park_or_deliver(router, link, self.to, self.envelope, self.owed).await;
    }
}

/// Settles what is owed for a frame handed on (or dropped).
pub(super) fn handed_on(link: &LinkHandle, owed: Owed, outcome: Result<Option<CancelHook>, SendError>) {
    match outcome {
        Ok(Some(hook)) => match owed.ask {
            Some(id) => link.forwarded(id, hook),
            None => drop(hook),
        },
        Ok(None) => {}
        // The asker heard why (see `Router::try_route`).
        Err(error) if owed.ask.is_some() => {
            tracing::debug!(peer = %link.peer, %error, "an ask from the link ends unrouted")
        }
        Err(error) => tracing::warn!(peer = %link.peer, %error, "dropping a frame from the link"),
    }
    if owed.credit {
        link.credit(1);
    }
}

/// Hands `envelope` on to `to` — a module here, a child, or the next link
/// towards another node — without waiting if it can; if `to` is busy (or
/// frames for it are already waiting), parks it in order and lets the link's
/// drainer wait for room. Past the window, waits here. A frame that cannot
/// be handed on is dropped (an ask in it ends with why: `UnknownModule`,
/// say).
pub(super) async fn park_or_deliver(
    router: &Arc<Router>,
    link: &Arc<LinkHandle>,
    to: &str,
    mut envelope: Envelope,
    owed: Owed,
) {
    loop {
        // Made before the look, so room made between the two still wakes it.
        let room = link.inflow.room.notified();
        match hand_on_or_park(router, link, to, envelope, owed) {
            Ok(()) => return,
            Err(Blocked::WindowFull(parked_behind)) => {
                envelope = parked_behind;
                room.await;
            }
            Err(Blocked::TargetFull(full)) => {
                // The peer sends past its window: hold the whole link until
                // there is room.
                let outcome = router.route(to, full, Some(link)).await;
                return handed_on(link, owed, outcome);
            }
        }
    }
}

/// Why a data frame could be neither handed on nor parked without waiting.
pub(super) enum Blocked {
    /// Frames for its target are parked, and the window is full of parked
    /// frames: it waits for one of them to be handed on.
    WindowFull(Envelope),
    /// Its target is full, and so is the window: it waits for the target.
    TargetFull(Envelope),
}

/// [`park_or_deliver`] without waiting: the frame is handed on, parked, or
/// dropped — or given back when only waiting will do (a peer past its
/// window). Synchronous, so a reader pays for no future per frame.
#[expect(
    clippy::result_large_err,
    reason = "the envelope comes back whole to be waited with; boxing it would allocate on every refusal"
)]
pub(super) fn hand_on_or_park(
    router: &Arc<Router>,
    link: &Arc<LinkHandle>,
    to: &str,
    envelope: Envelope,
    owed: Owed,
) -> Result<(), Blocked> {
    let inflow = &link.inflow;
    // Nothing parked anywhere (the usual case): no lock to take.
    if inflow.parked_total.load(Ordering::Acquire) > 0 {
        let mut waiting = inflow.parked.lock().expect("link lock");
        // Frames wait for this target: this one goes behind them.
        if let Some(queue) = waiting.get_mut(to) {
            if inflow.parked_total.load(Ordering::Acquire) >= inflow.window as usize {
                return Err(Blocked::WindowFull(envelope));
            }
            queue.push_back(Parked { envelope, owed });
            inflow.parked_total.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        }
    }
    let outcome = match router.try_route(to, envelope, Some(link)) {
        Ok(hook) => Ok(hook),
        Err(TryDeliverError::Failed(error)) => Err(error),
        Err(TryDeliverError::Full(envelope)) => return park(link, to, *envelope, owed),
    };
    handed_on(link, owed, outcome);
    Ok(())
}

/// Parks a frame whose target is full, behind any parked for it, unless
/// the window is full of parked frames already.
#[expect(
    clippy::result_large_err,
    reason = "the envelope comes back whole to be waited with; boxing it would allocate on every refusal"
)]
fn park(link: &Arc<LinkHandle>, to: &str, envelope: Envelope, owed: Owed) -> Result<(), Blocked> {
    let inflow = &link.inflow;
    if inflow.parked_total.load(Ordering::Acquire) >= inflow.window as usize {
        return Err(Blocked::TargetFull(envelope));
    }
    // A queue exists exactly while the drainer drains it: hand it over.
    let first = {
        let mut waiting = inflow.parked.lock().expect("link lock");
        inflow.parked_total.fetch_add(1, Ordering::AcqRel);
        match waiting.entry(to.to_owned()) {
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
        let _ = link.inflow.drains.send(to.to_owned());
    }
    Ok(())
}

/// The link's one drainer, running as long as the link: it drains every
/// target's parked queue at once (a target that waits for room holds up no
/// other), with no task spawned per burst.
pub(super) async fn drainer(router: Arc<Router>, link: Arc<LinkHandle>, mut started: mpsc::UnboundedReceiver<String>) {
    let mut draining = FuturesUnordered::new();
    loop {
        tokio::select! {
            to = started.recv() => match to {
                Some(to) => draining.push(drain_parked(router.clone(), link.clone(), to)),
                None => break,
            },
            Some(()) = draining.next(), if !draining.is_empty() => {}
            () = link.closed.cancelled(), if draining.is_empty() => break,
        }
    }
    // The link is gone: what was being drained ends (its asks end `Stopped`).
    while draining.next().await.is_some() {}
}

/// Hands the frames parked for `to` on in order, waiting for room.
pub(super) async fn drain_parked(router: Arc<Router>, link: Arc<LinkHandle>, to: String) {
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
