//! `botbus`: the command line.
//!
//! ```text
//! botbus hub --listen pipe://robot                      # a node others join; Ctrl-C stops it
//! botbus hub --listen tcp://0.0.0.0:7000 --token-file robot.token
//! botbus worker --connect tcp://robot:7000 --name gpu --token-file robot.token
//! botbus modules --connect pipe://robot                 # what runs where
//! botbus call --connect pipe://robot motor '0.5'         # an ask from the command line
//! botbus echo --connect pipe://robot 'sensors/**'        # what is published, as JSON
//! ```

mod inspect;

use std::process::ExitCode;
use std::sync::Arc;

use botbus::{Context, LinkConfig, Module, ModuleError, Node, NodeBuilder, TlsConfig, TlsTransport};
use clap::{Args, Parser, Subcommand};

/// botbus: an actor framework for robots.
#[derive(Debug, Parser)]
#[command(name = "botbus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a hub: a node that separately started processes join, and that
    /// passes their messages between them. Logs who joins and leaves; stops
    /// cleanly on Ctrl-C (SIGINT) or SIGTERM, removing its socket file.
    Hub {
        /// Where to listen, e.g. `pipe://robot`, `pipe:///run/robot.sock`,
        /// `tcp://0.0.0.0:7000` or `tls://0.0.0.0:7443` (repeat for more
        /// than one).
        #[arg(long, required = true, value_name = "ENDPOINT")]
        listen: Vec<String>,
        /// The hub's node name.
        #[arg(long, default_value = "hub")]
        name: String,
        #[command(flatten)]
        security: Security,
    },
    /// Runs a worker: a node that joins a robot and starts the module types
    /// compiled into this binary when the robot asks (this one has `echo`,
    /// which answers a string with the same string). A robot binary can be
    /// its own worker, with the types it registers. Reconnects with backoff
    /// whenever the link is lost.
    Worker {
        /// The robot to join, e.g. `tcp://robot.local:7000`.
        #[arg(long, value_name = "ENDPOINT")]
        connect: String,
        /// The worker's node name: modules are placed "on worker NAME".
        #[arg(long, default_value = "worker")]
        name: String,
        #[command(flatten)]
        security: Security,
    },
    /// Lists the robot's nodes: process, number of modules, and each link:
    /// the peer, which side connected, and over what.
    Nodes {
        #[command(flatten)]
        robot: Robot,
    },
    /// Lists every module of the robot: its node, where it runs (thread,
    /// child, worker:<name>, or joined:<endpoint> for a process started
    /// separately), its process id, state, restarts, mailbox depth and the
    /// message type it takes.
    Modules {
        #[command(flatten)]
        robot: Robot,
    },
    /// Lists the topics the robot's modules publish on, with their rate
    /// over a window, publishers and subscribers; then the patterns
    /// subscribed to that nothing has published on.
    Topics {
        #[command(flatten)]
        robot: Robot,
        /// How long to count messages for the rates.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
    },
    /// Asks a module, with a message written as JSON; shows progress as it
    /// arrives (a bar where an update carries a `fraction`, or `done` and
    /// `total`) and the reply. Ctrl-C cancels the ask and says so.
    Call {
        /// The module: `name`, or `node/name`.
        module: String,
        /// The message, as JSON: `0.5`, `{"steps": 20}`.
        message: String,
        /// The message's type (its wire name), if the module does not say.
        #[arg(long = "type", value_name = "NAME")]
        message_type: Option<String>,
        /// How long to wait for the reply.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        robot: Robot,
    },
    /// Prints every message published on topics matching PATTERN (`*` one
    /// level, `**` any depth), as JSON where the robot knows its type,
    /// until Ctrl-C.
    Echo {
        /// The topic pattern.
        pattern: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        robot: Robot,
    },
    /// Measures how often messages arrive on a topic (pattern): the rate
    /// and the least, greatest and spread of the intervals, per window.
    Hz {
        /// The topic pattern.
        pattern: String,
        /// How long each window is.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// Stop after this many windows.
        #[arg(long)]
        windows: Option<u64>,
        #[command(flatten)]
        robot: Robot,
    },
    /// Publishes a message, written as JSON, on a topic: once, or `--count`
    /// times at `--rate` per second.
    Pub {
        /// The topic.
        topic: String,
        /// The message, as JSON.
        message: String,
        /// The message's type (its wire name), if the topic's subscribers
        /// do not all say the same.
        #[arg(long = "type", value_name = "NAME")]
        message_type: Option<String>,
        /// Messages per second, with `--count`.
        #[arg(long)]
        rate: Option<f64>,
        /// How many to publish.
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[command(flatten)]
        robot: Robot,
    },
    /// Measures what botbus costs on this machine: each placement next to
    /// the raw channel under it, the same payloads in the same run, as
    /// ratios — ask round trip, 64 B tells, 64 KiB bandwidth, and context
    /// switches per ask. Run it again under `taskset -c 0` for every
    /// process on one CPU.
    Bench {
        /// The placements to measure.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "in-process,stdio,pipe,tcp")]
        only: Vec<BenchPlacement>,
        /// Measure as long as `cargo bench` does, for steadier figures
        /// (default: a quicker look).
        #[arg(long)]
        full: bool,
    },
}

