//! Remote workers: a node that starts registered module types when another
//! node asks it to (Erlang's `spawn` on a remote node).
//!
//! * A node **registers** the module types compiled into its binary
//!   ([`NodeBuilder::register`](super::NodeBuilder::register)), each built
//!   from JSON arguments.
//! * A node that is a **worker** ([`NodeBuilder::worker`](super::NodeBuilder::worker))
//!   runs the module [`WORKER_MODULE`], which starts and stops those types on
//!   request. Only a linked peer can ask — over TCP, one that proved the
//!   token.
//! * **Any node** can ask a worker to start one ([`Node::spawn_on`]) and
//!   to stop it ([`Node::stop_on`]); an unknown type is a clear error that
//!   lists the types the worker has.
//! * **As a placement**, a module "on worker X"
//!   ([`NodeBuilder::worker_module`](super::NodeBuilder::worker_module)) is
//!   this node's own, supervised with its restart policy like a child: when
//!   the worker is lost, asks to the module end, its status is
//!   `Restarting`, and it is started again on the worker once the worker is
//!   back.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use botbus_core::{Context, DownReason, Message, Module, ModuleError, RestartBudget, RestartPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::builder::{launcher, Launch, ModuleSpec};
use super::{Node, NodeError, Shared};
use crate::host::{Exit, StopSignal};
use crate::router::{ModuleStatus, Router};
use crate::supervisor::{run_host, Ended, Host, Supervised};

/// The module a worker runs to start and stop module types on request.
pub const WORKER_MODULE: &str = "botbus.worker";

/// What a worker is asked to do (the message of [`WORKER_MODULE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerRequest {
    /// Start module `name` of the registered type `module_type`, built
    /// from `args` (JSON text). Starting a module that already runs there
    /// with the same type succeeds: the asker takes it over as it is.
    Spawn {
        /// The registered type.
        module_type: String,
        /// The module's name on the worker.
        name: String,
        /// The type's arguments, as JSON text.
        args: String,
        /// How the worker hosts it.
        #[serde(default)]
        hosting: Hosting,
    },
    /// Stop module `name`, started on request.
    Stop {
        /// The module.
        name: String,
    },
}

impl Message for WorkerRequest {
    const NAME: &'static str = "botbus.WorkerRequest";
}

/// How a worker hosts a module it starts: as the node that placed it
/// there would have. A panic is restarted on the worker, under this
/// policy and budget; once the budget is spent, the module has failed for
/// good there and on the placing node alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosting {
    /// Its mailbox, in messages.
    pub mailbox: usize,
    /// When it is restarted.
    pub restart: RestartPolicy,
    /// How often it may be.
    pub budget: RestartBudget,
}

impl Default for Hosting {
    fn default() -> Self {
        Hosting::of(&super::ModuleOptions::default())
    }
}

impl Hosting {
    fn of(options: &super::ModuleOptions) -> Self {
        Self {
            mailbox: options.mailbox,
            restart: options.restart,
            budget: options.budget,
        }
    }

    fn options(self) -> super::ModuleOptions {
        super::ModuleOptions::new()
            .mailbox(self.mailbox)
            .restart(self.restart)
            .budget(self.budget.max_restarts, self.budget.within)
    }
}

/// Builds a module's launch from JSON arguments.
pub(super) type Maker = Arc<dyn Fn(&str) -> Result<Launch, String> + Send + Sync>;

/// The module types a node knows how to build, by name.
pub(super) type Registry = HashMap<String, Maker>;

/// A maker for module type `module_type`, built by `make` from arguments `A`.
pub(super) fn maker<M, A>(module_type: &str, make: impl Fn(A) -> M + Send + Sync + 'static) -> Maker
where
    M: Module,
    A: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let module_type = module_type.to_owned();
    let make = Arc::new(make);
    Arc::new(move |args: &str| {
        let args: A =
            serde_json::from_str(args).map_err(|e| format!("bad arguments for module type `{module_type}`: {e}"))?;
        let make = make.clone();
        Ok(launcher(move || make(args.clone())))
    })
}

/// The worker's module: starts and stops registered types on request.
pub(super) struct Worker {
    pub(super) node: Weak<Shared>,
    pub(super) registry: Arc<Registry>,
    /// The modules started on request, and their types.
    pub(super) started: HashMap<String, String>,
}

impl Module for Worker {
    type Message = WorkerRequest;
    type Reply = ();

