//! A module's mailbox: bounded, any number of senders, one module taking.
//!
//! Built for the hot path of a tell. Sending is one uncontended lock: the
//! envelope goes in behind the others, and the module is woken only if it
//! waits for mail. The module takes the whole queue at once, by swapping it
//! for its own empty buffer, so no envelope is copied on the way; it reads
//! what it took in turns of at most a batch. Its side costs one lock per
//! turn, not several atomic operations per message as a general channel's
//! does.
//!
//! The bound counts what is in the module's hand too: at most `capacity`
//! envelopes are ever waiting, queued or taken and not yet processed. Room
//! comes back when the module returns for its next turn, and a sender
//! waiting for room is woken then. Between turns the module also looks for
//! the doorbell and for downs, so they wait for at most a batch of mail.
//!
//! Beside the bounded queue, a module hears of monitored modules going
//! down ([`Mailbox::send_down`], never refused for want of room, taken
//! before mail) and is rung when the node stops it ([`Doorbell`]). All
//! three wake the one waker the module leaves while it waits, so its loop
//! registers one waker per wait, not one per thing it waits for.
//!
//! Order is kept per sender. When the module is gone ([`Inbox`] dropped or
//! [`Inbox::close`]d), sends fail and whatever was queued is dropped — an ask
//! in it ends with `Stopped`. When every [`Mailbox`] is dropped, the module
//! takes what is left and then hears that no more will come.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use botbus_core::{Down, Envelope};
use tokio::sync::Notify;

/// The most envelopes a module reads in one turn. A turn runs the host
/// loop's `select!` once; a shorter one gives room back sooner.
const BATCH: usize = 32;

/// A mailbox of `capacity` envelopes (at least one): the senders' end and
/// the module's.
pub(crate) fn mailbox(capacity: usize) -> (Mailbox, Inbox) {
    let capacity = capacity.max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            downs: VecDeque::new(),
            rung: false,
            in_hand: 0,
            module: None,
            senders_wait: false,
            senders: 1,
            closed: false,
        }),
        room: Notify::new(),
        capacity,
        batch: BATCH.min(capacity.div_ceil(2)),
    });
    let inbox = Inbox {
        shared: shared.clone(),
        hand: VecDeque::new(),
        turn: 0,
    };
    (Mailbox { shared }, inbox)
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when room comes back or the module goes: senders waiting
    /// for room look again.
    room: Notify,
    capacity: usize,
    /// The most the module reads in one turn.
    batch: usize,
}

struct State {
    queue: VecDeque<Envelope>,
    /// Monitored modules gone down, not yet told: outside the bound.
    downs: VecDeque<Down>,
    /// The doorbell rang since the module last looked.
    rung: bool,
    /// Taken by the module and not yet read, as of its last turn: they
    /// still count against the bound until it comes back for the next.
    in_hand: usize,
    /// The module's waker while it waits for mail.
    module: Option<Waker>,
    /// A sender found no room and waits to be told of some.
    senders_wait: bool,
    /// [`Mailbox`] handles alive.
    senders: usize,
    /// The module is gone: nothing more is taken.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a [`Mailbox::try_send`] did not send; the envelope comes back.
pub(crate) enum Refused {
    /// The mailbox is full.
    Full(Envelope),
    /// The module is gone.
    Closed(Envelope),
}

/// [`Mailbox::try_send_many`] found the module gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// The senders' end of a module's mailbox.
pub(crate) struct Mailbox {
    shared: Arc<Shared>,
}

impl Clone for Mailbox {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let module = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.module.take()
        };
        if let Some(module) = module {
            module.wake(); // to hear that no more will come
        }
    }
}