/// A placement `botbus bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPlacement {
    /// Two modules on one thread, against a tokio channel and a oneshot.
    InProcess,
    /// A child module over stdio, against a raw stream over pipes.
    Stdio,
    /// A process over a Unix socket (`pipe://`), against a raw Unix socket.
    Pipe,
    /// A process over TCP on loopback, against raw TCP.
    Tcp,
}

/// Where the robot is, how to prove who this tool is, and how to print.
#[derive(Debug, Args)]
struct Robot {
    /// The robot: the endpoint of a node that listens (a hub, or the
    /// robot's node), e.g. `pipe://robot`, `tcp://robot.local:7000`.
    #[arg(long, value_name = "ENDPOINT")]
    connect: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    security: Security,
}

impl Robot {
    /// This tool's node, joined to the robot, and every node's description.
    fn join(&self) -> Result<(botbus::Node, Vec<botbus::NodeInfo>), Box<dyn std::error::Error>> {
        let node = inspect::join(&self.connect, self.builder()?)?;
        let infos = inspect::describe_all(&node)?;
        Ok((node, infos))
    }

    fn builder(&self) -> Result<NodeBuilder, Box<dyn std::error::Error>> {
        let name = format!("botbus-cli-{}", std::process::id());
        self.security.apply(Node::builder(&name))
    }

    /// This tool's node subscribed to `pattern`, joined to the robot with
    /// the JSON codec, so that the robot sends JSON for the types it knows;
    /// what it hears comes out of the receiver.
    fn listen(
        &self,
        pattern: &str,
    ) -> Result<(botbus::Node, tokio::sync::mpsc::UnboundedReceiver<inspect::Heard>), Box<dyn std::error::Error>> {
        botbus::TopicPattern::parse(pattern)?;
        let (heard, receiver) = tokio::sync::mpsc::unbounded_channel();
        let pattern = pattern.to_owned();
        let builder = self.builder()?.module("listener", move || inspect::Listener {
            pattern: pattern.clone(),
            heard: heard.clone(),
        });
        let builder = builder.link_config(LinkConfig {
            codecs: vec![botbus::CodecKind::Json],
            ..self.security.link_config()?
        });
        let node = inspect::join(&self.connect, builder)?;
        Ok((node, receiver))
    }
}

