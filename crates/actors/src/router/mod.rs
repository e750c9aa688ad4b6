//! The router: the node's one table of where every module lives, and the
//! [`Bus`] that every module's context talks to.
//!
//! Each module name this node can reach maps to one [`Route`]: *local* (a
//! mailbox here), *child* (a module of this node in a child process, over
//! that child's link) or *via* a link to another node. A second table holds
//! the best path to every other node, for `node/module` addresses, topic
//! subscriptions and downs.
//!
//! A node is a router, not only an endpoint: frames that arrive on a link
//! for a module it does not host are passed on by the same table, so
//! sibling children, chains of nodes and a hub with many joined processes
//! all work with the same code.
//!
//! * **Announces** are path vectors: a node tells each link its own modules
//!   and subscriptions and, for every other node it can reach (not through
//!   that link: split horizon), the path there. A receiver refuses a path
//!   that holds its own name, so routes never loop, and takes the shortest
//!   (ties: the link whose peer's name sorts first). A node's own modules
//!   are never echoed back to it.
//! * **The same module name at two nodes** is a clash: this node's own
//!   module wins, then the one fewer hops away, then the one on the node
//!   whose name sorts first; the clash is logged.
//! * **Publishes** carry the nodes they are for: each node delivers to its
//!   own subscribers if it is listed and splits the rest by next hop, so
//!   each subscriber gets exactly one copy and nothing circulates.
//! * **Downs** from other nodes are passed on only when they arrive over
//!   the best link towards the node they are about (reverse-path
//!   forwarding), so they too never circulate.
//!
//! Lookups happen on the sender's own thread against shared tables (a read
//! lock, no actor hop): a tell is one lookup and one bounded-channel send
//! straight into the target's mailbox.

mod inbound;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use botbus_core::announce::Announcement;
use botbus_core::{
    address, AskError, Bus, CancelHook, Down, DownReason, Envelope, EnvelopeKind, Frame, Payload, Reach, SendError,
    SenderAddress, TopicPattern, TryDeliverError,
};
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::link::LinkHandle;
use crate::mailbox::{Mailbox, Refused};
use crate::names::NameMap;

/// What a node knows about one of its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleStatus {
    /// Its `started` hook is running (first start or a restart).
    Starting,
    /// It takes messages.
    Running,
    /// Its instance just ended — a panic, a failing hook, a lost child
    /// process — and asks it was handling are failing: the supervisor
    /// restarts it (`Starting` next) or, if its policy or budget says so,
    /// marks it `Failed`. Messages sent meanwhile wait in its mailbox.
    Restarting,
    /// It stopped normally.
    Stopped,
    /// It failed and will not be restarted.
    Failed(String),
}

#[derive(Clone)]
pub(crate) struct LocalModule {
    pub(crate) mailbox: Mailbox,
}

/// Where one module name leads.
#[derive(Clone)]
enum Route {
    /// A mailbox on this node.
    Local(LocalModule),
    /// A module of this node in a child process, over the link to the child
    /// while it is up (`None` while it is being (re)started).
    Child(Option<Arc<LinkHandle>>),
    /// A module on another node, through `link`.
    Via {
        link: Arc<LinkHandle>,
        node: Arc<str>,
        /// What it is called on the link: its bare name when `node` is the
        /// next hop, else `node/module`, so that the nodes between route it
        /// the same way. Made once per table, not per message.
        there: Arc<str>,
        /// `node` speaks only JSON.
        json: bool,
    },
}

/// The best way to another node, and what lives there.
#[derive(Clone)]
struct NodeRoute {
    link: Arc<LinkHandle>,
    /// From the link's peer to the node, the node last.
    path: Vec<String>,
    modules: Vec<String>,
    subscriptions: Vec<TopicPattern>,
    /// The node speaks only JSON (a JSON link to it, or announced so).
    json: bool,
}

/// Copies of a publish by the link each leaves on, with the nodes it is for
/// and whether one of them speaks only JSON.
pub(crate) type PublishCopies = Vec<(Arc<LinkHandle>, Vec<String>, bool)>;

/// The names of the framework's own modules begin so (`botbus.node`,
/// `botbus.worker`): every node may have one, so they are addressed with
/// their node (`robot/botbus.node`) and never listed as a node's modules.
pub(crate) const FRAMEWORK_PREFIX: &str = "botbus.";

/// Where a send to `to` goes.
enum Target<'to> {
    Local(LocalModule),
    /// Over `link`, addressed to `to` there (borrowed from the address sent
    /// to, or the route's own name for it); `json` if it is for a node that
    /// speaks only JSON.
    Link(Arc<LinkHandle>, There<'to>, bool),
    /// A child module whose process is being (re)started.
    Restarting,
}

/// The name a send goes by on its link: part of the address it was sent
/// to, or the name its route keeps.
enum There<'to> {
    Borrowed(&'to str),
    Shared(Arc<str>),
}

impl std::ops::Deref for There<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            There::Borrowed(name) => name,
            There::Shared(name) => name,
        }
    }
}

struct Subscription {
    pattern: TopicPattern,
    module: Arc<str>,
}

struct Monitor {
    target: String,
    watcher: Arc<str>,
    /// The target became unreachable and the watcher was told. The monitor
    /// holds: once the target can be reached again (the link came back), it
    /// is armed again, and a later stop or failure is told as usual.
    lost: bool,
}

/// Messages published on one topic, by publisher (`node/module`).
type PublishCounts = HashMap<Arc<str>, u64>;

