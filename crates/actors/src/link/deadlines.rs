//! The deadlines of the asks a link carries for askers in this process,
//! kept by the link: one timer for the link, not one per ask.
//!
//! An asker whose ask crossed a link makes no timer of its own (see
//! [`CancelHook::keeping_deadline`](botbus_core::CancelHook::keeping_deadline)).
//! Its deadline is filed with the ask, under the lock that files the ask
//! anyway, and the link's keeper — a task beside its reader — wakes at the
//! earliest deadline it knows of, ends the asks whose deadlines passed
//! ([`Caller::time_out`](botbus_core::Caller::time_out)), tells their callees'
//! node, and sleeps until the next one. An ask filed with a deadline later
//! than the one the keeper waits for — every ask, when asks share a
//! timeout — costs one comparison; only an earlier one moves the keeper's
//! alarm.
//!
//! A tokio timer per ask costs its allocation, a lock on the time driver to
//! register it and another to drop it: about 600 of the asker's 10,000
//! instructions in an ask round trip between two processes (callgrind).
//! Even the keeper's one tokio timer cost every wait for I/O on the link's
//! thread a look at the clock and a kernel timer, so the keeper is woken by
//! an [`Alarm`] instead, kept by a thread of its own.
//!
//! The keeper runs on the link's thread: a module that blocks that thread
//! delays the deadlines of the asks going through the link, as it delays
//! their replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use botbus_core::Frame;
use tokio::time::Instant;

use super::asks::PendingAsk;
use super::{ById, LinkHandle};
use crate::alarm::Alarm;

/// The earliest deadline a link's keeper waits for, and the alarm that
/// wakes it then.
pub(super) struct Deadlines {
    /// Deadlines are kept as nanoseconds after this.
    epoch: Instant,
    /// When the keeper wakes next, in nanoseconds after `epoch`;
    /// [`NOT_ARMED`] when no ask has a deadline. Written, and the alarm
    /// set, only under the lock of the link's pending asks.
    armed: AtomicU64,
    /// Wakes the keeper at `armed`.
    alarm: Alarm,
}

/// [`Deadlines::armed`] when the keeper waits for no deadline.
const NOT_ARMED: u64 = u64::MAX;

impl Deadlines {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            armed: AtomicU64::new(NOT_ARMED),
            alarm: Alarm::new(),
        }
    }

    /// The instant `at` nanoseconds after the epoch.
    fn instant(&self, at: u64) -> Instant {
        self.epoch + std::time::Duration::from_nanos(at)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(NOT_ARMED - 1)
    }

    /// An ask with `deadline` was filed; `_filed` is the lock it was filed
    /// under. Moves the keeper's alarm if it is set for a later deadline.
    pub(super) fn filed(&self, deadline: Instant, _filed: &ById<u64, PendingAsk>) {
        let at = self.nanos(deadline);
        if at < self.armed.load(Ordering::Relaxed) {
            self.armed.store(at, Ordering::Relaxed);
            self.alarm.set(deadline.into_std());
        }
    }

    /// Takes out of `pending` the asks whose deadline is past at `now`,
    /// and arms the keeper for the earliest deadline of the rest.
    fn take_due(&self, pending: &mut ById<u64, PendingAsk>, now: Instant) -> Vec<(u64, PendingAsk)> {
        let now = self.nanos(now);
        let mut next = NOT_ARMED;
        let mut due = Vec::new();
        for (&id, ask) in pending.iter() {
            match ask.deadline.map(|deadline| self.nanos(deadline)) {
                Some(at) if at <= now => due.push(id),
                Some(at) => next = next.min(at),
                None => {}
            }
        }
        let due = due
            .into_iter()
            .filter_map(|id| Some((id, pending.remove(&id)?)))
            .collect();
        self.armed.store(next, Ordering::Relaxed);
        match next {
            NOT_ARMED => self.alarm.unset(),
            at => self.alarm.set(self.instant(at).into_std()),
        }
        due
    }
}

/// Keeps the deadlines of `link`'s asks until the link closes.
pub(super) async fn keep(link: Arc<LinkHandle>) {
    let closed = link.closed.cancelled();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => return,
            () = link.deadlines.alarm.fired() => {}
        }
        let due = {
            let mut pending = link.pending.lock().expect("link lock");
            link.deadlines.take_due(&mut pending.by_id, Instant::now())
        };
        for (id, ask) in due {
            link.send_control(&Frame::Cancel { id });
            ask.caller.time_out();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use botbus_core::{AskEnvelope, AskError, CallerSink, CancelFlag, Payload};
    use futures::future::BoxFuture;

    use super::*;

    /// An asker elsewhere that only needs to exist.
    struct Nobody;

    impl CallerSink for Nobody {
        fn progress(&self, _: u64, _: Payload) {}
        fn caller_ask(&self, _: u64, _: Payload) -> BoxFuture<'static, Result<Payload, AskError>> {
            Box::pin(async { Err(AskError::Cancelled("nobody".into())) })
        }
        fn reply(&self, _: u64, _: Result<Payload, AskError>) {}
        fn abandoned(&self, _: u64) {}
    }

    fn ask_until(deadline: Option<Instant>) -> PendingAsk {
        let far = Instant::now() + Duration::from_secs(3600);
        PendingAsk {
            caller: AskEnvelope::new(Arc::new(Nobody), 1, CancelFlag::new(), far).into_caller(),
            callee: "echo".into(),
            deadline,
        }
    }

    #[tokio::test]
    async fn the_keeper_is_armed_for_the_earliest_deadline_and_takes_only_those_past() {
        let deadlines = Deadlines::new();
        let at = |ms: u64| deadlines.epoch + Duration::from_millis(ms);
        let mut pending = ById::default();
        for (id, ms) in [(1, 300), (2, 100), (3, 200)] {
            pending.insert(id, ask_until(Some(at(ms))));
            deadlines.filed(at(ms), &pending);
        }
        pending.insert(4, ask_until(None)); // an asker elsewhere keeps its own
        assert_eq!(deadlines.armed.load(Ordering::Relaxed), deadlines.nanos(at(100)));

        let due = deadlines.take_due(&mut pending, at(150));
        assert_eq!(due.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
        assert_eq!(deadlines.armed.load(Ordering::Relaxed), deadlines.nanos(at(200)));

        // A later deadline leaves the keeper as it is; an earlier one moves it.
        pending.insert(5, ask_until(Some(at(250))));
        deadlines.filed(at(250), &pending);
        assert_eq!(deadlines.armed.load(Ordering::Relaxed), deadlines.nanos(at(200)));
        pending.insert(6, ask_until(Some(at(180))));
        deadlines.filed(at(180), &pending);
        assert_eq!(deadlines.armed.load(Ordering::Relaxed), deadlines.nanos(at(180)));

        let mut due: Vec<u64> = deadlines
            .take_due(&mut pending, at(300))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        due.sort_unstable();
        assert_eq!(due, [1, 3, 5, 6]);
        assert_eq!(
            deadlines.armed.load(Ordering::Relaxed),
            NOT_ARMED,
            "only ask 4 is left, with no deadline here"
        );
        assert_eq!(pending.len(), 1);
    }
}
