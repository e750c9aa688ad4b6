//! The supervisor: an actix actor that decides, one exit at a time, whether a
//! module that ended comes back.
//!
//! It is the node's control plane, so it lives on the node's system arbiter
//! and sees nothing of the data path. Decisions follow each module's
//! [`RestartPolicy`] and [`RestartBudget`]; a module whose budget is spent is
//! marked failed, and its monitors are told.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Addr, Handler, MessageResult};
use botbus_core::{DownReason, RestartBudget, RestartPolicy, RestartTracker};

use crate::host::{Exit, Startup, StopSignal};
use crate::router::{ModuleStatus, Router};

/// What becomes of a module whose instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start a new instance.
    Restart,
    /// It is gone, for this reason.
    Finish(DownReason),
}

struct Supervised {
    policy: RestartPolicy,
    budget: RestartBudget,
    tracker: RestartTracker,
}

/// Decides restarts for the modules of one node.
#[derive(Default)]
pub(crate) struct Supervisor {
    modules: HashMap<Arc<str>, Supervised>,
}

impl Actor for Supervisor {
    type Context = actix::Context<Self>;
}

/// A module joins the node under this policy.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Supervise {
    pub(crate) name: Arc<str>,
    pub(crate) policy: RestartPolicy,
    pub(crate) budget: RestartBudget,
}

/// An instance of a module ended; the answer is what to do next.
#[derive(actix::Message)]
#[rtype(result = "Decision")]
pub(crate) struct Exited {
    pub(crate) name: Arc<str>,
    pub(crate) exit: Exit,
}

impl Handler<Supervise> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Supervise, _: &mut Self::Context) {
        self.modules.insert(
            msg.name,
            Supervised {
                policy: msg.policy,
                budget: msg.budget,
                tracker: RestartTracker::new(msg.budget),
            },
        );
    }
}

impl Handler<Exited> for Supervisor {
    type Result = MessageResult<Exited>;

    fn handle(&mut self, msg: Exited, _: &mut Self::Context) -> Self::Result {
        let Some(module) = self.modules.get_mut(&msg.name) else {
            return MessageResult(Decision::Finish(DownReason::Stopped));
        };
        let (wants_restart, reason) = match &msg.exit {
            Exit::Failed(why) => (module.policy != RestartPolicy::Never, DownReason::Failed(why.clone())),
            Exit::StartFailed(why) => (
                module.policy != RestartPolicy::Never,
                DownReason::Failed(format!("failed to start: {why}")),
            ),
            Exit::Stopped => (module.policy == RestartPolicy::Always, DownReason::Stopped),
            Exit::StoppedByNode => (false, DownReason::Stopped),
        };
        let now = Instant::now();
        let allowed = wants_restart
            && match msg.exit {
                Exit::StartFailed(_) => module.tracker.try_restart_failed_start(now),
                _ => module.tracker.try_restart(now),
            };
        let exit = &msg.exit;
        let decision = if !wants_restart {
            if let DownReason::Failed(why) = &reason {
                tracing::error!(module = %msg.name, %why, "module failed; its policy does not restart it");
            }
            Decision::Finish(reason)
        } else if allowed {
            tracing::warn!(module = %msg.name, %exit, restart = module.tracker.recent(), "restarting module");
            Decision::Restart
        } else {
            let spent = match msg.exit {
                Exit::StartFailed(_) => format!(
                    "{} failed starts in a row (budget: {} restarts)",
                    module.tracker.failed_starts(),
                    module.budget.max_restarts
                ),
                _ => format!(
                    "{} restarts within {:?}",
                    module.budget.max_restarts, module.budget.within
                ),
            };
            let why = format!("restart budget spent ({spent}); last exit: {exit}");
            tracing::error!(module = %msg.name, %why, "module failed");
            Decision::Finish(DownReason::Failed(why))
        };
        if matches!(decision, Decision::Finish(_)) {
            self.modules.remove(&msg.name);
        }
        MessageResult(decision)
    }
}

