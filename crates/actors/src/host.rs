//! The loop that hosts one module on its arbiter: builds the instance, runs
//! its hooks one at a time, catches panics, and asks the supervisor what to
//! do when an instance ends.
//!
//! The mailbox outlives instances: messages queued while a module restarts
//! wait for the new instance. When the module is finally gone, whatever is
//! still queued is dropped, and each ask in it ends with `Stopped`.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;
use std::task::{Poll, RawWakerVTable, Waker};
use std::time::Duration;

use botbus_core::{AskError, Bus, Context, Envelope, FromPayload, Module, Payload};
use futures::task::AtomicWaker;
use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::time::{Interval, MissedTickBehavior};

use crate::mailbox::{Doorbell, Inbox, Mail};
use crate::router::ModuleStatus;
use crate::supervisor::{run_host, Ended, Host, Supervised};

/// How an instance of a module ended.
#[derive(Debug, Clone)]
pub(crate) enum Exit {
    /// The module asked to stop ([`Context::stop`]).
    Stopped,
    /// The node stopped it (shutdown or `Node::stop_module`).
    StoppedByNode,
    /// It never came up: its constructor panicked, its `started` hook failed
    /// or ran past the start deadline, or its child process never announced
    /// it. Counted against the budget even when it fails slowly.
    StartFailed(String),
    /// It panicked or a hook other than `process` failed.
    Failed(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Stopped => f.write_str("stopped itself"),
            Exit::StoppedByNode => f.write_str("stopped by the node"),
            Exit::StartFailed(why) => write!(f, "failed to start: {why}"),
            Exit::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Tells a module's host loop to stop. Only that one task ever waits on it,
/// so a flag and one waker do: checking it costs an atomic load, not the
/// lock a cancellation token takes on every poll. A module in this process
/// is also rung at its mailbox, where its loop waits between messages.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    /// Woken while a hook runs (see [`guarded`]).
    waker: AtomicWaker,
    /// Which waker was left in `waker` last (its data and vtable), so that
    /// leaving the same one again — every time a hook waits — costs two
    /// plain loads instead of the two atomic exchanges of a registration.
    left: (AtomicPtr<()>, AtomicPtr<RawWakerVTable>),
    doorbell: Option<Doorbell>,
}

impl StopSignal {
    /// A stop signal that also rings `doorbell`.
    pub(crate) fn ringing(doorbell: Doorbell) -> Self {
        Self {
            doorbell: Some(doorbell),
            ..Self::default()
        }
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(doorbell) = &self.doorbell {
            doorbell.ring();
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Leaves `waker` to be woken by the stop. Only a stop takes a waker
    /// out, and that for good, so the waker left last is still there.
    fn watch(&self, waker: &Waker) {
        let (data, vtable) = (waker.data().cast_mut(), std::ptr::from_ref(waker.vtable()).cast_mut());
        if self.left.0.load(Ordering::Relaxed) == data && self.left.1.load(Ordering::Relaxed) == vtable {
            return;
        }
        self.waker.register(waker);
        self.left.0.store(data, Ordering::Relaxed);
        self.left.1.store(vtable, Ordering::Relaxed);
    }

    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.is_stopped() {
                return Poll::Ready(());
            }
            self.watch(cx.waker());
            if self.is_stopped() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// How a new module's host reports that its first instance is up (or that
/// it never will be), and — in a node's start order — waits until the
/// module started before it is up. The node launches all its modules at
/// once and each host hands the turn to the next, so starting in order
/// costs one hand-off between threads per module, not a round trip to the
/// thread that starts the node.
pub(crate) struct Startup {
    /// Told once: the first instance runs, or the module is gone.
    ready: Option<oneshot::Sender<Result<(), String>>>,
    /// Whether the module before this one came up.
    after: Option<oneshot::Receiver<bool>>,
    /// Told once, as `ready`: the turn of the module after this one.
    next: Option<oneshot::Sender<bool>>,
}

impl Startup {
    /// A module started on its own: nothing before or after it.
    pub(crate) fn alone(ready: oneshot::Sender<Result<(), String>>) -> Self {
        Self {
            ready: Some(ready),
            after: None,
            next: None,
        }
    }

    /// A module in a start order.
    pub(crate) fn in_order(
        ready: oneshot::Sender<Result<(), String>>,
        after: Option<oneshot::Receiver<bool>>,
        next: oneshot::Sender<bool>,
    ) -> Self {
        Self {
            ready: Some(ready),
            after,
            next: Some(next),
        }
    }

    /// Waits for this module's turn to start; the error says why it has
    /// none: the module before it did not come up, or the node stopped this
    /// one first.
    pub(crate) async fn wait_turn(&mut self, stop: &StopSignal) -> Result<(), &'static str> {
        let Some(after) = self.after.take() else {
            return Ok(());
        };
        tokio::select! {
            biased;
            () = stop.wait() => Err("stopped by the node before its turn to start"),
            came_up = after => match came_up {
                Ok(true) => Ok(()),
                _ => Err("not started: a module before it in the start order did not come up"),
            },
        }
    }

    /// The first instance is up.
    pub(crate) fn up(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        if let Some(next) = self.next.take() {
            let _ = next.send(true);
        }
    }

    /// The module is gone (if it never came up, this is why).
    pub(crate) fn gone(&mut self, reason: &str) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(reason.to_owned()));
        }
        if let Some(next) = self.next.take() {
            let _ = next.send(false);
        }
    }
}

