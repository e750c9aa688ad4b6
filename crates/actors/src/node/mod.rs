//! [`Node`]: a running set of modules on actix arbiters, with its links.
//!
//! A node owns its threads: a system thread (the actix `System`, the
//! supervisor and link I/O) and a pool of arbiters sized to the machine's
//! cores. A module runs on a pool arbiter unless its [`ModuleOptions`] name a
//! thread of its own or a named thread it shares with others — put modules
//! that talk a lot on one thread: a hand-off between threads costs far more
//! than the message itself.
//!
//! ```
//! use botbus_actors::{Node, ModuleOptions};
//! use botbus_core::{Context, Module, ModuleError};
//!
//! #[derive(Default)]
//! struct Doubler;
//! impl Module for Doubler {
//!     type Message = u32;
//!     type Reply = u32;
//!     async fn process(&mut self, n: u32, _ctx: &mut Context) -> Result<u32, ModuleError> {
//!         Ok(n * 2)
//!     }
//! }
//!
//! let node = Node::builder("doc").module("doubler", Doubler::default).start().unwrap();
//! let client = node.client("main");
//! let answer: u32 = node.block_on(async move { client.ask("doubler", 21u32).await }).unwrap().unwrap();
//! assert_eq!(answer, 42);
//! node.shutdown_blocking();
//! ```

mod builder;
mod child_entry;
mod introspect;
mod options;
mod signals;
mod worker;

pub use builder::NodeBuilder;
pub use introspect::{Introspect, LinkInfo, ModuleInfo, NodeInfo, PublicationInfo, SubscriptionInfo, NODE_MODULE};
pub use options::ModuleOptions;
pub use worker::{Hosting, WorkerRequest, WORKER_MODULE};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use actix_rt::{Arbiter, ArbiterHandle, System};
use botbus_core::{validate_name, Client, Endpoint, Module, NameError, Transport, DEFAULT_ASK_TIMEOUT};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use botbus_transport_stdio::{affinity, ChildCommand};

use crate::child::{host_child, ChildHosted};
use crate::host::{Hosted, Startup, StopSignal};
use crate::link::{establish, Admission, LinkConfig, LinkError, LinkStats, Role};
use crate::router::{LocalModule, ModuleStatus, Router};
use crate::supervisor::{Supervise, Supervised, Supervisor};
use builder::{launcher, ModuleSpec};
use options::{Process, Thread};
use signals::Signals;