/// Who may link, and how links are protected. A token is never given on the
/// command line, where every user of the machine can read it.
#[derive(Debug, Args)]
struct Security {
    /// A file holding the token every node of the robot proves it holds
    /// (owner-only: `chmod 600`).
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    token_file: Option<std::path::PathBuf>,
    /// An environment variable holding that token.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Listen where other machines can reach without a token.
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain this node presents over `tls://`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM certificates of the authorities trusted to sign the listener's
    /// certificate, when connecting over `tls://`.
    #[arg(long, value_name = "FILE")]
    tls_trust: Option<std::path::PathBuf>,
    /// When listening over `tls://`, accept only clients presenting a
    /// certificate that an authority in this PEM file signed.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<std::path::PathBuf>,
}

impl Security {
    /// The node's link settings: its token, and whether it may listen
    /// insecurely.
    fn link_config(&self) -> Result<LinkConfig, Box<dyn std::error::Error>> {
        let token = match (&self.token_file, &self.token_env) {
            (Some(file), _) => Some(botbus::read_token(file)?),
            (None, Some(var)) => Some(botbus::env_token(var)?),
            (None, None) => None,
        };
        Ok(LinkConfig {
            token,
            insecure: self.insecure,
            ..LinkConfig::default()
        })
    }

    /// The node's link settings and, if any TLS file was given, its `tls`
    /// transport.
    fn apply(&self, builder: NodeBuilder) -> Result<NodeBuilder, Box<dyn std::error::Error>> {
        let mut builder = builder.link_config(self.link_config()?);
        if self.tls_cert.is_some() || self.tls_trust.is_some() || self.tls_client_ca.is_some() {
            let mut tls = TlsConfig::default();
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(cert, key)?;
            }
            if let Some(trust) = &self.tls_trust {
                tls = tls.trust(trust)?;
            }
            if let Some(authorities) = &self.tls_client_ca {
                tls = tls.require_client_certs(authorities)?;
            }
            builder = builder.transport(Arc::new(TlsTransport::new(tls)?));
        }
        Ok(builder)
    }
}

/// The `echo` module type of `botbus worker`: answers a string with itself.
struct Echo;

impl Module for Echo {
    type Message = String;
    type Reply = String;

    async fn process(&mut self, text: String, _ctx: &mut Context) -> Result<String, ModuleError> {
        Ok(text)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The introspection commands print for a person or a script: only
    // warnings and errors go to stderr unless RUST_LOG says otherwise.
    if matches!(
        cli.command,
        Command::Nodes { .. }
            | Command::Modules { .. }
            | Command::Topics { .. }
            | Command::Call { .. }
            | Command::Echo { .. }
            | Command::Hz { .. }
            | Command::Pub { .. }
            | Command::Bench { .. }
    ) && std::env::var_os("RUST_LOG").is_none()
    {
        std::env::set_var("RUST_LOG", "warn");
    }
    botbus::init_tracing();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("botbus: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Bench { only, full } => {
            bench(&only, full);
            Ok(())
        }
        Command::Hub { listen, name, security } => {
            let node = security.apply(Node::builder(&name))?.start()?;
            for endpoint in &listen {
                let node2 = node.clone();
                let endpoint = endpoint.clone();
                let bound = node.block_on(async move { node2.listen(&endpoint).await })??;
                tracing::info!(node = %name, %bound, "hub listening");
            }
            node.run_until_signal()?;
            tracing::info!(node = %name, "hub stopped");
            Ok(())
        }
        Command::Worker {
            connect,
            name,
            security,
        } => {
            let builder = Node::builder(&name)
                .register("echo", |(): ()| Echo)
                .worker()
                .join(&connect);
            let node = security.apply(builder)?.start()?;
            tracing::info!(node = %name, robot = %connect, types = "echo", "worker running");
            node.run_until_signal()?;
            tracing::info!(node = %name, "worker stopped");
            Ok(())
        }
        Command::Nodes { robot } => {
            let (node, infos) = robot.join()?;
            inspect::nodes(&infos, robot.json);
            node.shutdown_blocking();
            Ok(())
        }
        Command::Modules { robot } => {
            let (node, infos) = robot.join()?;
            let joined_at = node.peers().into_iter().next().unwrap_or_default();
            inspect::modules(&infos, &joined_at, robot.json);
            node.shutdown_blocking();
            Ok(())
        }
        Command::Topics { robot, window } => {
            let (node, before) = robot.join()?;
            let started = std::time::Instant::now();
            std::thread::sleep(window);
            let after = inspect::describe_all(&node)?;
            inspect::topics(&before, &after, started.elapsed(), robot.json);
            node.shutdown_blocking();
            Ok(())
        }
        Command::Call {
            module,
            message,
            message_type,
            timeout,
            robot,
        } => {
            let (node, infos) = robot.join()?;
            let called = inspect::call(&node, &infos, &module, &message, message_type, timeout, robot.json);
            node.shutdown_blocking();
            called
        }
        Command::Echo { pattern, count, robot } => {
            let (node, heard) = robot.listen(&pattern)?;
            let echoed = inspect::echo(&node, heard, count, robot.json);
            node.shutdown_blocking();
            echoed
        }
        Command::Hz {
            pattern,
            window,
            windows,
            robot,
        } => {
            let (node, heard) = robot.listen(&pattern)?;
            let measured = inspect::hz(&node, heard, window, windows, robot.json);
            node.shutdown_blocking();
            measured
        }
        Command::Pub {
            topic,
            message,
            message_type,
            rate,
            count,
            robot,
        } => {
            let (node, infos) = robot.join()?;
            let published = inspect::publish(&node, &infos, &topic, &message, message_type, rate, count);
            node.shutdown_blocking();
            published
        }
    }
}

