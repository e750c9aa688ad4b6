//! The link's reader: reads whole frames, keeps the link's liveness (a
//! ping after silence, down after more), and hands every frame to the
//! router (`Router::inbound`), its one way in.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use botbus_core::liveness::{LivenessAction, LivenessState};
use botbus_core::{
    DataIn, Envelope, EnvelopeKind, Frame, FrameError, FrameIn, Incoming, IncomingCodec, Liveness, RunReader,
    SenderAddress,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::codec::FramedRead;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::{message_name, LinkHandle};
use crate::alarm::Alarm;
use crate::names::RecentNames;
use crate::router::Router;

pub(super) async fn read_loop(
    router: Arc<Router>,
    link: Arc<LinkHandle>,
    mut reader: FramedRead<botbus_core::LinkReader, IncomingCodec>,
    liveness: Liveness,
) {
    let mut names = Names::default();
    let mut pace = Pace::default();
    // Kept from run to run, so that gathering tells allocates nothing.
    let mut tells = VecDeque::with_capacity(GATHERED_TELLS);
    let mut alive = LivenessState::new(liveness, std::time::Instant::now());
    // Reads are counted, not timed: the check looks at the count when its
    // alarm fires, so a busy link pays one increment per read for its
    // liveness. The alarm is kept off this thread (see `crate::alarm`).
    let (mut reads, mut reads_checked) = (0u64, 0u64);
    let check = Alarm::new();
    check.set(std::time::Instant::now() + liveness.ping_after);
    // Made once: waiting on it registers with the token once, not per read.
    let closed = CloseSignal::new(&link.closed);
    tokio::pin!(closed);
    let reason = loop {
        // The reader first: while frames are buffered, the close signal
        // (a lock inside the token) and the timer are not polled at all.
        let next = tokio::select! {
            biased;
            next = reader.next() => next,
            () = &mut closed => break "closed by this node".to_owned(),
            () = check.fired() => {
                let now = std::time::Instant::now();
                if reads != reads_checked {
                    reads_checked = reads;
                    alive.heard(now);
                }
                let next = match alive.poll(now) {
                    LivenessAction::Wait(next) => next,
                    LivenessAction::Ping { nonce, next } => {
                        link.send_control(&Frame::Ping { nonce });
                        next
                    }
                    LivenessAction::Down { silent_for } => {
                        tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, ?silent_for, "peer silent: closing the link");
                        link.broken.store(true, Ordering::Release);
                        break format!(
                            "peer silent for {silent_for:.1?}: no whole frame arrived, not even a pong (liveness: ping after {:?}, down after {:?})",
                            liveness.ping_after, liveness.down_after
                        );
                    }
                };
                check.set(next);
                continue;
            }
        };
        reads += 1;
        let taken = match next {
            None => Err("peer closed the link".to_owned()),
            Some(Ok(Incoming::Postcard(run))) => {
                take_run(&router, &link, &mut names, &mut pace, &mut tells, &run).await
            }
            Some(Ok(Incoming::Json(frame))) => {
                link.counters.frames_read(1);
                let data = is_data(&frame);
                if data {
                    // Counted before it is handed on: see `take_run`.
                    link.counters.data_read();
                }
                let taken = take_frame(&router, &link, Ok(frame)).await;
                // Its body was decoded, not lent: only the count matters.
                if data && pace.took(0) {
                    tokio::task::yield_now().await;
                }
                taken
            }
            Some(Err(error)) => take_frame(&router, &link, Err(error)).await,
        };
        if let Err(reason) = taken {
            break reason;
        }
    };
    tracing::info!(node = router.node(), peer = %link.peer, %reason, "link down");
    router.remove_link(&link, &reason);
}

