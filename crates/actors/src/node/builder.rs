//! Setting up a node: [`NodeBuilder`], and starting it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use actix_rt::{Arbiter, System};
use botbus_core::{validate_name, Module, Transport};
use botbus_transport_pipe::PipeTransport;
use botbus_transport_stdio::{ChildCommand, StdioTransport};
use botbus_transport_tcp::TcpTransport;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::options::{ModuleOptions, Process};
use super::{started, Node, NodeError, Shared};
use crate::host::{host, Hosted, Startup};
use crate::link::LinkConfig;
use crate::mem::MemTransport;
use crate::router::Router;
use crate::supervisor::Supervisor;

/// Hosts one module in this process until it is gone for good.
pub(super) type Run = Arc<dyn Fn(Hosted) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How to host a module in this process, and what it takes and answers.
#[derive(Clone)]
pub(super) struct Launch {
    pub(super) run: Run,
    /// The wire names of its message type (none if it takes any payload)
    /// and its reply type.
    pub(super) types: (Option<&'static str>, &'static str),
}

pub(super) struct ModuleSpec {
    pub(super) name: String,
    pub(super) options: ModuleOptions,
    /// How to host it in this process; `None` for a module that exists only
    /// as another executable.
    pub(super) launch: Option<Launch>,
}

pub(super) fn launcher<M: Module>(factory: impl Fn() -> M + Send + Sync + 'static) -> Launch {
    // This process now knows the module's types, so its nodes can pass them
    // between links of different codecs.
    <M::Message as botbus_core::FromPayload>::register();
    botbus_core::register_message::<M::Reply>();
    let factory: Arc<dyn Fn() -> M + Send + Sync> = Arc::new(factory);
    Launch {
        run: Arc::new(move |hosted| Box::pin(host(factory.clone(), hosted))),
        types: (
            <M::Message as botbus_core::FromPayload>::type_name(),
            <M::Reply as botbus_core::Message>::NAME,
        ),
    }
}

/// Sets up a [`Node`]: its name, modules and settings.
pub struct NodeBuilder {
    pub(super) name: String,
    pub(super) modules: Vec<ModuleSpec>,
    pub(super) pool_threads: usize,
    pub(super) ask_timeout: Duration,
    pub(super) link: LinkConfig,
    pub(super) transports: Vec<Arc<dyn Transport>>,
    pub(super) joins: Vec<String>,
    pub(super) listens: Vec<String>,
    /// Module types this node can build from arguments.
    pub(super) registry: super::worker::Registry,
    /// Whether it starts them when a peer asks.
    pub(super) worker: bool,
    /// The first invalid setting, reported by `start`.
    pub(super) invalid: Option<NodeError>,
    /// Whether the node describes itself (`botbus.node`); a child process
    /// does not: its parent describes the module it hosts.
    pub(super) describes: bool,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field(
                "modules",
                &self.modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            )
            .field("types", &self.types())
            .field("listens", &self.listens)
            .field("joins", &self.joins)
            .field("link_thread", &self.link.thread)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
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

    /// Registers module type `module_type`: `make` builds a module from its
    /// arguments, which arrive as JSON (for `()`, `null`). A worker starts
    /// registered types when a peer asks ([`NodeBuilder::worker`]).
    ///
    /// ```
    /// use botbus_actors::Node;
    /// use botbus_core::{Context, Module, ModuleError};
    ///
    /// struct Scale(f64);
    /// impl Module for Scale {
    ///     type Message = f64;
    ///     type Reply = f64;
    ///     async fn process(&mut self, x: f64, _ctx: &mut Context) -> Result<f64, ModuleError> {
    ///         Ok(x * self.0)
    ///     }
    /// }
    ///
    /// let worker = Node::builder("gpu-box").register("scale", |factor: f64| Scale(factor)).worker().start().unwrap();
    /// let robot = Node::builder("robot").start().unwrap();
    /// # let at = format!("mem://doc-worker-{}", std::process::id());
    /// # let (w, r, at2) = (worker.clone(), robot.clone(), at.clone());
    /// # robot.block_on(async move { w.listen(&at2).await.unwrap(); r.connect(&at2).await.unwrap() }).unwrap();
    /// let r = robot.clone();
    /// let doubled = robot.block_on(async move {
    ///     r.wait_for_module("gpu-box/botbus.worker", std::time::Duration::from_secs(5)).await.unwrap();
    ///     r.spawn_on("gpu-box", "scale", "double", &2.0).await.unwrap();
    ///     r.client("main").ask::<_, f64>("double", 21.0).await
    /// });
    /// assert_eq!(doubled.unwrap(), Ok(42.0));
    /// # robot.shutdown_blocking();
    /// # worker.shutdown_blocking();
    /// ```
    pub fn register<M, A>(mut self, module_type: &str, make: impl Fn(A) -> M + Send + Sync + 'static) -> Self
    where
        M: Module,
        A: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.registry
            .insert(module_type.to_owned(), super::worker::maker(module_type, make));
        self
    }

    /// Whether module type `module_type` is registered on this builder.
    pub fn has_type(&self, module_type: &str) -> bool {
        self.registry.contains_key(module_type)
    }

