//! # botbus-transport-stdio
//!
//! The `stdio` transport: a module in a child process, linked to its parent
//! over the child's stdin and stdout.
//!
//! Like every botbus transport crate it exports a scheme constant
//! ([`STDIO_SCHEME`]), a transport ([`StdioTransport`]) and a link
//! ([`StdioLink`]), and moves bytes only: the handshake, framing and routing
//! above it are the same code for every transport.
//!
//! * **Parent side:** [`StdioTransport::spawn`] starts a [`ChildCommand`]
//!   with piped stdin, stdout and stderr, and returns the link and a
//!   [`ChildProcess`] to stop or wait for. The child's stderr is read line
//!   by line into `tracing` events tagged with the module's name, at the
//!   level the line carries (`ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`), on
//!   a thread of its own and within bounds: lines are cut at
//!   [`MAX_LOG_LINE`] bytes, and past [`LOG_LINES_PER_SEC`] lines a second
//!   they are dropped and counted rather than slow anything down.
//! * **Child side:** [`StdioLink::own_stdio`] links over the process's own
//!   stdin/stdout, and first makes the protocol stream private: it keeps
//!   duplicates of the two descriptors for itself, points fd 1 at stderr and
//!   fd 0 at `/dev/null`. A stray `println!` in module code then lands in the
//!   parent's log, never in the frame stream.
//!
//! Nodes use this for you: `ModuleOptions::in_child()` runs a module in a
//! re-launched copy of the same binary, `NodeBuilder::child_module` any other
//! executable that speaks the protocol (see `docs/PROTOCOL.md`).
//!
//! ```
//! use botbus_transport_stdio::{ChildCommand, STDIO_SCHEME};
//!
//! assert_eq!(STDIO_SCHEME, "stdio");
//! let python = ChildCommand::new("python3").arg("examples/python_child/child.py").env("MODE", "demo");
//! assert_eq!(python.to_string(), "python3 examples/python_child/child.py");
//! ```

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use botbus_core::{Endpoint, Link, LinkReader, LinkWriter, Listener, Transport, TransportError};
use tokio::process::{Child, Command};

pub mod affinity;
mod stderr;
pub use stderr::{LOG_BURST, LOG_LINES_PER_SEC, MAX_LOG_LINE};

/// The endpoint scheme this transport serves.
pub const STDIO_SCHEME: &str = botbus_core::STDIO_SCHEME;

/// The environment variable that tells a botbus binary it runs as a child
/// and which of its modules to host.
pub const CHILD_MODULE_ENV: &str = "BOTBUS_CHILD_MODULE";
/// The environment variable that names the child's node.
pub const CHILD_NODE_ENV: &str = "BOTBUS_CHILD_NODE";
/// The environment variable that holds the parent's process id, so a child
/// can tell that its parent died before it could ask to be told.
pub const PARENT_PID_ENV: &str = "BOTBUS_PARENT_PID";

/// The pipe size asked for on Linux (the unprivileged maximum by default):
/// fewer wake-ups for large messages.
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1024 * 1024;

/// What to run as a child: a program, its arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    cpus: Option<Vec<usize>>,
}

impl ChildCommand {
    /// Runs `program` (looked up in `PATH` when it has no slash).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            current_dir: None,
            cpus: None,
        }
    }

    /// This very binary, with the arguments it was started with: how a
    /// robot re-launches itself to host one of its modules in a child.
    pub fn current_exe() -> io::Result<Self> {
        Ok(Self::new(std::env::current_exe()?).args(std::env::args_os().skip(1)))
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Runs the child, every thread of it, only on the CPUs numbered
    /// `cpus` (Linux; elsewhere the spawn fails saying so). Set before the
    /// program starts, so its first instruction already runs there. A set
    /// that names no CPU this process may use fails the spawn, naming it.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// The program to run.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }
}

impl fmt::Display for ChildCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

/// A running child process. Dropping it kills the child.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    pid: u32,
    module: String,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit; returns its exit status.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Whether the child has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Stops the child: waits up to `grace` for it to exit on its own (after
    /// the caller said goodbye on its link), then sends SIGTERM and waits
    /// `grace` again, then SIGKILL. Returns the exit status.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
            return status;
        }
        tracing::warn!(module = %self.module, pid = self.pid, "child did not exit after goodbye; sending SIGTERM");
        self.terminate();
        if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
            return status;
        }
        tracing::warn!(module = %self.module, pid = self.pid, "child ignored SIGTERM; killing it");
        self.kill().await
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.child.start_kill()?;
        self.wait().await
    }

    #[cfg(unix)]
    fn terminate(&self) {
        use rustix::process::{kill_process, Pid, Signal};
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
    }

    #[cfg(not(unix))]
    fn terminate(&self) {}
}