impl Mailbox {
    /// Queues `envelope` if there is room, without waiting.
    #[expect(
        clippy::result_large_err,
        reason = "the envelope comes back whole to be waited with; boxing it would allocate on every refusal"
    )]
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        let module = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(Refused::Closed(envelope));
            }
            if state.queue.len() + state.in_hand >= self.shared.capacity {
                state.senders_wait = true;
                return Err(Refused::Full(envelope));
            }
            state.queue.push_back(envelope);
            state.module.take()
        };
        if let Some(module) = module {
            module.wake();
        }
        Ok(())
    }

    /// Queues as many of `envelopes` as there is room for, in order, under
    /// one lock and with at most one wake: those queued are taken from the
    /// front, and how many they were is returned. The rest stay, for the
    /// caller to wait with. `Err` if the module is gone (nothing is taken).
    pub(crate) fn try_send_many(&self, envelopes: &mut VecDeque<Envelope>) -> Result<usize, Closed> {
        let (queued, module) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(Closed);
            }
            let room = self.shared.capacity.saturating_sub(state.queue.len() + state.in_hand);
            let queued = room.min(envelopes.len());
            if queued < envelopes.len() {
                state.senders_wait = true;
            }
            state.queue.extend(envelopes.drain(..queued));
            (queued, if queued > 0 { state.module.take() } else { None })
        };
        if let Some(module) = module {
            module.wake();
        }
        Ok(queued)
    }

    /// Queues `envelope`, waiting for room; the envelope comes back if the
    /// module is gone. Dropping the future drops the envelope unsent.
    pub(crate) async fn send(&self, mut envelope: Envelope) -> Result<(), Envelope> {
        loop {
            // Listening before looking: room given back between the look
            // and the wait is not missed.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(refused)) => return Err(refused),
                Err(Refused::Full(refused)) => envelope = refused,
            }
            room.await;
        }
    }

    /// Tells the module that a module it monitors went down. Never waits:
    /// a down is not refused for want of room, and comes before mail.
    pub(crate) fn send_down(&self, down: Down) {
        let module = {
            let mut state = self.shared.lock();
            if state.closed {
                return;
            }
            state.downs.push_back(down);
            state.module.take()
        };
        if let Some(module) = module {
            module.wake();
        }
    }

    /// A doorbell on this mailbox: it does not count as a sender.
    pub(crate) fn doorbell(&self) -> Doorbell {
        Doorbell {
            shared: self.shared.clone(),
        }
    }

    /// Envelopes waiting: queued, or taken by the module and not yet done.
    pub(crate) fn waiting(&self) -> usize {
        let state = self.shared.lock();
        state.queue.len() + state.in_hand
    }
}

/// Wakes the module waiting in [`Inbox::take`] with [`Mail::Rung`]: how the
/// node's stop reaches a module with nothing else to do.
pub(crate) struct Doorbell {
    shared: Arc<Shared>,
}

impl Doorbell {
    pub(crate) fn ring(&self) {
        let module = {
            let mut state = self.shared.lock();
            state.rung = true;
            state.module.take()
        };
        if let Some(module) = module {
            module.wake();
        }
    }
}

/// What [`Inbox::take`] found.
#[derive(Debug)]
pub(crate) enum Mail {
    /// A turn's batch of envelopes, to read with [`Inbox::next`].
    Batch,
    /// A monitored module went down.
    Down(Down),
    /// The doorbell rang.
    Rung,
    /// Nothing more will come: every sender is gone, or the mailbox is closed.
    Closed,
}

/// The module's end of its mailbox. It outlives the module's instances:
/// what was taken and not processed waits for the next one.
pub(crate) struct Inbox {
    shared: Arc<Shared>,
    /// Taken from the queue and not yet read, in order.
    hand: VecDeque<Envelope>,
    /// Left to read in this turn.
    turn: usize,
}

impl Inbox {
    /// The next envelope of this turn, if any.
    pub(crate) fn next(&mut self) -> Option<Envelope> {
        if self.turn == 0 {
            return None;
        }
        self.turn -= 1;
        self.hand.pop_front()
    }

    /// Puts an envelope taken with [`Inbox::next`] back in front, for the
    /// next instance.
    pub(crate) fn put_back(&mut self, envelope: Envelope) {
        self.hand.push_front(envelope);
        self.turn += 1;
    }

