//! Alarms kept off the threads that run links: one thread per process, the
//! alarm clock, wakes a task once an instant it was given has passed.
//!
//! A link watches its peer's silence (liveness) and keeps the deadlines of
//! the asks it carries; both need waking at an instant. A tokio timer on the
//! link's thread would do it, but a thread with any timer pending pays for
//! it on every wait for I/O: the runtime reads the clock to size the wait,
//! and the kernel arms a timer for `epoll_wait` and cancels it again. An ask
//! between two processes waits for I/O once on each side: taking the two
//! timers off took a round trip over stdio on one CPU from 6.2–6.4 µs to
//! 5.8–5.9 (`taskset -c 0`, release build, 2 s of asks, three runs). The alarm
//! clock's thread sleeps until the earliest instant any alarm was set to,
//! and wakes only then, or when an alarm is set earlier than that.
//!
//! An alarm only wakes: what it wakes for runs where it always did, on the
//! link's thread, and looks at the clock itself. An alarm may so fire early
//! or for an instant since moved later; its owner finds nothing due and sets
//! it again: `alarm.set(at)`, then `alarm.fired().await` resolves once `at`
//! has passed (by the time the clock's thread and then the owner's thread
//! are scheduled: tens of microseconds on an idle machine).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

/// [`Slot::at`] of an alarm that is not set.
const UNSET: u64 = u64::MAX;

/// Wakes the task that waits on it ([`Alarm::fired`]) once the instant it
/// was set to has passed. Dropped, it is forgotten.
pub(crate) struct Alarm {
    slot: Arc<Slot>,
    clock: &'static Clock,
}

/// What an alarm shares with the clock.
#[derive(Default)]
struct Slot {
    /// When it fires, in nanoseconds after [`Clock::epoch`]; [`UNSET`] when
    /// it is not set (or has fired).
    at: AtomicU64,
    /// It fired, and its owner has not seen it yet.
    fired: AtomicBool,
    /// The task that waits on it.
    waker: AtomicWaker,
}

/// The process's alarm clock: its thread, and what that thread keeps.
struct Clock {
    epoch: Instant,
    state: Mutex<State>,
    /// Wakes the clock's thread for an alarm set earlier than it sleeps.
    earlier: Condvar,
}

struct State {
    alarms: Vec<Weak<Slot>>,
    /// When the clock's thread wakes next, in nanoseconds after
    /// [`Clock::epoch`]; [`UNSET`] when it waits to be woken.
    wakes_at: u64,
}

impl Alarm {
    /// A new alarm, not set.
    pub(crate) fn new() -> Alarm {
        let clock = Clock::get();
        let slot = Arc::new(Slot {
            at: AtomicU64::new(UNSET),
            ..Slot::default()
        });
        let mut state = clock.state.lock().expect("alarm clock lock");
        state.alarms.push(Arc::downgrade(&slot));
        drop(state);
        Alarm { slot, clock }
    }

    /// Sets the alarm to fire once `at` has passed, in place of whatever it
    /// was set to. Moved earlier than the clock's thread sleeps, it wakes
    /// that thread; moved later, it costs an atomic store.
    pub(crate) fn set(&self, at: Instant) {
        let at = self.clock.nanos(at);
        let before = self.slot.at.swap(at, Ordering::AcqRel);
        if at < before {
            // Under the lock the clock's thread is not between reading the
            // alarms and going to sleep: it either saw `at` or sleeps past
            // it, and is woken.
            let state = self.clock.state.lock().expect("alarm clock lock");
            if at < state.wakes_at {
                self.clock.earlier.notify_one();
            }
        }
    }

    /// Unsets the alarm: it fires no more until it is set again.
    pub(crate) fn unset(&self) {
        self.slot.at.store(UNSET, Ordering::Release);
    }