/// A wait with no practical end, kept without a timer (a child waits for
/// its parent this long): a century.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long one start of a module may take unless its options say otherwise.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for one module's `stopping` hook.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a node or module could not start, or a wait gave up.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A node or module name is not valid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Two modules on one node share a name.
    #[error("a module named `{0}` already runs on this node")]
    DuplicateModule(String),
    /// No module of that name runs on this node.
    #[error("no module named `{0}` runs on this node")]
    NoSuchModule(String),
    /// A module failed to start and will not be restarted.
    #[error("module `{module}` failed to start: {reason}")]
    StartFailed {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
    /// The node could not start its threads.
    #[error("cannot start the node's threads: {0}")]
    Threads(std::io::Error),
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
    /// An endpoint to listen at cannot be listened at.
    #[error("cannot listen at `{endpoint}`: {reason}")]
    Listen {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A node to join cannot be joined at all (a bad endpoint, a scheme
    /// with no transport): not a node that is merely not up yet.
    #[error("cannot join `{endpoint}`: {reason}")]
    Join {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A wait for a condition reached its deadline.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// A module could not be stopped (on a worker, say).
    #[error("module `{module}` could not be stopped: {reason}")]
    StopFailed {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
}

/// The modules of a node, in start order (they stop in reverse), with their
/// names in a set: registering a module checks for a duplicate in constant
/// time, so starting many modules is linear.
#[derive(Default)]
struct RunningModules {
    order: Vec<RunningModule>,
    names: std::collections::HashSet<Arc<str>>,
}

impl RunningModules {
    fn add(&mut self, module: RunningModule) -> Result<(), NodeError> {
        if !self.names.insert(module.name.clone()) {
            return Err(NodeError::DuplicateModule(module.name.to_string()));
        }
        self.order.push(module);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Option<RunningModule> {
        self.names.remove(name).then(|| {
            let index = self.order.iter().position(|m| &*m.name == name).expect("listed");
            self.order.remove(index)
        })
    }

    fn take_all(&mut self) -> Vec<RunningModule> {
        self.names.clear();
        std::mem::take(&mut self.order)
    }
}

/// A module's own thread ([`Thread::Own`]): dropped, it stops, letting
/// whatever still runs there go — unless it was [`kept`](OwnThread::keep).
struct OwnThread(Option<ArbiterHandle>);

impl OwnThread {
    /// The thread of `home`, if `thread` places a module on its own.
    fn of(thread: &Thread, home: &ArbiterHandle) -> Option<OwnThread> {
        matches!(thread, Thread::Own).then(|| OwnThread(Some(home.clone())))
    }

    /// Lets the thread run on when this is dropped.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            thread.stop();
        }
    }
}

struct RunningModule {
    name: Arc<str>,
    stop: Arc<StopSignal>,
    done: Option<oneshot::Receiver<()>>,
}

struct Shared {
    name: String,
    router: Arc<Router>,
    supervisor: Addr<Supervisor>,
    system: System,
    system_arbiter: ArbiterHandle,
    pool: Vec<ArbiterHandle>,
    next_pool: AtomicUsize,
    arbiters: Mutex<Vec<Arbiter>>,
    named: Mutex<HashMap<String, ArbiterHandle>>,
    /// The CPUs each pinned named thread runs on.
    pinned: Mutex<HashMap<String, Vec<usize>>>,
    modules: Mutex<RunningModules>,
    transports: HashMap<&'static str, Arc<dyn Transport>>,
    link: LinkConfig,
    ask_timeout: Duration,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by the first call to [`Node::shutdown`], which alone runs it (a
    /// swap: a token cannot say whether its cancel was the first).
    shutting_down: AtomicBool,
    /// The same moment, for those that wait on it: cancelled when the
    /// shutdown begins, before links close, so that a joined link closed
    /// then is not joined again.
    leaving: CancellationToken,
    signals_installed: AtomicBool,
    stopped: CancellationToken,
    /// One per listener: closes once it has stopped and let go of its
    /// endpoint (a socket file is removed by then).
    listeners: Mutex<Vec<oneshot::Receiver<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Last handle gone without a shutdown: stop the threads at least.
        self.system.stop();
    }
}

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Starts describing a node named `name`.
    pub fn builder(name: &str) -> NodeBuilder {
        NodeBuilder {
            name: name.to_owned(),
            modules: Vec::new(),
            pool_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            ask_timeout: DEFAULT_ASK_TIMEOUT,
            link: LinkConfig::default(),
            transports: Vec::new(),
            joins: Vec::new(),
            listens: Vec::new(),
            registry: Default::default(),
            worker: false,
            invalid: None,
            describes: true,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A [`Client`] for code outside modules (`main`, tests) to tell, ask and
    /// publish as `node/name`.
    pub fn client(&self, name: &str) -> Client {
        Client::new(self.shared.router.clone(), name)
    }

    /// Starts another module on the running node; returns once its `started`
    /// hook has run.
    pub async fn spawn<M: Module>(
        &self,
        name: &str,
        factory: impl Fn() -> M + Send + Sync + 'static,
        options: ModuleOptions,
    ) -> Result<(), NodeError> {
        self.spawn_spec(ModuleSpec {
            name: name.to_owned(),
            options,
            launch: Some(launcher(factory)),
        })
        .await
    }

    /// Starts another executable as a child module of the running node (see
    /// [`NodeBuilder::child_module`]); returns once the child is ready.
    pub async fn spawn_child(
        &self,
        name: &str,
        command: ChildCommand,
        options: ModuleOptions,
    ) -> Result<(), NodeError> {
        self.spawn_spec(ModuleSpec {
            name: name.to_owned(),
            options: ModuleOptions {
                process: Process::Command(command),
                ..options
            },
            launch: None,
        })
        .await
    }

    /// Starts one module and waits until it is up.
    async fn spawn_spec(&self, spec: ModuleSpec) -> Result<(), NodeError> {
        let name = spec.name.clone();
        let (ready_tx, ready) = oneshot::channel();
        self.launch_spec(spec, Startup::alone(ready_tx)).await?;
        started(&name, ready).await
    }

    /// Registers a module and hands it to its host, which starts it in its
    /// turn and reports through `startup`.
    async fn launch_spec(&self, spec: ModuleSpec, startup: Startup) -> Result<(), NodeError> {
        validate_name(&spec.name)?;
        let shared = &self.shared;
        if shared.stopped.is_cancelled() || shared.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        let command = match &spec.options.process {
            Process::Worker(_) if spec.options.cpus.is_some() => {
                return Err(NodeError::StartFailed {
                    module: spec.name.clone(),
                    reason: "`cpus` pins a thread or a child process of this node, not a module on a worker: \
                             pin it in the worker's own options"
                        .to_owned(),
                })
            }
            Process::This => None,
            Process::SameBinary => Some(ChildCommand::current_exe().map_err(|e| NodeError::StartFailed {
                module: spec.name.clone(),
                reason: format!("cannot find this binary to re-launch: {e}"),
            })?),
            Process::Command(command) => Some(command.clone()),
            Process::Worker(on) => {
                let on = on.clone();
                return self.launch_worker_spec(spec, on, startup);
            }
        };
        if let Some(command) = command {
            let command = match &spec.options.cpus {
                Some(cpus) => command.cpus(cpus.iter().copied()),
                None => command,
            };
            return self.launch_child_spec(spec, command, startup).await;
        }
        let Some(launch) = spec.launch.clone() else {
            unreachable!("a module without code in this binary always has a command")
        };
        let arbiter = self.arbiter_for(&spec.options.thread).await?;
        // A thread of the module's own ends with its host, or with this
        // start if it fails.
        let own_thread = OwnThread::of(&spec.options.thread, &arbiter);
        if let Some(cpus) = &spec.options.cpus {
            let pinned = self.pin(&spec.options.thread, &arbiter, cpus).await;
            pinned.map_err(|reason| NodeError::StartFailed {
                module: spec.name.clone(),
                reason,
            })?;
        }
        let (mailbox, inbox) = crate::mailbox::mailbox(spec.options.mailbox);
        let stop = Arc::new(StopSignal::ringing(mailbox.doorbell()));
        let supervised = self.register(&spec, stop, startup)?;
        shared
            .router
            .add_local(supervised.name.clone(), LocalModule { mailbox });
        let hosted = Hosted {
            supervised,
            inbox,
            ask_timeout: shared.ask_timeout,
        };
        shared.router.set_types(&spec.name, launch.types);
        let host = (launch.run)(hosted);
        if !arbiter.spawn(async move {
            host.await;
            drop(own_thread);
        }) {
            return Err(NodeError::Stopped);
        }
        Ok(())
    }

    /// Registers a module placed in a child process and starts its host on
    /// the thread its link runs on: the one its options name, or else the
    /// node's links' thread.
    async fn launch_child_spec(
        &self,
        spec: ModuleSpec,
        command: ChildCommand,
        startup: Startup,
    ) -> Result<(), NodeError> {
        let shared = &self.shared;
        let home = match spec.options.thread {
            Thread::Pool => self.link_thread(&shared.link).await?,
            ref named_or_own => self.arbiter_for(named_or_own).await?,
        };
        // Its own thread, if it has one, ends if this start fails. Once the
        // child's link runs there it stays until the node stops: ending it
        // with the host could cut the link's last tasks short.
        let own_thread = OwnThread::of(&spec.options.thread, &home);
        let supervised = self.register(&spec, Arc::default(), startup)?;
        if let Some(own_thread) = own_thread {
            own_thread.keep();
        }
        shared.router.add_child(supervised.name.clone());
        let hosted = ChildHosted {
            supervised,
            command,
            link: LinkConfig {
                liveness: spec.options.liveness.unwrap_or(shared.link.liveness),
                ..shared.link.clone()
            },
            stop_grace: spec.options.stop_grace,
        };
        if !home.spawn(host_child(hosted)) {
            return Err(NodeError::Stopped);
        }
        Ok(())
    }

    /// Registers a module placed on a worker and starts its host on the
    /// system thread.
    fn launch_worker_spec(&self, spec: ModuleSpec, on: worker::OnWorker, startup: Startup) -> Result<(), NodeError> {
        let shared = &self.shared;
        let supervised = self.register(&spec, Arc::default(), startup)?;
        shared.router.place_on_worker(&supervised.name, Some(&on.worker));
        let hosted = worker::WorkerHosted {
            supervised,
            on,
            ran: false,
        };
        if !shared.system_arbiter.spawn(worker::host_on_worker(hosted)) {
            return Err(NodeError::Stopped);
        }
        Ok(())
    }

    /// Starts a module of type `module_type` (registered there) on the
    /// worker node `worker`, as this node's own module supervised under
    /// `options` (see [`NodeBuilder::worker_module`]); returns once it runs.
    pub async fn spawn_on_worker(
        &self,
        name: &str,
        worker: &str,
        module_type: &str,
        args: &impl serde::Serialize,
        options: ModuleOptions,
    ) -> Result<(), NodeError> {
        let on = worker::OnWorker::new(worker, module_type, name, args, &options)?;
        self.spawn_spec(ModuleSpec {
            name: name.to_owned(),
            options: ModuleOptions {
                process: Process::Worker(on),
                ..options
            },
            launch: None,
        })
        .await
    }

    /// Adds a module to the node's list (for stopping in reverse order),
    /// puts it under the supervisor's policy, and gives what its host needs
    /// for the restart loop.
    fn register(&self, spec: &ModuleSpec, stop: Arc<StopSignal>, startup: Startup) -> Result<Supervised, NodeError> {
        let shared = &self.shared;
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let (done, gone) = oneshot::channel();
        shared.modules.lock().expect("node lock").add(RunningModule {
            name: name.clone(),
            stop: stop.clone(),
            done: Some(gone),
        })?;
        shared.supervisor.do_send(Supervise {
            name: name.clone(),
            policy: spec.options.restart,
            budget: spec.options.budget,
        });
        Ok(Supervised {
            name,
            router: shared.router.clone(),
            supervisor: shared.supervisor.clone(),
            stop,
            start_timeout: spec.options.start_timeout,
            needs: spec.options.needs.clone(),
            startup,
            done,
        })
    }

    async fn arbiter_for(&self, thread: &Thread) -> Result<ArbiterHandle, NodeError> {
        let shared = &self.shared;
        let named = match thread {
            Thread::System => return Ok(shared.system_arbiter.clone()),
            Thread::Pool if shared.pool.is_empty() => return Ok(shared.system_arbiter.clone()),
            Thread::Pool => {
                let slot = shared.next_pool.fetch_add(1, Ordering::Relaxed) % shared.pool.len();
                return Ok(shared.pool[slot].clone());
            }
            Thread::Own => None,
            Thread::Named(name) => {
                if let Some(handle) = shared.named.lock().expect("node lock").get(name) {
                    return Ok(handle.clone());
                }
                Some(name.clone())
            }
        };
        // Arbiters are made on the system thread, where the actix System is.
        let arbiter = self.on_system(async { Arbiter::new() }).await?;
        let handle = arbiter.handle();
        let Some(name) = named else {
            // A module's own thread: the System stops it with the node, and
            // the module's [`OwnThread`] before that, so it is not kept.
            return Ok(handle);
        };
        shared.arbiters.lock().expect("node lock").push(arbiter);
        Ok(shared
            .named
            .lock()
            .expect("node lock")
            .entry(name)
            .or_insert(handle)
            .clone())
    }

    /// Runs `thread` (its arbiter `home`) only on `cpus` from now on.
    async fn pin(&self, thread: &Thread, home: &ArbiterHandle, cpus: &[usize]) -> Result<(), String> {
        let name = match thread {
            Thread::Pool | Thread::System => {
                return Err(
                    "`cpus` pins the module's own thread or a named one, not a thread of the shared pool: \
                            give the module `own_thread` or `thread`"
                        .to_owned(),
                )
            }
            Thread::Own => None,
            Thread::Named(name) => {
                let mut pinned = self.shared.pinned.lock().expect("node lock");
                match pinned.get(name) {
                    Some(already) if already == cpus => return Ok(()),
                    Some(already) => {
                        return Err(format!(
                            "thread `{name}` already runs on CPUs {already:?}, not {cpus:?}"
                        ))
                    }
                    None => pinned.insert(name.clone(), cpus.to_vec()),
                };
                Some(name)
            }
        };
        let wanted = cpus.to_vec();
        let pinned = on(home, async move { affinity::pin_this_thread(&wanted) })
            .await
            .map_err(|error| error.to_string())
            .and_then(|done| done.map_err(|error| error.to_string()));
        if let (Err(_), Some(name)) = (&pinned, name) {
            self.shared.pinned.lock().expect("node lock").remove(name);
        }
        pinned
    }

    /// The thread that links made with `config` run on: the one it names,
    /// or the node's own.
    async fn link_thread(&self, config: &LinkConfig) -> Result<ArbiterHandle, NodeError> {
        match &config.thread {
            Some(name) => self.arbiter_for(&Thread::Named(name.clone())).await,
            None => Ok(self.shared.system_arbiter.clone()),
        }
    }

    /// Runs `future` on the node's system thread and returns its output.
    async fn on_system<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, NodeError> {
        on(&self.shared.system_arbiter, future).await
    }

    /// Runs `future` on the node's system thread and blocks until it is done:
    /// for a plain `main` that wants to ask a module.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, NodeError> {
        block_here(self.on_system(future))
    }

    /// Stops module `name` normally (its `stopping` hook runs; it is not
    /// restarted, and its monitors are told). Returns once it is gone.
    pub async fn stop_module(&self, name: &str) -> Result<(), NodeError> {
        let removed = self.shared.modules.lock().expect("node lock").remove(name);
        let Some(RunningModule { stop, done, .. }) = removed else {
            return Err(NodeError::NoSuchModule(name.to_owned()));
        };
        stop.stop();
        if let Some(done) = done {
            let _ = done.await;
        }
        Ok(())
    }

    /// What the node knows of module `name`, if it ever ran here.
    pub fn status(&self, name: &str) -> Option<ModuleStatus> {
        self.shared.router.status(name)
    }

    /// The process id of module `name`'s child process, if it runs in one
    /// and that process is up.
    pub fn child_pid(&self, name: &str) -> Option<u32> {
        self.shared.router.child_pid(name)
    }

    /// The modules running on this node (not the framework's own, named
    /// `botbus.…`).
    pub fn modules(&self) -> Vec<String> {
        let mut names = self.shared.router.local_names();
        names.retain(|name| !name.starts_with(crate::router::FRAMEWORK_PREFIX));
        names
    }

    /// What crossed each of this node's links so far, by peer.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        let mut stats: Vec<LinkStats> = self.shared.router.links().iter().map(|l| l.stats()).collect();
        stats.sort_by(|a, b| a.peer.cmp(&b.peer));
        stats
    }

    /// Every other node this node can reach — linked to it, or through the
    /// nodes it is linked to — sorted.
    pub fn reachable_nodes(&self) -> Vec<String> {
        self.shared.router.node_names()
    }

    /// The nodes this node has a link to.
    pub fn peers(&self) -> Vec<String> {
        self.shared.router.links().iter().map(|l| l.peer().to_owned()).collect()
    }

    /// Listens for links at `endpoint` (`mem://name`, or any scheme whose
    /// transport was added). Returns the endpoint peers should use — with the
    /// real port or path.
    pub async fn listen(&self, endpoint: &str) -> Result<Endpoint, LinkError> {
        self.listen_with(endpoint, self.shared.link.clone()).await
    }

    /// [`Node::listen`], with links accepted there behaving as `config`
    /// says instead of the node's [`LinkConfig`] (a longer silence for
    /// peers on a slow network, say).
    pub async fn listen_with(&self, endpoint: &str, config: LinkConfig) -> Result<Endpoint, LinkError> {
        let endpoint: Endpoint = endpoint.parse()?;
        let transport = self.transport(&endpoint)?;
        if config.token.is_none() && !config.insecure && !endpoint.is_local_only() && !transport.authenticates_peers() {
            return Err(LinkError::Insecure(endpoint.to_string()));
        }
        let router = self.shared.router.clone();
        let stopped = self.shared.stopped.clone();
        // The listener lives where its links will: a socket is served by the
        // thread it was registered on.
        let home = self.link_thread(&config).await.map_err(|_| LinkError::NodeStopped)?;
        on(&home, async move {
            let mut listener = transport.listen(&endpoint).await?;
            let admission = Admission::new(config.max_handshakes);
            let bound = listener.endpoint();
            let (closed_tx, closed) = oneshot::channel::<()>();
            let at = bound.clone();
            // In the thread's own task set, as the links it makes are.
            tokio::task::spawn_local(async move {
                loop {
                    // Accepting never waits on a peer: the transport's own
                    // handshake (TLS) and ours run on the connection's task,
                    // within the handshake deadline, and at most
                    // `max_handshakes` at once (see `Admission`).
                    let accepted = tokio::select! {
                        () = stopped.cancelled() => break,
                        accepted = listener.accept() => accepted,
                    };
                    match accepted {
                        Ok(link) => {
                            let (admitted, evicted) = admission.admit();
                            if evicted > 0 {
                                tracing::warn!(listener = %at, "too many connections in their handshake: dropped the oldest");
                            }
                            let (router, config) = (router.clone(), config.clone());
                            tokio::task::spawn_local(async move {
                                let peer = link.peer();
                                tokio::select! {
                                    () = admitted.evicted() => {
                                        tracing::warn!(%peer, "dropped a connection still in its handshake, to make room for a newer one");
                                    }
                                    established = establish(router.clone(), link, &config, Role::Accepting) => {
                                        if let Err(error) = established {
                                            tracing::error!(node = router.node(), %error, "refused an incoming link");
                                        }
                                    }
                                }
                            });
                        }
                        Err(error) => {
                            tracing::error!(%error, "listener stopped");
                            break;
                        }
                    }
                }
                drop(listener); // its socket file, if any, goes now
                drop(closed_tx);
            });
            Ok((bound, closed))
        })
        .await
        .map_err(|_| LinkError::NodeStopped)?
        .map(|(bound, closed)| {
            self.shared.listeners.lock().expect("node lock").push(closed);
            bound
        })
    }

    /// Opens a link to the node listening at `endpoint`. Returns the peer's
    /// node name once the handshake is done (the peer's announcement of its
    /// modules follows right after: see [`Node::wait_for_module`]).
    pub async fn connect(&self, endpoint: &str) -> Result<String, LinkError> {
        self.connect_with(endpoint, self.shared.link.clone()).await
    }

    /// [`Node::connect`], with this link behaving as `config` says instead
    /// of the node's [`LinkConfig`].
    pub async fn connect_with(&self, endpoint: &str, config: LinkConfig) -> Result<String, LinkError> {
        let endpoint: Endpoint = endpoint.parse()?;
        let transport = self.transport(&endpoint)?;
        let router = self.shared.router.clone();
        let home = self.link_thread(&config).await.map_err(|_| LinkError::NodeStopped)?;
        on(&home, async move {
            let link = transport.connect(&endpoint).await?;
            establish(router, link, &config, Role::Connecting).await
        })
        .await
        .map_err(|_| LinkError::NodeStopped)?
    }

    /// Joins the node at `endpoint` (a hub, or any node that listens) and
    /// stays joined: the link is kept up for as long as this node runs. If
    /// it cannot be made, or is lost — the hub restarted, say — it is made
    /// again, after a backoff that grows from 100 ms to 5 s with jitter (so
    /// that many joined processes do not all knock at once), and announces
    /// afresh what lives here. While the link is down, asks through it end
    /// `Unreachable` at once.
    ///
    /// Returns once the first attempt is over, linked or not: wait for what
    /// you need with [`Node::wait_for_module`].
    pub async fn join_to(&self, endpoint: &str) -> Result<(), LinkError> {
        let endpoint: Endpoint = endpoint.parse()?;
        let transport = self.transport(&endpoint)?;
        let (router, config, leaving) = (
            self.shared.router.clone(),
            self.shared.link.clone(),
            self.shared.leaving.clone(),
        );
        let home = self.link_thread(&config).await.map_err(|_| LinkError::NodeStopped)?;
        let (first_tx, first) = oneshot::channel();
        let spawned = home.spawn(stay_joined(endpoint, transport, router, config, leaving, first_tx));
        if !spawned {
            return Err(LinkError::NodeStopped);
        }
        let _ = first.await;
        Ok(())
    }

    fn transport(&self, endpoint: &Endpoint) -> Result<Arc<dyn Transport>, LinkError> {
        self.shared
            .transports
            .get(endpoint.scheme())
            .cloned()
            .ok_or_else(|| LinkError::NoTransport(endpoint.scheme().to_owned()))
    }

    /// Waits until `condition` holds, re-checking whenever modules, links,
    /// subscriptions or statuses change. Never sleeps a fixed time.
    ///
    /// A `timeout` of a century or more (`Duration::MAX`, say) waits
    /// without a timer: a timer on a thread costs each of its waits for
    /// I/O a look at the clock.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Node) -> bool,
    ) -> Result<(), NodeError> {
        let mut changes = self.shared.router.watch_topology();
        let deadline = (timeout < FOREVER)
            .then(|| tokio::time::Instant::now().checked_add(timeout))
            .flatten();
        loop {
            changes.borrow_and_update();
            if condition(self) {
                return Ok(());
            }
            let changed = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, changes.changed()).await,
                None => Ok(changes.changed().await),
            };
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => return Err(NodeError::Timeout(timeout, what.to_owned())),
            }
        }
    }

    /// Waits until `module` (`name` or `node/name`) can be reached from here.
    pub async fn wait_for_module(&self, module: &str, timeout: Duration) -> Result<(), NodeError> {
        let what = format!("module `{module}` to be reachable");
        self.wait_until(&what, timeout, |node| node.reaches(module)).await
    }

    /// Whether `module` (`name` or `node/name`) can be reached from here
    /// now: it runs here, or at a node this one has a route to.
    pub fn reaches(&self, module: &str) -> bool {
        self.shared.router.routable(module)
    }

    /// Waits until a publish on `topic` would reach at least one subscriber.
    pub async fn wait_for_subscriber(&self, topic: &str, timeout: Duration) -> Result<(), NodeError> {
        let what = format!("a subscriber of `{topic}`");
        self.wait_until(&what, timeout, |node| node.shared.router.has_subscriber(topic))
            .await
    }

    /// The nodes with a module subscribed to `topic`, as far as this node
    /// knows (itself included), by name.
    pub fn subscriber_nodes(&self, topic: &str) -> Vec<String> {
        self.shared.router.subscriber_nodes(topic)
    }

    /// Stops the node: modules in reverse start order (each one's `stopping`
    /// hook runs), then links (with a goodbye), then the threads.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        if shared.shutting_down.swap(true, Ordering::AcqRel) {
            shared.stopped.cancelled().await;
            return;
        }
        tracing::info!(node = %shared.name, "shutting down");
        shared.leaving.cancel();
        let modules = shared.modules.lock().expect("node lock").take_all();
        for mut module in modules.into_iter().rev() {
            module.stop.stop();
            if let Some(done) = module.done.take() {
                match tokio::time::timeout(STOP_GRACE, done).await {
                    Ok(_) if module.name.starts_with(crate::router::FRAMEWORK_PREFIX) => {
                        tracing::debug!(module = %module.name, "stopped")
                    }
                    Ok(_) => tracing::info!(module = %module.name, "stopped"),
                    Err(_) => tracing::warn!(module = %module.name, "did not stop within {STOP_GRACE:?}"),
                }
            }
        }
        for link in shared.router.links() {
            link.close("node shutting down");
        }
        shared.stopped.cancel();
        // The listeners let go of their endpoints before the node's
        // threads stop: once shutdown returns, a socket file is gone.
        let listeners = std::mem::take(&mut *shared.listeners.lock().expect("node lock"));
        for closed in listeners {
            let _ = tokio::time::timeout(STOP_GRACE, closed).await;
        }
        shared.system.stop();
    }

    /// [`Node::shutdown`] from synchronous code; also waits for the node's
    /// threads to end.
    pub fn shutdown_blocking(&self) {
        let node = self.clone();
        // The shutdown sequence runs on the node's own system thread, which
        // has the timers it needs; this thread only waits.
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = self.shared.system_arbiter.spawn(async move {
            node.shutdown().await;
            let _ = tx.send(());
        });
        if spawned {
            let _ = rx.recv();
        }
        self.join();
    }

    /// Blocks until the node has stopped (by [`Node::shutdown`] or a signal).
    pub fn join(&self) {
        let thread = self.shared.thread.lock().expect("node lock").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// From now on, SIGINT (Ctrl-C) or SIGTERM shuts the node down
    /// gracefully instead of killing the process. Returns once the handlers
    /// are in place, so no signal can slip through before them.
    pub fn shutdown_on_signal(&self) -> Result<(), NodeError> {
        if self.shared.signals_installed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let node = self.clone();
        self.block_on(async move {
            let signals = Signals::install()?;
            tokio::spawn(async move {
                signals.wait().await;
                tracing::info!(node = node.name(), "signal received");
                node.shutdown().await;
            });
            Ok::<(), std::io::Error>(())
        })?
        .map_err(NodeError::Threads)
    }

    /// Runs until SIGINT (Ctrl-C) or SIGTERM, then shuts down gracefully and
    /// returns.
    pub fn run_until_signal(&self) -> Result<(), NodeError> {
        self.shutdown_on_signal()?;
        self.join();
        Ok(())
    }

    /// Runs for `duration` or until a signal, whichever comes first, then
    /// shuts down gracefully.
    pub fn run_for(&self, duration: Duration) -> Result<(), NodeError> {
        self.shutdown_on_signal()?;
        let node = self.clone();
        self.shared.system_arbiter.spawn(async move {
            tokio::time::sleep(duration).await;
            node.shutdown().await;
        });
        self.join();
        Ok(())
    }
}

