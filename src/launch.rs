//! Launch files: a whole robot — its modules, where each runs, the links
//! its node listens on and joins — in one TOML file, so that moving a module
//! from a thread to a child process, a separately started process or a
//! remote worker is an edit of one line.
//!
//! ```toml
//! [node]
//! name = "robot"
//! listen = ["tcp://0.0.0.0:7000"]
//! token_file = "robot.token"      # never the token itself
//! link_thread = "control"          # the links' thread (default: the node's own)
//!
//! [[worker]]
//! name = "gpu"
//! connect = "tcp://robot.local:7000"
//!
//! [[module]]
//! name = "motor"
//! type = "motor"                   # a type the binary registers
//! placement = "child"              # thread | child | pipe:<endpoint> | worker:<name>
//! restart = "on-failure"           # never | on-failure | always
//! budget = { restarts = 3, within = "5s" }
//! mailbox = 1024
//! thread = "control"               # pool (default) | own | a shared thread's name
//! cpus = [2]                       # Linux: its child process, or its own or named thread, runs only there
//! needs = ["led"]
//! start_timeout = "5s"
//! args = { max_speed = 1.0 }       # the type's arguments
//! ```
//!
//! One file serves every process of the robot; each plays the [`Role`] it
//! is started in: the robot itself hosts the `thread` and `child` modules,
//! listens where `pipe:` modules join, and places `worker:` modules on their
//! workers; a process started with [`Role::Module`] hosts one `pipe:` module
//! and joins the robot; one started with [`Role::Worker`] is that worker.
//!
//! A bad file is an error naming the file, the line and column, the field,
//! and what was expected:
//!
//! ```
//! use botbus::launch::{Launch, Role};
//!
//! let text = "[node]\nname = \"robot\"\n\n[[module]]\nname = \"motor\"\ntype = \"motr\"\n";
//! let launch = Launch::parse(text, "robot.toml").unwrap();
//! let error = launch.builder(&Role::Robot, |b| b).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "robot.toml:6:8: module `motor`, field `type`: unknown module type `motr`; this binary registers none"
//! );
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use botbus_actors::{LinkConfig, ModuleOptions, Node, NodeBuilder};
use botbus_core::RestartPolicy;
use serde::Deserialize;
use toml::Spanned;

/// Why a launch file could not be used: where in which file, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1), or 0 when the error is about the file as a whole.
    pub line: usize,
    /// The column (from 1).
    pub column: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file.display(), self.message),
            line => write!(f, "{}:{line}:{}: {}", self.file.display(), self.column, self.message),
        }
    }
}

impl std::error::Error for LaunchError {}

/// Which part of the robot this process plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The robot's node: every module but those joined through a pipe or
    /// placed on a worker runs here.
    Robot,
    /// The separately started process of the module of this name (placed
    /// `pipe:<endpoint>`), joined to the robot at that endpoint.
    Module(String),
    /// The worker of this name, joined to the robot where the file says.
    Worker(String),
}

/// The `[node]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    name: Spanned<String>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    join: Vec<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    /// Present only to be refused with a clear message.
    token: Option<Spanned<toml::Value>>,
    #[serde(default)]
    insecure: bool,
    /// The named thread the node's links run on, shared with the modules
    /// whose `thread` names it.
    link_thread: Option<String>,
}

/// A `[[worker]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerEntry {
    name: Spanned<String>,
    connect: Spanned<String>,
}

/// A restart budget: `{ restarts = 3, within = "5s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetEntry {
    restarts: u32,
    within: Spanned<String>,
}

/// A `[[module]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleEntry {
    name: Spanned<String>,
    #[serde(rename = "type")]
    module_type: Spanned<String>,
    #[serde(default)]
    placement: Option<Spanned<String>>,
    #[serde(default)]
    args: Option<toml::Value>,
    restart: Option<Spanned<String>>,
    budget: Option<Spanned<BudgetEntry>>,
    mailbox: Option<usize>,
    thread: Option<Spanned<String>>,
    cpus: Option<Vec<usize>>,
    #[serde(default)]
    needs: Vec<String>,
    start_timeout: Option<Spanned<String>>,
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchFile {
    node: NodeSection,
    #[serde(default, rename = "worker")]
    workers: Vec<WorkerEntry>,
    #[serde(default, rename = "module")]
    modules: Vec<ModuleEntry>,
}

/// Where a module runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    Thread,
    Child,
    Pipe(String),
    Worker(String),
}

/// A launch file, read and checked as TOML; [`Launch::builder`] checks the
/// rest against the binary's module types.
#[derive(Debug)]
pub struct Launch {
    file: PathBuf,
    text: String,
    launch: LaunchFile,
}

