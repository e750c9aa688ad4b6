//! `botbus`: the command line.
//!
//! ```text
//! botbus hub --listen pipe://robot     # a node others join; Ctrl-C stops it
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// Where to listen, e.g. `pipe://robot` or `pipe:///run/robot.sock`
        /// (repeat for more than one).
        #[arg(long, required = true, value_name = "ENDPOINT")]
        listen: Vec<String>,
        /// The hub's node name.
        #[arg(long, default_value = "hub")]
        name: String,
    },
}

fn main() -> ExitCode {
    botbus::init_tracing();
    let cli = Cli::parse();
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
        Command::Hub { listen, name } => {
            let node = botbus::Node::builder(&name).start()?;
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
    }
}
