//! The child host: runs one module of a node in a child process, linked over
//! the child's stdin/stdout, and supervises the process as it would an
//! in-process instance.
//!
//! The module stays the node's own — addressed by its name or
//! `node/module`, listed by [`Node::modules`](crate::Node::modules), stopped
//! by [`Node::stop_module`](crate::Node::stop_module) — and the router sends
//! its messages straight onto the child's link.
//!
//! * **Ready** when the child's node has announced the module over the
//!   handshaken link: never a sleep. Launch, hello and announcement must all
//!   happen within the module's start deadline, or the start has failed:
//!   the child is killed and the failed start counts against the budget.
//! * **Crash** (the process exits, its link breaks, or it falls silent past
//!   the link's liveness limit): the module's status leaves `Running` first,
//!   then asks in flight end with `Stopped`; a child that broke its link is
//!   killed at once; the supervisor restarts the process within the module's
//!   restart budget.
//! * **Inside the child** the module's own panics are restarted by the
//!   child's node under the same policy; if its budget is spent there, the
//!   child says so (a `down` frame) and the module is failed here too.
//! * **Stop:** a goodbye on the link, then SIGTERM after a grace period, then
//!   SIGKILL; the exit status is logged.

use std::sync::Arc;
use std::time::Duration;

use botbus_core::DownReason;
use botbus_transport_stdio::{ChildCommand, StdioTransport};
use tokio::time::Instant;

use crate::host::Exit;
use crate::link::{establish_link, LinkConfig, LinkHandle, Role};
use crate::router::{ModuleStatus, Router};
use crate::supervisor::{run_host, Ended, Host, Supervised};

/// Everything the host of one child module owns. Its start deadline runs
/// from launch to the module's announcement.
pub(crate) struct ChildHosted {
    pub(crate) supervised: Supervised,
    pub(crate) command: ChildCommand,
    pub(crate) link: LinkConfig,
    pub(crate) stop_grace: Duration,
}

/// Hosts a module in child processes, one after the other, under the
/// restart loop.
pub(crate) async fn host_child(hosted: ChildHosted) {
    run_host(hosted).await;
}

impl Host for ChildHosted {
    fn supervised(&self) -> &Supervised {
        &self.supervised
    }

    fn supervised_mut(&mut self) -> &mut Supervised {
        &mut self.supervised
    }

    async fn run_instance(&mut self) -> Ended {
        run_child(self).await
    }

    fn instance_ended(&mut self) {
        let Supervised { name, router, .. } = &self.supervised;
        router.set_child_link(name, None);
        router.set_child_pid(name, None);
    }

    fn finish(self) {
        self.supervised.finish();
    }
}

/// The module is gone for good if the child said so (the router then no
/// longer counts it among this node's children).
fn final_reason(router: &Router, name: &str) -> Option<DownReason> {
    if router.has_child(name) {
        return None;
    }
    Some(match router.status(name) {
        Some(ModuleStatus::Failed(why)) => DownReason::Failed(why),
        _ => DownReason::Stopped,
    })
}

/// Why a start did not bring the module up.
enum NotStarted {
    /// The attempt failed; the child must be killed.
    Failed(String),
    /// The child reported its module gone for good while starting.
    Final(DownReason),
}

