//! Liveness: noticing a peer that is alive but mute.
//!
//! A peer that crashes closes its link, and everything waiting on it ends at
//! once. A peer that hangs — a child stuck in a loop, half a frame written
//! and then nothing, a network path that silently drops packets — closes
//! nothing. So every link watches for silence: after [`Liveness::ping_after`]
//! without a frame from the peer it sends a [`Frame::Ping`](crate::Frame),
//! which the peer must answer with a `Pong`; after [`Liveness::down_after`]
//! without a frame the peer is declared down and the link is closed, as if
//! the peer had crashed.
//!
//! Any frame counts as a sign of life, so a busy link never pings. Only
//! *whole* frames count: a peer that stalls in the middle of one is silent.
//!
//! [`LivenessState`] is the state machine, with no I/O and no timers of its
//! own: the link tells it when frames arrived and asks it what to do and when
//! to ask again.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use botbus_core::liveness::{Liveness, LivenessAction, LivenessState};
//!
//! let config = Liveness::new(Duration::from_secs(2), Duration::from_secs(6));
//! let t0 = Instant::now();
//! let mut state = LivenessState::new(config, t0);
//! let s = Duration::from_secs;
//! assert_eq!(state.poll(t0), LivenessAction::Wait(t0 + s(2)));
//! assert_eq!(state.poll(t0 + s(2)), LivenessAction::Ping { nonce: 1, next: t0 + s(6) });
//! state.heard(t0 + s(3)); // the pong (or any frame)
//! assert_eq!(state.poll(t0 + s(3)), LivenessAction::Wait(t0 + s(5)));
//! assert_eq!(state.poll(t0 + s(5)), LivenessAction::Ping { nonce: 2, next: t0 + s(9) });
//! assert_eq!(state.poll(t0 + s(9)), LivenessAction::Down { silent_for: s(6) });
//! ```

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a link probes a quiet peer, and when it gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Silence after which a ping is sent.
    pub ping_after: Duration,
    /// Silence after which the peer is declared down and the link closed.
    pub down_after: Duration,
}

impl Liveness {
    /// Ping after `ping_after` of silence; down after `down_after`. A
    /// `down_after` shorter than `ping_after` is raised to it.
    pub const fn new(ping_after: Duration, down_after: Duration) -> Self {
        let down_after = if down_after.as_nanos() < ping_after.as_nanos() {
            ping_after
        } else {
            down_after
        };
        Self { ping_after, down_after }
    }
}

impl Default for Liveness {
    /// Ping after 2 s of silence, down after 6 s: long enough that a loaded
    /// machine or a long garbage-collection pause in a foreign peer is not
    /// mistaken for a hang, short enough that a robot notices a hung module
    /// within a few seconds. A ping is a few bytes, and a busy link never
    /// sends one.
    fn default() -> Self {
        Self::new(Duration::from_secs(2), Duration::from_secs(6))
    }
}

/// What the link should do now, from [`LivenessState::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    /// Nothing; poll again at this instant (or after the next frame).
    Wait(Instant),
    /// Send a ping with this nonce; poll again at `next`.
    Ping {
        /// The ping's nonce (the pong echoes it).
        nonce: u64,
        /// When to poll again.
        next: Instant,
    },
    /// The peer has been silent too long: close the link.
    Down {
        /// How long nothing arrived.
        silent_for: Duration,
    },
}

/// The liveness of one link: when the peer was last heard, and whether it
/// has been pinged since.
#[derive(Debug, Clone)]
pub struct LivenessState {
    config: Liveness,
    last_heard: Instant,
    pinged: bool,
    nonce: u64,
}

impl LivenessState {
    /// A link that came up (and so was heard from) at `now`.
    pub fn new(config: Liveness, now: Instant) -> Self {
        Self {
            config,
            last_heard: now,
            pinged: false,
            nonce: 0,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> Liveness {
        self.config
    }

    /// A whole frame (any frame) arrived from the peer at `now`.
    pub fn heard(&mut self, now: Instant) {
        if now > self.last_heard {
            self.last_heard = now;
        }
        self.pinged = false;
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> LivenessAction {
        let silent_for = now.saturating_duration_since(self.last_heard);
        if silent_for >= self.config.down_after {
            return LivenessAction::Down { silent_for };
        }
        let down_at = self.last_heard + self.config.down_after;
        if self.pinged {
            return LivenessAction::Wait(down_at);
        }
        if silent_for >= self.config.ping_after {
            self.pinged = true;
            self.nonce += 1;
            return LivenessAction::Ping {
                nonce: self.nonce,
                next: down_at,
            };
        }
        LivenessAction::Wait(self.last_heard + self.config.ping_after)
    }
}
