//! The router: the node's table of who lives where, and the [`Bus`] that
//! every module's context talks to.
//!
//! Lookups happen on the sender's own thread against shared tables (a read
//! lock, no actor hop): a tell is one lookup and one bounded-channel send
//! straight into the target's mailbox. Remote targets get their frame encoded
//! here too, so the link writer only batches bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use botbus_core::{
    address, Bus, CancelHook, Down, DownReason, Envelope, EnvelopeKind, Frame, Payload, SendError, TopicPattern,
    TryDeliverError,
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::link::LinkHandle;
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
    pub(crate) mailbox: mpsc::Sender<Envelope>,
    pub(crate) control: mpsc::UnboundedSender<Down>,
}

struct Subscription {
    pattern: TopicPattern,
    module: Arc<str>,
}

struct Monitor {
    target: String,
    watcher: Arc<str>,
}

enum Route {
    Local(LocalModule),
    Remote(Arc<LinkHandle>, String),
}

pub(crate) struct Router {
    node: String,
    locals: RwLock<NameMap<Arc<str>, LocalModule>>,
    /// Modules of this node that run in child processes, with the link to
    /// the child while it is up (`None` while it is being (re)started).
    children: RwLock<NameMap<Arc<str>, Option<Arc<LinkHandle>>>>,
    /// The process id of each child module's running process.
    child_pids: Mutex<HashMap<String, u32>>,
    links: RwLock<Vec<Arc<LinkHandle>>>,
    subscriptions: RwLock<Vec<Subscription>>,
    monitors: Mutex<Vec<Monitor>>,
    status: Mutex<HashMap<String, ModuleStatus>>,
    /// Bumped on every change of modules, links, subscriptions or status, so
    /// callers can wait for a condition instead of sleeping.
    topology: watch::Sender<u64>,
}

impl Router {
    pub(crate) fn new(node: &str) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_owned(),
            locals: RwLock::default(),
            children: RwLock::default(),
            child_pids: Mutex::default(),
            links: RwLock::default(),
            subscriptions: RwLock::default(),
            monitors: Mutex::default(),
            status: Mutex::default(),
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

    // ---- local modules -------------------------------------------------

    pub(crate) fn add_local(&self, name: Arc<str>, module: LocalModule) {
        self.locals.write().expect("router lock").insert(name, module);
        self.announce_all();
        self.changed();
    }

    /// A module of this node that runs in a child process.
    pub(crate) fn add_child(&self, name: Arc<str>) {
        self.children.write().expect("router lock").insert(name, None);
        self.announce_all();
        self.changed();
    }

    /// Routes child module `name` over `link` (or nowhere, while it restarts).
    pub(crate) fn set_child_link(&self, name: &str, link: Option<Arc<LinkHandle>>) {
        if let Some(slot) = self.children.write().expect("router lock").get_mut(name) {
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
        self.children.read().expect("router lock").contains_key(name)
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
        let patterns: Vec<String> = {
            let subs = self.subscriptions.read().expect("router lock");
            subs.iter()
                .filter(|s| &*s.module == name)
                .map(|s| s.pattern.as_str().to_owned())
                .collect()
        };
        for pattern in patterns {
            self.unsubscribe(name, &pattern);
        }
        self.monitors
            .lock()
            .expect("router lock")
            .retain(|m| &*m.watcher != name);
    }

    /// `name` is gone for good: no more route, its monitors are told, and the
    /// peers hear of it.
    pub(crate) fn module_down(&self, name: &str, reason: DownReason) {
        self.clear_instance(name);
        let hosted = self.locals.write().expect("router lock").remove(name).is_some();
        let child = self.children.write().expect("router lock").remove(name).is_some();
        if !hosted && !child {
            return; // already down (a child said so itself)
        }
        let status = match &reason {
            DownReason::Failed(why) => ModuleStatus::Failed(why.clone()),
            _ => ModuleStatus::Stopped,
        };
        self.status.lock().expect("router lock").insert(name.to_owned(), status);
        let qualified = format!("{}/{name}", self.node);
        self.notify_monitors(|target| target == name || target == qualified, &reason);
        self.broadcast(&Frame::Down {
            module: name.to_owned(),
            reason,
        });
        self.announce_all();
        self.changed();
    }

    /// The modules of this node: hosted here or in its child processes.
    pub(crate) fn local_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .locals
            .read()
            .expect("router lock")
            .keys()
            .map(|n| n.to_string())
            .collect();
        names.extend(self.children.read().expect("router lock").keys().map(|n| n.to_string()));
        names.sort();
        names
    }

