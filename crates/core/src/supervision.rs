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
///
/// Two counts, either of which spends the budget:
///
/// * restarts inside the sliding window, as Erlang/OTP counts them;
/// * *failed starts in a row* — instances that never came up (a `started`
///   hook that failed or ran past its deadline, a child process that never
///   announced its module). These do not age out of the window: a start that
///   fails slowly (a five-second timeout, say) would otherwise never fill a
///   three-in-five-seconds window, and a module that can never come up would
///   be relaunched forever. The count resets once an instance runs.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    budget: RestartBudget,
    restarts: VecDeque<Instant>,
    failed_starts: u32,
}

impl RestartTracker {
    /// A tracker with nothing spent.
    pub fn new(budget: RestartBudget) -> Self {
        Self {
            budget,
            restarts: VecDeque::new(),
            failed_starts: 0,
        }
    }

    /// An instance that had come up ended at `now`: records a restart if the
    /// budget allows one; `false` means the budget is spent and the module
    /// should be marked failed.
    pub fn try_restart(&mut self, now: Instant) -> bool {
        self.failed_starts = 0;
        self.try_restart_in_window(now)
    }

    /// An instance that never came up ended at `now`: records a restart if
    /// neither the window nor the failed starts in a row spend the budget.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use botbus_core::supervision::{RestartBudget, RestartTracker};
    ///
    /// let mut tracker = RestartTracker::new(RestartBudget::new(2, Duration::from_secs(1)));
    /// let t0 = Instant::now();
    /// // Each start fails slowly, long after the window of the one before...
    /// assert!(tracker.try_restart_failed_start(t0));
    /// assert!(tracker.try_restart_failed_start(t0 + Duration::from_secs(10)));
    /// // ...and still the third failed start in a row spends the budget.
    /// assert!(!tracker.try_restart_failed_start(t0 + Duration::from_secs(20)));
    /// ```
    pub fn try_restart_failed_start(&mut self, now: Instant) -> bool {
        self.failed_starts = self.failed_starts.saturating_add(1);
        if self.failed_starts > self.budget.max_restarts {
            return false;
        }
        self.try_restart_in_window(now)
    }

    /// Failed starts in a row (reset when an instance comes up).
    pub fn failed_starts(&self) -> u32 {
        self.failed_starts
    }

    fn try_restart_in_window(&mut self, now: Instant) -> bool {
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
