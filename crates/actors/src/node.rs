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

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_rt::{Arbiter, ArbiterHandle, System};
use botbus_core::{
    validate_name, Client, Endpoint, Liveness, Module, NameError, RestartBudget, RestartPolicy, Transport,
    DEFAULT_ASK_TIMEOUT,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use botbus_transport_stdio::{ChildCommand, StdioLink};

use crate::child::{host_child, ChildHosted};
use crate::host::{host, Hosted, Startup, StopSignal};
use crate::link::{establish, establish_link, LinkConfig, LinkError, LinkStats};
use crate::mem::MemTransport;
use crate::router::{LocalModule, ModuleStatus, Router};
use crate::supervisor::{Supervise, Supervisor};

/// A wait with no practical end (a child waits for its parent this long).
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
    /// A wait for a condition reached its deadline.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Which thread a module runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Thread {
    /// One of the shared pool's arbiters.
    #[default]
    Pool,
    /// A dedicated arbiter.
    Own,
    /// The arbiter shared by every module naming this thread.
    Named(String),
    /// The node's system thread, beside the link I/O: how a child hosts
    /// its one module, with no thread hop between the link and the module.
    System,
}

/// Which process a module runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Process {
    /// This one.
    #[default]
    This,
    /// A re-launched copy of this binary.
    SameBinary,
    /// Another executable that speaks the protocol.
    Command(ChildCommand),
}

/// How a module is hosted: its restart policy and budget, its mailbox size,
/// its thread — or a child process of its own.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    restart: RestartPolicy,
    budget: RestartBudget,
    mailbox: usize,
    thread: Thread,
    process: Process,
    stop_grace: Duration,
    start_timeout: Duration,
    liveness: Option<Liveness>,
}

impl Default for ModuleOptions {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::default(),
            budget: RestartBudget::default(),
            mailbox: 1024,
            thread: Thread::Pool,
            process: Process::This,
            stop_grace: Duration::from_secs(2),
            start_timeout: DEFAULT_START_TIMEOUT,
            liveness: None,
        }
    }
}

impl ModuleOptions {
    /// Defaults: restart on failure, at most 3 restarts in 5 s, a mailbox of
    /// 1024 messages, a thread from the pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// When the module is restarted.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// At most `max_restarts` restarts within `within`; then it is failed.
    pub fn budget(mut self, max_restarts: u32, within: Duration) -> Self {
        self.budget = RestartBudget::new(max_restarts, within);
        self
    }

    /// Messages the mailbox holds before senders wait (at least 1).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Runs the module on a thread of its own.
    pub fn own_thread(mut self) -> Self {
        self.thread = Thread::Own;
        self
    }

    /// Runs the module on the thread named `name`, shared with every other
    /// module of this node that names it.
    pub fn thread(mut self, name: &str) -> Self {
        self.thread = Thread::Named(name.to_owned());
        self
    }

    /// Runs the module in a child process: a copy of this very binary,
    /// started with the same arguments, in which [`NodeBuilder::start`]
    /// hosts only this module (the other options still apply there). The
    /// module's code does not change; a crash of the child takes nothing
    /// else down, and the child is restarted under the module's policy.
    pub fn in_child(mut self) -> Self {
        self.process = Process::SameBinary;
        self
    }

    /// How long a child process has to exit after its goodbye, and again
    /// after SIGTERM, before it is killed (default 2 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// How long one start of the module may take before it counts as a
    /// failed start (default 5 s): its `started` hook in this process; for a
    /// child, from launching the process until its node has announced the
    /// module (the hello, then the module's own `started`). A failed start
    /// is restarted under the module's policy, and failed starts in a row
    /// spend its budget however slowly each one fails, so a module that can
    /// never come up ends [`ModuleStatus::Failed`] and
    /// [`NodeBuilder::start`] returns an error.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The liveness of the link to this module's child process, instead of
    /// the node's [`LinkConfig::liveness`]: when a quiet child is pinged, and
    /// after how much silence it counts as hung — it is then killed and
    /// restarted, as after a crash. A module that blocks its thread for
    /// longer than that in a child process is hung as far as its parent can
    /// tell.
    pub fn liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Whether the module runs in a child process.
    pub fn is_child(&self) -> bool {
        self.process != Process::This
    }
}

