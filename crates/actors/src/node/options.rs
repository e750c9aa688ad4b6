//! How a module is hosted: [`ModuleOptions`].

use std::time::Duration;

use botbus_core::{Liveness, RestartBudget, RestartPolicy};
use botbus_transport_stdio::ChildCommand;

use super::DEFAULT_START_TIMEOUT;

/// Which thread a module runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum Thread {
    /// One of the shared pool's arbiters.
    #[default]
    Pool,
    /// A dedicated arbiter.
    Own,
    /// The arbiter shared by every module naming this thread.
    Named(String),
    /// The node's system thread, beside the link I/O: how a child hosts
    /// its one module, with no thread hop between the link and the module.
    System,
}

/// Which process a module runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum Process {
    /// This one.
    #[default]
    This,
    /// A re-launched copy of this binary.
    SameBinary,
    /// Another executable that speaks the protocol.
    Command(ChildCommand),
    /// A worker node, which starts it on request.
    Worker(super::worker::OnWorker),
}

/// How a module is hosted: its restart policy and budget, its mailbox size,
/// its thread — or a child process of its own.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    pub(super) restart: RestartPolicy,
    pub(super) budget: RestartBudget,
    pub(super) mailbox: usize,
    pub(super) thread: Thread,
    pub(super) process: Process,
    pub(super) stop_grace: Duration,
    pub(super) start_timeout: Duration,
    pub(super) liveness: Option<Liveness>,
    pub(super) needs: Vec<String>,
    pub(super) cpus: Option<Vec<usize>>,
}

impl Default for ModuleOptions {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::default(),
            budget: RestartBudget::default(),
            mailbox: 1024,
            thread: Thread::Pool,
            process: Process::This,
            stop_grace: Duration::from_secs(2),
            start_timeout: DEFAULT_START_TIMEOUT,
            liveness: None,
            needs: Vec::new(),
            cpus: None,
        }
    }
}

impl ModuleOptions {
    /// Defaults: restart on failure, at most 3 restarts in 5 s, a mailbox of
    /// 1024 messages, a thread from the pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// When the module is restarted.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// At most `max_restarts` restarts within `within`; then it is failed.
    pub fn budget(mut self, max_restarts: u32, within: Duration) -> Self {
        self.budget = RestartBudget::new(max_restarts, within);
        self
    }

    /// Messages the mailbox holds before senders wait (at least 1).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Runs the module on a thread of its own, which ends when the module
    /// ends for good (stopped, or failed past its restarts; a restart keeps
    /// it). For a module in a child process, its link to the child runs
    /// there, and the thread stays until the node stops.
    pub fn own_thread(mut self) -> Self {
        self.thread = Thread::Own;
        self
    }

    /// Runs the module on the thread named `name`, shared with every other
    /// module of this node that names it, and with links placed there
    /// ([`LinkConfig::thread`](crate::LinkConfig::thread)).
    ///
    /// For a module in a child process it places the module's link: put a
    /// child's link on the thread of the module that asks it most, and its
    /// replies reach that module with no hand-off between threads. A child
    /// module that names no thread has its link on the node's links' thread.
    pub fn thread(mut self, name: &str) -> Self {
        self.thread = Thread::Named(name.to_owned());
        self
    }

    /// Runs the module only on the CPUs numbered `cpus` (Linux): the whole
    /// child process of a module placed in one, else the module's thread —
    /// its own, or the named thread it shares, with every module and link
    /// on that thread. Keep a child and the thread of its busiest caller on
    /// one CPU, and each message between them wakes its reader on the CPU
    /// its writer just left, instead of one that may be idle and slow to
    /// wake.
    ///
    /// The start fails, naming why, for a module on the shared pool or on
    /// a worker (their threads are not the module's to pin), for a named
    /// thread already pinned to other CPUs, for CPUs this process may not
    /// use, and off Linux.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// On the node's system thread (the framework's own modules).
    pub(super) fn thread_system(mut self) -> Self {
        self.thread = Thread::System;
        self
    }

    /// Runs the module in a child process: a copy of this very binary,
    /// started with the same arguments, in which [`NodeBuilder::start`](crate::NodeBuilder::start)
    /// hosts only this module (the other options still apply there). The
    /// module's code does not change; a crash of the child takes nothing
    /// else down, and the child is restarted under the module's policy.
    pub fn in_child(mut self) -> Self {
        self.process = Process::SameBinary;
        self
    }

    /// How long a child process has to exit after its goodbye, and again
    /// after SIGTERM, before it is killed (default 2 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// How long one start of the module may take before it counts as a
    /// failed start (default 5 s): its `started` hook in this process; for a
    /// child, from launching the process until its node has announced the
    /// module (the hello, then the module's own `started`). A failed start
    /// is restarted under the module's policy, and failed starts in a row
    /// spend its budget however slowly each one fails, so a module that can
    /// never come up ends [`ModuleStatus::Failed`](crate::ModuleStatus::Failed) and
    /// [`NodeBuilder::start`](crate::NodeBuilder::start) returns an error.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The liveness of the link to this module's child process, instead of
    /// the node's [`LinkConfig::liveness`](crate::LinkConfig::liveness): when a quiet child is pinged, and
    /// after how much silence it counts as hung — it is then killed and
    /// restarted, as after a crash. A module that blocks its thread for
    /// longer than that in a child process is hung as far as its parent can
    /// tell.
    pub fn liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Starts the module (and restarts it) only once `module` — `name` or
    /// `node/name` — can be reached: on this node, in one of its children,
    /// or at a node it is linked to or has joined. A controller that asks
    /// a motor from its first message on, say, when the motor runs in a
    /// process that joins later. Waiting counts against the start deadline
    /// ([`ModuleOptions::start_timeout`]); past it, the start has failed.
    pub fn needs(mut self, module: &str) -> Self {
        self.needs.push(module.to_owned());
        self
    }

    /// Whether the module runs in a child process.
    pub fn is_child(&self) -> bool {
        self.process != Process::This
    }
}
