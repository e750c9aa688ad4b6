//! The two ends of an ask made in this process, and the one-shot slot
//! between them in the ask's shared flag: the callee's [`LocalAsker`]
//! leaves the reply there once, and the asker's [`PendingReply`] takes it.
//!
//! The slot is one atomic state word beside the reply and the asker's
//! waker, not a lock. A lock cost two atomic read-modify-writes to leave the
//! reply and two more to take it; here leaving it is one, and taking a reply
//! that is already there is a plain load. An ask answered on the asker's
//! own thread (the callee runs in the turn the ask gave it) takes its reply
//! without a single read-modify-write: an in-process ask went from 0.355 to
//! 0.327 µs on one CPU (2,966 to 2,928 instructions).
//!
//! **Spare flags.** When an ask has ended and its asker lets go of the
//! flag last (as it does once its callee has answered), the flag is
//! cleared and kept for the next ask made on the same thread, up to
//! [`SPARES`] of them. A module asking one ask after another then shares
//! one flag, and no ask made in this process costs a `malloc` and a `free`
//! of its own: 2,928 to 2,771 instructions an ask, 0.322 to 0.308 µs on one
//! CPU (`cargo bench --bench in_process`). A flag made for an ask that came
//! from elsewhere ([`CancelFlag::until`]) is taken from the same spares, and
//! kept there again when its last holder retires it
//! ([`CancelFlag::retire`]).
//!
//! This module has `unsafe` code, so that the rest of the crate needs
//! none for it. What keeps it sound:
//!
//! - **One of each end.** [`ends`] makes a slot's [`LocalAsker`] and
//!   [`PendingReply`] together, around a new flag or a spare one, and
//!   neither can be cloned. The slot's own functions are private to this
//!   module: nothing else reaches it, not even another clone of the flag.
//! - **A spare flag is nobody else's, and as new.** A flag is kept (by the
//!   asker's end, or by [`CancelFlag::retire`], through one function,
//!   `keep_spare`) only if `Arc::get_mut` finds no other holder (which
//!   also makes whatever the others did before letting go visible here),
//!   and is cleared through that `&mut`: the state word back to zero, the
//!   reply and the waker dropped. A spare sits in its thread's list, which
//!   nothing else reaches, until [`ends`] or [`CancelFlag::until`] takes
//!   it.
//! - **The reply is written once, before it is read.** The callee leaves
//!   it at most once (the `answered` guard of its `LocalAsker`), then sets
//!   `REPLIED` with release ordering; the asker reads it only after seeing
//!   `REPLIED` with acquire ordering, and the callee never touches it
//!   again.
//! - **The waker is written only while the callee cannot read it.** The
//!   asker writes its waker when `WAITING` is clear, then sets `WAITING`
//!   with release ordering; to change it, it clears `WAITING` first. The
//!   callee reads the waker (only to wake it by reference) if its setting
//!   of `REPLIED` found `WAITING` set. All changes of the state word are
//!   read-modify-writes, so they have one order: whichever of the two ends
//!   comes second sees what the first did, and an asker that finds
//!   `REPLIED` takes the reply instead of writing its waker.
//! - **The asker is one task at a time**: [`PendingReply::poll`] takes
//!   `&mut self`.
//!
//! Its tests run under Miri: `cargo +nightly miri test -p botbus-core --lib local_ask`.

#![allow(unsafe_code)]

use std::cell::{RefCell, UnsafeCell};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AskShared, CancelFlag, Ended};
use crate::context::CallEvent;
use crate::error::AskError;
use crate::message::Payload;

/// The reply is in the slot.
const REPLIED: u8 = 0b01;
/// The asker's waker is in the slot, and it waits to be woken.
const WAITING: u8 = 0b10;

/// Where the callee of an ask made in this process leaves its reply, and
/// the asker waits for it.
#[derive(Default)]
pub(super) struct ReplySlot {
    state: AtomicU8,
    waker: UnsafeCell<Option<Waker>>,
    reply: UnsafeCell<Option<Ended>>,
}