    // ---- links ---------------------------------------------------------

    pub(crate) fn add_link(&self, link: Arc<LinkHandle>) -> Result<(), String> {
        let mut links = self.links.write().expect("router lock");
        if links.iter().any(|l| l.peer() == link.peer()) {
            return Err(format!("a link to node `{}` is already up", link.peer()));
        }
        links.push(link.clone());
        drop(links);
        link.send_control(&self.announcement());
        self.changed();
        Ok(())
    }

    /// A link closed: everything waiting on it ends now.
    pub(crate) fn remove_link(&self, link: &Arc<LinkHandle>, reason: &str) {
        self.links
            .write()
            .expect("router lock")
            .retain(|l| !Arc::ptr_eq(l, link));
        let peer = link.peer().to_owned();
        if let Some(child) = link.child_of() {
            // The child's process is lost (unless this node is stopping it):
            // its status says so before any ask it was handling fails.
            if !link.closed_by_us() && self.status(child) == Some(ModuleStatus::Running) {
                self.set_status(child, ModuleStatus::Restarting);
            }
        }
        link.fail_all(reason);
        if let Some(child) = link.child_of() {
            // A child's link: its host decides whether the module comes back,
            // and tells the monitors if it does not.
            let mut children = self.children.write().expect("router lock");
            if let Some(slot) = children.get_mut(child) {
                if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
                    *slot = None;
                }
            }
            drop(children);
            self.changed();
            return;
        }
        let gone = link.remote_modules();
        let why = DownReason::Unreachable(format!("link to `{peer}` closed: {reason}"));
        self.notify_monitors(
            |target| match address::split(target) {
                (Some(node), _) => node == peer,
                (None, module) => gone.iter().any(|m| m == module),
            },
            &why,
        );
        self.changed();
    }

    pub(crate) fn links(&self) -> Vec<Arc<LinkHandle>> {
        self.links.read().expect("router lock").clone()
    }

    pub(crate) fn announcement(&self) -> Frame {
        let mut subscriptions: Vec<String> = self
            .subscriptions
            .read()
            .expect("router lock")
            .iter()
            .map(|s| s.pattern.as_str().to_owned())
            .collect();
        subscriptions.sort();
        subscriptions.dedup();
        Frame::Announce {
            modules: self.local_names(),
            subscriptions,
        }
    }

    fn announce_all(&self) {
        if self.links.read().expect("router lock").is_empty() {
            return;
        }
        self.broadcast(&self.announcement());
    }

    fn broadcast(&self, frame: &Frame) {
        for link in self.links() {
            link.send_control(frame);
        }
    }

    /// A module behind `link` went down: tell the monitors watching it.
    pub(crate) fn remote_down(&self, link: &LinkHandle, module: &str, reason: DownReason) {
        if link.child_of() == Some(module) {
            // The child's own module is gone for good: it is this node's module.
            self.module_down(module, reason);
            return;
        }
        let qualified = format!("{}/{module}", link.peer());
        self.notify_monitors(|target| target == module || target == qualified, &reason);
    }

    fn notify_monitors(&self, hit: impl Fn(&str) -> bool, reason: &DownReason) {
        let fired: Vec<Monitor> = {
            let mut monitors = self.monitors.lock().expect("router lock");
            let (fired, kept) = std::mem::take(&mut *monitors).into_iter().partition(|m| hit(&m.target));
            *monitors = kept;
            fired
        };
        let locals = self.locals.read().expect("router lock");
        for monitor in fired {
            if let Some(watcher) = locals.get(&monitor.watcher) {
                let _ = watcher.control.send(Down {
                    module: monitor.target,
                    reason: reason.clone(),
                });
            }
        }
    }

    // ---- routing -------------------------------------------------------

    fn resolve(&self, to: &str) -> Result<Route, SendError> {
        let (node, module) = address::split(to);
        if node.is_none_or(|n| n == self.node) {
            if let Some(local) = self.locals.read().expect("router lock").get(module) {
                return Ok(Route::Local(local.clone()));
            }
            if let Some(child) = self.children.read().expect("router lock").get(module) {
                return match child {
                    Some(link) => Ok(Route::Remote(link.clone(), module.to_owned())),
                    // Its process is (re)starting.
                    None => Err(SendError::Stopped(module.to_owned())),
                };
            }
        }
        let links = self.links.read().expect("router lock");
        let found = match node {
            Some(node) => links.iter().find(|l| l.peer() == node),
            None => links.iter().find(|l| l.serves(module)),
        };
        match found {
            Some(link) => Ok(Route::Remote(link.clone(), module.to_owned())),
            None => Err(SendError::UnknownModule(to.to_owned())),
        }
    }

    /// Hands an envelope that arrived over a link to module `to` hosted
    /// here, waiting for room.
    pub(crate) async fn deliver_local(&self, to: &str, envelope: Envelope) -> Result<(), SendError> {
        let local = self.locals.read().expect("router lock").get(to).cloned();
        if let Some(local) = local {
            return local
                .mailbox
                .send(envelope)
                .await
                .map_err(|_| SendError::Stopped(to.to_owned()));
        }
        // A module of this node in a child process: pass it on to the child.
        let child = match self.children.read().expect("router lock").get(to) {
            None => return Err(SendError::UnknownModule(to.to_owned())),
            Some(None) => return Err(SendError::Stopped(to.to_owned())),
            Some(Some(link)) => link.clone(),
        };
        let watch = match &envelope.kind {
            EnvelopeKind::Ask(ask) => Some((ask.cancel.clone(), ask.deadline)),
            _ => None,
        };
        let hook = child.send_envelope(to.to_owned(), envelope).await?;
        if let (Some((cancel, deadline)), Some(hook)) = (watch, hook) {
            // The asker's cancel reaches the child too; the watch ends with
            // the ask's deadline at the latest.
            tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => hook(),
                    () = tokio::time::sleep_until(deadline) => {}
                }
            });
        }
        Ok(())
    }

    /// Hands an envelope to module `to` hosted in this process if its
    /// mailbox has room. A full mailbox — or a module in a child process,
    /// reached by a send that may wait — gives the envelope back as `Full`.
    pub(crate) fn try_deliver_local(&self, to: &str, envelope: Envelope) -> Result<(), TryDeliverError> {
        if let Some(local) = self.locals.read().expect("router lock").get(to) {
            return try_send_local(local, to, envelope).map(|_| ());
        }
        if self.children.read().expect("router lock").contains_key(to) {
            return Err(TryDeliverError::Full(Box::new(envelope)));
        }
        Err(TryDeliverError::Failed(SendError::UnknownModule(to.to_owned())))
    }

    /// The modules hosted here that subscribe to `topic`.
    pub(crate) fn local_subscriber_names(&self, topic: &str) -> Vec<Arc<str>> {
        self.local_subscribers(topic)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Delivers a publish to the subscribers hosted here; returns how many.
    pub(crate) async fn publish_local(&self, from: &Arc<str>, topic: &Arc<str>, payload: &Payload) -> usize {
        let targets = self.local_subscribers(topic);
        let mut delivered = 0;
        for (_, local) in targets {
            let envelope = Envelope {
                from: from.clone(),
                payload: payload.clone(),
                kind: EnvelopeKind::Publish { topic: topic.clone() },
            };
            let sent = match local.mailbox.try_send(envelope) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(envelope)) => local.mailbox.send(envelope).await.is_ok(),
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            };
            delivered += usize::from(sent);
        }
        delivered
    }

    fn local_subscribers(&self, topic: &str) -> Vec<(Arc<str>, LocalModule)> {
        let subs = self.subscriptions.read().expect("router lock");
        let locals = self.locals.read().expect("router lock");
        let mut targets: Vec<(Arc<str>, LocalModule)> = Vec::new();
        for sub in subs.iter().filter(|s| s.pattern.matches(topic)) {
            if targets.iter().any(|(name, _)| *name == sub.module) {
                continue;
            }
            if let Some(local) = locals.get(&sub.module) {
                targets.push((sub.module.clone(), local.clone()));
            }
        }
        targets
    }

    /// Whether a publish on `topic` would reach a subscriber, here or behind
    /// a link.
    pub(crate) fn has_subscriber(&self, topic: &str) -> bool {
        !self.local_subscribers(topic).is_empty() || self.links().iter().any(|l| l.wants(topic))
    }

    /// Whether `to` resolves to a module, here or behind a link.
    pub(crate) fn routable(&self, to: &str) -> bool {
        self.resolve(to).is_ok()
    }
}