type Launch = Arc<dyn Fn(Hosted) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct ModuleSpec {
    name: String,
    options: ModuleOptions,
    /// How to host it in this process; `None` for a module that exists only
    /// as another executable.
    launch: Option<Launch>,
}

fn launcher<M: Module>(factory: impl Fn() -> M + Send + Sync + 'static) -> Launch {
    // This process now knows the module's types, so its nodes can pass them
    // between links of different codecs.
    <M::Message as botbus_core::FromPayload>::register();
    botbus_core::register_message::<M::Reply>();
    let factory: Arc<dyn Fn() -> M + Send + Sync> = Arc::new(factory);
    Arc::new(move |hosted| Box::pin(host(factory.clone(), hosted)))
}

/// Sets up a [`Node`]: its name, modules and settings.
pub struct NodeBuilder {
    name: String,
    modules: Vec<ModuleSpec>,
    pool_threads: usize,
    ask_timeout: Duration,
    link: LinkConfig,
    transports: Vec<Arc<dyn Transport>>,
}

impl NodeBuilder {
    /// Adds a module with default [`ModuleOptions`]. `factory` builds a fresh
    /// instance at start and after each restart.
    pub fn module<M: Module>(self, name: &str, factory: impl Fn() -> M + Send + Sync + 'static) -> Self {
        self.module_with(name, factory, ModuleOptions::default())
    }

    /// Adds a module with the given options.
    pub fn module_with<M: Module>(
        mut self,
        name: &str,
        factory: impl Fn() -> M + Send + Sync + 'static,
        options: ModuleOptions,
    ) -> Self {
        self.modules.push(ModuleSpec {
            name: name.to_owned(),
            options,
            launch: Some(launcher(factory)),
        });
        self
    }

    /// Adds a module that runs as another executable: `command` is spawned
    /// as a child, linked over its stdin/stdout, and must speak the botbus
    /// protocol (a botbus binary that registers the module, or a peer in any
    /// language: see `docs/PROTOCOL.md`). Restart policy, budget and stop
    /// grace come from `options`.
    pub fn child_module(mut self, name: &str, command: ChildCommand, options: ModuleOptions) -> Self {
        self.modules.push(ModuleSpec {
            name: name.to_owned(),
            options: ModuleOptions {
                process: Process::Command(command),
                ..options
            },
            launch: None,
        });
        self
    }