    /// Resolves once the alarm has fired since it was last seen to.
    pub(crate) async fn fired(&self) {
        poll_fn(|cx| {
            if self.slot.fired.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.slot.waker.register(cx.waker());
            if self.slot.fired.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}

impl Slot {
    /// Fires the alarm if it is due at `now`, unsetting it; if it is not,
    /// or was set again meanwhile, when it is due now (if that has passed,
    /// the clock wakes for it at once).
    fn fire_if_due(&self, now: u64) -> Option<u64> {
        let at = self.at.load(Ordering::Acquire);
        let unset = |at| self.at.compare_exchange(at, UNSET, Ordering::AcqRel, Ordering::Acquire);
        if at <= now && unset(at).is_ok() {
            self.fired.store(true, Ordering::Release);
            self.waker.wake();
            return None;
        }
        Some(self.at.load(Ordering::Acquire))
    }
}

impl Clock {
    /// The process's clock, its thread started on first use.
    fn get() -> &'static Clock {
        static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
        CLOCK.get_or_init(|| {
            let clock: &'static Clock = Box::leak(Box::new(Clock {
                epoch: Instant::now(),
                state: Mutex::new(State {
                    alarms: Vec::new(),
                    wakes_at: UNSET,
                }),
                earlier: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("botbus-alarms".to_owned())
                .spawn(|| clock.run())
                .expect("the alarm clock's thread starts");
            clock
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(UNSET - 1)
    }

    /// Fires every alarm that is due, forgets those dropped, and sleeps
    /// until the next is due or one is set earlier; for ever.
    fn run(&self) {
        let mut state = self.state.lock().expect("alarm clock lock");
        loop {
            let now = self.nanos(Instant::now());
            let mut next = UNSET;
            state.alarms.retain(|alarm| {
                let Some(slot) = alarm.upgrade() else {
                    return false;
                };
                if let Some(at) = slot.fire_if_due(now) {
                    next = next.min(at);
                }
                true
            });
            state.wakes_at = next;
            state = match next {
                UNSET => self.earlier.wait(state).expect("alarm clock lock"),
                next => {
                    let sleep = Duration::from_nanos(next.saturating_sub(self.nanos(Instant::now())));
                    self.earlier.wait_timeout(state, sleep).expect("alarm clock lock").0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Alarm;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// Runs `test` on a runtime of its own, within the deadline.
    fn within_deadline(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            tokio::time::timeout(DEADLINE, test).await.expect("within the deadline");
        });
    }

    #[test]
    fn an_alarm_fires_once_its_instant_has_passed_and_not_before() {
        within_deadline(async {
            let alarm = Alarm::new();
            let set = Instant::now();
            let at = set + Duration::from_millis(30);
            alarm.set(at);
            alarm.fired().await;
            assert!(Instant::now() >= at, "fired {:?} early", at - Instant::now());
        });
    }

    #[test]
    fn an_alarm_moved_earlier_wakes_the_clock_for_it() {
        within_deadline(async {
            // The clock's thread sleeps for the far one, then is told of the
            // near one.
            let far = Alarm::new();
            far.set(Instant::now() + Duration::from_secs(3600));
            let near = Alarm::new();
            near.set(Instant::now() + Duration::from_secs(3600));
            tokio::task::yield_now().await;
            let at = Instant::now() + Duration::from_millis(20);
            near.set(at);
            near.fired().await;
            assert!(Instant::now() >= at);
        });
    }

    #[test]
    fn an_alarm_unset_or_moved_later_does_not_fire_at_its_old_instant() {
        within_deadline(async {
            let soon = || Instant::now() + Duration::from_millis(10);
            let unset = Alarm::new();
            unset.set(soon());
            unset.unset();
            let later = Alarm::new();
            later.set(soon());
            later.set(Instant::now() + Duration::from_secs(3600));
            // The marker fires after both old instants: by then neither did.
            let marker = Alarm::new();
            marker.set(Instant::now() + Duration::from_millis(40));
            marker.fired().await;
            let fired = |alarm: &Alarm| alarm.slot.fired.load(std::sync::atomic::Ordering::Acquire);
            assert!(!fired(&unset), "an unset alarm fired");
            assert!(!fired(&later), "a moved alarm fired at its old instant");
        });
    }

    #[test]
    fn alarms_on_many_threads_each_fire_in_their_turn() {
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                std::thread::spawn(move || {
                    within_deadline(async move {
                        for round in 0..20u64 {
                            let alarm = Alarm::new();
                            let at = Instant::now() + Duration::from_millis((i * 7 + round * 3) % 15);
                            alarm.set(at);
                            alarm.fired().await;
                            assert!(Instant::now() >= at);
                        }
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("every alarm fired");
        }
    }
}