impl Bus for Router {
    fn node_name(&self) -> &str {
        &self.node
    }

    fn try_deliver(&self, to: &str, envelope: Envelope) -> Result<Option<CancelHook>, TryDeliverError> {
        // The hot path: a local target, sent to under the read lock, with no
        // clone of its route.
        let (node, module) = address::split(to);
        if node.is_none_or(|n| n == self.node) {
            if let Some(local) = self.locals.read().expect("router lock").get(module) {
                return try_send_local(local, module, envelope);
            }
        }
        match self.resolve(to) {
            // Added since the look above: still local.
            Ok(Route::Local(local)) => try_send_local(&local, module, envelope),
            Ok(Route::Remote(link, module)) => link.try_send_envelope(module, envelope),
            Err(error) => Err(TryDeliverError::Failed(error)),
        }
    }

    fn deliver<'a>(&'a self, to: &'a str, envelope: Envelope) -> BoxFuture<'a, Result<Option<CancelHook>, SendError>> {
        Box::pin(async move {
            match self.resolve(to)? {
                Route::Local(local) => local
                    .mailbox
                    .send(envelope)
                    .await
                    .map(|()| None)
                    .map_err(|_| SendError::Stopped(to.to_owned())),
                Route::Remote(link, module) => link.send_envelope(module, envelope).await,
            }
        })
    }