pub(crate) struct Router {
    node: String,
    /// The one table: every module name this node can reach.
    routes: RwLock<NameMap<Arc<str>, Route>>,
    /// The best route to every other node this node can reach.
    nodes: RwLock<HashMap<String, NodeRoute>>,
    /// The process id of each child module's running process.
    child_pids: Mutex<HashMap<String, u32>>,
    links: RwLock<Vec<Arc<LinkHandle>>>,
    subscriptions: RwLock<Vec<Subscription>>,
    monitors: Mutex<Vec<Monitor>>,
    /// This node's modules placed on workers: module → worker.
    on_workers: RwLock<HashMap<String, String>>,
    /// Why a module placed on a worker went down there, as the worker said.
    worker_downs: Mutex<HashMap<String, DownReason>>,
    /// What each in-process module takes and answers (wire names).
    module_types: Mutex<HashMap<String, (Option<&'static str>, &'static str)>>,
    /// How often each module was restarted.
    restarts: Mutex<HashMap<String, u32>>,
    status: Mutex<HashMap<String, ModuleStatus>>,
    /// Modules a worker here started on another node's request: module →
    /// that node.
    placed_by: Mutex<HashMap<String, String>>,
    /// Messages this node's modules published: topic → publisher → count.
    published: Mutex<HashMap<Arc<str>, PublishCounts>>,
    /// Serialises every reshaping of the route table: held while routes
    /// are recomputed and announced (two changes cannot interleave and
    /// leave an older table in place), and while a module's `down` goes
    /// out. Holds the module name clashes last logged.
    reshaping: Mutex<BTreeSet<String>>,
    /// Bumped on every change of modules, links, subscriptions or status, so
    /// callers can wait for a condition instead of sleeping.
    topology: watch::Sender<u64>,
}