/// A process's exit status as people read it: `exited with code 0`,
/// `killed by signal 9 (SIGKILL)`.
///
/// ```
/// # #[cfg(unix)] {
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::ExitStatus;
/// use botbus_transport_stdio::describe_exit;
///
/// assert_eq!(describe_exit(&ExitStatus::from_raw(0)), "exited with code 0");
/// assert_eq!(describe_exit(&ExitStatus::from_raw(70 << 8)), "exited with code 70");
/// assert_eq!(describe_exit(&ExitStatus::from_raw(9)), "killed by signal 9 (SIGKILL)");
/// assert_eq!(describe_exit(&ExitStatus::from_raw(15)), "killed by signal 15 (SIGTERM)");
/// # }
/// ```
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let core = if status.core_dumped() { ", core dumped" } else { "" };
            return match signal_name(signal) {
                Some(name) => format!("killed by signal {signal} ({name}){core}"),
                None => format!("killed by signal {signal}{core}"),
            };
        }
    }
    status.to_string()
}

#[cfg(unix)]
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// One end of a parent–child link: the child's stdin and stdout as seen
/// from the parent, or the process's own as seen from the child.
pub struct StdioLink {
    halves: Halves,
    peer: String,
}

enum Halves {
    /// Registered with the runtime (the parent's end of a child's pipes).
    Async(LinkReader, LinkWriter),
    /// This process's own protocol descriptors, registered with the runtime
    /// that splits the link (taking them needs none).
    #[cfg(unix)]
    Own(std::os::fd::OwnedFd, std::os::fd::OwnedFd),
}

impl fmt::Debug for StdioLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioLink").field("peer", &self.peer).finish()
    }
}

impl Link for StdioLink {
    fn peer(&self) -> String {
        self.peer.clone()
    }

    /// Splits the link; for [`StdioLink::own_stdio`] this must run inside
    /// a tokio runtime, which the descriptors are registered with.
    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        match self.halves {
            Halves::Async(reader, writer) => (reader, writer),
            #[cfg(unix)]
            Halves::Own(input, output) => own_halves(input, output),
        }
    }
}

static OWN_STDIO_TAKEN: AtomicBool = AtomicBool::new(false);

impl StdioLink {
    /// The child side: a link over this process's own stdin and stdout.
    ///
    /// Before it returns, the protocol stream is made private: fd 1 then
    /// points at stderr and fd 0 at `/dev/null`, so output from module code
    /// (`println!`, a C library's `printf`) goes to the parent's log, and
    /// nothing else can read the parent's frames. Can be taken once per
    /// process.
    ///
    /// On Windows (type-checked, never run) the streams are tokio's own
    /// stdin and stdout, read and written on its blocking pool, and are not
    /// made private: module code there must not write to stdout.
    pub fn own_stdio() -> io::Result<StdioLink> {
        if OWN_STDIO_TAKEN.swap(true, Ordering::AcqRel) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this process's stdin/stdout link was already taken",
            ));
        }
        Ok(StdioLink {
            halves: take_own_stdio()?,
            peer: "parent over stdio".to_owned(),
        })
    }
}

#[cfg(unix)]
fn take_own_stdio() -> io::Result<Halves> {
    use std::os::fd::AsFd;
    let input = io::stdin().as_fd().try_clone_to_owned()?;
    let output = io::stdout().as_fd().try_clone_to_owned()?;
    rustix::stdio::dup2_stdout(io::stderr())?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(Halves::Own(input, output))
}

#[cfg(unix)]
fn own_halves(input: std::os::fd::OwnedFd, output: std::os::fd::OwnedFd) -> (LinkReader, LinkWriter) {
    use tokio::net::unix::pipe;
    // A pipe (as a parent makes) is polled by the reactor; anything else (a
    // file, a socket) is read and written on tokio's blocking pool.
    let reader: LinkReader = match input.try_clone().map(pipe::Receiver::from_owned_fd) {
        Ok(Ok(pipe)) => Box::pin(pipe),
        _ => Box::pin(tokio::fs::File::from_std(std::fs::File::from(input))),
    };
    let writer: LinkWriter = match output.try_clone().map(pipe::Sender::from_owned_fd) {
        Ok(Ok(pipe)) => Box::pin(pipe),
        _ => Box::pin(tokio::fs::File::from_std(std::fs::File::from(output))),
    };
    (reader, writer)
}

#[cfg(not(unix))]
fn take_own_stdio() -> io::Result<Halves> {
    Ok(Halves::Async(
        Box::pin(tokio::io::stdin()),
        Box::pin(tokio::io::stdout()),
    ))
}