/// Blocks this thread until `future` is done.
///
/// The thread may be inside a tokio task (a `#[tokio::main]` that builds a
/// node, say). tokio gives a task a budget of 128 polls of its channels per
/// turn and, once it is spent, defers the wake to the scheduler's next turn:
/// a turn that never comes while this thread blocks. So the wait runs
/// outside the budget; without it, a start that waits for 128 modules
/// stopped forever.
pub(crate) fn block_here<T>(future: impl Future<Output = T>) -> T {
    futures::executor::block_on(tokio::task::coop::unconstrained(future))
}

/// Runs `future` on `arbiter`'s thread and returns its output.
async fn on<T: Send + 'static>(
    arbiter: &ArbiterHandle,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, NodeError> {
    let (tx, rx) = oneshot::channel();
    let spawned = arbiter.spawn(async move {
        let _ = tx.send(future.await);
    });
    if !spawned {
        return Err(NodeError::Stopped);
    }
    rx.await.map_err(|_| NodeError::Stopped)
}

/// Keeps a link to `endpoint` up until the node begins to shut down
/// (`leaving`; see [`Node::join_to`]). `first` is told when the first
/// attempt is over.
async fn stay_joined(
    endpoint: Endpoint,
    transport: Arc<dyn Transport>,
    router: Arc<Router>,
    config: LinkConfig,
    leaving: CancellationToken,
    first: oneshot::Sender<()>,
) {
    use backon::BackoffBuilder;
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let mut delays = policy.build();
    let mut first = Some(first);
    let mut failing = false;
    loop {
        let attempt = async {
            let link = transport.connect(&endpoint).await?;
            crate::link::establish_link(router.clone(), link, &config, Role::Connecting, None).await
        };
        let attempt = tokio::select! {
            () = leaving.cancelled() => return,
            attempt = attempt => attempt,
        };
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        match attempt {
            Ok(link) => {
                tracing::info!(node = router.node(), %endpoint, peer = link.peer(), "joined");
                failing = false;
                delays = policy.build();
                let reason = tokio::select! {
                    // The shutdown closes the link after it cancels
                    // `leaving`: looked at first, that is no lost link.
                    biased;
                    () = leaving.cancelled() => return,
                    reason = link.closed() => reason,
                };
                tracing::warn!(node = router.node(), %endpoint, %reason, "lost the link to the node joined; joining again");
            }
            // The first failure in a row is worth a warning; the retries
            // that follow are not.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(node = router.node(), %endpoint, %error, "cannot join yet; trying again with backoff");
            }
            Err(error) => tracing::debug!(node = router.node(), %endpoint, %error, "cannot join yet"),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = leaving.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Waits for a new module's first instance (or child) to be ready.
async fn started(name: &str, ready: oneshot::Receiver<Result<(), String>>) -> Result<(), NodeError> {
    match ready.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(NodeError::StartFailed {
            module: name.to_owned(),
            reason,
        }),
        Err(_) => Err(NodeError::Stopped),
    }
}