/// `botbus bench`: each placement in `only`, botbus next to the raw channel.
fn bench(only: &[BenchPlacement], full: bool) {
    use botbus::bench;
    // The processes on the other end are this binary again, with these
    // same arguments: they serve here and never return.
    bench::serve_if_asked();
    let sizes = if full { bench::Sizes::FULL } else { bench::Sizes::QUICK };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "botbus {} on {cpus} CPU(s){}: each placement next to the raw channel under it, the same payloads in this run",
        env!("CARGO_PKG_VERSION"),
        if full {
            ""
        } else {
            " (a quick look; --full for steadier figures)"
        },
    );
    for placement in only {
        match placement {
            BenchPlacement::InProcess => bench::in_process(sizes).print(
                "in one process: two modules on one thread vs a tokio channel and a oneshot on one thread",
                ["", "", ""],
            ),
            BenchPlacement::Stdio => {
                let node = bench::stdio_node();
                bench::over_stdio(&node, sizes).print(
                    "a child process over stdio vs raw pipes to a child (switches: parent + child)",
                    ["", "", ""],
                );
                let spawn = bench::median_of(sizes.rounds * 3, || bench::spawn_to_ready(&node));
                println!("{:<34} {:>11.1} ms", "spawn -> ready, p50", spawn.as_secs_f64() * 1e3);
                node.shutdown_blocking();
            }
            #[cfg(unix)]
            BenchPlacement::Pipe => bench::over_pipe(sizes).print(
                "a process over a Unix socket (pipe://) vs a raw Unix socket (switches: us + them)",
                ["", "", ""],
            ),
            #[cfg(not(unix))]
            BenchPlacement::Pipe => println!("\npipe: measured on Unix only"),
            BenchPlacement::Tcp => bench::over_tcp(sizes).print(
                "a process over TCP on loopback vs raw TCP (switches: us + them)",
                ["", "", ""],
            ),
        }
    }
    println!(
        "\nUnpinned, the round trips are mostly threads waking on another core; \
         `taskset -c 0 botbus bench` shows botbus's own work, and `ModuleOptions::cpus` \
         keeps a child and its asker on one core (the line `… on CPU n`)."
    );
}