/// Takes a run of postcard frames, in order. A tell, an ask or a reply is
/// read borrowed from the run and handed on with nothing copied but its
/// body; anything else is decoded whole. A tell with the same names as the
/// tell before it (see [`RunReader`]) takes that tell's sender and message
/// name as they were taken, looked up once. Tells for one module that come
/// one after another are gathered in `tells` and handed on together (see
/// [`LinkHandle::take_tells_now`]), before anything else is taken. The
/// error is why the link must close.
async fn take_run(
    router: &Arc<Router>,
    link: &Arc<LinkHandle>,
    names: &mut Names,
    pace: &mut Pace,
    tells: &mut VecDeque<Envelope>,
    run: &Bytes,
) -> Result<(), String> {
    let mut frames = 0u64;
    let mut taken = Ok(());
    // The module the gathered tells are for.
    let mut tells_to = "";
    let mut reader = RunReader::default();
    // The last tell's sender and message name, as taken: a tell with the
    // same names as the last (see `RunReader`) takes them as they are.
    let mut last_names: Option<(SenderAddress, Cow<'static, str>)> = None;
    for body in botbus_core::codec::frame_bodies(run) {
        frames += 1;
        let (read, same_names) = reader.read(body);
        if let Ok(FrameIn::Data(DataIn::Tell { to, from, payload })) = read {
            // Counted before it is handed on, so that whoever has seen it
            // arrive (a module on another thread) finds it counted.
            link.counters.data_read();
            if to != tells_to && !tells.is_empty() {
                hand_on_tells(router, link, tells_to, tells).await;
            }
            tells_to = to;
            let (from, name) = match &last_names {
                Some(last) if same_names => last.clone(),
                _ => last_names
                    .insert((names.senders.intern(from).into(), message_name(payload.name)))
                    .clone(),
            };
            tells.push_back(Envelope {
                from,
                payload: LinkHandle::unwire_named(name, payload, run),
                kind: EnvelopeKind::Tell,
            });
            let give_way = pace.took(body.len());
            if give_way || tells.len() == GATHERED_TELLS {
                hand_on_tells(router, link, tells_to, tells).await;
            }
            if give_way {
                tokio::task::yield_now().await;
            }
            continue;
        }
        // Whatever came before it is handed on first.
        if !tells.is_empty() {
            hand_on_tells(router, link, tells_to, tells).await;
        }
        let read = match read {
            Ok(FrameIn::Data(ask)) => {
                link.counters.data_read();
                let (from, callee) = (names.senders.intern(ask.from()), names.callees.intern(ask.to()));
                // Handed on (or parked) at once; only a peer past its
                // window makes the reader wait.
                if let Some(waiting) = router.inbound_data(link, ask, from, callee, run) {
                    waiting.wait(router, link).await;
                }
                if pace.took(body.len()) {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Ok(FrameIn::Reply { id, payload }) => {
                // The link's own bookkeeping, where the router would send it.
                link.take_reply(id, Ok(link.unwire_in(payload, run)));
                continue;
            }
            Ok(FrameIn::Frame(frame)) => Ok(frame),
            Err(error) => Err(error),
        };
        if read.as_ref().is_ok_and(is_data) {
            link.counters.data_read();
        }
        taken = take_frame(router, link, read).await;
        if taken.is_err() {
            break;
        }
    }
    if !tells.is_empty() {
        hand_on_tells(router, link, tells_to, tells).await;
    }
    link.counters.frames_read(frames);
    taken
}

/// Hands the tells gathered for `to` on, in order; waits only while the
/// peer is past its window.
async fn hand_on_tells(router: &Arc<Router>, link: &Arc<LinkHandle>, to: &str, tells: &mut VecDeque<Envelope>) {
    while let Some(waiting) = router.inbound_tells(link, to, tells) {
        waiting.wait(router, link).await;
    }
}

/// The most tells gathered before they are handed on: as many as a module
/// takes at once from its mailbox.
const GATHERED_TELLS: usize = 32;

/// Bodies taken, in bytes, after which the reader gives way to the
/// modules on its thread however few frames they made.
const GIVE_WAY_BYTES: usize = 256 * 1024;

/// Data frames taken after which the reader gives way to the modules on
/// its thread: tokio's cooperative budget, as its own channels spend it.
const GIVE_WAY_FRAMES: u32 = 128;

/// When the reader gives way. A reader with frames buffered never waits,
/// so it yields now and then to the modules on its thread: they drain their
/// mailboxes instead of the reader parking what they miss, and drop the
/// bodies they were lent — slices of what was read — so that the read
/// buffer's memory is taken again rather than new pages each read.
#[derive(Default)]
struct Pace {
    /// Data frames taken since the reader last gave way.
    frames: u32,
    /// Body bytes taken since the reader last gave way.
    bytes: usize,
}

impl Pace {
    /// After each data frame: whether to give way now, as it does every
    /// [`GIVE_WAY_FRAMES`] frames and every [`GIVE_WAY_BYTES`] of bodies.
    /// A count, not an await: tells gathered are handed on before the
    /// reader gives way.
    fn took(&mut self, body_len: usize) -> bool {
        self.frames += 1;
        self.bytes += body_len;
        if self.frames >= GIVE_WAY_FRAMES || self.bytes >= GIVE_WAY_BYTES {
            *self = Pace::default();
            return true;
        }
        false
    }
}

/// Whether `frame` is a tell, an ask or a publish.
fn is_data(frame: &Frame) -> bool {
    matches!(frame, Frame::Tell { .. } | Frame::Ask { .. } | Frame::Publish { .. })
}

/// Takes one decoded frame (or what was wrong with it). The error is why
/// the link must close.
async fn take_frame(
    router: &Arc<Router>,
    link: &Arc<LinkHandle>,
    read: Result<Frame, FrameError>,
) -> Result<(), String> {
    match read {
        // The connection itself failed (reset, say): the peer or the
        // network went away; nothing it sent was wrong.
        Err(FrameError::Io(error)) => {
            tracing::warn!(node = router.node(), peer = %link.peer, via = %link.describe, %error, "link lost");
            Err(format!("link lost: {error}"))
        }
        Err(error) => {
            tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, %error, "bad input: closing the link");
            link.broken.store(true, Ordering::Release);
            let reason = format!("bad input from peer: {error}");
            // The peer hears why, if it still reads.
            link.send_control(&Frame::Bye { reason: reason.clone() });
            Err(reason)
        }
        Ok(Frame::Bye { reason }) => Err(format!("peer said goodbye: {reason}")),
        Ok(frame) => {
            router.inbound(link, frame).await;
            Ok(())
        }
    }
}

/// The link's close signal, as its reader waits on it beside the link each
/// time it has read all there was: it registers with the token once, and
/// while the reader's task wakes the same waker it only looks at the flag
/// (one load), where polling the registered wait again takes the token's
/// lock, every read.
struct CloseSignal<'a> {
    token: &'a CancellationToken,
    waiting: Pin<Box<WaitForCancellationFuture<'a>>>,
    /// The waker the wait is registered with.
    registered: Option<Waker>,
}

impl<'a> CloseSignal<'a> {
    fn new(token: &'a CancellationToken) -> Self {
        Self {
            token,
            waiting: Box::pin(token.cancelled()),
            registered: None,
        }
    }
}

impl Future for CloseSignal<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            // The cancel wakes the waker registered, and is seen above.
            return Poll::Pending;
        }
        let this = &mut *self;
        match this.waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                this.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The names a link's reader meets most: who sends, and who is asked.
