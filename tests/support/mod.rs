//! The conformance world: the same modules, placed on one node or split
//! across two linked nodes. Scenarios talk only to `World`, never to a
//! placement, so a new transport adds a `Placement` and nothing else.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use botbus::crates::core::CodecKind;
use botbus::{
    Call, CallEvent, Client, Context, Down, DownReason, LinkConfig, Message, Module, ModuleError, ModuleOptions, Node,
    NodeBuilder,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

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
}

/// A request every service understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Req {
    /// Reply with the sum.
    Add(u32, u32),
    /// Send progress 1..=n, then reply n.
    Count(u32),
    /// Send progress 0, then wait until cancelled (reporting it) — forever otherwise.
    Sleep,
    /// Ask the caller a question mid-request; reply 1 if it said yes.
    Confirm,
    /// Return an error.
    Fail,
    /// Panic.
    Panic,
    /// Take one permit from the gate before returning (blocks until released).
    Hold,
    /// Reply with how many messages this instance processed.
    Tally,
    /// Monitor the named module.
    Watch(String),
}

impl Message for Req {
    const NAME: &'static str = "test.Req";
}

/// A note for the recorder (told or published).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note(pub u32);

impl Message for Note {
    const NAME: &'static str = "test.Note";
}

/// The question a service asks its caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Question(pub String);

impl Message for Question {
    const NAME: &'static str = "test.Question";
}

/// What the modules report to the test.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started(String),
    Got { topic: Option<String>, note: u32 },
    Cancelled(String),
    Down(String, DownReason),
}

#[derive(Clone)]
struct Probe {
    events: mpsc::UnboundedSender<Event>,
    gate: Arc<Semaphore>,
}

struct Service {
    probe: Probe,
    processed: u32,
}

impl Module for Service {
    type Message = Req;
    type Reply = u32;

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.probe.events.send(Event::Started(ctx.name().to_owned()));
        Ok(())
    }

    async fn process(&mut self, req: Req, ctx: &mut Context) -> Result<u32, ModuleError> {
        self.processed += 1;
        match req {
            Req::Add(a, b) => Ok(a + b),
            Req::Count(n) => {
                for i in 1..=n {
                    ctx.progress(i);
                }
                Ok(n)
            }
            Req::Sleep => {
                ctx.progress(0u32);
                ctx.cancelled().await;
                let _ = self.probe.events.send(Event::Cancelled(ctx.name().to_owned()));
                Ok(0)
            }
            Req::Confirm => {
                let yes: bool = ctx.ask_caller(Question("proceed?".into())).await?;
                Ok(u32::from(yes))
            }
            Req::Fail => Err(ModuleError::new("asked to fail")),
            Req::Panic => panic!("asked to panic"),
            Req::Hold => {
                self.probe.gate.acquire().await.expect("gate open").forget();
                Ok(0)
            }
            Req::Tally => Ok(self.processed - 1),
            Req::Watch(target) => {
                ctx.monitor(&target);
                Ok(0)
            }
        }
    }

    async fn down(&mut self, down: Down, _ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = self.probe.events.send(Event::Down(down.module, down.reason));
        Ok(())
    }
}

struct Recorder {
    probe: Probe,
}

impl Module for Recorder {
    type Message = Note;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("sensors/*/temp")
            .map_err(|e| ModuleError::new(e.to_string()))?;
        ctx.subscribe("arm/**").map_err(|e| ModuleError::new(e.to_string()))?;
        let _ = self.probe.events.send(Event::Started(ctx.name().to_owned()));
        Ok(())
    }

    async fn process(&mut self, Note(note): Note, ctx: &mut Context) -> Result<(), ModuleError> {
        let topic = ctx.topic().map(str::to_owned);
        let _ = self.probe.events.send(Event::Got { topic, note });
        Ok(())
    }
}

/// The services: on node `b` (or the one node).
const SERVICES: [&str; 5] = ["echo", "crashy", "fragile", "slow", "recorder"];

fn with_services(builder: NodeBuilder, probe: &Probe) -> NodeBuilder {
    let service = |probe: &Probe| {
        let probe = probe.clone();
        move || Service {
            probe: probe.clone(),
            processed: 0,
        }
    };
    let recorder = {
        let probe = probe.clone();
        move || Recorder { probe: probe.clone() }
    };
    builder
        .module("echo", service(probe))
        .module_with(
            "crashy",
            service(probe),
            ModuleOptions::new().budget(10, Duration::from_secs(60)),
        )
        .module_with(
            "fragile",
            service(probe),
            ModuleOptions::new().budget(1, Duration::from_secs(60)),
        )
        .module_with("slow", service(probe), ModuleOptions::new().mailbox(1))
        .module("recorder", recorder)
}

fn with_watcher(builder: NodeBuilder, probe: &Probe) -> NodeBuilder {
    let probe = probe.clone();
    builder.module("watcher", move || Service {
        probe: probe.clone(),
        processed: 0,
    })
}

/// The modules of one scenario, placed one way.
pub struct World {
    /// The node of the client and the watcher.
    pub a: Node,
    /// The node of the services (the same node as `a` in `OneNode`).
    pub b: Node,
    /// The test's client, on `a`.
    pub client: Client,
    events: mpsc::UnboundedReceiver<Event>,
    gate: Arc<Semaphore>,
}

fn unique(prefix: &str) -> String {
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
        let probe = Probe {
            events,
            gate: Arc::new(Semaphore::new(0)),
        };
        let (a, b) = match placement {
            Placement::OneNode => {
                let node = with_watcher(with_services(Node::builder("solo"), &probe), &probe)
                    .start()
                    .expect("node starts");
                (node.clone(), node)
            }
            Placement::TwoNodesMem | Placement::TwoNodesJson => {
                let b = with_services(Node::builder("b"), &probe)
                    .start()
                    .expect("node b starts");
                let mut a = with_watcher(Node::builder("a"), &probe);
                if let Placement::TwoNodesJson = placement {
                    a = a.link_config(LinkConfig {
                        codecs: vec![CodecKind::Json],
                        ..LinkConfig::default()
                    });
                }
                let a = a.start().expect("node a starts");
                let endpoint = b
                    .listen(&format!("mem://{}", unique("conformance")))
                    .await
                    .expect("b listens");
                let peer = a.connect(&endpoint.to_string()).await.expect("a connects");
                assert_eq!(peer, "b");
                for module in SERVICES {
                    a.wait_for_module(module, DEADLINE).await.expect("services announced");
                }
                b.wait_for_module("watcher", DEADLINE).await.expect("watcher announced");
                (a, b)
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
            client,
            events: rx,
            gate: probe.gate,
        };
        // Drain the start-up events so scenarios see only their own.
        let mut started = 0;
        while started < SERVICES.len() + 1 {
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

    /// Shuts both nodes down.
    pub async fn finish(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}