// SAFETY: the cells are reached only through the slot's two ends, as the
// module documentation describes, and what they hold is `Send` (checked
// below).
unsafe impl Sync for ReplySlot {}

const _: () = {
    const fn send<T: Send>() {}
    send::<Ended>();
    send::<Waker>();
};

impl ReplySlot {
    /// Leaves `reply`, waking the asker if it waits. Only [`LocalAsker`]
    /// calls it, at most once.
    fn put(&self, reply: Ended) {
        // SAFETY: the one write of the reply; the asker reads it only
        // after the `REPLIED` set below.
        unsafe { *self.reply.get() = Some(reply) };
        let before = self.state.fetch_or(REPLIED, Ordering::AcqRel);
        if before & WAITING != 0 {
            // SAFETY: the asker wrote its waker before setting `WAITING`,
            // and writes it again only after clearing it — which it does
            // not now, since it will find `REPLIED`. Both ends only read it.
            if let Some(asker) = unsafe { &*self.waker.get() } {
                asker.wake_by_ref();
            }
        }
    }

    /// The reply if it is there; if not, with `waker`, the asker waits to
    /// be woken by it. Only [`PendingReply`] calls it, one call at a time.
    fn poll(&self, waker: Option<&Waker>) -> Poll<Ended> {
        let state = self.state.load(Ordering::Acquire);
        if state & REPLIED != 0 {
            return Poll::Ready(self.take());
        }
        let Some(waker) = waker else {
            return Poll::Pending;
        };
        if state & WAITING != 0 {
            // SAFETY: the callee may be reading the waker too; neither
            // writes it while `WAITING` is set.
            if unsafe { &*self.waker.get() }
                .as_ref()
                .is_some_and(|w| w.will_wake(waker))
            {
                return Poll::Pending;
            }
            if self.state.fetch_and(!WAITING, Ordering::AcqRel) & REPLIED != 0 {
                return Poll::Ready(self.take());
            }
        }
        // SAFETY: `WAITING` is clear and was seen clear by a
        // read-modify-write (or never set): the callee will not read the
        // waker until the `WAITING` set below.
        unsafe { *self.waker.get() = Some(waker.clone()) };
        if self.state.fetch_or(WAITING, Ordering::AcqRel) & REPLIED != 0 {
            return Poll::Ready(self.take());
        }
        Poll::Pending
    }

    /// Makes the slot of a flag that nobody else holds as new, dropping
    /// what it held.
    pub(super) fn clear(&mut self) {
        *self.state.get_mut() = 0;
        *self.waker.get_mut() = None;
        *self.reply.get_mut() = None;
    }

    /// Takes the reply, seen `REPLIED` with acquire ordering.
    fn take(&self) -> Ended {
        // SAFETY: the callee wrote the reply before setting `REPLIED`, and
        // touches it no more; only the asker's one end takes it.
        unsafe { (*self.reply.get()).take() }.expect("an ask's reply is taken once")
    }
}

/// The two ends of a new ask made in this process, whose asker waits
/// `timeout` and listens for the callee's `events` if it has them: the
/// asker's, and the callee's. They share a flag, a spare one of this
/// thread's if there is one.
pub(super) fn ends(timeout: Duration, events: Option<mpsc::UnboundedSender<CallEvent>>) -> (PendingReply, LocalAsker) {
    let shared = match take_spare() {
        Some(mut spare) => {
            let shared = Arc::get_mut(&mut spare).expect("a spare flag is nobody else's");
            shared.timeout = timeout;
            shared.events = events;
            spare
        }
        None => Arc::new(AskShared::here(timeout, events)),
    };
    let flag = CancelFlag(shared);
    let asker = LocalAsker {
        flag: flag.clone(),
        answered: false,
    };
    let reply = PendingReply {
        flag: ManuallyDrop::new(flag),
    };
    (reply, asker)
}