/// Makes this process exit when its parent dies, on Linux with the
/// parent-death signal (SIGKILL), and — on every system — at once if the
/// parent is already gone. A child also stops when its stdin reaches EOF;
/// this covers a child whose module never reads (a busy loop, a hung driver).
pub fn exit_with_parent() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    }
    #[cfg(unix)]
    {
        let expected = std::env::var(PARENT_PID_ENV).ok().and_then(|p| p.parse::<i32>().ok());
        let actual = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
        if expected.is_some() && expected != actual {
            eprintln!("botbus child: parent {expected:?} is gone; exiting");
            std::process::exit(1);
        }
    }
}

/// Spawns children (parent side) and links over the process's own stdio
/// (child side, by connecting to `stdio:`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdioTransport;

impl StdioTransport {
    /// Starts `command` as the child that hosts `module` of node `parent`:
    /// as [`StdioTransport::spawn`], with the environment that tells a
    /// botbus binary which module to host and under which node name
    /// (`<parent>.<module>`).
    pub fn spawn_module(
        parent: &str,
        module: &str,
        command: &ChildCommand,
    ) -> Result<(StdioLink, ChildProcess), TransportError> {
        let command = command
            .clone()
            .env(CHILD_MODULE_ENV, module)
            .env(CHILD_NODE_ENV, format!("{parent}.{module}"));
        Self::spawn(module, &command)
    }

    /// In a child process started by a botbus parent: which module to host,
    /// and the node name to use; `None` otherwise.
    pub fn child_role() -> Option<ChildRole> {
        child_role().map(|(module, node)| ChildRole { module, node })
    }

    /// The child side: the link to the parent over this process's own
    /// stdin and stdout (see [`StdioLink::own_stdio`]), and an exit as soon
    /// as the parent dies (see [`exit_with_parent`]).
    pub fn link_to_parent() -> io::Result<StdioLink> {
        let link = StdioLink::own_stdio()?;
        exit_with_parent();
        Ok(link)
    }

    /// An exit status as people read it (see [`describe_exit`]).
    pub fn describe_exit(status: &ExitStatus) -> String {
        describe_exit(status)
    }

    /// Starts `command` as the child hosting `module`, with its stdin and
    /// stdout piped to a new link and its stderr forwarded into `tracing`.
    ///
    /// The child is put in a process group of its own (a Ctrl-C at the
    /// terminal reaches the parent, which stops its children in order), and
    /// is killed if the returned [`ChildProcess`] is dropped. Readiness is
    /// the handshake on the link, not this call returning.
    pub fn spawn(module: &str, command: &ChildCommand) -> Result<(StdioLink, ChildProcess), TransportError> {
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .envs(command.envs.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &command.current_dir {
            cmd.current_dir(dir);
        }
        #[cfg(unix)]
        cmd.process_group(0);
        let io_error = |source| TransportError::Io {
            endpoint: format!("child `{module}` ({command})"),
            source,
        };
        if let Some(cpus) = &command.cpus {
            let on_cpus = |source: io::Error| {
                io_error(io::Error::new(
                    source.kind(),
                    format!("cannot run it on CPUs {cpus:?}: {source}"),
                ))
            };
            #[cfg(target_os = "linux")]
            {
                let set = affinity::cpu_set(cpus).map_err(on_cpus)?;
                // SAFETY: the closure runs in the forked child before exec;
                // it makes one system call on a set built beforehand, and
                // neither allocates nor takes a lock. (Setting it from here
                // after the spawn would race with the child's first threads.)
                #[allow(unsafe_code)]
                unsafe {
                    cmd.pre_exec(move || rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from));
                }
            }
            #[cfg(not(target_os = "linux"))]
            return Err(on_cpus(affinity::unsupported()));
        }
        // A pipe of our own, read with blocking reads on a thread of its
        // own: the child's logging never runs on the frame path. (Neither
        // end is inherited by children spawned later.)
        let (stderr, stderr_to_child) = io::pipe().map_err(io_error)?;
        cmd.stderr(Stdio::from(stderr_to_child));
        let mut child = cmd.spawn().map_err(|source| match &command.cpus {
            // What the child's `sched_setaffinity` says of a set it may not use.
            Some(cpus) if source.kind() == io::ErrorKind::InvalidInput => io_error(io::Error::new(
                source.kind(),
                format!("cannot run it on CPUs {cpus:?}: {source}; {}", affinity::allowed()),
            )),
            _ => io_error(source),
        })?;
        drop(cmd); // closes our copy of the stderr pipe's write end
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io_error(io::Error::other("child stdio was not piped")));
        };
        #[cfg(target_os = "linux")]
        {
            let _ = rustix::pipe::fcntl_setpipe_size(&stdin, PIPE_SIZE);
            let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE);
        }
        let logged_as = module.to_owned();
        std::thread::Builder::new()
            .name(format!("botbus-log-{pid}"))
            .spawn(move || stderr::forward(stderr, &logged_as, pid))
            .map_err(io_error)?;
        tracing::debug!(%module, pid, %command, "child spawned");
        let link = StdioLink {
            halves: Halves::Async(Box::pin(stdout), Box::pin(stdin)),
            peer: format!("child `{module}` (pid {pid})"),
        };
        let process = ChildProcess {
            child,
            pid,
            module: module.to_owned(),
            status: None,
        };
        Ok((link, process))
    }
}