    /// The module types registered on this builder, sorted.
    pub fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.registry.keys().cloned().collect();
        types.sort_unstable();
        types
    }

    /// Adds module `name` of the registered type `module_type`, built from
    /// `args` (JSON text) — in this process or in a child, as `options`
    /// say. What a launch file does for each module it places here.
    pub fn module_of_type(
        mut self,
        name: &str,
        module_type: &str,
        args: &str,
        options: ModuleOptions,
    ) -> Result<Self, NodeError> {
        let failed = |reason: String| NodeError::StartFailed {
            module: name.to_owned(),
            reason,
        };
        let maker = self.registry.get(module_type).ok_or_else(|| {
            failed(format!(
                "no module type `{module_type}` is registered (there are: {})",
                self.types().join(", ")
            ))
        })?;
        let launch = maker(args).map_err(failed)?;
        self.modules.push(ModuleSpec {
            name: name.to_owned(),
            options,
            launch: Some(launch),
        });
        Ok(self)
    }

    /// Makes the node a worker: it runs the module
    /// [`WORKER_MODULE`](super::WORKER_MODULE), which starts the registered
    /// types when a linked peer asks ([`Node::spawn_on`]) and stops them
    /// ([`Node::stop_on`]). Join the robot with a token
    /// ([`LinkConfig::token`]): any peer that links may ask.
    pub fn worker(mut self) -> Self {
        self.worker = true;
        self
    }

    /// Adds a module placed on the worker node `worker`: it is started there
    /// as the registered type `module_type` built from `args`, and is this
    /// node's own — addressed by `name`, supervised under `options`' restart
    /// policy and budget like a child. When the worker is lost, asks to the
    /// module end `Unreachable`, its status is `Restarting`, and it is
    /// started again once the worker is back. Its first start waits for the
    /// worker to link within `options`' start timeout.
    pub fn worker_module(
        mut self,
        name: &str,
        worker: &str,
        module_type: &str,
        args: &impl serde::Serialize,
        options: ModuleOptions,
    ) -> Self {
        match super::worker::OnWorker::new(worker, module_type, name, args, &options) {
            Ok(on) => self.modules.push(ModuleSpec {
                name: name.to_owned(),
                options: ModuleOptions {
                    process: Process::Worker(on),
                    ..options
                },
                launch: None,
            }),
            Err(error) => {
                self.invalid.get_or_insert(error);
            }
        }
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

    /// Listens at `endpoint` once started, before the modules start, so
    /// that the node is a hub that others can join from the first moment
    /// (see [`Node::listen`]).
    pub fn listen(mut self, endpoint: &str) -> Self {
        self.listens.push(endpoint.to_owned());
        self
    }

    /// Joins the node at `endpoint` once started, and stays joined (see
    /// [`Node::join_to`]): `Node::builder("lidar").join("pipe://robot")` is all
    /// a separately started program needs to become part of a robot whose
    /// hub listens at `pipe://robot`.
    pub fn join(mut self, endpoint: &str) -> Self {
        self.joins.push(endpoint.to_owned());
        self
    }

    /// Adds a transport, so [`Node::listen`] and [`Node::connect`] serve its
    /// scheme — `tls://` with its certificates, say:
    /// `.transport(Arc::new(TlsTransport::new(config)?))`. `mem://`,
    /// `pipe://` and `tcp://` are always there.
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
        if let Some(role) = StdioTransport::child_role() {
            self.run_as_child(&role.module, &role.node);
        }
        self.start_node()
    }

    pub(super) fn start_node(mut self) -> Result<Node, NodeError> {
        validate_name(&self.name)?;
        if let Some(invalid) = self.invalid.take() {
            return Err(invalid);
        }
        // The framework's own modules reach their node once there is one.
        let worker_node = Arc::new(std::sync::OnceLock::<std::sync::Weak<Shared>>::new());
        if self.describes {
            let node = worker_node.clone();
            self.modules.insert(
                0,
                ModuleSpec {
                    name: super::NODE_MODULE.to_owned(),
                    options: ModuleOptions::default().thread_system(),
                    launch: Some(launcher(move || super::introspect::Describer {
                        node: node.get().cloned().unwrap_or_default(),
                    })),
                },
            );
        }
        if self.worker {
            let registry = Arc::new(std::mem::take(&mut self.registry));
            let node = worker_node.clone();
            self.modules.insert(
                0,
                ModuleSpec {
                    name: super::WORKER_MODULE.to_owned(),
                    options: ModuleOptions::default(),
                    launch: Some(launcher(move || super::worker::Worker {
                        node: node.get().cloned().unwrap_or_default(),
                        registry: registry.clone(),
                        started: HashMap::new(),
                    })),
                },
            );
        }
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
        transports.insert(PipeTransport.scheme(), Arc::new(PipeTransport));
        transports.insert(TcpTransport.scheme(), Arc::new(TcpTransport));
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
                pinned: Mutex::default(),
                modules: Mutex::default(),
                transports,
                link: self.link,
                ask_timeout: self.ask_timeout,
                thread: Mutex::new(Some(thread)),
                shutting_down: AtomicBool::new(false),
                leaving: CancellationToken::new(),
                signals_installed: AtomicBool::new(false),
                stopped: CancellationToken::new(),
                listeners: Mutex::default(),
            }),
        };
        let _ = worker_node.set(Arc::downgrade(&node.shared));
        // Listening and joined first, so that modules' `started` hooks can
        // reach what is there (a first join that fails goes on in the
        // background).
        for endpoint in &self.listens {
            if let Err(error) = super::block_here(node.listen(endpoint)) {
                node.shutdown_blocking();
                return Err(NodeError::Listen {
                    endpoint: endpoint.clone(),
                    reason: error.to_string(),
                });
            }
        }
        for endpoint in &self.joins {
            let joined = super::block_here(node.join_to(endpoint));
            if let Err(error) = joined {
                node.shutdown_blocking();
                return Err(NodeError::Join {
                    endpoint: endpoint.clone(),
                    reason: error.to_string(),
                });
            }
        }
        // Every module is handed to its host at once; each starts when the
        // one before it is up, so they still start one after the other, in
        // order, and this thread only waits for the outcome.
        let started_in_order = super::block_here(async {
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