async fn run_child(hosted: &mut ChildHosted) -> Ended {
    let name = hosted.supervised.name.clone();
    let deadline = Instant::now() + hosted.supervised.start_timeout;
    let (link, mut process) =
        match StdioTransport::spawn_module(hosted.supervised.router.node(), &name, &hosted.command) {
            Ok(spawned) => spawned,
            Err(error) => return Ended::Instance(Exit::StartFailed(format!("cannot launch the child: {error}"))),
        };
    let pid = process.pid();
    hosted.supervised.router.set_child_pid(&name, Some(pid));
    let started = tokio::select! {
        biased;
        () = hosted.supervised.stop.wait() => None,
        started = start(hosted, Box::new(link), pid, deadline) => Some(started),
    };
    let link = match started {
        None => {
            let status = exit_status(process.kill().await);
            tracing::info!(module = %name, pid, %status, "child stopped before it was ready");
            return Ended::Instance(Exit::StoppedByNode);
        }
        Some(Err(NotStarted::Final(reason))) => {
            let _ = process.stop(hosted.stop_grace).await;
            return Ended::Final(reason);
        }
        Some(Err(NotStarted::Failed(why))) => {
            // Whatever it is doing, it is not coming up: no grace. Often it
            // died first (a missing module, a crash at start): say how.
            let status = match tokio::time::timeout(Duration::from_millis(100), process.wait()).await {
                Ok(status) => exit_status(status),
                Err(_) => exit_status(process.kill().await),
            };
            let why = format!("{why}; child {status}");
            tracing::error!(module = %name, pid, %why, "child did not start");
            return Ended::Instance(Exit::StartFailed(why));
        }
        Some(Ok(link)) => link,
    };
    hosted.supervised.router.set_status(&name, ModuleStatus::Running);
    hosted.supervised.startup.up();
    tracing::info!(module = %name, pid, "child running");

    let cause = tokio::select! {
        biased;
        () = hosted.supervised.stop.wait() => {
            link.close("module stopping");
            let status = exit_status(process.stop(hosted.stop_grace).await);
            tracing::info!(module = %name, pid, %status, "child stopped");
            return Ended::Instance(Exit::StoppedByNode);
        }
        status = process.wait() => {
            // Let the link drain to EOF, so every frame the child wrote
            // (its last replies, a `down`) is handled before deciding.
            let _ = tokio::time::timeout(Duration::from_secs(1), link.closed()).await;
            link.close("child exited");
            format!("child `{name}` (pid {pid}) {}", exit_status(status))
        }
        reason = link.closed() => {
            if link.is_broken() {
                // Bad input or a hang: nothing it says can be trusted, and
                // waiting out a grace period would only delay the restart.
                let status = exit_status(process.kill().await);
                format!("link to child `{name}` (pid {pid}) broken ({reason}); child {status}")
            } else {
                // The child closed its end: it is on its way out.
                let status = exit_status(process.stop(hosted.stop_grace).await);
                format!("child `{name}` (pid {pid}) {status}")
            }
        }
    };
    match final_reason(&hosted.supervised.router, &name) {
        Some(reason) => Ended::Final(reason),
        None => {
            // One event and one level however the loss was noticed first
            // (the exit, or the link closing).
            tracing::warn!(module = %name, pid, %cause, "child lost");
            Ended::Instance(Exit::Failed(format!("child process lost: {cause}")))
        }
    }
}

/// Brings a launched child up: its hello, then its announcement of the
/// module, both by `deadline`. Routes the module over the link once the
/// child has announced it.
async fn start(
    hosted: &ChildHosted,
    link: Box<dyn botbus_core::Link>,
    pid: u32,
    deadline: Instant,
) -> Result<Arc<LinkHandle>, NotStarted> {
    let Supervised {
        name,
        router,
        start_timeout: within,
        ..
    } = &hosted.supervised;
    // The parent made this process and holds its pipes: no token to prove.
    let config = LinkConfig {
        token: None,
        ..hosted.link.clone()
    };
    let established = establish_link(router.clone(), link, &config, Role::Connecting, Some(name.clone()));
    let link = match tokio::time::timeout_at(deadline, established).await {
        Err(_) => {
            return Err(NotStarted::Failed(format!(
                "child `{name}` (pid {pid}) sent no hello within the start deadline ({within:?})"
            )))
        }
        Ok(Err(error)) => {
            return Err(NotStarted::Failed(format!(
                "child `{name}` (pid {pid}) failed its handshake: {error}"
            )))
        }
        Ok(Ok(link)) => link,
    };
    let mut changes = router.watch_topology();
    loop {
        changes.borrow_and_update();
        if link.serves(name) {
            // Only now does the module's route lead to the new child: until
            // it hosts the module, messages wait, as in a restarting
            // module's mailbox.
            router.set_child_link(name, Some(link.clone()));
            return Ok(link);
        }
        if let Some(reason) = final_reason(router, name) {
            return Err(NotStarted::Final(reason));
        }
        tokio::select! {
            reason = link.closed() => {
                return Err(NotStarted::Failed(format!(
                    "link to child `{name}` (pid {pid}) closed before it announced the module: {reason}"
                )));
            }
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                if changed.is_err() {
                    link.close("not started in time");
                    return Err(NotStarted::Failed(format!(
                        "child `{name}` (pid {pid}) completed its handshake but did not announce module `{name}` within the start deadline ({within:?})"
                    )));
                }
            }
        }
    }
}

/// "exited with code 0", "killed by signal 9 (SIGKILL)".
fn exit_status(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => StdioTransport::describe_exit(&status),
        Err(error) => format!("ended with an unknown status ({error})"),
    }
}
