//! The conformance world: the same modules, placed on one node, split
//! across two linked nodes, or run in child processes. Scenarios talk only to
//! `World`, never to a placement, so a new transport adds a `Placement` and
//! nothing else.

#![allow(dead_code, unreachable_pub)]

pub mod logs;
pub mod proxy;
pub mod secrets;
pub mod services;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use botbus::crates::core::CodecKind;
use botbus::{
    Call, CallEvent, ChildCommand, Client, Context, LinkConfig, Module, ModuleError, ModuleOptions, Node, NodeBuilder,
};
use tokio::sync::{mpsc, Semaphore};

#[allow(unused_imports)]
pub use services::{service_options, Event, Note, Pass, Question, Req, Service, Stereo, SERVICES};

/// Every wait in the suite is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Where the modules under test run relative to the test's client.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    /// Client and modules on one node: in-memory hand-off between arbiters.
    OneNode,
    /// Client and watcher on node `a`, services on node `b`, linked by `mem://`
    /// through the full handshake and codec.
    TwoNodesMem,
    /// As `TwoNodesMem`, but node `a` offers only the JSON-lines codec, so
    /// every frame and message crosses as JSON.
    TwoNodesJson,
    /// As `TwoNodesMem`, over a real Unix domain socket (`pipe://`).
    TwoNodesPipe,
    /// As `TwoNodesPipe`, with each node's link on a named thread that the
    /// services share ([`LinkConfig::thread`], `ModuleOptions::thread`):
    /// between the link and the services it serves nothing crosses a thread.
    TwoNodesPipeOneThread,
    /// As `TwoNodesMem`, over real TCP on loopback, both nodes proving a
    /// token read from a file.
    TwoNodesTcp,
    /// As `TwoNodesMem`, over TLS on loopback with certificates made at
    /// test time, each side checking the other's (mutual TLS).
    TwoNodesTls,
    /// Client and watcher on node `a`; each service in a child process of
    /// `a` (the `child_services` example binary), linked over its
    /// stdin/stdout.
    Child,
    /// The client on node `a`; the watcher and every service each in a
    /// child process of `a`: whatever one module says to another crosses
    /// from child to child through the parent (the watcher's monitor, every
    /// report to the probe).
    SiblingChildren,
    /// As `Child`, with every child's link on one named thread of `a`
    /// instead of its node's own (`ModuleOptions::thread` on a child
    /// module places its link).
    ChildrenOneThread,
    /// A chain of three nodes over `mem://`: client and watcher on `a`,
    /// services on `c`, and only `b` between them (links a–b and b–c).
    ThreeNodeChain,
    /// A hub in a process of its own (`botbus hub --listen pipe://…`), and
    /// the client's node and the services' node each joined to it over a
    /// Unix socket: every message goes through the hub's process.
    JoinedThroughHub,
    /// Client and services in two processes joined through a hub in a
    /// third: the client's node places every service on a worker process
    /// (the `child_services` example, `--worker`), which starts them when
    /// asked and hosts them under the client's node's options; that node
    /// owns them — stops them, knows their status — as it would children.
    OnWorkerThroughHub,
}

/// A process the test started, and the socket file it listens at; killed
/// and cleaned up after when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub socket: Option<std::path::PathBuf>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// A socket path of the test's own, under the temporary directory.
pub fn socket_path(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.sock", unique(prefix)))
}

/// Starts `botbus hub --listen pipe://<socket>` as a process of its own.
pub fn hub_process(socket: &std::path::Path) -> Process {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_botbus"))
        .args(["hub", "--listen", &format!("pipe://{}", socket.display())])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the hub starts");
    Process {
        child,
        socket: Some(socket.to_owned()),
    }
}

/// Forwards the modules' reports to the test.
struct Probe {
    events: mpsc::UnboundedSender<Event>,
}

impl Module for Probe {
    type Message = Event;
    type Reply = ();

    async fn process(&mut self, event: Event, _ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.events.send(event);
        Ok(())
    }
}

/// Lets a held request through each time the test opens it.
struct Gate {
    permits: Arc<Semaphore>,
}

impl Module for Gate {
    type Message = Pass;
    type Reply = ();

    async fn process(&mut self, _pass: Pass, _ctx: &mut Context) -> Result<(), ModuleError> {
        self.permits.acquire().await.expect("gate open").forget();
        Ok(())
    }
}

/// The probe and the gate: on the node of the test's own process that
/// hosts the services, or the node whose children they are.
fn with_probe(builder: NodeBuilder, events: &mpsc::UnboundedSender<Event>, gate: &Arc<Semaphore>) -> NodeBuilder {
    let (events, permits) = (events.clone(), gate.clone());
    builder
        .module("probe", move || Probe { events: events.clone() })
        .module("gate", move || Gate {
            permits: permits.clone(),
        })
}

fn with_watcher(builder: NodeBuilder) -> NodeBuilder {
    builder.module("watcher", Service::quiet)
}