    /// Waits for the doorbell, a down, or the next turn's mail, in that
    /// order. Call it when [`Inbox::next`] has no more: coming back gives
    /// the room of what was read back.
    pub(crate) async fn take(&mut self) -> Mail {
        poll_fn(|cx| self.poll_take(cx)).await
    }

    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Mail> {
        debug_assert_eq!(self.turn, 0, "a turn is taken with none left of the last");
        // A module that always finds mail still gives its thread's other
        // tasks a turn now and then.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.shared.lock();
        let room_back = state.in_hand > self.hand.len() && std::mem::take(&mut state.senders_wait);
        state.in_hand = self.hand.len();
        let outcome = if state.closed {
            Poll::Ready(Mail::Closed)
        } else if std::mem::take(&mut state.rung) {
            Poll::Ready(Mail::Rung)
        } else if let Some(down) = state.downs.pop_front() {
            Poll::Ready(Mail::Down(down))
        } else if !self.hand.is_empty() {
            self.turn = self.hand.len().min(self.shared.batch);
            Poll::Ready(Mail::Batch)
        } else if !state.queue.is_empty() {
            // All of it, with no copy: the hand is empty, its buffer goes
            // back as the queue's.
            std::mem::swap(&mut state.queue, &mut self.hand);
            state.in_hand = self.hand.len();
            self.turn = self.hand.len().min(self.shared.batch);
            Poll::Ready(Mail::Batch)
        } else if state.senders == 0 {
            Poll::Ready(Mail::Closed)
        } else {
            if !state.module.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.module = Some(cx.waker().clone());
            }
            Poll::Pending
        };
        drop(state);
        if room_back {
            self.shared.room.notify_waiters();
        }
        if outcome.is_ready() {
            coop.made_progress();
        }
        outcome
    }

    /// Closes the mailbox: later sends fail, and whatever is queued or in
    /// hand is dropped (an ask in it ends with `Stopped`).
    pub(crate) fn close(&mut self) {
        let (queued, downs) = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.in_hand = 0;
            state.module = None;
            (std::mem::take(&mut state.queue), std::mem::take(&mut state.downs))
        };
        self.shared.room.notify_waiters();
        drop((queued, downs));
        self.hand.clear();
        self.turn = 0;
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use botbus_core::{
        AskEnvelope, AskError, CallerSink, CancelFlag, Down, DownReason, Envelope, EnvelopeKind, Payload, SenderAddress,
    };
    use futures::future::BoxFuture;

    use super::{mailbox, Inbox, Mail, Refused};

    fn tell(seq: u32) -> Envelope {
        Envelope {
            from: SenderAddress::interned("test/sender"),
            payload: Payload::new(seq),
            kind: EnvelopeKind::Tell,
        }
    }

    fn seq(envelope: Envelope) -> u32 {
        envelope.payload.decode().expect("a u32")
    }

    const LIMIT: Duration = Duration::from_secs(10);

    /// Takes turns until `n` envelopes are read; their numbers, in order.
    async fn take_turns(inbox: &mut Inbox, n: usize) -> Vec<u32> {
        let mut seen = Vec::new();
        while seen.len() < n {
            assert!(matches!(
                tokio::time::timeout(LIMIT, inbox.take()).await.unwrap(),
                Mail::Batch
            ));
            seen.extend(std::iter::from_fn(|| inbox.next()).map(seq));
        }
        seen
    }

    #[tokio::test]
    async fn envelopes_arrive_in_order_and_the_bound_counts_what_is_in_hand() {
        let (mailbox, mut inbox) = mailbox(4);
        for i in 0..4 {
            assert!(mailbox.try_send(tell(i)).is_ok());
        }
        assert!(matches!(mailbox.try_send(tell(4)), Err(Refused::Full(_))));
        assert_eq!(mailbox.waiting(), 4);

        // Turns of at most half the capacity; what is taken still waits.
        assert!(matches!(inbox.take().await, Mail::Batch));
        assert_eq!(seq(inbox.next().unwrap()), 0);
        assert_eq!(seq(inbox.next().unwrap()), 1);
        assert!(inbox.next().is_none());
        assert!(matches!(mailbox.try_send(tell(4)), Err(Refused::Full(_))));

        // Coming back for more gives the last turn's room back.
        assert!(matches!(inbox.take().await, Mail::Batch));
        assert!(mailbox.try_send(tell(4)).is_ok());
        assert!(mailbox.try_send(tell(5)).is_ok());
        assert!(matches!(mailbox.try_send(tell(6)), Err(Refused::Full(_))));
        let mut seen: Vec<u32> = std::iter::from_fn(|| inbox.next()).map(seq).collect();
        assert!(matches!(inbox.take().await, Mail::Batch));
        seen.extend(std::iter::from_fn(|| inbox.next()).map(seq));
        assert_eq!(seen, [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn many_sent_at_once_fill_the_room_in_order_and_the_rest_stay_with_the_sender() {
        let (mailbox, mut inbox) = mailbox(4);
        assert!(mailbox.try_send(tell(0)).is_ok());
        let mut many: VecDeque<Envelope> = (1..6).map(tell).collect();
        assert_eq!(mailbox.try_send_many(&mut many).unwrap(), 3);
        assert_eq!(many.into_iter().map(seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(mailbox.waiting(), 4);
        // Full: nothing taken, and the sender is told of room once it comes.
        let mut more = VecDeque::from([tell(4)]);
        assert_eq!(mailbox.try_send_many(&mut more).unwrap(), 0);
        assert_eq!(more.len(), 1);
        let waiting = {
            let sender = mailbox.clone();
            tokio::spawn(async move { sender.send(tell(4)).await.is_ok() })
        };
        assert_eq!(take_turns(&mut inbox, 5).await, [0, 1, 2, 3, 4]);
        assert!(tokio::time::timeout(LIMIT, waiting).await.unwrap().unwrap());
        // Gone: refused whole.
        inbox.close();
        let mut late = VecDeque::from([tell(5)]);
        assert!(mailbox.try_send_many(&mut late).is_err());
        assert_eq!(late.len(), 1);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_is_woken_when_the_module_takes_more() {
        let (mailbox, mut inbox) = mailbox(1);
        assert!(mailbox.try_send(tell(0)).is_ok());
        let sender = mailbox.clone();
        let waiting = tokio::spawn(async move { sender.send(tell(1)).await.is_ok() });
        assert!(matches!(inbox.take().await, Mail::Batch));
        assert_eq!(seq(inbox.next().unwrap()), 0);
        // Done with it: taking again gives its room to the waiting sender.
        assert!(matches!(
            tokio::time::timeout(LIMIT, inbox.take()).await.unwrap(),
            Mail::Batch
        ));
        assert!(tokio::time::timeout(LIMIT, waiting).await.unwrap().unwrap());
        assert_eq!(seq(inbox.next().unwrap()), 1);
    }

    #[tokio::test]
    async fn a_waiting_module_is_woken_by_mail_and_hears_when_every_sender_is_gone() {
        let (mailbox, mut inbox) = mailbox(8);
        let sender = mailbox.clone();
        let taker = tokio::spawn(async move {
            let mut seen = Vec::new();
            while matches!(inbox.take().await, Mail::Batch) {
                while let Some(envelope) = inbox.next() {
                    seen.push(seq(envelope));
                }
            }
            seen
        });
        tokio::task::yield_now().await; // let it wait first
        sender.send(tell(7)).await.expect("room");
        drop(sender);
        mailbox.send(tell(8)).await.expect("room");
        drop(mailbox);
        assert_eq!(tokio::time::timeout(LIMIT, taker).await.unwrap().unwrap(), [7, 8]);
    }

    /// The askers of asks that only notice being let go of unanswered.
    struct Asker(Arc<AtomicBool>);

    impl CallerSink for Asker {
        fn progress(&self, _: u64, _: Payload) {}
        fn caller_ask(&self, _: u64, _: Payload) -> BoxFuture<'static, Result<Payload, AskError>> {
            Box::pin(async { Err(AskError::CallerNotListening("test".to_owned())) })
        }
        fn reply(&self, _: u64, _: Result<Payload, AskError>) {}
        fn abandoned(&self, _: u64) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn closing_refuses_later_sends_wakes_waiting_senders_and_drops_what_was_queued() {
        let (mailbox, mut inbox) = mailbox(1);
        let dropped = Arc::new(AtomicBool::new(false));
        let ask = Envelope {
            kind: EnvelopeKind::Ask(AskEnvelope::new(
                Arc::new(Asker(dropped.clone())),
                1,
                CancelFlag::new(),
                tokio::time::Instant::now() + LIMIT,
            )),
            ..tell(0)
        };
        assert!(mailbox.try_send(ask).is_ok());
        let sender = mailbox.clone();
        let waiting = tokio::spawn(async move { sender.send(tell(1)).await.is_err() });
        while !waiting.is_finished() && !mailbox.shared.lock().senders_wait {
            tokio::task::yield_now().await; // until it waits for room
        }
        inbox.close();
        assert!(
            dropped.load(Ordering::SeqCst),
            "the queued ask is dropped: it ends `Stopped`"
        );
        assert!(
            tokio::time::timeout(LIMIT, waiting).await.unwrap().unwrap(),
            "refused once closed"
        );
        assert!(matches!(mailbox.try_send(tell(2)), Err(Refused::Closed(_))));
        assert_eq!(mailbox.waiting(), 0);
        assert!(matches!(inbox.take().await, Mail::Closed));
    }

    #[tokio::test]
    async fn downs_pass_a_full_mailbox_and_come_before_mail_and_the_doorbell_wakes_a_waiting_module() {
        let (mailbox, mut inbox) = mailbox(1);
        assert!(mailbox.try_send(tell(0)).is_ok());
        let down = |module: &str| Down {
            module: module.to_owned(),
            reason: DownReason::Stopped,
        };
        mailbox.send_down(down("arm"));
        mailbox.send_down(down("gripper"));
        assert!(matches!(inbox.take().await, Mail::Down(d) if d.module == "arm"));
        assert!(matches!(inbox.take().await, Mail::Down(d) if d.module == "gripper"));
        assert!(matches!(inbox.take().await, Mail::Batch));
        assert_eq!(seq(inbox.next().unwrap()), 0);

        let doorbell = mailbox.doorbell();
        let taker = tokio::spawn(async move { inbox.take().await });
        tokio::task::yield_now().await; // let it wait first
        doorbell.ring();
        assert!(matches!(
            tokio::time::timeout(LIMIT, taker).await.unwrap().unwrap(),
            Mail::Rung
        ));
    }

    #[tokio::test]
    async fn what_is_taken_is_read_in_turns_with_room_given_back_and_downs_heard_between_them() {
        // Capacity 8: turns of 4. All 8 are taken at once.
        let (mailbox, mut inbox) = mailbox(8);
        for i in 0..8 {
            assert!(mailbox.try_send(tell(i)).is_ok());
        }
        assert!(matches!(inbox.take().await, Mail::Batch));
        let turn: Vec<u32> = std::iter::from_fn(|| inbox.next()).map(seq).collect();
        assert_eq!(turn, [0, 1, 2, 3]);
        // Read, but not yet given back: still full.
        assert!(matches!(mailbox.try_send(tell(8)), Err(Refused::Full(_))));
        assert_eq!(mailbox.waiting(), 8);

        // A down and the doorbell that come meanwhile are heard before the
        // rest of the hand, and coming back gives the turn's room back.
        mailbox.send_down(Down {
            module: "arm".to_owned(),
            reason: DownReason::Stopped,
        });
        mailbox.doorbell().ring();
        assert!(matches!(inbox.take().await, Mail::Rung));
        assert_eq!(mailbox.waiting(), 4);
        assert!(matches!(inbox.take().await, Mail::Down(d) if d.module == "arm"));
        assert!(inbox.next().is_none(), "no mail with a down");
        assert!(mailbox.try_send(tell(8)).is_ok());

        // The rest of the hand comes before what was queued after it.
        assert_eq!(take_turns(&mut inbox, 5).await, [4, 5, 6, 7, 8]);
    }

    #[tokio::test]
    async fn an_envelope_put_back_comes_first() {
        let (mailbox, mut inbox) = mailbox(8);
        for i in 0..3 {
            assert!(mailbox.try_send(tell(i)).is_ok());
        }
        assert!(matches!(inbox.take().await, Mail::Batch));
        let first = inbox.next().unwrap();
        inbox.put_back(first);
        let order: Vec<u32> = std::iter::from_fn(|| inbox.next()).map(seq).collect();
        assert_eq!(order, [0, 1, 2]);
    }
}
