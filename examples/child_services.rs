//! The modules of the conformance suite, as a binary a parent spawns as
//! child processes: `tests/conformance.rs` runs every scenario with each
//! service in a child of its own (`Placement::Child`).
//!
//! It is also the smallest picture of a module binary: register modules,
//! call `start()`. Started by a botbus parent, `start()` hosts the one
//! module the parent asked for; started by hand, it is an ordinary node.

#[path = "python_child/messages.rs"]
mod messages;
#[path = "../tests/support/services.rs"]
mod services;
#[path = "../tests/support/thermostat.rs"]
mod thermostat;

fn main() -> Result<(), botbus::NodeError> {
    botbus::init_tracing();
    let node = services::with_services(botbus::Node::builder("services"))
        .module("watcher", services::Service::quiet)
        .module("thermostat", thermostat::Thermostat::default)
        .start()?;
    node.run_until_signal()
}