impl Router {
    pub(crate) fn new(node: &str) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_owned(),
            routes: RwLock::default(),
            nodes: RwLock::default(),
            child_pids: Mutex::default(),
            links: RwLock::default(),
            subscriptions: RwLock::default(),
            monitors: Mutex::default(),
            on_workers: RwLock::default(),
            worker_downs: Mutex::default(),
            module_types: Mutex::default(),
            restarts: Mutex::default(),
            status: Mutex::default(),
            placed_by: Mutex::default(),
            published: Mutex::default(),
            reshaping: Mutex::default(),
            topology: watch::Sender::new(0),
        })
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Wakes everyone waiting on a topology condition.
    pub(crate) fn changed(&self) {
        self.topology.send_modify(|v| *v += 1);
    }

    pub(crate) fn watch_topology(&self) -> watch::Receiver<u64> {
        self.topology.subscribe()
    }

    // ---- this node's modules -------------------------------------------

    pub(crate) fn add_local(&self, name: Arc<str>, module: LocalModule) {
        self.routes
            .write()
            .expect("router lock")
            .insert(name, Route::Local(module));
        self.refresh();
    }

    /// A module of this node that runs in a child process.
    pub(crate) fn add_child(&self, name: Arc<str>) {
        self.routes
            .write()
            .expect("router lock")
            .insert(name, Route::Child(None));
        self.refresh();
    }

    /// Routes child module `name` over `link` (or nowhere, while it restarts).
    pub(crate) fn set_child_link(&self, name: &str, link: Option<Arc<LinkHandle>>) {
        if let Some(Route::Child(slot)) = self.routes.write().expect("router lock").get_mut(name) {
            *slot = link;
        }
        self.changed();
    }

    /// Records (or clears) the process id of child module `name`.
    pub(crate) fn set_child_pid(&self, name: &str, pid: Option<u32>) {
        let mut pids = self.child_pids.lock().expect("router lock");
        match pid {
            Some(pid) => pids.insert(name.to_owned(), pid),
            None => pids.remove(name),
        };
    }

    /// The process id of child module `name`, while its process runs.
    pub(crate) fn child_pid(&self, name: &str) -> Option<u32> {
        self.child_pids.lock().expect("router lock").get(name).copied()
    }

    /// Whether `name` is still a child module of this node (not gone for good).
    pub(crate) fn has_child(&self, name: &str) -> bool {
        matches!(
            self.routes.read().expect("router lock").get(name),
            Some(Route::Child(_))
        )
    }

    pub(crate) fn set_status(&self, name: &str, status: ModuleStatus) {
        self.status.lock().expect("router lock").insert(name.to_owned(), status);
        self.changed();
    }

    pub(crate) fn status(&self, name: &str) -> Option<ModuleStatus> {
        self.status.lock().expect("router lock").get(name).cloned()
    }

    /// Forgets what an ended instance of `name` set up: its subscriptions and
    /// the monitors it held. A restarted instance sets up its own.
    pub(crate) fn clear_instance(&self, name: &str) {
        let dropped = {
            let mut subs = self.subscriptions.write().expect("router lock");
            let before = subs.len();
            subs.retain(|s| &*s.module != name);
            before != subs.len()
        };
        self.monitors
            .lock()
            .expect("router lock")
            .retain(|m| &*m.watcher != name);
        if dropped {
            self.refresh();
        }
    }

    /// `name` is gone for good: no more route, its monitors are told, and the
    /// peers hear of it.
    pub(crate) fn module_down(&self, name: &str, reason: DownReason) {
        self.clear_instance(name);
        // No announcement may go out between the route's removal and the
        // `down`: a peer that heard the route withdrawn first would tell its
        // monitors "unreachable" instead of why the module went down. So the
        // reshaping lock is held until the `down` is on its way.
        let reshaping = self.reshaping.lock().expect("router lock");
        let removed = {
            let mut routes = self.routes.write().expect("router lock");
            match routes.get(name) {
                Some(Route::Local(_) | Route::Child(_)) => routes.remove(name).is_some(),
                _ => false,
            }
        };
        let status = match &reason {
            DownReason::Failed(why) => ModuleStatus::Failed(why.clone()),
            _ => ModuleStatus::Stopped,
        };
        if !removed {
            // Already down (a child said so itself, and its status says
            // why), or hosted elsewhere (on a worker, which tells its own
            // monitors): only its status is this node's to set.
            let mut statuses = self.status.lock().expect("router lock");
            if !matches!(
                statuses.get(name),
                Some(ModuleStatus::Stopped | ModuleStatus::Failed(_))
            ) {
                statuses.insert(name.to_owned(), status);
            }
            return;
        }
        self.status.lock().expect("router lock").insert(name.to_owned(), status);
        let qualified = format!("{}/{name}", self.node);
        self.notify_monitors(|target| target == name || target == qualified, &reason);
        self.broadcast(
            &Frame::Down {
                module: name.to_owned(),
                reason,
            },
            None,
        );
        drop(reshaping);
        self.refresh();
    }

    /// The modules of this node: hosted here or in its child processes.
    pub(crate) fn local_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .routes
            .read()
            .expect("router lock")
            .iter()
            .filter(|(_, route)| matches!(route, Route::Local(_) | Route::Child(_)))
            .map(|(name, _)| name.to_string())
            .collect();
        names.sort();
        names
    }

    // ---- links ---------------------------------------------------------

    pub(crate) fn add_link(&self, link: Arc<LinkHandle>) -> Result<(), String> {
        let mut links = self.links.write().expect("router lock");
        if links.iter().any(|l| l.peer() == link.peer()) {
            return Err(format!("a link to node `{}` is already up", link.peer()));
        }
        links.push(link);
        drop(links);
        self.refresh();
        Ok(())
    }

    /// A link closed: everything waiting on it ends now, and whatever was
    /// reachable only through it is not any more.
    pub(crate) fn remove_link(&self, link: &Arc<LinkHandle>, reason: &str) {
        // The link leaves the list and its routes leave the table at once:
        // nobody sees the one without the other (a node with no peers
        // that still routes through the link it lost).
        {
            let mut clashes = self.reshaping.lock().expect("router lock");
            let mut links = self.links.write().expect("router lock");
            links.retain(|l| !Arc::ptr_eq(l, link));
            self.recompute(&links, &mut clashes);
        }
        if let Some(child) = link.child_of() {
            // The child's process is lost: new messages wait for the next
            // one; then (unless this node is stopping it) its status says
            // so, before any ask it was handling fails; its host decides
            // whether it comes back.
            if let Some(Route::Child(slot)) = self.routes.write().expect("router lock").get_mut(child) {
                if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
                    *slot = None;
                }
            }
            if !link.closed_by_us() && self.status(child) == Some(ModuleStatus::Running) {
                self.set_status(child, ModuleStatus::Restarting);
            }
        }
        link.fail_all(reason);
        self.refresh_because(&format!("link to `{}` closed: {reason}", link.peer()));
    }

    pub(crate) fn links(&self) -> Vec<Arc<LinkHandle>> {
        self.links.read().expect("router lock").clone()
    }

    /// Sends `frame` on every link but `except`.
    fn broadcast(&self, frame: &Frame, except: Option<&LinkHandle>) {
        for link in self.links() {
            if except.is_some_and(|except| std::ptr::eq(except, &*link)) {
                continue;
            }
            link.send_control(frame);
        }
    }

    // ---- the route table -----------------------------------------------

    /// Recomputes the routes after a change, tells every link what it can
    /// now reach through this node, and wakes everyone waiting on a change.
    pub(crate) fn refresh(&self) {
        self.refresh_because("its route was withdrawn");
    }

    fn refresh_because(&self, why: &str) {
        {
            let mut clashes = self.reshaping.lock().expect("router lock");
            let links = self.links();
            self.recompute(&links, &mut clashes);
            for link in links {
                link.announce(self.announcement_for(&link));
            }
        }
        self.fire_unreachable_monitors(why);
        self.changed();
    }

    /// Rebuilds the node table and the `via` routes from what each of
    /// `links` announced. `clashes` are those already logged.
    fn recompute(&self, links: &[Arc<LinkHandle>], clashes: &mut BTreeSet<String>) {
        let mut nodes: HashMap<String, NodeRoute> = HashMap::new();
        let mut offer = |link: &Arc<LinkHandle>,
                         node: &str,
                         path: Vec<String>,
                         modules: &[String],
                         subs: &[TopicPattern],
                         json: bool| {
            if node == self.node || path.contains(&self.node) {
                return; // a loop back through this node
            }
            let better = match nodes.get(node) {
                None => true,
                Some(known) => (path.len(), link.peer()) < (known.path.len(), known.link.peer()),
            };
            if better {
                nodes.insert(
                    node.to_owned(),
                    NodeRoute {
                        link: link.clone(),
                        path,
                        modules: modules.to_vec(),
                        subscriptions: subs.to_vec(),
                        json,
                    },
                );
            }
        };
        for link in links {
            let remote = link.remote();
            if !remote.announced {
                // A link up but not yet announced knows nothing of what is
                // behind it: as the shortest path it would replace a route
                // through another link with an empty one (a subscriber's
                // node would drop out of every publish until the announce).
                continue;
            }
            let own: Vec<String> = remote
                .modules
                .iter()
                .filter(|m| link.child_of() != Some(m.as_str())) // this node's own child module
                .cloned()
                .collect();
            let json_link = link.codec() == botbus_core::CodecKind::Json;
            offer(
                link,
                link.peer(),
                vec![link.peer().to_owned()],
                &own,
                &remote.subscriptions,
                json_link,
            );
            for reach in &remote.reach {
                let mut path = Vec::with_capacity(reach.path.len() + 1);
                path.push(link.peer().to_owned());
                path.extend(reach.path.iter().cloned());
                offer(
                    link,
                    &reach.node,
                    path,
                    &reach.modules,
                    &reach.subscriptions,
                    reach.json,
                );
            }
        }

        // Each module name at its best node.
        let mut best: HashMap<&str, (&str, &NodeRoute)> = HashMap::new();
        let mut seen_at: HashMap<&str, Vec<&str>> = HashMap::new();
        for (node, route) in &nodes {
            // The framework's own modules (`botbus.…`) run on every node
            // that has them and are named with their node: no route by
            // their bare name, and no clash.
            for module in route.modules.iter().filter(|m| !m.starts_with(FRAMEWORK_PREFIX)) {
                seen_at.entry(module).or_default().push(node);
                let better = match best.get(module.as_str()) {
                    None => true,
                    Some((known, known_route)) => (route.path.len(), node.as_str()) < (known_route.path.len(), *known),
                };
                if better {
                    best.insert(module, (node, route));
                }
            }
        }
        let mut routes = self.routes.write().expect("router lock");
        routes.retain(|_, route| !matches!(route, Route::Via { .. }));
        let mut clashing = BTreeSet::new();
        for (module, (node, route)) in best {
            let mut at = seen_at.remove(module).unwrap_or_default();
            if routes.contains_key(module) {
                at.push(&self.node);
            } else {
                let there = match route.path.len() {
                    1 => Arc::from(module),
                    _ => Arc::from(format!("{node}/{module}")),
                };
                routes.insert(
                    Arc::from(module),
                    Route::Via {
                        link: route.link.clone(),
                        node: Arc::from(node),
                        there,
                        json: route.json,
                    },
                );
            }
            if at.len() > 1 {
                at.sort_unstable();
                let entry = format!("{module} at {}", at.join(", "));
                if !clashes.contains(&entry) {
                    let chosen = if routes.get(module).is_some_and(|r| !matches!(r, Route::Via { .. })) {
                        self.node.as_str()
                    } else {
                        node
                    };
                    tracing::warn!(
                        node = %self.node,
                        %module,
                        nodes = ?at,
                        %chosen,
                        "module name clash: the same name is reachable at several nodes; using this node's own, else the nearest, else the first by name"
                    );
                }
                clashing.insert(entry);
            }
        }
        *clashes = clashing;
        drop(routes);
        *self.nodes.write().expect("router lock") = nodes;
    }

    /// What `link`'s peer can reach through this node: this node's own
    /// modules and subscriptions (never the peer's own module echoed back),
    /// and every node whose best route does not go through that peer.
    fn announcement_for(&self, link: &Arc<LinkHandle>) -> Announcement {
        let mut modules = self.local_names();
        modules.retain(|m| link.child_of() != Some(m.as_str()));
        let mut subscriptions: Vec<String> = self
            .subscriptions
            .read()
            .expect("router lock")
            .iter()
            .map(|s| s.pattern.as_str().to_owned())
            .collect();
        subscriptions.sort();
        subscriptions.dedup();
        let own: std::collections::HashSet<&str> = modules.iter().map(String::as_str).collect();
        let nodes = self.nodes.read().expect("router lock");
        let mut reach: Vec<Reach> = nodes
            .iter()
            .filter(|(node, route)| {
                node.as_str() != link.peer()
                    && !Arc::ptr_eq(&route.link, link)
                    && !route.path.iter().any(|n| n == link.peer())
            })
            .map(|(node, route)| Reach {
                node: node.clone(),
                path: route.path.clone(),
                // A child's module is announced as this node's own; the
                // framework's own modules are every node's.
                modules: route
                    .modules
                    .iter()
                    .filter(|m| m.starts_with(FRAMEWORK_PREFIX) || !own.contains(m.as_str()))
                    .cloned()
                    .collect(),
                subscriptions: route.subscriptions.iter().map(|p| p.as_str().to_owned()).collect(),
                json: route.json,
            })
            .collect();
        reach.sort_by(|a, b| a.node.cmp(&b.node));
        Announcement {
            modules,
            subscriptions,
            reach,
        }
    }

    /// Where a send to `to` goes from here.
    fn target<'to>(&self, to: &'to str) -> Result<Target<'to>, SendError> {
        let unknown = || SendError::UnknownModule(to.to_owned());
        let (node, module) = address::split(to);
        let here = match node {
            // `module`: wherever the table says.
            None => true,
            // `this-node/module`: only this node's own.
            Some(node) if node == self.node => false,
            // `other-node/module`: the best way to that node.
            Some(node) => {
                let nodes = self.nodes.read().expect("router lock");
                let route = nodes.get(node).ok_or_else(unknown)?;
                let to = if route.path.len() == 1 { module } else { to };
                return Ok(Target::Link(route.link.clone(), There::Borrowed(to), route.json));
            }
        };
        match self.routes.read().expect("router lock").get(module) {
            Some(Route::Local(local)) => Ok(Target::Local(local.clone())),
            Some(Route::Child(Some(link))) => Ok(Target::Link(link.clone(), There::Borrowed(module), false)),
            Some(Route::Child(None)) => Ok(Target::Restarting),
            Some(Route::Via {
                link,
                node,
                there,
                json,
            }) if here
                || self
                    .on_workers
                    .read()
                    .expect("router lock")
                    .get(module)
                    .map(String::as_str)
                    == Some(&**node) =>
            {
                Ok(Target::Link(link.clone(), There::Shared(there.clone()), *json))
            }
            _ if here => match self.on_workers.read().expect("router lock").get(module) {
                // This node's module, on a worker that is away: it ends now,
                // as an ask to a crashed child does.
                // Reads "module `m` on worker `w` has stopped".
                Some(worker) => Err(SendError::Stopped(format!("{module}` on worker `{worker}"))),
                None => Err(unknown()),
            },
            _ => Err(unknown()),
        }
    }

    /// The other nodes this one has a route to, sorted.
    pub(crate) fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.read().expect("router lock").keys().cloned().collect();
        names.sort();
        names
    }

    /// Every subscription here: (pattern, module), sorted.
    pub(crate) fn subscription_list(&self) -> Vec<(String, String)> {
        let mut list: Vec<(String, String)> = self
            .subscriptions
            .read()
            .expect("router lock")
            .iter()
            .map(|s| (s.pattern.as_str().to_owned(), s.module.to_string()))
            .collect();
        list.sort();
        list
    }

    /// In-process module `name` takes `types.0` and answers `types.1`.
    pub(crate) fn set_types(&self, name: &str, types: (Option<&'static str>, &'static str)) {
        self.module_types
            .lock()
            .expect("router lock")
            .insert(name.to_owned(), types);
    }

    /// Module `name` is being restarted once more.
    pub(crate) fn count_restart(&self, name: &str) {
        *self
            .restarts
            .lock()
            .expect("router lock")
            .entry(name.to_owned())
            .or_default() += 1;
    }

    /// What this node hosts and places, module by module, as a tool that
    /// asks is told (see `NodeInfo`).
    pub(crate) fn module_infos(&self) -> Vec<crate::node::ModuleInfo> {
        let routes = self.routes.read().expect("router lock");
        let statuses = self.status.lock().expect("router lock").clone();
        let restarts = self.restarts.lock().expect("router lock").clone();
        let types = self.module_types.lock().expect("router lock").clone();
        let pids = self.child_pids.lock().expect("router lock").clone();
        let on_workers = self.on_workers.read().expect("router lock").clone();
        let placed_by = self.placed_by.lock().expect("router lock").clone();
        let mut names: BTreeSet<String> = routes
            .iter()
            .filter(|(_, route)| matches!(route, Route::Local(_) | Route::Child(_)))
            .map(|(name, _)| name.to_string())
            .collect();
        names.extend(on_workers.keys().cloned());
        names
            .into_iter()
            .filter(|name| !name.starts_with(FRAMEWORK_PREFIX))
            .map(|name| {
                let (placement, mailbox, pid) = match routes.get(name.as_str()) {
                    Some(Route::Local(local)) => (
                        "thread".to_owned(),
                        Some(local.mailbox.waiting()),
                        Some(std::process::id()),
                    ),
                    Some(Route::Child(_)) => ("child".to_owned(), None, pids.get(&name).copied()),
                    _ => match on_workers.get(&name) {
                        Some(worker) => (format!("worker:{worker}"), None, None),
                        None => ("thread".to_owned(), None, None),
                    },
                };
                let state = match statuses.get(&name) {
                    None | Some(ModuleStatus::Starting) => "starting".to_owned(),
                    Some(ModuleStatus::Running) => "running".to_owned(),
                    Some(ModuleStatus::Restarting) => "restarting".to_owned(),
                    Some(ModuleStatus::Stopped) => "stopped".to_owned(),
                    Some(ModuleStatus::Failed(why)) => format!("failed: {why}"),
                };
                let (takes, answers) = types.get(&name).copied().unwrap_or((None, ""));
                crate::node::ModuleInfo {
                    pid,
                    placed_by: placed_by.get(&name).cloned(),
                    restarts: restarts.get(&name).copied().unwrap_or(0),
                    mailbox,
                    takes: takes.map(str::to_owned),
                    answers: (!answers.is_empty()).then(|| answers.to_owned()),
                    placement,
                    state,
                    name,
                }
            })
            .collect()
    }

    /// This node's links, by peer.
    pub(crate) fn link_infos(&self) -> Vec<crate::node::LinkInfo> {
        let mut infos: Vec<crate::node::LinkInfo> = self
            .links()
            .iter()
            .map(|link| crate::node::LinkInfo {
                peer: link.peer().to_owned(),
                via: link.via().to_owned(),
                kind: match (link.child_of(), link.accepted()) {
                    (Some(_), _) => "child",
                    (None, true) => "accepted",
                    (None, false) => "connected",
                }
                .to_owned(),
            })
            .collect();
        infos.sort_by(|a, b| a.peer.cmp(&b.peer));
        infos
    }

    /// Module `name` publishes on `topic` once more.
    fn count_publish(&self, from: &SenderAddress, topic: &Arc<str>) {
        let mut published = self.published.lock().expect("router lock");
        let by_publisher = match published.get_mut(&**topic) {
            Some(by_publisher) => by_publisher,
            None => published.entry(topic.clone()).or_default(),
        };
        match by_publisher.get_mut(&**from) {
            Some(count) => *count += 1,
            None => {
                by_publisher.insert(Arc::from(&**from), 1);
            }
        }
    }

    /// What this node's modules published, as (topic, publisher, count),
    /// sorted.
    pub(crate) fn publications(&self) -> Vec<crate::node::PublicationInfo> {
        let published = self.published.lock().expect("router lock");
        let mut list: Vec<crate::node::PublicationInfo> = published
            .iter()
            .flat_map(|(topic, by_publisher)| {
                by_publisher
                    .iter()
                    .map(|(module, messages)| crate::node::PublicationInfo {
                        topic: topic.to_string(),
                        module: module.to_string(),
                        messages: *messages,
                    })
            })
            .collect();
        list.sort_by(|a, b| (&a.topic, &a.module).cmp(&(&b.topic, &b.module)));
        list
    }

    /// Module `name` was started here on `node`'s request (`None`: no more).
    pub(crate) fn set_placed_by(&self, name: &str, node: Option<&str>) {
        let mut placed_by = self.placed_by.lock().expect("router lock");
        match node {
            Some(node) => placed_by.insert(name.to_owned(), node.to_owned()),
            None => placed_by.remove(name),
        };
    }

    /// Why module `name`, placed on a worker, last went down there (taken:
    /// asked again, it says nothing until the next down).
    pub(crate) fn take_worker_down(&self, name: &str) -> Option<DownReason> {
        self.worker_downs.lock().expect("router lock").remove(name)
    }

    /// Module `name` of this node runs on worker `worker` (`None`: no more).
    pub(crate) fn place_on_worker(&self, name: &str, worker: Option<&str>) {
        let mut on_workers = self.on_workers.write().expect("router lock");
        match worker {
            Some(worker) => on_workers.insert(name.to_owned(), worker.to_owned()),
            None => on_workers.remove(name),
        };
    }

    /// Hands `envelope` to `to` without waiting: a full mailbox or link
    /// queue, or a child module that is restarting, gives it back as
    /// `Full`. `from` is the link it arrived on, which it never goes back to.
    /// An ask that cannot be routed ends with why ([`refuse`]).
    pub(crate) fn try_route(
        &self,
        to: &str,
        envelope: Envelope,
        from: Option<&Arc<LinkHandle>>,
    ) -> Result<Option<CancelHook>, TryDeliverError> {
        // The hot paths, with one look at the table and nothing cloned: a
        // module here, sent to under the read lock; a child's module, or
        // one another node hosts, queued on its link under it too (queuing
        // never waits, and never looks at the table again).
        let (node, module) = address::split(to);
        if node.is_none_or(|n| n == self.node) {
            let routes = self.routes.read().expect("router lock");
            let over_link = match routes.get(module) {
                Some(Route::Local(local)) => return try_send_local(local, module, envelope),
                Some(Route::Child(Some(link))) => Some((link, module, false)),
                // By bare name, wherever the table found it (by this node's
                // name, only if it is placed on that worker: `target`).
                Some(Route::Via { link, there, json, .. }) if node.is_none() => Some((link, &**there, *json)),
                _ => None,
            };
            if let Some((link, there, json)) = over_link {
                if from.is_some_and(|from| Arc::ptr_eq(from, link)) {
                    return Err(TryDeliverError::Failed(refuse(
                        envelope,
                        back_where_it_came_from(there),
                    )));
                }
                return link.try_send_envelope(there, envelope, json);
            }
        }
        match self.target(to) {
            Ok(Target::Local(local)) => try_send_local(&local, to, envelope),
            Ok(Target::Link(link, to, json)) => {
                if from.is_some_and(|from| Arc::ptr_eq(from, &link)) {
                    return Err(TryDeliverError::Failed(refuse(envelope, back_where_it_came_from(&to))));
                }
                link.try_send_envelope(&to, envelope, json)
            }
            Ok(Target::Restarting) => Err(TryDeliverError::Full(Box::new(envelope))),
            Err(error) => Err(TryDeliverError::Failed(refuse(envelope, error))),
        }
    }

    /// Queues as many of `tells` as there is room for in the mailbox of
    /// `to`, if `to` is a module of this process: one look at the table
    /// and one lock of the mailbox for them all. Those queued are
    /// taken from the front, and how many they were is returned. `None` if
    /// `to` is anything else, or gone (nothing is taken):
    /// [`Router::try_route`] each then, which says why.
    pub(crate) fn try_send_here(&self, to: &str, tells: &mut VecDeque<Envelope>) -> Option<usize> {
        let (node, module) = address::split(to);
        if node.is_some_and(|n| n != self.node) {
            return None;
        }
        match self.routes.read().expect("router lock").get(module) {
            Some(Route::Local(local)) => local.mailbox.try_send_many(tells).ok(),
            _ => None,
        }
    }

    /// Hands `envelope` to `to`, waiting for room — and, for a child module
    /// whose process is restarting, for the new process, as a message waits
    /// in an in-process module's mailbox across a restart. An ask waits no
    /// longer than its deadline.
    pub(crate) async fn route(
        &self,
        to: &str,
        envelope: Envelope,
        from: Option<&Arc<LinkHandle>>,
    ) -> Result<Option<CancelHook>, SendError> {
        let mut changes = self.watch_topology();
        loop {
            changes.borrow_and_update();
            let target = match self.target(to) {
                Ok(target) => target,
                Err(error) => return Err(refuse(envelope, error)),
            };
            match target {
                Target::Local(local) => {
                    return local
                        .mailbox
                        .send(envelope)
                        .await
                        .map(|()| None)
                        .map_err(|_| SendError::Stopped(to.to_owned()))
                }
                Target::Link(link, to, json) => {
                    if from.is_some_and(|from| Arc::ptr_eq(from, &link)) {
                        return Err(refuse(envelope, back_where_it_came_from(&to)));
                    }
                    return link.send_envelope(&to, envelope, json).await;
                }
                Target::Restarting => {
                    let deadline = match &envelope.kind {
                        EnvelopeKind::Ask(ask) => Some(ask.deadline()),
                        _ => None,
                    };
                    let waited = match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, changes.changed()).await,
                        None => Ok(changes.changed().await),
                    };
                    match waited {
                        Ok(Ok(())) => continue,
                        // The node stopped, or the ask's time is up: it
                        // ends `Stopped`, as it would have in a mailbox.
                        _ => return Err(SendError::Stopped(to.to_owned())),
                    }
                }
            }
        }
    }

    // ---- topics --------------------------------------------------------

    /// The modules hosted here that subscribe to `topic`.
    fn local_subscribers(&self, topic: &str) -> Vec<(Arc<str>, LocalModule)> {
        let subs = self.subscriptions.read().expect("router lock");
        let routes = self.routes.read().expect("router lock");
        let mut targets: Vec<(Arc<str>, LocalModule)> = Vec::new();
        for sub in subs.iter().filter(|s| s.pattern.matches(topic)) {
            if targets.iter().any(|(name, _)| *name == sub.module) {
                continue;
            }
            if let Some(Route::Local(local)) = routes.get(&sub.module) {
                targets.push((sub.module.clone(), local.clone()));
            }
        }
        targets
    }

    /// Delivers a publish to the subscribers hosted here; returns how many.
    async fn publish_local(&self, from: &SenderAddress, topic: &Arc<str>, payload: &Payload) -> usize {
        let mut delivered = 0;
        for (_, local) in self.local_subscribers(topic) {
            let envelope = Envelope {
                from: from.clone(),
                payload: payload.clone(),
                kind: EnvelopeKind::Publish { topic: topic.clone() },
            };
            let sent = match local.mailbox.try_send(envelope) {
                Ok(()) => true,
                Err(Refused::Full(envelope)) => local.mailbox.send(envelope).await.is_ok(),
                Err(Refused::Closed(_)) => false,
            };
            delivered += usize::from(sent);
        }
        delivered
    }

    /// The other nodes a publish on `topic` must reach, by the link it
    /// leaves on. `only`: the nodes a received copy is for (all subscribers
    /// when `None`); `from`: the link it arrived on, which it never goes
    /// back to.
    fn remote_subscribers(
        &self,
        topic: &str,
        only: Option<&[String]>,
        from: Option<&Arc<LinkHandle>>,
    ) -> PublishCopies {
        let nodes = self.nodes.read().expect("router lock");
        let mut by_link: PublishCopies = Vec::new();
        let mut add = |node: &str, route: &NodeRoute| {
            if from.is_some_and(|from| Arc::ptr_eq(from, &route.link)) {
                tracing::debug!(node = %self.node, to = node, "not sending a publish back where it came from");
                return;
            }
            match by_link.iter_mut().find(|(link, _, _)| Arc::ptr_eq(link, &route.link)) {
                Some((_, nodes, json)) => {
                    nodes.push(node.to_owned());
                    *json |= route.json;
                }
                None => by_link.push((route.link.clone(), vec![node.to_owned()], route.json)),
            }
        };
        match only {
            Some(only) => {
                for node in only.iter().filter(|n| **n != self.node) {
                    match nodes.get(node) {
                        Some(route) => add(node, route),
                        None => {
                            tracing::debug!(node = %self.node, to = %node, "no route for a publish's subscriber node")
                        }
                    }
                }
            }
            None => {
                for (node, route) in nodes.iter() {
                    if route.subscriptions.iter().any(|p| p.matches(topic)) {
                        add(node, route);
                    }
                }
            }
        }
        by_link
    }

    /// Sends a publish towards other nodes' subscribers; returns how many
    /// links it left on.
    async fn publish_remote(
        &self,
        topic: &str,
        from: &str,
        payload: &Payload,
        targets: PublishCopies,
    ) -> Result<usize, SendError> {
        let mut sent = 0;
        for (link, nodes, json) in targets {
            let frame = Frame::Publish {
                topic: topic.to_owned(),
                from: from.to_owned(),
                payload: link.wire_as(payload, json)?,
                to: nodes,
            };
            if link.send_data(&frame).await.is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Where a publish that arrived on `link` for nodes `to` goes: whether
    /// to this node's own subscribers, and on which links to which other
    /// nodes. An empty `to` (from a simple peer) is for every subscriber.
    pub(crate) fn inbound_publish(&self, link: &Arc<LinkHandle>, topic: &str, to: &[String]) -> (bool, PublishCopies) {
        let here = to.is_empty() || to.contains(&self.node);
        let only = (!to.is_empty()).then_some(to);
        (here, self.remote_subscribers(topic, only, Some(link)))
    }

    /// Passes a received publish on, in the payload it came in (re-encoded
    /// only for a link of another codec).
    pub(crate) async fn forward_publish(&self, topic: &str, from: &str, payload: &Payload, onward: PublishCopies) {
        if let Err(error) = self.publish_remote(topic, from, payload, onward).await {
            tracing::warn!(node = %self.node, %topic, %error, "cannot pass a publish on");
        }
    }

    /// The modules hosted here that subscribe to `topic`.
    pub(crate) fn local_subscriber_names(&self, topic: &str) -> Vec<Arc<str>> {
        self.local_subscribers(topic)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Whether a publish on `topic` would reach a subscriber, here or at
    /// another node.
    pub(crate) fn has_subscriber(&self, topic: &str) -> bool {
        !self.local_subscribers(topic).is_empty()
            || self
                .nodes
                .read()
                .expect("router lock")
                .values()
                .any(|route| route.subscriptions.iter().any(|p| p.matches(topic)))
    }

    /// The nodes with a subscriber of `topic`, this one included.
    pub(crate) fn subscriber_nodes(&self, topic: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .nodes
            .read()
            .expect("router lock")
            .iter()
            .filter(|(_, route)| route.subscriptions.iter().any(|p| p.matches(topic)))
            .map(|(node, _)| node.clone())
            .collect();
        if !self.local_subscribers(topic).is_empty() {
            nodes.push(self.node.clone());
        }
        nodes.sort();
        nodes
    }

    /// Whether `to` resolves to a module, here or at another node — for
    /// `node/module`, one that node announced.
    pub(crate) fn routable(&self, to: &str) -> bool {
        match address::split(to) {
            (Some(node), module) if node != self.node => self
                .nodes
                .read()
                .expect("router lock")
                .get(node)
                .is_some_and(|route| route.modules.iter().any(|m| m == module)),
            _ => self.target(to).is_ok(),
        }
    }

    // ---- downs and monitors --------------------------------------------

    /// A down arrived on `link`: its own module if the link is to this
    /// node's child; otherwise a module at another node, whose monitors here
    /// are told, and which is passed on if it came the best way from there.
    pub(crate) fn remote_down(&self, link: &Arc<LinkHandle>, module: &str, reason: DownReason) {
        if link.child_of() == Some(module) {
            // The child's own module is gone for good: it is this node's module.
            self.module_down(module, reason);
            return;
        }
        let (node, name) = match address::split(module) {
            (Some(node), name) => (node.to_owned(), name),
            (None, name) => (link.peer().to_owned(), name),
        };
        if node == self.node {
            return; // about this node's own module: it knows better
        }
        let best = self
            .nodes
            .read()
            .expect("router lock")
            .get(&node)
            .is_some_and(|route| Arc::ptr_eq(&route.link, link));
        if !best {
            return; // a copy that came another way: the best way brings it too
        }
        if self.on_workers.read().expect("router lock").get(name) == Some(&node) {
            // This node's own module, hosted on that worker, is gone for
            // good there: its status says so before any monitor hears it,
            // as for a child's module, and its host hears why.
            let status = match &reason {
                DownReason::Failed(why) => ModuleStatus::Failed(why.clone()),
                _ => ModuleStatus::Stopped,
            };
            self.status.lock().expect("router lock").insert(name.to_owned(), status);
            self.worker_downs
                .lock()
                .expect("router lock")
                .insert(name.to_owned(), reason.clone());
        }
        let qualified = format!("{node}/{name}");
        let routed_there = matches!(
            self.routes.read().expect("router lock").get(name),
            Some(Route::Via { node: at, .. }) if **at == *node
        );
        self.notify_monitors(
            |target| target == qualified || (routed_there && target == name),
            &reason,
        );
        self.broadcast(
            &Frame::Down {
                module: qualified,
                reason,
            },
            Some(link),
        );
    }

    fn notify_monitors(&self, hit: impl Fn(&str) -> bool, reason: &DownReason) {
        let fired: Vec<Monitor> = {
            let mut monitors = self.monitors.lock().expect("router lock");
            let (fired, kept) = std::mem::take(&mut *monitors).into_iter().partition(|m| hit(&m.target));
            *monitors = kept;
            fired
        };
        if fired.is_empty() {
            return;
        }
        let routes = self.routes.read().expect("router lock");
        for monitor in fired {
            if let Some(Route::Local(watcher)) = routes.get(&monitor.watcher) {
                watcher.mailbox.send_down(Down {
                    module: monitor.target,
                    reason: reason.clone(),
                });
            }
        }
    }

    /// Monitors of modules that can no longer be reached are told so, and
    /// kept: those whose module can be reached again are armed again.
    fn fire_unreachable_monitors(&self, why: &str) {
        let lost: Vec<(String, Arc<str>)> = {
            let mut monitors = self.monitors.lock().expect("router lock");
            let mut lost = Vec::new();
            for monitor in monitors.iter_mut() {
                let reachable = self.routable(&monitor.target);
                if monitor.lost && reachable {
                    tracing::debug!(node = %self.node, target = %monitor.target, watcher = %monitor.watcher, "monitor armed again");
                    monitor.lost = false;
                } else if !monitor.lost && !reachable {
                    monitor.lost = true;
                    lost.push((monitor.target.clone(), monitor.watcher.clone()));
                }
            }
            lost
        };
        if lost.is_empty() {
            return;
        }
        let routes = self.routes.read().expect("router lock");
        for (target, watcher) in lost {
            if let Some(Route::Local(watcher)) = routes.get(&watcher) {
                watcher.mailbox.send_down(Down {
                    module: target,
                    reason: DownReason::Unreachable(why.to_owned()),
                });
            }
        }
    }
}

fn back_where_it_came_from(to: &str) -> SendError {
    SendError::Stopped(format!(
        "{to} (its route leads back over the link it came in on: routes are changing)"
    ))
}

/// Drops `envelope`, which cannot go where it was sent because of `error`:
/// an ask in it ends with that error (an unknown module, say), not just
/// the [`AskError::Stopped`] of a caller dropped unanswered. Wherever the
/// asker is — across a link too — it hears why, and no one looks the
/// table up beforehand to tell it.
fn refuse(envelope: Envelope, error: SendError) -> SendError {
    if let EnvelopeKind::Ask(ask) = envelope.kind {
        ask.into_caller().reply(Err(AskError::from_send(error.clone())));
    }
    error
}

impl Bus for Router {
    fn node_name(&self) -> &str {
        &self.node
    }

    fn try_deliver(&self, to: &str, envelope: Envelope) -> Result<Option<CancelHook>, TryDeliverError> {
        self.try_route(to, envelope, None)
    }

    fn deliver<'a>(&'a self, to: &'a str, envelope: Envelope) -> BoxFuture<'a, Result<Option<CancelHook>, SendError>> {
        Box::pin(self.route(to, envelope, None))
    }

    fn publish(
        &self,
        from: SenderAddress,
        topic: Arc<str>,
        payload: Payload,
    ) -> BoxFuture<'_, Result<usize, SendError>> {
        self.count_publish(&from, &topic);
        // One value for every subscriber here: each copy is an `Arc` clone.
        let payload = payload.shared();
        Box::pin(async move {
            let local = self.publish_local(&from, &topic, &payload).await;
            let targets = self.remote_subscribers(&topic, None, None);
            let remote = self.publish_remote(&topic, &from, &payload, targets).await?;
            Ok(local + remote)
        })
    }

    fn subscribe(&self, module: &str, pattern: TopicPattern) {
        {
            let mut subs = self.subscriptions.write().expect("router lock");
            if subs.iter().any(|s| &*s.module == module && s.pattern == pattern) {
                return;
            }
            subs.push(Subscription {
                pattern,
                module: Arc::from(module),
            });
        }
        self.refresh();
    }

    fn unsubscribe(&self, module: &str, pattern: &str) {
        let dropped = {
            let mut subs = self.subscriptions.write().expect("router lock");
            let before = subs.len();
            subs.retain(|s| !(&*s.module == module && s.pattern.as_str() == pattern));
            before != subs.len()
        };
        if dropped {
            self.refresh();
        }
    }

    fn monitor(&self, watcher: &str, target: &str) {
        if !self.routable(target) {
            if let Some(Route::Local(w)) = self.routes.read().expect("router lock").get(watcher) {
                w.mailbox.send_down(Down {
                    module: target.to_owned(),
                    reason: DownReason::Unreachable(format!("no module `{target}` is known")),
                });
            }
            return;
        }
        self.monitors.lock().expect("router lock").push(Monitor {
            target: target.to_owned(),
            watcher: Arc::from(watcher),
            lost: false,
        });
    }
}

fn try_send_local(
    local: &LocalModule,
    module: &str,
    envelope: Envelope,
) -> Result<Option<CancelHook>, TryDeliverError> {
    match local.mailbox.try_send(envelope) {
        Ok(()) => Ok(None),
        Err(Refused::Full(envelope)) => Err(TryDeliverError::Full(Box::new(envelope))),
        Err(Refused::Closed(_)) => Err(TryDeliverError::Failed(SendError::Stopped(module.to_owned()))),
    }
}