#[derive(Default)]
struct Names {
    senders: RecentNames,
    callees: RecentNames,
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use tokio_util::sync::CancellationToken;

    use super::CloseSignal;

    /// A waker that remembers being woken.
    #[derive(Default)]
    struct Woken(AtomicBool);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Woken>, Waker) {
        let woken = Arc::new(Woken::default());
        (woken.clone(), Waker::from(woken))
    }

    /// Registered once, the signal is not polled again while the waker is
    /// the same: the cancel still wakes it, and is seen.
    #[test]
    fn the_close_signal_wakes_its_waiter_once_registered() {
        let token = CancellationToken::new();
        let mut signal = pin!(CloseSignal::new(&token));
        let (woken, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        assert!(signal.as_mut().poll(&mut cx).is_pending(), "registers");
        assert!(signal.as_mut().poll(&mut cx).is_pending(), "only looks");
        token.cancel();
        assert!(woken.0.load(Ordering::SeqCst), "the cancel wakes the waker registered");
        assert_eq!(signal.as_mut().poll(&mut cx), Poll::Ready(()));
    }

    /// Polled with another waker, the signal registers that one.
    #[test]
    fn the_close_signal_registers_a_new_waker() {
        let token = CancellationToken::new();
        let mut signal = pin!(CloseSignal::new(&token));
        let (first, first_waker) = waker();
        assert!(signal
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending());
        let (second, second_waker) = waker();
        let mut cx = Context::from_waker(&second_waker);
        assert!(signal.as_mut().poll(&mut cx).is_pending());
        token.cancel();
        assert!(
            second.0.load(Ordering::SeqCst),
            "the cancel wakes the waker polled last"
        );
        assert!(!first.0.load(Ordering::SeqCst), "not the one it replaced");
        assert_eq!(signal.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