/// An asker in this process, as its callee holds it: the ask's flag, and
/// the way back. Dropped unanswered, it ends the ask with
/// [`AskError::Stopped`].
pub(super) struct LocalAsker {
    flag: CancelFlag,
    answered: bool,
}

impl LocalAsker {
    /// The ask's flag.
    pub(super) fn flag(&self) -> &CancelFlag {
        &self.flag
    }

    /// Ends the ask with `result`.
    pub(super) fn answer(mut self, result: Result<Payload, AskError>) {
        self.end(Ended::Replied(result));
    }

    /// Ends the ask at its deadline, kept by whoever carries it.
    pub(super) fn time_out(mut self) {
        self.end(Ended::TimedOut);
    }

    fn end(&mut self, ended: Ended) {
        if !self.answered {
            self.answered = true;
            self.flag.0.reply.put(ended);
        }
    }
}

impl Drop for LocalAsker {
    fn drop(&mut self) {
        self.end(Ended::Dropped);
    }
}

/// The asker's hold on the reply of an ask it made in this process.
pub(crate) struct PendingReply {
    flag: ManuallyDrop<CancelFlag>,
}

/// How many spare flags a thread keeps at most: more than a module has
/// asks out at once, as a rule.
const SPARES: usize = 16;

thread_local! {
    /// Flags of asks made on this thread that ended, cleared, for the next
    /// asks made here.
    static SPARE_FLAGS: RefCell<Vec<Arc<AskShared>>> = const { RefCell::new(Vec::new()) };
}

impl Drop for PendingReply {
    /// Keeps the ask's flag as a spare of this thread's, if nobody else
    /// holds it (its callee has let go, as it has of an answered ask) and
    /// the thread has room for it; drops it otherwise.
    fn drop(&mut self) {
        // SAFETY: `self.flag` is taken once, here, and not touched after.
        let CancelFlag(shared) = unsafe { ManuallyDrop::take(&mut self.flag) };
        keep_spare(shared);
    }
}

/// A spare flag of this thread's, cleared, if it has one.
pub(super) fn take_spare() -> Option<Arc<AskShared>> {
    SPARE_FLAGS.try_with(|spares| spares.borrow_mut().pop()).ok().flatten()
}

/// Keeps `shared` as a spare of this thread's, cleared, if nobody else
/// holds it and the thread has room for it; drops it otherwise.
pub(super) fn keep_spare(mut shared: Arc<AskShared>) {
    let Some(spare) = Arc::get_mut(&mut shared) else {
        return;
    };
    spare.clear();
    let _ = SPARE_FLAGS.try_with(move |spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES {
            spares.push(shared);
        }
    });
}

impl PendingReply {
    /// The ask's flag.
    pub(crate) fn flag(&self) -> &CancelFlag {
        &self.flag
    }

