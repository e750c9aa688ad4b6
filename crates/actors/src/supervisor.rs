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
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Handler, MessageResult};
use botbus_core::{DownReason, RestartBudget, RestartPolicy, RestartTracker};
use tokio::sync::oneshot;

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

/// One module's restart policy, budget, and the restarts it has had.
struct Restarts {
    policy: RestartPolicy,
    budget: RestartBudget,
    tracker: RestartTracker,
}

/// Decides restarts for the modules of one node.
#[derive(Default)]
pub(crate) struct Supervisor {
    modules: HashMap<Arc<str>, Restarts>,
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
            Restarts {
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

/// What every host of a module has, wherever the module runs: what the
/// restart loop ([`run_host`]) reads and reports through.
pub(crate) struct Supervised {
    pub(crate) name: Arc<str>,
    pub(crate) router: Arc<Router>,
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) stop: Arc<StopSignal>,
    /// How long one start may take, waiting for what it needs included.
    pub(crate) start_timeout: Duration,
    /// Modules that must be reachable before an instance starts.
    pub(crate) needs: Vec<String>,
    /// Reports the first start, in its turn.
    pub(crate) startup: Startup,
    /// Tells the node the module is gone for good.
    pub(crate) done: oneshot::Sender<()>,
}

impl Supervised {
    /// The module is gone for good, and its host has let go of everything.
    pub(crate) fn finish(self) {
        let _ = self.done.send(());
    }
}

/// The host of one module — in this process, in a child process, or on a
/// worker — as the restart loop ([`run_host`]) drives it.
pub(crate) trait Host: Send {
    fn supervised(&self) -> &Supervised;
    fn supervised_mut(&mut self) -> &mut Supervised;
    /// Runs one instance until it ends.
    fn run_instance(&mut self) -> impl Future<Output = Ended> + Send;
    /// Forgets what the instance that just ended set up.
    fn instance_ended(&mut self);
    /// The module is gone for good: releases whatever still waits for it,
    /// and then [`Supervised::finish`]es.
    fn finish(self);
}

/// The restart loop, the same for every placement: wait for the module's
/// turn to start, run instances one after the other as the supervisor
/// decides, and once the module is gone for good, tell everyone.
pub(crate) async fn run_host<H: Host>(mut host: H) {
    let Supervised {
        name,
        router,
        supervisor,
        stop,
        ..
    } = host.supervised();
    let (name, router, supervisor, stop) = (name.clone(), router.clone(), supervisor.clone(), stop.clone());
    let reason = loop {
        if let Err(why) = host.supervised_mut().startup.wait_turn(&stop).await {
            host.supervised_mut().startup.gone(why);
            break DownReason::Stopped;
        }
        router.set_status(&name, ModuleStatus::Starting);
        let ended = match wait_for_needs(host.supervised()).await {
            Ok(()) => host.run_instance().await,
            Err(why) => Ended::Instance(why),
        };
        if let Ended::Instance(Exit::Failed(_) | Exit::StartFailed(_)) = ended {
            router.set_status(&name, ModuleStatus::Restarting);
        }
        host.instance_ended();
        let decision = match ended {
            Ended::Final(reason) => Decision::Finish(reason),
            Ended::Instance(exit) => decide(&supervisor, &name, exit).await,
        };
        match decision {
            Decision::Restart => {
                router.count_restart(&name);
                continue;
            }
            Decision::Finish(reason) => break reason,
        }
    };
    host.supervised_mut().startup.gone(&reason.to_string());
    router.module_down(&name, reason);
    host.finish();
}

/// Waits until every module `host` needs is reachable — here, in a child,
/// or at a node linked or joined — within its start deadline.
async fn wait_for_needs(host: &Supervised) -> Result<(), Exit> {
    if host.needs.is_empty() {
        return Ok(());
    }
    let router = &host.router;
    let mut changes = router.watch_topology();
    let deadline = tokio::time::Instant::now() + host.start_timeout;
    loop {
        changes.borrow_and_update();
        let Some(missing) = host.needs.iter().find(|need| !router.routable(need)) else {
            return Ok(());
        };
        tokio::select! {
            biased;
            () = host.stop.wait() => return Err(Exit::StoppedByNode),
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    return Err(Exit::StartFailed(format!(
                        "module `{missing}`, which it needs, was not reachable within the start deadline ({:?})",
                        host.start_timeout
                    )));
                }
            }
        }
    }
}