impl Launch {
    /// Reads and parses the launch file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Launch, LaunchError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| LaunchError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the launch file: {error}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses a launch file's `text`; `file` names it in errors, and token
    /// files are found relative to its directory.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<Launch, LaunchError> {
        let file = file.as_ref().to_owned();
        let launch: LaunchFile = toml::from_str(text).map_err(|error| {
            let (line, column) = error.span().map_or((0, 0), |span| line_column(text, span.start));
            let mut message = error.message().trim_end().to_owned();
            // A value of the wrong kind: name the field it was given for.
            if let Some(key) = error.span().and_then(|span| key_of_line(text, span.start)) {
                if !message.contains(&format!("`{key}`")) {
                    message = format!("field `{key}`: {message}");
                }
            }
            LaunchError {
                file: file.clone(),
                line,
                column,
                message,
            }
        })?;
        Ok(Launch {
            file,
            text: text.to_owned(),
            launch,
        })
    }

    /// The robot node's name.
    pub fn node_name(&self) -> &str {
        self.launch.node.name.get_ref()
    }

    fn error(&self, span: Range<usize>, message: String) -> LaunchError {
        let (line, column) = line_column(&self.text, span.start);
        LaunchError {
            file: self.file.clone(),
            line,
            column,
            message,
        }
    }

    /// The builder of the node this process is in `role`: `register` adds
    /// the module types the binary knows (`|b| b.register("motor", …)`).
    /// Everything the file says is checked here, against those types.
    pub fn builder(
        &self,
        role: &Role,
        register: impl FnOnce(NodeBuilder) -> NodeBuilder,
    ) -> Result<NodeBuilder, LaunchError> {
        let node = &self.launch.node;
        if let Some(token) = &node.token {
            return Err(self.error(
                token.span(),
                "node, field `token`: a token must not be written in the launch file; put it in a file only \
                 its owner can read and name that file with `token_file`"
                    .to_owned(),
            ));
        }
        let placements = self.placements()?;
        let links = self.link_config()?;
        let name = match role {
            Role::Robot => node.name.get_ref().clone(),
            Role::Module(module) => format!("{}-{module}", node.name.get_ref()),
            Role::Worker(worker) => worker.clone(),
        };
        let mut builder = register(Node::builder(&name)).link_config(links);
        // Types first: every module names one this binary registers.
        for (module, _) in &placements {
            if !builder.has_type(module.module_type.get_ref()) {
                let types = builder.types();
                let known = match types.is_empty() {
                    true => "this binary registers none".to_owned(),
                    false => format!("this binary registers {}", types.join(", ")),
                };
                return Err(self.error(
                    module.module_type.span(),
                    format!(
                        "module `{}`, field `type`: unknown module type `{}`; {known}",
                        module.name.get_ref(),
                        module.module_type.get_ref()
                    ),
                ));
            }
        }
        match role {
            Role::Robot => {
                for endpoint in &node.listen {
                    builder = builder.listen(endpoint.get_ref());
                }
                for endpoint in &node.join {
                    builder = builder.join(endpoint.get_ref());
                }
                // A module joined through a pipe joins the robot there: the
                // robot listens at each such endpoint it does not join.
                let mut listened: BTreeSet<&str> = node.listen.iter().map(|e| e.get_ref().as_str()).collect();
                for (module, placement) in &placements {
                    let options = self.options(module)?;
                    let name = module.name.get_ref();
                    let module_type = module.module_type.get_ref();
                    builder = match placement {
                        Placement::Thread | Placement::Child => {
                            let options = match placement {
                                Placement::Child => options.in_child(),
                                _ => options,
                            };
                            builder
                                .module_of_type(name, module_type, &self.args(module), options)
                                .map_err(|error| self.error(module.name.span(), format!("module `{name}`: {error}")))?
                        }
                        Placement::Pipe(endpoint) => {
                            let joined = node.join.iter().any(|j| j.get_ref() == endpoint);
                            if !joined && listened.insert(endpoint) {
                                builder = builder.listen(endpoint);
                            }
                            builder
                        }
                        Placement::Worker(worker) => {
                            let args: serde_json::Value =
                                serde_json::from_str(&self.args(module)).expect("arguments are JSON");
                            builder.worker_module(name, worker, module_type, &args, options)
                        }
                    };
                }
                Ok(builder)
            }
            Role::Module(wanted) => {
                let Some((module, placement)) = placements.iter().find(|(m, _)| m.name.get_ref() == wanted) else {
                    return Err(LaunchError {
                        file: self.file.clone(),
                        line: 0,
                        column: 0,
                        message: format!("no module `{wanted}` in the launch file"),
                    });
                };
                let Placement::Pipe(endpoint) = placement else {
                    return Err(self.error(
                        module.name.span(),
                        format!(
                            "module `{wanted}` is not placed `pipe:<endpoint>`: it is not started as a process of its own"
                        ),
                    ));
                };
                let options = self.options(module)?;
                builder
                    .join(endpoint)
                    .module_of_type(wanted, module.module_type.get_ref(), &self.args(module), options)
                    .map_err(|error| self.error(module.name.span(), format!("module `{wanted}`: {error}")))
            }
            Role::Worker(wanted) => {
                let Some(worker) = self.launch.workers.iter().find(|w| w.name.get_ref() == wanted) else {
                    return Err(LaunchError {
                        file: self.file.clone(),
                        line: 0,
                        column: 0,
                        message: format!("no worker `{wanted}` in the launch file (declare it under [[worker]])"),
                    });
                };
                Ok(builder.worker().join(worker.connect.get_ref()))
            }
        }
    }

    /// Every module with where it runs, checked.
    fn placements(&self) -> Result<Vec<(&ModuleEntry, Placement)>, LaunchError> {
        let mut seen = BTreeSet::new();
        let mut placed = Vec::with_capacity(self.launch.modules.len());
        for module in &self.launch.modules {
            let name = module.name.get_ref();
            if !seen.insert(name.as_str()) {
                return Err(self.error(
                    module.name.span(),
                    format!("module `{name}`, field `name`: a second module of this name"),
                ));
            }
            let placement = match &module.placement {
                None => Placement::Thread,
                Some(placement) => {
                    let text = placement.get_ref();
                    let parsed = match text.split_once(':') {
                        None if text == "thread" => Some(Placement::Thread),
                        None if text == "child" => Some(Placement::Child),
                        Some(("pipe", endpoint)) if endpoint.starts_with("pipe://") => {
                            Some(Placement::Pipe(endpoint.to_owned()))
                        }
                        Some(("worker", worker)) if !worker.is_empty() => Some(Placement::Worker(worker.to_owned())),
                        _ => None,
                    };
                    let Some(parsed) = parsed else {
                        return Err(self.error(
                            placement.span(),
                            format!(
                                "module `{name}`, field `placement`: unknown placement `{text}`; expected `thread`, \
                                 `child`, `pipe:pipe://<name>` or `worker:<worker name>`"
                            ),
                        ));
                    };
                    if let Placement::Worker(worker) = &parsed {
                        if !self.launch.workers.iter().any(|w| w.name.get_ref() == worker) {
                            return Err(self.error(
                                placement.span(),
                                format!(
                                    "module `{name}`, field `placement`: no worker `{worker}` is declared (add it under [[worker]])"
                                ),
                            ));
                        }
                    }
                    parsed
                }
            };
            placed.push((module, placement));
        }
        Ok(placed)
    }

    /// The node's links: its token (from the file it names), whether it
    /// may listen insecurely, and the thread they run on.
    fn link_config(&self) -> Result<LinkConfig, LaunchError> {
        let node = &self.launch.node;
        let token = match &node.token_file {
            None => None,
            Some(file) => {
                let path = self.file.parent().unwrap_or(Path::new("")).join(file.get_ref());
                Some(
                    botbus_actors::read_token(&path)
                        .map_err(|error| self.error(file.span(), format!("node, field `token_file`: {error}")))?,
                )
            }
        };
        Ok(LinkConfig {
            token,
            insecure: node.insecure,
            thread: node.link_thread.clone(),
            ..LinkConfig::default()
        })
    }

    /// A module's arguments as JSON text (`null` when it has none).
    fn args(&self, module: &ModuleEntry) -> String {
        match &module.args {
            None => "null".to_owned(),
            Some(args) => serde_json::to_string(args).expect("TOML values are JSON values"),
        }
    }

    /// A module's hosting options.
    fn options(&self, module: &ModuleEntry) -> Result<ModuleOptions, LaunchError> {
        let name = module.name.get_ref();
        let duration = |field: &str, text: &Spanned<String>| {
            humantime::parse_duration(text.get_ref()).map_err(|error| {
                self.error(
                    text.span(),
                    format!(
                        "module `{name}`, field `{field}`: `{}` is not a duration ({error}); expected e.g. `500ms`, `5s`, `1m`",
                        text.get_ref()
                    ),
                )
            })
        };
        let mut options = ModuleOptions::new();
        if let Some(restart) = &module.restart {
            options = options.restart(match restart.get_ref().as_str() {
                "never" => RestartPolicy::Never,
                "on-failure" => RestartPolicy::OnFailure,
                "always" => RestartPolicy::Always,
                other => {
                    return Err(self.error(
                        restart.span(),
                        format!(
                            "module `{name}`, field `restart`: unknown policy `{other}`; expected `never`, `on-failure` or `always`"
                        ),
                    ))
                }
            });
        }
        if let Some(budget) = &module.budget {
            let within: Duration = duration("budget.within", &budget.get_ref().within)?;
            options = options.budget(budget.get_ref().restarts, within);
        }
        if let Some(mailbox) = module.mailbox {
            options = options.mailbox(mailbox);
        }
        if let Some(thread) = &module.thread {
            options = match thread.get_ref().as_str() {
                "pool" => options,
                "own" => options.own_thread(),
                shared => options.thread(shared),
            };
        }
        if let Some(cpus) = &module.cpus {
            options = options.cpus(cpus.iter().copied());
        }
        if let Some(timeout) = &module.start_timeout {
            options = options.start_timeout(duration("start_timeout", timeout)?);
        }
        for need in &module.needs {
            options = options.needs(need);
        }
        Ok(options)
    }
}

/// The key of the `key = value` line that byte `offset` of `text` lies in
/// the value of, if it does.
fn key_of_line(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
    let (key, _) = text[start..offset].split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    bare.then_some(key)
}

/// The line and column (from 1) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn offsets_become_lines_and_columns_from_one() {
        let text = "ab\ncde\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 3));
    }
}