    async fn process(&mut self, request: WorkerRequest, ctx: &mut Context) -> Result<(), ModuleError> {
        let node = Node {
            shared: self
                .node
                .upgrade()
                .ok_or_else(|| ModuleError::new("the worker is shutting down"))?,
        };
        match request {
            WorkerRequest::Spawn {
                module_type,
                name,
                args,
                hosting,
            } => {
                if self.started.get(&name) == Some(&module_type) && node.modules().contains(&name) {
                    tracing::info!(module = %name, %module_type, "asked again for a module that runs: taken over as it is");
                    return Ok(());
                }
                let Some(maker) = self.registry.get(&module_type) else {
                    let mut known: Vec<&str> = self.registry.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(ModuleError::new(format!(
                        "worker `{}` has no module type `{module_type}` (it has: {})",
                        node.name(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    )));
                };
                let launch = maker(&args).map_err(ModuleError::new)?;
                let spec = ModuleSpec {
                    name: name.clone(),
                    options: hosting.options(),
                    launch: Some(launch),
                };
                node.spawn_spec(spec)
                    .await
                    .map_err(|e| ModuleError::new(e.to_string()))?;
                tracing::info!(module = %name, %module_type, "started on request");
                let asker = ctx.sender().and_then(|from| from.split_once('/')).map(|(node, _)| node);
                node.shared.router.set_placed_by(&name, asker);
                self.started.insert(name, module_type);
                Ok(())
            }
            WorkerRequest::Stop { name } => {
                if self.started.remove(&name).is_none() {
                    return Err(ModuleError::new(format!(
                        "worker `{}` started no module `{name}` on request",
                        node.name()
                    )));
                }
                node.stop_module(&name)
                    .await
                    .map_err(|e| ModuleError::new(e.to_string()))?;
                node.shared.router.set_placed_by(&name, None);
                tracing::info!(module = %name, "stopped on request");
                Ok(())
            }
        }
    }
}

impl Node {
    /// Asks the worker node `worker` (linked to this one, directly or
    /// through others) to start module `name` of its registered type
    /// `module_type`, built from `args`. Returns once it runs there and
    /// this node can reach it. The module is the worker's: nothing here
    /// restarts it (for that, see
    /// [`NodeBuilder::worker_module`](super::NodeBuilder::worker_module)).
    pub async fn spawn_on(
        &self,
        worker: &str,
        module_type: &str,
        name: &str,
        args: &impl Serialize,
    ) -> Result<(), NodeError> {
        let request = spawn_request(module_type, name, args, Hosting::default())?;
        let timeout = super::DEFAULT_START_TIMEOUT;
        let failed = |reason: String| NodeError::StartFailed {
            module: name.to_owned(),
            reason,
        };
        self.client("botbus")
            .ask::<_, ()>(&format!("{worker}/{WORKER_MODULE}"), request)
            .timeout(timeout)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let there = format!("{worker}/{name}");
        self.wait_until("the module started on the worker", timeout, |node| node.reaches(&there))
            .await
    }

    /// Asks the worker node `worker` to stop module `name`, which it
    /// started on request.
    pub async fn stop_on(&self, worker: &str, name: &str) -> Result<(), NodeError> {
        self.client("botbus")
            .ask::<_, ()>(
                &format!("{worker}/{WORKER_MODULE}"),
                WorkerRequest::Stop { name: name.to_owned() },
            )
            .await
            .map_err(|e| NodeError::StopFailed {
                module: name.to_owned(),
                reason: e.to_string(),
            })
    }
}

fn spawn_request(
    module_type: &str,
    name: &str,
    args: &impl Serialize,
    hosting: Hosting,
) -> Result<WorkerRequest, NodeError> {
    botbus_core::validate_name(name)?;
    let args = serde_json::to_string(args).map_err(|e| NodeError::StartFailed {
        module: name.to_owned(),
        reason: format!("its arguments do not encode as JSON: {e}"),
    })?;
    Ok(WorkerRequest::Spawn {
        module_type: module_type.to_owned(),
        name: name.to_owned(),
        args,
        hosting,
    })
}

/// Where a module placed on a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OnWorker {
    pub(super) worker: String,
    pub(super) request: WorkerRequest,
}

impl OnWorker {
    pub(super) fn new(
        worker: &str,
        module_type: &str,
        name: &str,
        args: &impl Serialize,
        options: &super::ModuleOptions,
    ) -> Result<Self, NodeError> {
        botbus_core::validate_name(worker)?;
        Ok(Self {
            worker: worker.to_owned(),
            request: spawn_request(module_type, name, args, Hosting::of(options))?,
        })
    }
}

/// The host of a module placed on a worker: starts it there, watches that
/// it stays reachable, and under the restart loop starts it again once the
/// worker is back.
pub(super) struct WorkerHosted {
    pub(super) supervised: Supervised,
    pub(super) on: OnWorker,
    /// An instance ran before: a worker that is away is waited for without
    /// a deadline (it is expected back), not counted as a failed start.
    pub(super) ran: bool,
}

impl Host for WorkerHosted {
    fn supervised(&self) -> &Supervised {
        &self.supervised
    }

