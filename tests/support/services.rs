//! The modules under test, shared by the conformance world (in process) and
//! the `child_services` example (the same modules in child processes).
//!
//! The modules report to the test through the bus itself — a tell to
//! `probe`, an ask to `gate` — so they behave the same wherever they run.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use botbus::{Blob, Context, Down, DownReason, Message, Module, ModuleError, ModuleOptions, NodeBuilder};
use serde::{Deserialize, Serialize};

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
    /// Wait until the test opens the gate once (blocks until released).
    Hold,
    /// Reply with how many messages this instance processed.
    Tally,
    /// Monitor the named module.
    Watch(String),
    /// Print to stdout (`println!`), then reply with the length of the text.
    Print(String),
    /// Reply with how many milliseconds the asker still waits
    /// (`Context::deadline`).
    TimeLeft,
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

/// What the modules report to the test, through the `probe` module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Started(String),
    Got { topic: Option<String>, note: u32 },
    Cancelled(String),
    Down(String, DownReason),
}

impl Message for Event {
    const NAME: &'static str = "test.Event";
}

/// Asks the `gate` module to let one held request through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pass;

impl Message for Pass {
    const NAME: &'static str = "test.Pass";
}

/// Reports an event to the test.
async fn report(ctx: &Context, event: Event) {
    if let Err(error) = ctx.tell("probe", event).await {
        eprintln!("WARN cannot report to the probe: {error}");
    }
}

pub struct Service {
    processed: u32,
    /// Reports `Started` (the watcher does not: it may start before the
    /// probe is reachable).
    reports_start: bool,
}

impl Service {
    pub fn new() -> Self {
        Self {
            processed: 0,
            reports_start: true,
        }
    }

    /// A service that does not report its start.
    pub fn quiet() -> Self {
        Self {
            processed: 0,
            reports_start: false,
        }
    }
}

impl Module for Service {
    type Message = Req;
    type Reply = u32;

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        if self.reports_start {
            report(ctx, Event::Started(ctx.name().to_owned())).await;
        }
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
                report(ctx, Event::Cancelled(ctx.name().to_owned())).await;
                Ok(0)
            }
            Req::Confirm => {
                let yes: bool = ctx.ask_caller(Question("proceed?".into())).await?;
                Ok(u32::from(yes))
            }
            Req::Fail => Err(ModuleError::new("asked to fail")),
            Req::Panic => panic!("asked to panic"),
            Req::Hold => {
                let () = ctx.ask("gate", Pass).timeout(Duration::from_secs(60)).await?;
                Ok(0)
            }
            Req::Tally => Ok(self.processed - 1),
            Req::Watch(target) => {
                ctx.monitor(&target);
                Ok(0)
            }
            Req::Print(text) => {
                println!("{text}");
                Ok(text.len() as u32)
            }
            Req::TimeLeft => {
                let deadline = ctx
                    .deadline()
                    .ok_or_else(|| ModuleError::new("an ask has a deadline"))?;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                Ok(u32::try_from(left.as_millis()).unwrap_or(u32::MAX))
            }
        }
    }

    async fn down(&mut self, down: Down, ctx: &mut Context) -> Result<(), ModuleError> {
        report(ctx, Event::Down(down.module, down.reason)).await;
        Ok(())
    }
}

pub struct Recorder;

impl Module for Recorder {
    type Message = Note;
    type Reply = ();

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("sensors/*/temp")
            .map_err(|e| ModuleError::new(e.to_string()))?;
        ctx.subscribe("arm/**").map_err(|e| ModuleError::new(e.to_string()))?;
        report(ctx, Event::Started(ctx.name().to_owned())).await;
        Ok(())
    }

    async fn process(&mut self, Note(note): Note, ctx: &mut Context) -> Result<(), ModuleError> {
        let topic = ctx.topic().map(str::to_owned);
        report(ctx, Event::Got { topic, note }).await;
        Ok(())
    }
}

/// Answers a byte vector with the same bytes: for large-payload round trips.
pub struct Bouncer;

impl Module for Bouncer {
    type Message = Vec<u8>;
    type Reply = Vec<u8>;

    async fn process(&mut self, bytes: Vec<u8>, _ctx: &mut Context) -> Result<Vec<u8>, ModuleError> {
        Ok(bytes)
    }
}

/// Two images and a caption: large [`Blob`]s inside a message, with other
/// fields around them, as a camera module would send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stereo {
    pub seq: u32,
    pub left: Blob,
    pub right: Blob,
    pub thumbnail: Blob,
    pub caption: String,
}

impl Message for Stereo {
    const NAME: &'static str = "test.Stereo";
}

impl Stereo {
    /// The sum of every byte of its blobs: what [`Mirror`] adds up.
    pub fn byte_sum(&self) -> u64 {
        [&self.left, &self.right, &self.thumbnail]
            .iter()
            .flat_map(|blob| blob.iter())
            .map(|&b| u64::from(b))
            .sum()
    }
}

/// Answers a [`Stereo`] with the same one: for large blobs both ways. It
/// adds up what it took; one captioned `tally` is answered with how many
/// it took before (`seq`) and the sum of their bytes (the caption).
#[derive(Default)]
pub struct Mirror {
    taken: u32,
    byte_sum: u64,
}

impl Module for Mirror {
    type Message = Stereo;
    type Reply = Stereo;

    async fn process(&mut self, stereo: Stereo, _ctx: &mut Context) -> Result<Stereo, ModuleError> {
        if stereo.caption == "tally" {
            return Ok(Stereo {
                seq: self.taken,
                caption: self.byte_sum.to_string(),
                ..stereo
            });
        }
        self.taken += 1;
        self.byte_sum += stereo.byte_sum();
        Ok(stereo)
    }
}

/// The services the conformance scenarios talk to.
pub const SERVICES: [&str; 5] = ["echo", "crashy", "fragile", "slow", "recorder"];

/// Each service's hosting options, the same in every placement.
pub fn service_options(name: &str) -> ModuleOptions {
    match name {
        "crashy" => ModuleOptions::new().budget(10, Duration::from_secs(60)),
        "fragile" => ModuleOptions::new().budget(1, Duration::from_secs(60)),
        "slow" => ModuleOptions::new().mailbox(1),
        // Small, so that a burst of notes overflows it in every placement.
        "recorder" => ModuleOptions::new().mailbox(4),
        _ => ModuleOptions::new(),
    }
}

/// Adds every service to `builder`, as code in this binary.
pub fn with_services(builder: NodeBuilder) -> NodeBuilder {
    with_services_placed(builder, |options| options)
}

/// [`with_services`], each one's options as `place` makes them (on a
/// named thread, say).
pub fn with_services_placed(mut builder: NodeBuilder, place: impl Fn(ModuleOptions) -> ModuleOptions) -> NodeBuilder {
    for name in SERVICES {
        builder = match name {
            "recorder" => builder.module_with(name, || Recorder, place(service_options(name))),
            _ => builder.module_with(name, Service::new, place(service_options(name))),
        };
    }
    builder
        .module_with("bouncer", || Bouncer, place(ModuleOptions::new()))
        .module_with("mirror", Mirror::default, place(ModuleOptions::new()))
}
