//! Restart policies and budgets: when a failed module comes back.
//!
//! Pure data and logic, so the runtime's supervisor is a thin shell around it.
//! A budget of "at most N restarts in T" is Erlang/OTP's intensity/period: a
//! module that keeps failing is marked failed instead of restarting forever.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use botbus_core::supervision::{RestartBudget, RestartTracker};
//!
//! let mut tracker = RestartTracker::new(RestartBudget::new(2, Duration::from_secs(10)));
//! let t0 = Instant::now();
//! assert!(tracker.try_restart(t0));
//! assert!(tracker.try_restart(t0 + Duration::from_secs(1)));
//! assert!(!tracker.try_restart(t0 + Duration::from_secs(2))); // a third within 10 s: spent
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a module that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: a failure marks it failed, a stop stops it.
    Never,
    /// After a failure (a panic or a failing hook), within the budget.
    #[default]
    OnFailure,
    /// After a failure or a normal stop it asked for itself, within the
    /// budget. Node shutdown always stops it.
    Always,
}

/// At most `max_restarts` restarts within any `within` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartBudget {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl RestartBudget {
    /// At most `max_restarts` within `within`.
    pub const fn new(max_restarts: u32, within: Duration) -> Self {
        Self { max_restarts, within }
    }
}

impl Default for RestartBudget {
    /// Three restarts in five seconds, as OTP's default supervisor intensity
    /// is of that order: enough for a transient fault, not a crash loop.
    fn default() -> Self {
        Self::new(3, Duration::from_secs(5))
    }
}

/// Counts restarts against a [`RestartBudget`].
#[derive(Debug, Clone)]
pub struct RestartTracker {
    budget: RestartBudget,
    restarts: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker with nothing spent.
    pub fn new(budget: RestartBudget) -> Self {
        Self {
            budget,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now` if the budget allows one; `false` means the
    /// budget is spent and the module should be marked failed.
    pub fn try_restart(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.budget.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() as u32 >= self.budget.max_restarts {
            return false;
        }
        self.restarts.push_back(now);
        true
    }

    /// Restarts counted inside the current window.
    pub fn recent(&self) -> usize {
        self.restarts.len()
    }
}