/// Everything the host loop of one module owns. Its start deadline bounds
/// the wait for what it needs, and `started`.
pub(crate) struct Hosted {
    pub(crate) supervised: Supervised,
    /// Its mailbox: the batch taken and not yet processed waits in it
    /// across a restart.
    pub(crate) inbox: Inbox,
    pub(crate) ask_timeout: Duration,
}

enum Guarded<T> {
    Done(T),
    Panicked(String),
    Interrupted,
}

/// Runs a hook, catching its panic, and dropping it if the node stops the
/// module meanwhile. The hook is polled first: one that completes without
/// waiting (most do) never touches the stop signal's waker.
async fn guarded<T>(stop: &StopSignal, hook: impl Future<Output = T>) -> Guarded<T> {
    let mut hook = std::pin::pin!(AssertUnwindSafe(hook).catch_unwind());
    poll_fn(|cx| {
        if let Poll::Ready(outcome) = hook.as_mut().poll(cx) {
            return Poll::Ready(match outcome {
                Ok(value) => Guarded::Done(value),
                Err(panic) => Guarded::Panicked(panic_message(panic.as_ref())),
            });
        }
        if stop.is_stopped() {
            return Poll::Ready(Guarded::Interrupted);
        }
        stop.watch(cx.waker());
        if stop.is_stopped() {
            Poll::Ready(Guarded::Interrupted)
        } else {
            Poll::Pending
        }
    })
    .await
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned());
    format!("panicked: {text}")
}

/// Hosts a module in this process, on the arbiter this runs on: builds
/// each instance with `factory` and runs it, under the restart loop.
pub(crate) async fn host<M: Module>(factory: Arc<dyn Fn() -> M + Send + Sync>, hosted: Hosted) {
    let bus: Arc<dyn Bus> = hosted.supervised.router.clone();
    run_host(LocalHost { factory, hosted, bus }).await;
}

/// A module in this process, as the restart loop drives it.
struct LocalHost<M> {
    factory: Arc<dyn Fn() -> M + Send + Sync>,
    hosted: Hosted,
    bus: Arc<dyn Bus>,
}

impl<M: Module> Host for LocalHost<M> {
    fn supervised(&self) -> &Supervised {
        &self.hosted.supervised
    }

    fn supervised_mut(&mut self) -> &mut Supervised {
        &mut self.hosted.supervised
    }

    async fn run_instance(&mut self) -> Ended {
        Ended::Instance(run_instance(&*self.factory, &mut self.hosted, self.bus.clone()).await)
    }

    fn instance_ended(&mut self) {
        let Supervised { name, router, .. } = &self.hosted.supervised;
        router.clear_instance(name);
    }

    fn finish(mut self) {
        self.hosted.inbox.close(); // an ask in it ends with `Stopped`
        self.hosted.supervised.finish();
    }
}

