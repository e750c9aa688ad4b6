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
//!   handshaken link: never a sleep.
//! * **Crash** (the process exits or its link breaks): asks in flight end
//!   with `Stopped` at once; the supervisor restarts the process within the
//!   module's restart budget.
//! * **Inside the child** the module's own panics are restarted by the
//!   child's node under the same policy; if its budget is spent there, the
//!   child says so (a `down` frame) and the module is failed here too.
//! * **Stop:** a goodbye on the link, then SIGTERM after a grace period, then
//!   SIGKILL; the exit status is logged.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use botbus_core::DownReason;
use botbus_transport_stdio::{ChildCommand, ChildProcess, StdioTransport, CHILD_MODULE_ENV, CHILD_NODE_ENV};
use tokio::sync::oneshot;

use crate::host::{Exit, StopSignal};
use crate::link::{establish_link, LinkConfig, LinkHandle};
use crate::router::{ModuleStatus, Router};
use crate::supervisor::{decide, Decision, Supervisor};

/// Everything the host of one child module owns.
pub(crate) struct ChildHosted {
    pub(crate) name: Arc<str>,
    pub(crate) command: ChildCommand,
    pub(crate) router: Arc<Router>,
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) link: LinkConfig,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) stop_grace: Duration,
    /// Told once: when the first child is ready, or the module is gone.
    pub(crate) ready: Option<oneshot::Sender<Result<(), String>>>,
    pub(crate) done: oneshot::Sender<()>,
}

/// How one child process ended.
enum ChildExit {
    /// As an in-process instance would have: the supervisor decides.
    Instance(Exit),
    /// The child reported its module gone for good (its own budget spent,
    /// or it stopped under a policy that does not restart it).
    Final(DownReason),
}

pub(crate) async fn host_child(mut hosted: ChildHosted) {
    let reason = loop {
        hosted.router.set_status(&hosted.name, ModuleStatus::Starting);
        let exit = run_child(&mut hosted).await;
        hosted.router.set_child_link(&hosted.name, None);
        hosted.router.set_child_pid(&hosted.name, None);
        let decision = match exit {
            ChildExit::Final(reason) => Decision::Finish(reason),
            ChildExit::Instance(exit) => decide(&hosted.supervisor, &hosted.name, exit).await,
        };
        match decision {
            Decision::Restart => continue,
            Decision::Finish(reason) => break reason,
        }
    };
    if let Some(ready) = hosted.ready.take() {
        let _ = ready.send(Err(reason.to_string()));
    }
    hosted.router.module_down(&hosted.name, reason);
    let _ = hosted.done.send(());
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

async fn run_child(hosted: &mut ChildHosted) -> ChildExit {
    let name = hosted.name.clone();
    let command = hosted
        .command
        .clone()
        .env(CHILD_MODULE_ENV, &*name)
        .env(CHILD_NODE_ENV, format!("{}.{name}", hosted.router.node()));
    let (link, mut process) = match StdioTransport::spawn(&name, &command) {
        Ok(spawned) => spawned,
        Err(error) => return ChildExit::Instance(Exit::Failed(format!("cannot start child: {error}"))),
    };
    let pid = process.pid();
    hosted.router.set_child_pid(&name, Some(pid));
    let established = tokio::select! {
        biased;
        () = hosted.stop.wait() => None,
        established = establish_link(hosted.router.clone(), Box::new(link), &hosted.link, Some(name.clone())) => Some(established),
    };
    let link = match established {
        None => {
            let status = process.stop(Duration::ZERO).await;
            tracing::info!(module = %name, pid, ?status, "child stopped before it was ready");
            return ChildExit::Instance(Exit::StoppedByNode);
        }
        Some(Err(error)) => {
            // Often the child died first (a missing module, a crash at start):
            // say how it ended, too.
            let status = tokio::time::timeout(Duration::from_millis(200), process.wait()).await;
            let status = match status {
                Ok(Ok(status)) => status.to_string(),
                _ => format!("killed: {:?}", process.kill().await),
            };
            let why = format!("child `{name}` (pid {pid}) failed its handshake: {error}; {status}");
            tracing::error!(module = %name, pid, %why, "child not started");
            return ChildExit::Instance(Exit::Failed(why));
        }
        Some(Ok(link)) => link,
    };
    hosted.router.set_child_link(&name, Some(link.clone()));

    match ready(hosted, &link, &mut process).await {
        Ok(()) => {}
        Err(exit) => return exit,
    }
    hosted.router.set_status(&name, ModuleStatus::Running);
    if let Some(ready) = hosted.ready.take() {
        let _ = ready.send(Ok(()));
    }
    tracing::info!(module = %name, pid, "child running");

    tokio::select! {
        biased;
        () = hosted.stop.wait() => {
            link.close("module stopping");
            let status = process.stop(hosted.stop_grace).await;
            tracing::info!(module = %name, pid, status = %describe(&status), "child stopped");
            ChildExit::Instance(Exit::StoppedByNode)
        }
        status = process.wait() => {
            // Let the link drain to EOF, so every frame the child wrote
            // (its last replies, a `down`) is handled before deciding.
            let _ = tokio::time::timeout(Duration::from_secs(1), link.closed()).await;
            link.close("child exited");
            let status = describe(&status);
            match final_reason(&hosted.router, &name) {
                Some(reason) => ChildExit::Final(reason),
                None => {
                    tracing::warn!(module = %name, pid, %status, "child exited");
                    ChildExit::Instance(Exit::Failed(format!("child process exited ({status})")))
                }
            }
        }
        reason = link.closed() => {
            let status = describe(&process.stop(hosted.stop_grace).await);
            match final_reason(&hosted.router, &name) {
                Some(reason) => ChildExit::Final(reason),
                None => {
                    let why = format!("link to child `{name}` closed: {reason}; child {status}");
                    tracing::error!(module = %name, pid, %why, "child lost");
                    ChildExit::Instance(Exit::Failed(why))
                }
            }
        }
    }
}

/// Waits until the child's node has announced the module.
async fn ready(hosted: &mut ChildHosted, link: &Arc<LinkHandle>, process: &mut ChildProcess) -> Result<(), ChildExit> {
    let name = hosted.name.clone();
    let mut changes = hosted.router.watch_topology();
    let deadline = tokio::time::Instant::now() + hosted.link.handshake_timeout;
    loop {
        changes.borrow_and_update();
        if link.serves(&name) {
            return Ok(());
        }
        if let Some(reason) = final_reason(&hosted.router, &name) {
            let _ = process.stop(hosted.stop_grace).await;
            return Err(ChildExit::Final(reason));
        }
        tokio::select! {
            biased;
            () = hosted.stop.wait() => {
                link.close("module stopping");
                let _ = process.stop(hosted.stop_grace).await;
                return Err(ChildExit::Instance(Exit::StoppedByNode));
            }
            reason = link.closed() => {
                let status = describe(&process.stop(hosted.stop_grace).await);
                return Err(ChildExit::Instance(Exit::Failed(format!(
                    "link to child `{name}` closed before it announced the module: {reason}; child {status}"
                ))));
            }
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                if changed.is_err() {
                    link.close("not ready in time");
                    let status = describe(&process.stop(hosted.stop_grace).await);
                    return Err(ChildExit::Instance(Exit::Failed(format!(
                        "child `{name}` did not announce the module within {:?}; child {status}",
                        hosted.link.handshake_timeout
                    ))));
                }
            }
        }
    }
}

fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("exit status unknown: {error}"),
    }
}
