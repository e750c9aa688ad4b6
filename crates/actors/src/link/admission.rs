//! Admission of incoming connections to their handshake: at most `cap` at
//! once per listener, and a connection past the cap makes room by dropping
//! the *oldest* one still in its handshake.
//!
//! A good peer finishes its handshake in a round trip or two, so the oldest
//! connection still in its handshake is the likeliest to be one that never
//! will — a silent connection, or one sending its hello a byte a second.
//! Refusing the newest instead (or leaving it in the system's backlog) would
//! let a few hundred such connections lock a good peer out for the whole
//! handshake deadline; dropping the oldest lets it in at once unless the
//! flood opens `cap` new connections within its handshake.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Handshakes in progress at one listener.
pub(crate) struct Admission {
    cap: usize,
    next: AtomicU64,
    in_progress: Mutex<VecDeque<(u64, CancellationToken)>>,
}

/// One connection's place among the handshakes in progress; gives it up
/// when dropped.
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
}

impl Admission {
    /// At most `cap` handshakes at once (at least one).
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            next: AtomicU64::new(0),
            in_progress: Mutex::default(),
        })
    }

    /// Admits a new connection, evicting the oldest in progress if the cap
    /// is reached. Returns its place and how many were evicted.
    pub(crate) fn admit(self: &Arc<Self>) -> (Admitted, usize) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut in_progress = self.in_progress.lock().expect("admission lock");
        let mut dropped = 0;
        while in_progress.len() >= self.cap {
            if let Some((_, oldest)) = in_progress.pop_front() {
                oldest.cancel();
                dropped += 1;
            }
        }
        in_progress.push_back((id, evicted.clone()));
        let admitted = Admitted {
            admission: self.clone(),
            id,
            evicted,
        };
        (admitted, dropped)
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_progress.lock().expect("admission lock").len()
    }
}

impl Admitted {
    /// Resolves when a newer connection took this one's place.
    pub(crate) async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut in_progress = self.admission.in_progress.lock().expect("admission lock");
        if let Some(at) = in_progress.iter().position(|(id, _)| *id == self.id) {
            in_progress.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_is_evicted_and_finished_ones_free_their_place() {
        let admission = Admission::new(2);
        let (first, _) = admission.admit();
        let (second, _) = admission.admit();
        let (third, dropped) = admission.admit();
        assert_eq!(dropped, 1);
        assert!(first.evicted.is_cancelled() && !second.evicted.is_cancelled());
        drop(second); // finished its handshake
        assert_eq!(admission.len(), 1);
        let (_fourth, dropped) = admission.admit();
        assert_eq!(dropped, 0);
        assert!(!third.evicted.is_cancelled());
        drop(first); // an evicted one going away changes nothing
        assert_eq!(admission.len(), 2);
    }
}