/// What becomes of module `name` whose instance ended with `exit`: a stop
/// by the node is final; anything else is the supervisor's decision.
pub(crate) async fn decide(supervisor: &Addr<Supervisor>, name: &Arc<str>, exit: Exit) -> Decision {
    match exit {
        Exit::StoppedByNode => Decision::Finish(DownReason::Stopped),
        exit => supervisor
            .send(Exited {
                name: name.clone(),
                exit,
            })
            .await
            .unwrap_or(Decision::Finish(DownReason::Stopped)),
    }
}

/// How one instance of a module ended, as its host saw it.
pub(crate) enum Ended {
    /// As any instance ends: the supervisor decides what comes next.
    Instance(Exit),
    /// The module is gone for good, whatever its policy (a child process
    /// said so of its module).
    Final(DownReason),
}

/// The host of one module — in this process, or in a child process — as
/// the restart loop ([`run_host`]) drives it.
pub(crate) trait Host: Send {
    fn name(&self) -> &Arc<str>;
    fn router(&self) -> &Router;
    fn supervisor(&self) -> &Addr<Supervisor>;
    fn stop_signal(&self) -> Arc<StopSignal>;
    fn startup(&mut self) -> &mut Startup;
    /// Modules that must be reachable before an instance starts.
    fn needs(&self) -> &[String];
    /// How long one start may take, waiting for what it needs included.
    fn start_timeout(&self) -> std::time::Duration;
    /// Runs one instance until it ends.
    fn run_instance(&mut self) -> impl Future<Output = Ended> + Send;
    /// Forgets what the instance that just ended set up.
    fn instance_ended(&mut self);
    /// The module is gone for good: releases whatever still waits for it.
    fn finish(self);
}

/// The restart loop, the same for every placement: wait for the module's
/// turn to start, run instances one after the other as the supervisor
/// decides, and once the module is gone for good, tell everyone.
pub(crate) async fn run_host<H: Host>(mut host: H) {
    let reason = loop {
        let stop = host.stop_signal();
        if let Err(why) = host.startup().wait_turn(&stop).await {
            host.startup().gone(why);
            break DownReason::Stopped;
        }
        host.router().set_status(host.name(), ModuleStatus::Starting);
        let ended = match wait_for_needs(&host, &stop).await {
            Ok(()) => host.run_instance().await,
            Err(why) => Ended::Instance(why),
        };
        if let Ended::Instance(Exit::Failed(_) | Exit::StartFailed(_)) = ended {
            host.router().set_status(host.name(), ModuleStatus::Restarting);
        }
        host.instance_ended();
        let decision = match ended {
            Ended::Final(reason) => Decision::Finish(reason),
            Ended::Instance(exit) => decide(host.supervisor(), host.name(), exit).await,
        };
        match decision {
            Decision::Restart => {
                host.router().count_restart(host.name());
                continue;
            }
            Decision::Finish(reason) => break reason,
        }
    };
    host.startup().gone(&reason.to_string());
    host.router().module_down(host.name(), reason);
    host.finish();
}

/// Waits until every module `host` needs is reachable — here, in a child,
/// or at a node linked or joined — within its start deadline.
async fn wait_for_needs<H: Host>(host: &H, stop: &StopSignal) -> Result<(), Exit> {
    if host.needs().is_empty() {
        return Ok(());
    }
    let router = host.router();
    let mut changes = router.watch_topology();
    let deadline = tokio::time::Instant::now() + host.start_timeout();
    loop {
        changes.borrow_and_update();
        let Some(missing) = host.needs().iter().find(|need| !router.routable(need)) else {
            return Ok(());
        };
        tokio::select! {
            biased;
            () = stop.wait() => return Err(Exit::StoppedByNode),
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    return Err(Exit::StartFailed(format!(
                        "module `{missing}`, which it needs, was not reachable within the start deadline ({:?})",
                        host.start_timeout()
                    )));
                }
            }
        }
    }
}
