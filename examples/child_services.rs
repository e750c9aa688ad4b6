//! The modules of the conformance suite, as a binary a parent spawns as
//! child processes: `tests/conformance.rs` runs every scenario with each
//! service in a child of its own (`Placement::Child`).
//!
//! It is also the smallest picture of a module binary: register modules,
//! call `start()`. Started by a botbus parent, `start()` hosts the one
//! module the parent asked for; started by hand, it is an ordinary node.
//!
//! With `--worker ENDPOINT` it is a worker named `services` instead, joined
//! to the node at `ENDPOINT`, that starts the services' types (`service`,
//! `recorder`, `bouncer`, `mirror`) when asked (`Placement::OnWorkerThroughHub`).

#[path = "python_child/messages.rs"]
mod messages;
#[path = "../tests/support/services.rs"]
mod services;
#[path = "../tests/support/thermostat.rs"]
mod thermostat;

fn main() -> Result<(), botbus::NodeError> {
    botbus::init_tracing();
    if let Some(endpoint) = std::env::args().skip_while(|a| a != "--worker").nth(1) {
        let node = botbus::Node::builder("services")
            .register("service", |(): ()| services::Service::new())
            .register("recorder", |(): ()| services::Recorder)
            .register("bouncer", |(): ()| services::Bouncer)
            .register("mirror", |(): ()| services::Mirror::default())
            .worker()
            .join(&endpoint)
            .start()?;
        return node.run_until_signal();
    }
    let node = services::with_services(botbus::Node::builder("services"))
        .module("watcher", services::Service::quiet)
        .module("thermostat", thermostat::Thermostat::default)
        .start()?;
    node.run_until_signal()
}