    fn publish(&self, from: Arc<str>, topic: Arc<str>, payload: Payload) -> BoxFuture<'_, Result<usize, SendError>> {
        Box::pin(async move {
            let mut delivered = self.publish_local(&from, &topic, &payload).await;
            let links: Vec<Arc<LinkHandle>> = self.links().into_iter().filter(|l| l.wants(&topic)).collect();
            // Encoded once per codec, not once per link.
            let mut frames: Vec<(botbus_core::CodecKind, Frame)> = Vec::new();
            for link in links {
                let codec = link.codec();
                if !frames.iter().any(|(c, _)| *c == codec) {
                    let frame = Frame::Publish {
                        topic: topic.to_string(),
                        from: from.to_string(),
                        payload: link.wire(&payload)?,
                    };
                    frames.push((codec, frame));
                }
                let (_, frame) = frames.iter().find(|(c, _)| *c == codec).expect("encoded above");
                if link.send_data(frame).await.is_ok() {
                    delivered += 1;
                }
            }
            Ok(delivered)
        })
    }

    fn subscribe(&self, module: &str, pattern: TopicPattern) {
        let first = {
            let mut subs = self.subscriptions.write().expect("router lock");
            if subs.iter().any(|s| &*s.module == module && s.pattern == pattern) {
                return;
            }
            let first = !subs.iter().any(|s| s.pattern == pattern);
            subs.push(Subscription {
                pattern: pattern.clone(),
                module: Arc::from(module),
            });
            first
        };
        if first {
            self.broadcast(&Frame::Subscribe {
                pattern: pattern.as_str().to_owned(),
            });
        }
        self.changed();
    }

    fn unsubscribe(&self, module: &str, pattern: &str) {
        let last = {
            let mut subs = self.subscriptions.write().expect("router lock");
            let before = subs.len();
            subs.retain(|s| !(&*s.module == module && s.pattern.as_str() == pattern));
            before != subs.len() && !subs.iter().any(|s| s.pattern.as_str() == pattern)
        };
        if last {
            self.broadcast(&Frame::Unsubscribe {
                pattern: pattern.to_owned(),
            });
        }
        self.changed();
    }

    fn monitor(&self, watcher: &str, target: &str) {
        if !self.routable(target) {
            let locals = self.locals.read().expect("router lock");
            if let Some(w) = locals.get(watcher) {
                let _ = w.control.send(Down {
                    module: target.to_owned(),
                    reason: DownReason::Unreachable(format!("no module `{target}` is known")),
                });
            }
            return;
        }
        self.monitors.lock().expect("router lock").push(Monitor {
            target: target.to_owned(),
            watcher: Arc::from(watcher),
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
        Err(mpsc::error::TrySendError::Full(envelope)) => Err(TryDeliverError::Full(Box::new(envelope))),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            Err(TryDeliverError::Failed(SendError::Stopped(module.to_owned())))
        }
    }
}

/// How long an ask that crossed a link has left, for its frame.
pub(crate) fn remaining_ms(deadline: Instant) -> u64 {
    deadline.saturating_duration_since(Instant::now()).as_millis() as u64
}