    fn supervised_mut(&mut self) -> &mut Supervised {
        &mut self.supervised
    }

    async fn run_instance(&mut self) -> Ended {
        run_on_worker(self).await
    }

    fn instance_ended(&mut self) {}

    fn finish(self) {
        let Supervised { name, router, .. } = &self.supervised;
        router.place_on_worker(name, None);
        self.supervised.finish();
    }
}

/// Waits, re-checking on every change of the route table, until `ready`
/// holds; `Err` with `what` if `deadline` passes first, `Ok(false)` if the
/// module is stopped first.
async fn wait_for(
    router: &Router,
    stop: &StopSignal,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> Result<bool, ()> {
    let mut changes = router.watch_topology();
    loop {
        changes.borrow_and_update();
        if ready() {
            return Ok(true);
        }
        let changed = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, changes.changed()).await.is_ok(),
                None => changes.changed().await.is_ok(),
            }
        };
        tokio::select! {
            biased;
            () = stop.wait() => return Ok(false),
            changed = changed => if !changed { return Err(()) },
        }
    }
}

async fn run_on_worker(hosted: &mut WorkerHosted) -> Ended {
    let (name, worker) = (hosted.supervised.name.clone(), hosted.on.worker.clone());
    let (router, stop) = (hosted.supervised.router.clone(), hosted.supervised.stop.clone());
    let within = hosted.supervised.start_timeout;
    let spawner = format!("{worker}/{WORKER_MODULE}");
    let there = format!("{worker}/{name}");

    // The worker first: on a first start within the start deadline; later,
    // for as long as it takes it to come back.
    let waiting = match hosted.ran {
        true => {
            // Still restarting, for as long as the worker is away.
            router.set_status(&name, ModuleStatus::Restarting);
            None
        }
        false => Some(Instant::now() + within),
    };
    match wait_for(&router, &stop, waiting, || router.routable(&spawner)).await {
        Ok(true) => {}
        Ok(false) => return Ended::Instance(Exit::StoppedByNode),
        Err(()) => {
            return Ended::Instance(Exit::StartFailed(format!(
                "worker `{worker}` was not linked to this node within the start deadline ({within:?})"
            )))
        }
    }
    let deadline = Instant::now() + within;
    router.take_worker_down(&name);
    let client = botbus_core::Client::new(router.clone(), "botbus");
    let asked = client.ask::<_, ()>(&spawner, hosted.on.request.clone()).timeout(within);
    let asked = tokio::select! {
        biased;
        () = stop.wait() => return Ended::Instance(Exit::StoppedByNode),
        asked = asked => asked,
    };
    if let Err(error) = asked {
        return Ended::Instance(Exit::StartFailed(format!(
            "worker `{worker}` did not start it: {error}"
        )));
    }
    match wait_for(&router, &stop, Some(deadline), || router.routable(&there)).await {
        Ok(true) => {}
        Ok(false) => return Ended::Instance(Exit::StoppedByNode),
        Err(()) => {
            return Ended::Instance(Exit::StartFailed(format!(
                "worker `{worker}` started it but did not announce it within the start deadline ({within:?})"
            )))
        }
    }
    hosted.ran = true;
    router.set_status(&name, ModuleStatus::Running);
    hosted.supervised.startup.up();
    tracing::info!(module = %name, %worker, "running on worker");

    // Running until it can no longer be reached, or this node stops it.
    match wait_for(&router, &stop, None, || !router.routable(&there)).await {
        Ok(false) => {
            let stopped = botbus_core::Client::new(router.clone(), "botbus")
                .ask::<_, ()>(&spawner, WorkerRequest::Stop { name: name.to_string() })
                .timeout(Duration::from_secs(2))
                .await;
            if let Err(error) = stopped {
                tracing::warn!(module = %name, %worker, %error, "could not stop it on the worker");
            }
            Ended::Instance(Exit::StoppedByNode)
        }
        _ => {
            // Gone from the worker while the worker is there: it ended
            // there for good, its own restarts spent (the worker said why
            // in a `down`). Gone with the worker: it comes back with it.
            if router.routable(&spawner) {
                let reason = router
                    .take_worker_down(&name)
                    .unwrap_or_else(|| DownReason::Failed(format!("it ended on worker `{worker}`")));
                tracing::warn!(module = %name, %worker, %reason, "module ended on its worker");
                return Ended::Final(reason);
            }
            router.set_status(&name, ModuleStatus::Restarting);
            let cause = format!("worker `{worker}` was lost");
            tracing::warn!(module = %name, %worker, %cause, "module on worker lost");
            Ended::Instance(Exit::Failed(cause))
        }
    }
}

/// Runs the restart loop of a module placed on a worker.
pub(super) async fn host_on_worker(hosted: WorkerHosted) {
    run_host(hosted).await;
}