    /// How the ask ended, once it has. With `waker`, the asker waits to be
    /// woken by its end if it has not ended yet.
    ///
    /// # Panics
    /// Polled again after it returned the end.
    pub(crate) fn poll(&mut self, waker: Option<&Waker>) -> Poll<Ended> {
        self.flag.0.reply.poll(waker)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Poll, Wake, Waker};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::{ends, LocalAsker, PendingReply, SPARES, SPARE_FLAGS};
    use crate::bus::{CancelFlag, Ended};
    use crate::context::CallEvent;
    use crate::error::AskError;
    use crate::message::Payload;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let count = Arc::new(Counting::default());
        (count.clone(), Waker::from(count))
    }

    fn ask() -> (PendingReply, LocalAsker) {
        ends(Duration::ZERO, None)
    }

    /// Starts a test of the spare flags with none on this thread (tests
    /// may share a thread).
    fn no_spares() {
        SPARE_FLAGS.with(|spares| spares.borrow_mut().clear());
    }

    fn spares() -> usize {
        SPARE_FLAGS.with(|spares| spares.borrow().len())
    }

    fn same_flag(a: &CancelFlag, b: &CancelFlag) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    fn replied(ended: Poll<Ended>) -> u32 {
        match ended {
            Poll::Ready(Ended::Replied(Ok(payload))) => payload.decode().expect("a u32"),
            _ => panic!("not replied"),
        }
    }

    #[test]
    fn a_reply_left_before_the_asker_looks_is_taken_without_a_wake() {
        let (mut reply, asker) = ask();
        asker.answer(Ok(Payload::new(7u32)));
        assert_eq!(replied(reply.poll(None)), 7);
    }

    #[test]
    fn a_waiting_asker_is_woken_once_by_the_reply_and_a_new_waker_replaces_the_old() {
        let (mut reply, asker) = ask();
        let (old_count, old) = counting();
        let (new_count, new) = counting();
        assert!(reply.poll(None).is_pending(), "no waker: nothing kept");
        assert!(reply.poll(Some(&old)).is_pending());
        assert!(reply.poll(Some(&old)).is_pending(), "the same waker again");
        assert!(reply.poll(Some(&new)).is_pending());
        asker.answer(Ok(Payload::new(9u32)));
        assert_eq!(old_count.0.load(Ordering::SeqCst), 0, "the old waker is not woken");
        assert_eq!(new_count.0.load(Ordering::SeqCst), 1);
        assert_eq!(replied(reply.poll(Some(&new))), 9);
    }

    #[test]
    fn an_asker_dropped_unanswered_or_timed_out_ends_the_ask_so() {
        let (mut reply, asker) = ask();
        let (count, waker) = counting();
        assert!(reply.poll(Some(&waker)).is_pending());
        drop(asker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(reply.poll(None), Poll::Ready(Ended::Dropped)));

        let (mut reply, asker) = ask();
        asker.time_out();
        assert!(matches!(reply.poll(None), Poll::Ready(Ended::TimedOut)));
    }

    #[test]
    #[should_panic(expected = "taken once")]
    fn a_reply_is_taken_once() {
        let (mut reply, asker) = ask();
        asker.answer(Err(AskError::Cancelled("arm".into())));
        let _ = reply.poll(None);
        let _ = reply.poll(None);
    }

    #[test]
    fn a_reply_never_taken_and_a_waker_left_behind_are_dropped_with_the_flag() {
        let (mut reply, asker) = ask();
        let (count, waker) = counting();
        assert!(reply.poll(Some(&waker)).is_pending());
        asker.answer(Ok(Payload::new(1u32)));
        drop(reply);
        drop(waker);
        assert_eq!(Arc::strong_count(&count), 1, "the slot's waker is dropped");
    }

    #[test]
    fn an_ended_ask_leaves_its_flag_to_the_next_ask_on_its_thread_as_new() {
        no_spares();
        let (events, mut listened) = mpsc::unbounded_channel::<CallEvent>();
        let (mut reply, asker) = ends(Duration::from_secs(1), Some(events));
        let first = reply.flag().clone();
        let (count, waker) = counting();
        assert!(reply.poll(Some(&waker)).is_pending());
        first.cancel();
        let _ = first.deadline();
        asker.answer(Ok(Payload::new(3u32)));
        drop(first);
        drop(reply); // its reply never taken
        assert_eq!(spares(), 1);
        assert_eq!(Arc::strong_count(&count), 2, "the kept flag let the waker go");
        assert!(
            matches!(listened.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)),
            "the kept flag let the way to the events go"
        );

        let timeout = Duration::from_secs(5);
        let (mut reply, asker) = ends(timeout, None);
        assert_eq!(spares(), 0, "the next ask took it");
        let flag = reply.flag();
        assert!(!flag.is_cancelled());
        assert!(flag.events().is_none());
        assert_eq!(flag.remaining(), timeout, "its deadline is fixed anew");
        assert!(reply.poll(None).is_pending(), "no reply left in it");
        asker.answer(Ok(Payload::new(4u32)));
        assert_eq!(replied(reply.poll(None)), 4);
    }

    #[test]
    fn a_flag_its_callee_still_holds_is_not_kept() {
        no_spares();
        let (reply, asker) = ask();
        drop(reply); // the asker gives up; its callee works on
        assert_eq!(spares(), 0);
        let (next, _next_asker) = ask();
        assert!(!same_flag(next.flag(), asker.flag()), "a new flag for the next ask");
        next.flag().cancel();
        assert!(!asker.flag().is_cancelled(), "the callee's flag is its own ask's");
        asker.answer(Ok(Payload::new(1u32))); // to nobody
        assert_eq!(spares(), 0, "a flag let go of by its callee is dropped");
    }

    #[test]
    fn a_flag_retired_by_its_last_holder_is_the_next_new_flag_and_one_held_elsewhere_is_not_kept() {
        no_spares();
        // An ask from elsewhere: its flag is held by the link's table and
        // the envelope, and raised before it ends.
        let deadline = tokio::time::Instant::now();
        let flag = CancelFlag::until(deadline);
        assert_eq!(flag.deadline(), deadline);
        let held = flag.clone();
        flag.cancel();
        flag.retire(); // the envelope still holds it
        assert_eq!(spares(), 0, "a flag held elsewhere is not kept");
        let kept = Arc::as_ptr(&held.0);
        held.retire();
        assert_eq!(spares(), 1);
        let next = CancelFlag::new();
        assert_eq!(spares(), 0);
        assert_eq!(Arc::as_ptr(&next.0), kept, "the spare is the next new flag");
        assert!(!next.is_cancelled(), "as new");
        assert!(
            next.0.deadline.get().is_none() && next.0.deadline_given.is_none(),
            "as new"
        );

        // Local asks and asks from elsewhere share the spares.
        let (mut reply, asker) = ask();
        assert!(!same_flag(reply.flag(), &next));
        asker.answer(Ok(Payload::new(0u32)));
        let _ = replied(reply.poll(None));
        drop(reply);
        assert_eq!(spares(), 1);
        let later = deadline + Duration::from_secs(1);
        let from_an_ask = CancelFlag::until(later);
        assert_eq!(spares(), 0, "a new flag took the ask's");
        assert!(!from_an_ask.is_cancelled());
        assert_eq!(from_an_ask.deadline(), later);
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_spare_flags() {
        no_spares();
        let asks: Vec<_> = (0..SPARES + 4).map(|_| ask()).collect();
        for (mut reply, asker) in asks {
            asker.answer(Ok(Payload::new(0u32)));
            let _ = replied(reply.poll(None));
        }
        assert_eq!(spares(), SPARES);
    }

    /// The two ends on two threads, the asker changing its waker as it
    /// polls: every reply is taken, whole, and the asker is woken for it.
    /// Under Miri this checks the slot for data races.
    #[test]
    fn the_two_ends_on_two_threads_hand_over_every_reply() {
        let rounds: u32 = if cfg!(miri) { 20 } else { 2_000 };
        for round in 0..rounds {
            let (mut reply, asker) = ask();
            let callee = std::thread::spawn(move || asker.answer(Ok(Payload::new(round))));
            let (first_count, first) = counting();
            let (second_count, second) = counting();
            let mut polls = 0u32;
            let outcome = loop {
                let waker = if polls.is_multiple_of(2) { &first } else { &second };
                polls += 1;
                match reply.poll(Some(waker)) {
                    Poll::Ready(ended) => break ended,
                    Poll::Pending if polls > 1_000 => {
                        // The callee is slow to run: wait for the wake.
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        while first_count.0.load(Ordering::SeqCst) + second_count.0.load(Ordering::SeqCst) == 0 {
                            assert!(std::time::Instant::now() < deadline, "never woken");
                            std::thread::yield_now();
                        }
                    }
                    Poll::Pending => std::thread::yield_now(),
                }
            };
            assert_eq!(replied(Poll::Ready(outcome)), round);
            callee.join().unwrap();
        }
    }
}