async fn run_instance<M: Module>(
    factory: &(dyn Fn() -> M + Send + Sync),
    hosted: &mut Hosted,
    bus: Arc<dyn Bus>,
) -> Exit {
    let Hosted {
        supervised,
        inbox,
        ask_timeout,
    } = hosted;
    let name = supervised.name.clone();
    let mut ctx = Context::new(bus, &name);
    ctx.set_ask_timeout(*ask_timeout);
    let mut module = match std::panic::catch_unwind(AssertUnwindSafe(factory)) {
        Ok(module) => module,
        Err(panic) => return Exit::StartFailed(format!("constructor {}", panic_message(panic.as_ref()))),
    };
    let started = tokio::time::timeout(supervised.start_timeout, module.started(&mut ctx));
    match guarded(&supervised.stop, started).await {
        Guarded::Done(Ok(Ok(()))) => {}
        Guarded::Done(Ok(Err(error))) => return Exit::StartFailed(format!("`started` failed: {error}")),
        Guarded::Done(Err(_)) => {
            return Exit::StartFailed(format!(
                "`started` did not finish within the start deadline ({:?})",
                supervised.start_timeout
            ))
        }
        Guarded::Panicked(why) => return Exit::StartFailed(format!("`started` {why}")),
        Guarded::Interrupted => return Exit::StoppedByNode,
    }
    supervised.router.set_status(&name, ModuleStatus::Running);
    supervised.startup.up();
    tracing::debug!(module = %name, "running");

    let mut ticker: Option<Interval> = None;
    loop {
        if let Some(change) = ctx.take_tick_change() {
            ticker = change.map(|period| {
                let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                interval
            });
        }
        if ctx.stop_requested() {
            stop_gracefully(&mut module, &mut ctx, &supervised.stop).await;
            return Exit::Stopped;
        }
        if let Some(envelope) = inbox.next() {
            if supervised.stop.is_stopped() {
                inbox.put_back(envelope);
                stop_gracefully(&mut module, &mut ctx, &StopSignal::default()).await;
                return Exit::StoppedByNode;
            }
            match process(&mut module, &mut ctx, envelope, supervised).await {
                Guarded::Done(()) => continue,
                Guarded::Panicked(why) => return Exit::Failed(why),
                Guarded::Interrupted => {
                    stop_gracefully(&mut module, &mut ctx, &StopSignal::default()).await;
                    return Exit::StoppedByNode;
                }
            }
        }
        // The stop signal rings the mailbox, so this waits on one waker.
        let outcome = if supervised.stop.is_stopped() {
            Guarded::Interrupted
        } else {
            tokio::select! {
                biased;
                _ = next_tick(&mut ticker) => guarded(&supervised.stop, module.tick(&mut ctx)).await.map_failure("tick"),
                mail = inbox.take() => match mail {
                    Mail::Batch | Mail::Rung => Guarded::Done(()),
                    Mail::Down(down) => guarded(&supervised.stop, module.down(down, &mut ctx)).await.map_failure("down"),
                    Mail::Closed => Guarded::Interrupted,
                },
            }
        };
        match outcome {
            Guarded::Done(()) => {}
            Guarded::Panicked(why) => return Exit::Failed(why),
            Guarded::Interrupted => {
                stop_gracefully(&mut module, &mut ctx, &StopSignal::default()).await;
                return Exit::StoppedByNode;
            }
        }
    }
}

impl Guarded<Result<(), botbus_core::ModuleError>> {
    /// A failing `down` or `tick` hook is a failure of the module.
    fn map_failure(self, hook: &str) -> Guarded<()> {
        match self {
            Guarded::Done(Ok(())) => Guarded::Done(()),
            Guarded::Done(Err(error)) => Guarded::Panicked(format!("{hook} failed: {error}")),
            Guarded::Panicked(why) => Guarded::Panicked(why),
            Guarded::Interrupted => Guarded::Interrupted,
        }
    }
}

async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn stop_gracefully<M: Module>(module: &mut M, ctx: &mut Context, stop: &StopSignal) {
    if let Guarded::Panicked(why) = guarded(stop, module.stopping(ctx)).await {
        tracing::warn!(module = ctx.name(), %why, "stopping hook panicked");
    }
}

async fn process<M: Module>(
    module: &mut M,
    ctx: &mut Context,
    envelope: Envelope,
    supervised: &Supervised,
) -> Guarded<()> {
    let stop = &*supervised.stop;
    let payload = ctx.begin(envelope);
    let message = match M::Message::from_payload(payload) {
        Ok(message) => message,
        Err(error) => {
            let error = AskError::BadPayload(format!("`{}` cannot take it: {error}", ctx.name()));
            match ctx.end() {
                Some(caller) => caller.reply(Err(error)),
                None => tracing::warn!(module = ctx.name(), %error, "dropping a message"),
            }
            return Guarded::Done(());
        }
    };
    let outcome = guarded(stop, module.process(message, ctx)).await;
    let caller = ctx.end();
    match outcome {
        Guarded::Done(Ok(reply)) => {
            if let Some(caller) = caller {
                caller.reply(Ok(Payload::new(reply)));
            }
            Guarded::Done(())
        }
        Guarded::Done(Err(error)) => {
            match caller {
                Some(caller) => caller.reply(Err(AskError::Remote {
                    module: ctx.name().to_owned(),
                    message: error.to_string(),
                })),
                None => tracing::warn!(module = ctx.name(), %error, "process failed on a message nobody awaits"),
            }
            Guarded::Done(())
        }
        // The caller is dropped here, and its ask ends with `Stopped`: the
        // status says so first.
        Guarded::Panicked(why) => {
            supervised.router.set_status(&supervised.name, ModuleStatus::Restarting);
            drop(caller);
            Guarded::Panicked(why)
        }
        Guarded::Interrupted => Guarded::Interrupted,
    }
}