    /// Arbiters in the shared pool (default: the machine's cores).
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.pool_threads = threads.max(1);
        self
    }

    /// The default timeout of asks made by this node's modules.
    pub fn ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// How this node's links behave (frame limit, handshake timeout, queue).
    pub fn link_config(mut self, config: LinkConfig) -> Self {
        self.link = config;
        self
    }

    /// Adds a transport, so [`Node::listen`] and [`Node::connect`] serve its
    /// scheme. `mem://` is always there.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transports.push(transport);
        self
    }

    /// Starts the node's threads, then its modules in the order they were
    /// added, each one's `started` hook finishing before the next begins (a
    /// child module: until its child announced it).
    ///
    /// **In a child process** started by a botbus parent (the
    /// `BOTBUS_CHILD_MODULE` environment variable names the module), this
    /// call does not return: it hosts only that module, linked to the parent
    /// over stdin/stdout, and exits the process when the parent goes away or
    /// the module is gone for good. Build the node before writing anything to
    /// stdout: from here on fd 1 is redirected to stderr.
    pub fn start(self) -> Result<Node, NodeError> {
        if let Some((module, node)) = botbus_transport_stdio::child_role() {
            self.run_as_child(&module, &node);
        }
        self.start_node()
    }

    /// The child side of a child module; see [`NodeBuilder::start`].
    fn run_as_child(mut self, module: &str, node_name: &str) -> ! {
        let fail = |code: i32, why: String| -> ! {
            eprintln!("ERROR botbus child `{module}`: {why}");
            std::process::exit(code)
        };
        // First of all: make the protocol stream private.
        let link = StdioLink::own_stdio().unwrap_or_else(|e| fail(1, format!("cannot take stdin/stdout: {e}")));
        botbus_transport_stdio::exit_with_parent();
        let names: Vec<String> = self.modules.iter().map(|m| m.name.clone()).collect();
        let Some(mut spec) = std::mem::take(&mut self.modules).into_iter().find(|m| m.name == module) else {
            fail(
                2,
                format!("this binary registers no module `{module}` (it has {names:?})"),
            )
        };
        if spec.launch.is_none() {
            fail(
                2,
                format!("module `{module}` is an external program, not code in this binary"),
            );
        }
        spec.options.process = Process::This;
        spec.options.thread = Thread::System;
        self.pool_threads = 0; // nothing runs on a pool here
        self.name = node_name.to_owned();
        let node = self.start_node().unwrap_or_else(|e| fail(1, e.to_string()));
        // The link first, so the module's `started` hook can reach the parent.
        // The link first, and the parent's announcement, so that the
        // module's `started` hook can already reach the parent's modules.
        let (router, config) = (node.shared.router.clone(), node.shared.link.clone());
        let linked = node.block_on(async move {
            let mut changes = router.watch_topology();
            let link = establish_link(router.clone(), Box::new(link), &config, None).await?;
            let announced = async {
                loop {
                    changes.borrow_and_update();
                    if link.announced() || link.is_closed() || changes.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(config.handshake_timeout, announced).await;
            Ok::<_, LinkError>(())
        });
        match linked {
            Ok(Ok(())) => {}
            Ok(Err(error)) => fail(1, format!("no link to the parent: {error}")),
            Err(error) => fail(1, error.to_string()),
        }
        let spawner = node.clone();
        if let Ok(Err(error)) = node.block_on(async move { spawner.spawn_spec(spec).await }) {
            // The parent heard of it as a `down`; this is for its log.
            eprintln!("ERROR botbus child `{module}`: {error}");
        }
        let watcher = node.clone();
        let name = module.to_owned();
        let _ = node.block_on(async move {
            watcher
                .wait_until("the parent to go or the module to end", FOREVER, |node| {
                    let gone = matches!(
                        node.status(&name),
                        Some(ModuleStatus::Stopped | ModuleStatus::Failed(_))
                    );
                    node.peers().is_empty() || gone
                })
                .await
        });
        let code = match node.status(module) {
            Some(ModuleStatus::Failed(_)) => 70, // EX_SOFTWARE
            _ => 0,
        };
        node.shutdown_blocking();
        std::process::exit(code)
    }

    fn start_node(self) -> Result<Node, NodeError> {
        validate_name(&self.name)?;
        let router = Router::new(&self.name);
        let (parts_tx, parts_rx) = std::sync::mpsc::channel();
        let pool_threads = self.pool_threads;
        let thread_name = format!("botbus-{}", self.name);
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let system = System::new();
                let parts = system.block_on(async move {
                    let pool: Vec<Arbiter> = (0..pool_threads).map(|_| Arbiter::new()).collect();
                    (
                        pool,
                        Supervisor::default().start(),
                        System::current(),
                        Arbiter::current(),
                    )
                });
                let _ = parts_tx.send(parts);
                let _ = system.run();
            })
            .map_err(NodeError::Threads)?;
        let (pool, supervisor, system, system_arbiter) = parts_rx.recv().map_err(|_| NodeError::Stopped)?;
        let mut transports: HashMap<&'static str, Arc<dyn Transport>> = HashMap::new();
        transports.insert(MemTransport.scheme(), Arc::new(MemTransport));
        for transport in self.transports {
            transports.insert(transport.scheme(), transport);
        }
        let node = Node {
            shared: Arc::new(Shared {
                name: self.name,
                router,
                supervisor,
                system,
                system_arbiter,
                pool: pool.iter().map(Arbiter::handle).collect(),
                next_pool: AtomicUsize::new(0),
                arbiters: Mutex::new(pool),
                named: Mutex::default(),
                modules: Mutex::default(),
                transports,
                link: self.link,
                ask_timeout: self.ask_timeout,
                thread: Mutex::new(Some(thread)),
                shutting_down: AtomicBool::new(false),
                signals_installed: AtomicBool::new(false),
                stopped: CancellationToken::new(),
            }),
        };
        // Every module is handed to its host at once; each starts when the
        // one before it is up, so they still start one after the other, in
        // order, and this thread only waits for the outcome.
        let started_in_order = futures::executor::block_on(async {
            let mut waiting = Vec::with_capacity(self.modules.len());
            let mut after = None;
            for spec in self.modules {
                let name = spec.name.clone();
                let (ready_tx, ready) = oneshot::channel();
                let (next_tx, next) = oneshot::channel();
                node.launch_spec(spec, Startup::in_order(ready_tx, after.take(), next_tx))
                    .await?;
                after = Some(next);
                waiting.push((name, ready));
            }
            for (name, ready) in waiting {
                started(&name, ready).await?;
            }
            Ok(())
        });
        if let Err(error) = started_in_order {
            node.shutdown_blocking();
            return Err(error);
        }
        Ok(node)
    }
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
    modules: Mutex<RunningModules>,
    transports: HashMap<&'static str, Arc<dyn Transport>>,
    link: LinkConfig,
    ask_timeout: Duration,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    shutting_down: AtomicBool,
    signals_installed: AtomicBool,
    stopped: CancellationToken,
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
            Process::This => None,
            Process::SameBinary => Some(ChildCommand::current_exe().map_err(|e| NodeError::StartFailed {
                module: spec.name.clone(),
                reason: format!("cannot find this binary to re-launch: {e}"),
            })?),
            Process::Command(command) => Some(command.clone()),
        };
        if let Some(command) = command {
            return self.launch_child_spec(spec, command, startup);
        }
        let Some(launch) = spec.launch.clone() else {
            unreachable!("a module without code in this binary always has a command")
        };
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let (mailbox_tx, mailbox) = mpsc::channel(spec.options.mailbox);
        let (control_tx, control) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let stop = Arc::new(StopSignal::default());
        self.register(&name, &spec.options, stop.clone(), done)?;
        shared.router.add_local(
            name.clone(),
            LocalModule {
                mailbox: mailbox_tx,
                control: control_tx,
            },
        );
        let hosted = Hosted {
            name,
            router: shared.router.clone(),
            supervisor: shared.supervisor.clone(),
            mailbox,
            backlog: Vec::new(),
            control,
            stop,
            ask_timeout: shared.ask_timeout,
            start_timeout: spec.options.start_timeout,
            startup,
            done: done_tx,
        };
        let arbiter = self.arbiter_for(&spec.options.thread).await?;
        if !arbiter.spawn(launch(hosted)) {
            return Err(NodeError::Stopped);
        }
        Ok(())
    }

    /// Registers a module placed in a child process and starts its host on
    /// the system thread, beside the link I/O.
    fn launch_child_spec(&self, spec: ModuleSpec, command: ChildCommand, startup: Startup) -> Result<(), NodeError> {
        let shared = &self.shared;
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let (done_tx, done) = oneshot::channel();
        let stop = Arc::new(StopSignal::default());
        self.register(&name, &spec.options, stop.clone(), done)?;
        shared.router.add_child(name.clone());
        let hosted = ChildHosted {
            name,
            command,
            router: shared.router.clone(),
            supervisor: shared.supervisor.clone(),
            link: LinkConfig {
                liveness: spec.options.liveness.unwrap_or(shared.link.liveness),
                ..shared.link.clone()
            },
            stop,
            stop_grace: spec.options.stop_grace,
            start_timeout: spec.options.start_timeout,
            startup,
            done: done_tx,
        };
        if !shared.system_arbiter.spawn(host_child(hosted)) {
            return Err(NodeError::Stopped);
        }
        Ok(())
    }

    /// Adds a module to the node's list (for stopping in reverse order) and
    /// puts it under the supervisor's policy.
    fn register(
        &self,
        name: &Arc<str>,
        options: &ModuleOptions,
        stop: Arc<StopSignal>,
        done: oneshot::Receiver<()>,
    ) -> Result<(), NodeError> {
        self.shared.modules.lock().expect("node lock").add(RunningModule {
            name: name.clone(),
            stop,
            done: Some(done),
        })?;
        self.shared.supervisor.do_send(Supervise {
            name: name.clone(),
            policy: options.restart,
            budget: options.budget,
        });
        Ok(())
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
        shared.arbiters.lock().expect("node lock").push(arbiter);
        if let Some(name) = named {
            return Ok(shared
                .named
                .lock()
                .expect("node lock")
                .entry(name)
                .or_insert(handle)
                .clone());
        }
        Ok(handle)
    }

    /// Runs `future` on the node's system thread and returns its output.
    async fn on_system<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let spawned = self.shared.system_arbiter.spawn(async move {
            let _ = tx.send(future.await);
        });
        if !spawned {
            return Err(NodeError::Stopped);
        }
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Runs `future` on the node's system thread and blocks until it is done:
    /// for a plain `main` that wants to ask a module.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, NodeError> {
        futures::executor::block_on(self.on_system(future))
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

    /// The modules running on this node.
    pub fn modules(&self) -> Vec<String> {
        self.shared.router.local_names()
    }

    /// What crossed each of this node's links so far, by peer.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        let mut stats: Vec<LinkStats> = self.shared.router.links().iter().map(|l| l.stats()).collect();
        stats.sort_by(|a, b| a.peer.cmp(&b.peer));
        stats
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
        let router = self.shared.router.clone();
        let stopped = self.shared.stopped.clone();
        self.on_system(async move {
            let mut listener = transport.listen(&endpoint).await?;
            let bound = listener.endpoint();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        () = stopped.cancelled() => break,
                        accepted = listener.accept() => accepted,
                    };
                    match accepted {
                        Ok(link) => {
                            let (router, config) = (router.clone(), config.clone());
                            tokio::spawn(async move {
                                if let Err(error) = establish(router, link, &config).await {
                                    tracing::error!(%error, "refused an incoming link");
                                }
                            });
                        }
                        Err(error) => {
                            tracing::error!(%error, "listener stopped");
                            break;
                        }
                    }
                }
            });
            Ok(bound)
        })
        .await
        .map_err(|_| LinkError::NodeStopped)?
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
        self.on_system(async move {
            let link = transport.connect(&endpoint).await?;
            establish(router, link, &config).await
        })
        .await
        .map_err(|_| LinkError::NodeStopped)?
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
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Node) -> bool,
    ) -> Result<(), NodeError> {
        let mut changes = self.shared.router.watch_topology();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if condition(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => return Err(NodeError::Timeout(timeout, what.to_owned())),
            }
        }
    }

    /// Waits until `module` (`name` or `node/name`) can be reached from here.
    pub async fn wait_for_module(&self, module: &str, timeout: Duration) -> Result<(), NodeError> {
        let what = format!("module `{module}` to be reachable");
        self.wait_until(&what, timeout, |node| node.shared.router.routable(module))
            .await
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
        let modules = shared.modules.lock().expect("node lock").take_all();
        for mut module in modules.into_iter().rev() {
            module.stop.stop();
            if let Some(done) = module.done.take() {
                match tokio::time::timeout(STOP_GRACE, done).await {
                    Ok(_) => tracing::info!(module = %module.name, "stopped"),
                    Err(_) => tracing::warn!(module = %module.name, "did not stop within {STOP_GRACE:?}"),
                }
            }
        }
        for link in shared.router.links() {
            link.close("node shutting down");
        }
        shared.stopped.cancel();
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

/// SIGINT and SIGTERM, with their handlers installed.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(Self {})
    }

    #[cfg(unix)]
    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