#[async_trait]
impl Transport for StdioTransport {
    fn scheme(&self) -> &'static str {
        STDIO_SCHEME
    }

    /// `stdio:` links over this process's own stdin/stdout (the child side).
    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        if !matches!(endpoint, Endpoint::Stdio) {
            return Err(TransportError::WrongScheme {
                transport: STDIO_SCHEME,
                endpoint: endpoint.to_string(),
            });
        }
        StdioLink::own_stdio()
            .map(|link| Box::new(link) as Box<dyn Link>)
            .map_err(|source| TransportError::Io {
                endpoint: endpoint.to_string(),
                source,
            })
    }

    /// A child does not listen: its parent spawns it.
    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        Err(TransportError::WrongScheme {
            transport: STDIO_SCHEME,
            endpoint: format!("{endpoint} (stdio links are made by spawning a child, not by listening)"),
        })
    }
}

/// The level a child's log line carries, if any, and the line without it.
///
/// The level is the first of the line's first few words that names one
/// (`ERROR`, `WARN`/`WARNING`, `INFO`, `DEBUG`, `TRACE`, `CRITICAL`),
/// ignoring case, colour codes and punctuation. When the line starts with
/// it (as botbus children's lines do), it is cut from the text, so the
/// parent's log does not say it twice.
///
/// ```
/// use botbus_transport_stdio::split_level;
/// use tracing::Level;
///
/// assert_eq!(split_level(" WARN motor: hot"), (Some(Level::WARN), "motor: hot"));
/// assert_eq!(split_level("2026-11-21T07:00:00Z ERROR lost it"), (Some(Level::ERROR), "2026-11-21T07:00:00Z ERROR lost it"));
/// assert_eq!(split_level("WARNING:root:low battery"), (Some(Level::WARN), "root:low battery"));
/// assert_eq!(split_level("\x1b[32m INFO\x1b[0m planner: ok"), (Some(Level::INFO), "\x1b[32m INFO\x1b[0m planner: ok"));
/// assert_eq!(split_level("hello from println"), (None, "hello from println"));
/// ```
pub fn split_level(line: &str) -> (Option<tracing::Level>, &str) {
    let is_separator = |c: char| c.is_whitespace() || matches!(c, ':' | '[' | ']' | '|' | '<' | '>');
    let trimmed = line.trim_start_matches(is_separator);
    let first_len = trimmed.find(is_separator).unwrap_or(trimmed.len());
    if let Some(level) = level_word(&trimmed[..first_len]) {
        return (Some(level), trimmed[first_len..].trim_start_matches(is_separator));
    }
    let mut plain = String::with_capacity(line.len().min(96));
    let mut chars = line.chars().take(96);
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip a CSI sequence: ESC [ ... final byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let level = plain
        .split(is_separator)
        .filter(|word| !word.is_empty())
        .take(4)
        .find_map(level_word);
    (level, line)
}

fn level_word(word: &str) -> Option<tracing::Level> {
    match word.to_ascii_uppercase().as_str() {
        "ERROR" | "CRITICAL" | "FATAL" => Some(tracing::Level::ERROR),
        "WARN" | "WARNING" => Some(tracing::Level::WARN),
        "INFO" => Some(tracing::Level::INFO),
        "DEBUG" => Some(tracing::Level::DEBUG),
        "TRACE" => Some(tracing::Level::TRACE),
        _ => None,
    }
}

/// What a process started as a botbus child is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRole {
    /// The module to host.
    pub module: String,
    /// The node name to use (`<parent>.<module>`).
    pub node: String,
}

/// Whether this process was started as a botbus child, and if so which
/// module it should host and its node's name.
pub fn child_role() -> Option<(String, String)> {
    let module = std::env::var(CHILD_MODULE_ENV).ok()?;
    let node = std::env::var(CHILD_NODE_ENV).unwrap_or_else(|_| format!("child.{module}"));
    Some((module, node))
}