/// Sends SIGKILL to process `pid`.
pub fn kill_9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL sent");
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// A node `host` with `echo` in a child process, restarted up to 100 times
/// a minute: for tests that kill it.
pub fn echo_child_node() -> Node {
    Node::builder("host")
        .child_module(
            "echo",
            ChildCommand::new(child_services_binary()),
            ModuleOptions::new().budget(100, Duration::from_secs(60)),
        )
        .start()
        .expect("the node with a child starts")
}

/// The `child_services` example binary, built by `cargo test`.
pub fn child_services_binary() -> PathBuf {
    example_binary("child_services")
}

/// An example binary of this package: target/<profile>/examples/<name>.
pub fn example_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test>-… → target/<profile>/examples/<name>
    let test = std::env::current_exe().expect("test binary path");
    let profile_dir = test.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let binary = profile_dir.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the suite with `cargo test`, which builds the examples",
        binary.display()
    );
    binary
}

/// The modules of one scenario, placed one way.
pub struct World {
    /// The node of the client and the watcher.
    pub a: Node,
    /// The node that owns the services (the same node as `a` in `OneNode`
    /// and the child placements).
    pub b: Node,
    /// Nodes in between, if any.
    pub between: Vec<Node>,
    /// Processes the world runs (a hub), stopped with it.
    pub processes: Vec<Process>,
    /// Files the world made (tokens, certificates), removed with it.
    pub files: Vec<secrets::Scratch>,
    /// The test's client, on `a`.
    pub client: Client,
    events: mpsc::UnboundedReceiver<Event>,
    gate: Arc<Semaphore>,
}

pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl World {
    pub async fn new(placement: Placement) -> World {
        let (events, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let mut between = Vec::new();
        let mut processes = Vec::new();
        let mut files = Vec::new();
        let (a, b) = match placement {
            Placement::OneNode => {
                let node = with_watcher(services::with_services(with_probe(
                    Node::builder("solo"),
                    &events,
                    &gate,
                )))
                .start()
                .expect("node starts");
                (node.clone(), node)
            }
            Placement::TwoNodesMem
            | Placement::TwoNodesJson
            | Placement::TwoNodesPipe
            | Placement::TwoNodesPipeOneThread
            | Placement::TwoNodesTcp
            | Placement::TwoNodesTls => {
                let mut b = with_probe(Node::builder("b"), &events, &gate);
                let mut a = with_watcher(Node::builder("a"));
                b = match placement {
                    Placement::TwoNodesPipeOneThread => {
                        let beside_the_link = LinkConfig {
                            thread: Some("io".to_owned()),
                            ..LinkConfig::default()
                        };
                        a = a.link_config(beside_the_link.clone());
                        services::with_services_placed(b.link_config(beside_the_link), |options| options.thread("io"))
                    }
                    _ => services::with_services(b),
                };
                if let Placement::TwoNodesJson = placement {
                    a = a.link_config(LinkConfig {
                        codecs: vec![CodecKind::Json],
                        ..LinkConfig::default()
                    });
                }
                if let Placement::TwoNodesTcp = placement {
                    let scratch = secrets::Scratch::new("token");
                    let file = scratch.token_file("robot.token", "conformance token, long enough");
                    let token = || LinkConfig {
                        token: Some(botbus::read_token(&file).expect("token file reads")),
                        ..LinkConfig::default()
                    };
                    (a, b) = (a.link_config(token()), b.link_config(token()));
                    files.push(scratch);
                }
                if let Placement::TwoNodesTls = placement {
                    let scratch = secrets::Scratch::new("tls");
                    let tls = secrets::mutual_tls(&scratch);
                    let transport = |config| Arc::new(botbus::TlsTransport::new(config).expect("TLS transport"));
                    (a, b) = (a.transport(transport(tls.client)), b.transport(transport(tls.listener)));
                    files.push(scratch);
                }
                let b = b.start().expect("node b starts");
                let a = a.start().expect("node a starts");
                let listen_at = match placement {
                    Placement::TwoNodesPipe | Placement::TwoNodesPipeOneThread => {
                        format!("pipe://{}", unique("conformance"))
                    }
                    Placement::TwoNodesTcp => "tcp://127.0.0.1:0".to_owned(),
                    Placement::TwoNodesTls => "tls://localhost:0".to_owned(),
                    _ => format!("mem://{}", unique("conformance")),
                };
                let endpoint = b.listen(&listen_at).await.expect("b listens");
                let peer = a.connect(&endpoint.to_string()).await.expect("a connects");
                assert_eq!(peer, "b");
                for module in SERVICES {
                    a.wait_for_module(module, DEADLINE).await.expect("services announced");
                }
                b.wait_for_module("watcher", DEADLINE).await.expect("watcher announced");
                (a, b)
            }
            Placement::Child | Placement::SiblingChildren | Placement::ChildrenOneThread => {
                let binary = child_services_binary();
                let mut builder = with_probe(Node::builder("a"), &events, &gate);
                builder = match placement {
                    Placement::SiblingChildren => {
                        builder.child_module("watcher", ChildCommand::new(&binary), ModuleOptions::new())
                    }
                    _ => with_watcher(builder),
                };
                for name in SERVICES.iter().copied().chain(["mirror"]) {
                    let options = match placement {
                        // The child's link, that is: its module runs in the child.
                        Placement::ChildrenOneThread => service_options(name).thread("io"),
                        _ => service_options(name),
                    };
                    builder = builder.child_module(name, ChildCommand::new(&binary), options);
                }
                let node = builder.start().expect("node with child services starts");
                (node.clone(), node)
            }
            Placement::JoinedThroughHub => {
                let socket = socket_path("hub");
                let endpoint = format!("pipe://{}", socket.display());
                processes.push(hub_process(&socket));
                // Both join the hub; neither waits for it to be up: joining
                // retries with backoff until it is.
                let b = services::with_services(with_probe(Node::builder("services"), &events, &gate))
                    .join(&endpoint)
                    .start()
                    .expect("the services' node starts");
                let a = with_watcher(Node::builder("client"))
                    .join(&endpoint)
                    .start()
                    .expect("the client's node starts");
                for module in SERVICES {
                    a.wait_for_module(module, DEADLINE)
                        .await
                        .expect("services announced through the hub");
                }
                b.wait_for_module("watcher", DEADLINE)
                    .await
                    .expect("watcher announced through the hub");
                (a, b)
            }
            Placement::OnWorkerThroughHub => {
                let socket = socket_path("worker-hub");
                let endpoint = format!("pipe://{}", socket.display());
                processes.push(hub_process(&socket));
                let worker = std::process::Command::new(child_services_binary())
                    .args(["--worker", &endpoint])
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("the services' worker starts");
                processes.push(Process {
                    child: worker,
                    socket: None,
                });
                let mut builder = with_watcher(with_probe(Node::builder("client"), &events, &gate)).join(&endpoint);
                for name in SERVICES.iter().copied().chain(["bouncer", "mirror"]) {
                    let module_type = match name {
                        "recorder" | "bouncer" | "mirror" => name,
                        _ => "service",
                    };
                    let options = service_options(name).start_timeout(DEADLINE);
                    builder = builder.worker_module(name, "services", module_type, &(), options);
                }
                let node = builder
                    .start()
                    .expect("the client's node places the services on the worker");
                (node.clone(), node)
            }
            Placement::ThreeNodeChain => {
                let c = services::with_services(with_probe(Node::builder("c"), &events, &gate))
                    .start()
                    .expect("node c starts");
                let b = Node::builder("b").start().expect("node b starts");
                let a = with_watcher(Node::builder("a")).start().expect("node a starts");
                let to_c = c
                    .listen(&format!("mem://{}", unique("chain-c")))
                    .await
                    .expect("c listens");
                assert_eq!(b.connect(&to_c.to_string()).await.expect("b connects to c"), "c");
                let to_b = b
                    .listen(&format!("mem://{}", unique("chain-b")))
                    .await
                    .expect("b listens");
                assert_eq!(a.connect(&to_b.to_string()).await.expect("a connects to b"), "b");
                for module in SERVICES {
                    a.wait_for_module(module, DEADLINE)
                        .await
                        .expect("services announced through b");
                }
                c.wait_for_module("watcher", DEADLINE)
                    .await
                    .expect("watcher announced through b");
                between.push(b);
                (a, c)
            }
        };
        for topic in ["sensors/x/temp", "arm/joint"] {
            a.wait_for_subscriber(topic, DEADLINE)
                .await
                .expect("subscriptions announced");
        }
        let client = a.client("tester");
        let mut world = World {
            a,
            b,
            between,
            processes,
            files,
            client,
            events: rx,
            gate,
        };
        // Drain the start-up events so scenarios see only their own.
        let mut started = 0;
        while started < SERVICES.len() {
            if let Event::Started(_) = world.next_event().await {
                started += 1;
            }
        }
        world
    }

    /// The next event the modules reported; panics after [`DEADLINE`].
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("an event within the deadline")
            .expect("event channel open")
    }

    /// Starts a `Req::Sleep` ask on `echo` and returns once the callee is
    /// working on it (its first progress arrived).
    pub async fn sleeping_call(&self) -> Call<u32> {
        let mut call = self
            .client
            .ask::<_, u32>("echo", Req::Sleep)
            .timeout(DEADLINE * 3)
            .start()
            .await
            .unwrap();
        match call.next_event().await {
            Some(CallEvent::Progress(p)) => assert_eq!(p.decode::<u32>().unwrap(), 0),
            other => panic!("expected the callee's first progress, got {other:?}"),
        }
        call
    }

    /// Lets `n` held `Req::Hold` messages finish.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Shuts every node down.
    pub async fn finish(self) {
        self.a.shutdown().await;
        for node in &self.between {
            node.shutdown().await;
        }
        self.b.shutdown().await;
    }
}
