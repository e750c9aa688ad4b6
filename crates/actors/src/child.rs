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

use actix::Addr;
use botbus_core::DownReason;
use botbus_transport_stdio::{ChildCommand, StdioTransport};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::host::{Exit, Startup, StopSignal};
use crate::link::{establish_link, LinkConfig, LinkHandle, Role};
use crate::router::{ModuleStatus, Router};
use crate::supervisor::{run_host, Ended, Host, Supervisor};

/// Everything the host of one child module owns.
pub(crate) struct ChildHosted {
    pub(crate) name: Arc<str>,
    pub(crate) command: ChildCommand,
    pub(crate) router: Arc<Router>,
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) link: LinkConfig,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) stop_grace: Duration,
    /// From launch to the module's announcement, at most.
    pub(crate) start_timeout: Duration,
    /// Modules that must be reachable before an instance starts.
    pub(crate) needs: Vec<String>,
    /// Reports the first start, in its turn.
    pub(crate) startup: Startup,
    pub(crate) done: oneshot::Sender<()>,
}

/// Hosts a module in child processes, one after the other, under the
/// restart loop.
pub(crate) async fn host_child(hosted: ChildHosted) {
    run_host(hosted).await;
}

impl Host for ChildHosted {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn router(&self) -> &Router {
        &self.router
    }

    fn supervisor(&self) -> &Addr<Supervisor> {
        &self.supervisor
    }

    fn stop_signal(&self) -> Arc<StopSignal> {
        self.stop.clone()
    }

    fn needs(&self) -> &[String] {
        &self.needs
    }

    fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    fn startup(&mut self) -> &mut Startup {
        &mut self.startup
    }

    async fn run_instance(&mut self) -> Ended {
        run_child(self).await
    }

    fn instance_ended(&mut self) {
        self.router.set_child_link(&self.name, None);
        self.router.set_child_pid(&self.name, None);
    }

    fn finish(self) {
        let _ = self.done.send(());
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
    let name = hosted.name.clone();
    let deadline = Instant::now() + hosted.start_timeout;
    let (link, mut process) = match StdioTransport::spawn_module(hosted.router.node(), &name, &hosted.command) {
        Ok(spawned) => spawned,
        Err(error) => return Ended::Instance(Exit::StartFailed(format!("cannot launch the child: {error}"))),
    };
    let pid = process.pid();
    hosted.router.set_child_pid(&name, Some(pid));
    let started = tokio::select! {
        biased;
        () = hosted.stop.wait() => None,
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
    hosted.router.set_status(&name, ModuleStatus::Running);
    hosted.startup.up();
    tracing::info!(module = %name, pid, "child running");

    let cause = tokio::select! {
        biased;
        () = hosted.stop.wait() => {
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
    match final_reason(&hosted.router, &name) {
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
    let name = &hosted.name;
    let within = hosted.start_timeout;
    // The parent made this process and holds its pipes: no token to prove.
    let config = LinkConfig {
        token: None,
        ..hosted.link.clone()
    };
    let established = establish_link(
        hosted.router.clone(),
        link,
        &config,
        Role::Connecting,
        Some(name.clone()),
    );
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
    let mut changes = hosted.router.watch_topology();
    loop {
        changes.borrow_and_update();
        if link.serves(name) {
            // Only now does the module's route lead to the new child: until
            // it hosts the module, messages wait, as in a restarting
            // module's mailbox.
            hosted.router.set_child_link(name, Some(link.clone()));
            return Ok(link);
        }
        if let Some(reason) = final_reason(&hosted.router, name) {
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
