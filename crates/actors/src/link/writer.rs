//! The link's writer. Whoever sends a frame encodes it on their own thread
//! straight into the link's outbox, behind what was queued before it.
//! Whoever writes takes everything queued since the last write and writes
//! it with one system call. Small frames are encoded back to back into one
//! buffer (the writer swaps it for the one it just wrote, so no frame gets
//! a buffer or a queue node of its own); a frame with a large body gets its
//! own buffer, written from where it lies, and the large
//! [`Blob`](botbus_core::Blob)s in it are not copied even there: the frame
//! is encoded around them ([`Splices`]) and the writer gathers the pieces
//! into one vectored write.
//!
//! Who writes depends on whether someone waits for the frame. An ask, a
//! reply or a control frame is written by its sender, on the sender's own
//! thread, at once — when nothing is queued ahead of it and nobody else is
//! writing: no other task or thread is woken to write it, as a blocking
//! pipe would not wake one. Only if the link would block (or someone else
//! holds it) does the link's writer task take over, and it is woken for
//! that. Tells and publishes, which nobody waits for one by one, are left
//! for the writer task, which writes a flood of them in a few large writes
//! instead of one system call each.

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use botbus_core::{Frame, FrameError, LinkWriter, Payload, SendError, Splices};
use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::{Notify, SemaphorePermit};
use tokio_util::codec::Encoder;

use super::LinkHandle;

/// Frames with a body at least this large are encoded into a buffer of
/// their own and written from it: gathering them would cost a copy more
/// than the extra write.
const OWN_BUFFER_BYTES: usize = 16 * 1024;
/// What the outbox's buffer grows by at least.
const OUTBOX_GROWTH: usize = 64 * 1024;
/// A written buffer larger than this is let go rather than kept for reuse:
/// a burst does not pin its peak on an idle link.
const KEPT_OUTBOX_BYTES: usize = 256 * 1024;
/// Room for what a frame holds besides its body: names, ids, lengths.
const FRAME_HEAD_ROOM: usize = 4 * 1024;

/// Bytes of data frames queued for the writer: a sender finds room while
/// less than this waits to be written.
const BACKLOG_BYTES: usize = 1024 * 1024;

/// The bytes of data frames queued for the writer and not yet written. The
/// frame window bounds how many frames wait; this bounds how much they
/// hold: a sender finds room while less than [`BACKLOG_BYTES`] waits, so a
/// link to a slow reader holds at most that plus one frame, however large
/// its frames — and the buffers of frames written are reused for the next
/// ones instead of fresh memory being faulted in for each.
#[derive(Default)]
pub(super) struct Backlog {
    bytes: AtomicUsize,
    room: Notify,
}

impl Backlog {
    /// Whether a data frame may be queued now.
    pub(super) fn has_room(&self) -> bool {
        self.bytes.load(Ordering::Acquire) < BACKLOG_BYTES
    }

    /// Waits until a data frame may be queued.
    pub(super) async fn room(&self) {
        loop {
            // Made before the look, so a write between the two still wakes it.
            let written = self.room.notified();
            if self.has_room() {
                return;
            }
            written.await;
        }
    }

    fn queued(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn written(&self, bytes: usize) {
        let before = self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if before >= BACKLOG_BYTES && before - bytes < BACKLOG_BYTES {
            self.room.notify_waiters();
        }
    }
}
/// The buffer of a large frame. Once written it is kept for the next one
/// (a few, up to a size): a fresh allocation that large would be new
/// memory each time, whose pages the kernel faults in and clears, and whose
/// bytes the write then copies cold — costing more than the frame's copy
/// itself. A reused buffer is mapped already, and warm.
struct LargeFrame(BytesMut);

/// Written large-frame buffers, for the next large frames of any link.
static LARGE_FRAMES: std::sync::Mutex<Vec<BytesMut>> = std::sync::Mutex::new(Vec::new());

impl LargeFrame {
    /// Buffers kept.
    const KEPT: usize = 16;
    /// The largest buffer kept.
    const KEPT_BYTES: usize = 1024 * 1024;

    /// An empty buffer with room for `len` bytes.
    fn buffer(len: usize) -> BytesMut {
        let kept = LARGE_FRAMES.lock().expect("frame buffers").pop();
        let mut buffer = kept.unwrap_or_default();
        buffer.clear();
        buffer.reserve(len);
        buffer
    }
}

impl AsRef<[u8]> for LargeFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for LargeFrame {
    fn drop(&mut self) {
        if self.0.capacity() <= Self::KEPT_BYTES {
            let mut kept = LARGE_FRAMES.lock().expect("frame buffers");
            if kept.len() < Self::KEPT {
                kept.push(std::mem::take(&mut self.0));
            }
        }
    }
}

/// Why a frame could not be queued.
#[derive(Debug)]
pub(super) enum QueueError {
    /// It cannot be encoded (too large for the link, say); nothing of it
    /// was queued.
    Encode(FrameError),
    /// The writer has stopped: the link is closed or closing.
    Stopped,
}

/// When a queued frame is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Urgency {
    /// Someone waits for it — an ask, a reply, a control frame: its sender
    /// writes it at once, on its own thread, if nothing is queued ahead of
    /// it and nobody else is writing.
    Now,
    /// Nobody waits for it by itself — a tell, a publish: the writer task
    /// writes it with whatever else is queued by then.
    Batched,
}

/// Frames waiting to be written, in the order they were queued; the link's
/// write half, held by whoever writes; and the counts settled once frames
/// are written.
pub(super) struct Outbox {
    queued: Mutex<Queued>,
    /// The write half and the batch being written on it.
    writing: Mutex<Writing>,
    /// Wakes the writer task: a frame was queued into an empty outbox for
    /// it, or a sender that began writing left the rest to it (a wake-up
    /// sent while it writes is kept for its next look).
    ready: Notify,
    /// Bytes of data frames queued and not yet written.
    pub(super) backlog: Backlog,
}

#[derive(Default)]
struct Queued {
    /// What was queued before `small`, in order: frames with a buffer of
    /// their own, and the runs of small frames queued between them.
    before: Vec<Bytes>,
    /// Small frames, encoded back to back, after everything in `before`.
    small: BytesMut,
    /// Data frames queued since the writer last took, and their bytes.
    data_frames: usize,
    data_bytes: usize,
    /// A close is queued: the writer shuts the stream down after it.
    closing: bool,
    /// Writing has ended: nothing more is taken.
    stopped: bool,
    /// Frames queued in all, and of them data frames (for `LinkStats`).
    frames_out: u64,
    data_out: u64,
}

impl Queued {
    fn is_empty(&self) -> bool {
        self.before.is_empty() && self.small.is_empty() && !self.closing
    }
}

/// What the writer took in one look, besides the bytes.
#[derive(Debug, Clone, Copy)]
struct Taken {
    data_frames: usize,
    data_bytes: usize,
    closing: bool,
}

impl Outbox {
    /// An empty outbox writing to `write`.
    pub(super) fn new(write: LinkWriter) -> Outbox {
        Outbox {
            queued: Mutex::default(),
            writing: Mutex::new(Writing {
                write,
                before: Vec::new(),
                before_written: 0,
                small: BytesMut::new(),
                small_written: 0,
                batch: None,
                shutting: false,
                ended: None,
            }),
            ready: Notify::new(),
            backlog: Backlog::default(),
        }
    }

    /// Queues one frame, which `encode` appends to the buffer it is given:
    /// the outbox's own for a small frame, encoded in place under the lock
    /// (so frames keep the order they were queued in), or a buffer of its
    /// own for a body of [`OWN_BUFFER_BYTES`] or more — and then `encode`
    /// is also given [`Splices`], for what it leaves out of the buffer.
    /// `data`: a data frame, counted in the backlog. Returns whether the
    /// frame is first in line (nothing was queued ahead of it): then
    /// whoever queued it sees that it gets written.
    fn push(
        &self,
        body_len: usize,
        data: bool,
        encode: impl Fn(&mut BytesMut, Option<&mut Splices>) -> Result<(), FrameError>,
    ) -> Result<bool, QueueError> {
        let own = if body_len >= OWN_BUFFER_BYTES {
            let mut splices = Splices::new();
            let mut own = LargeFrame::buffer(body_len + FRAME_HEAD_ROOM);
            encode(&mut own, Some(&mut splices)).map_err(QueueError::Encode)?;
            Some((Bytes::from_owner(LargeFrame(own)), splices))
        } else {
            None
        };
        let mut queued = self.queued.lock().expect("outbox lock");
        if queued.stopped {
            return Err(QueueError::Stopped);
        }
        let first_in_line = queued.is_empty();
        let len = match own {
            Some((encoded, splices)) => {
                if !queued.small.is_empty() {
                    let run = std::mem::take(&mut queued.small).freeze();
                    queued.before.push(run);
                }
                let len = encoded.len() + splices.len();
                splices.interleave(encoded, |piece| queued.before.push(piece));
                len
            }
            None => {
                let small = &mut queued.small;
                let room = body_len + FRAME_HEAD_ROOM;
                if small.capacity() - small.len() < room {
                    small.reserve(room.max(OUTBOX_GROWTH));
                }
                let start = small.len();
                encode(small, None).map_err(QueueError::Encode)?;
                small.len() - start
            }
        };
        queued.frames_out += 1;
        if data {
            queued.data_out += 1;
            queued.data_frames += 1;
            queued.data_bytes += len;
            self.backlog.queued(len);
        }
        Ok(first_in_line)
    }

    /// Queues the end: the writer shuts the stream down once what is
    /// queued before it is written.
    fn push_close(&self) {
        let mut queued = self.queued.lock().expect("outbox lock");
        let first_in_line = queued.is_empty();
        queued.closing = true;
        drop(queued);
        if first_in_line {
            self.ready.notify_one();
        }
    }

    /// Takes everything queued: the small frames by swapping the outbox's
    /// buffer with `small` (the writer's, empty), the rest into `before`.
    fn take(&self, small: &mut BytesMut, before: &mut Vec<Bytes>) -> Taken {
        let mut queued = self.queued.lock().expect("outbox lock");
        std::mem::swap(&mut queued.small, small);
        std::mem::swap(&mut queued.before, before);
        Taken {
            data_frames: std::mem::take(&mut queued.data_frames),
            data_bytes: std::mem::take(&mut queued.data_bytes),
            closing: queued.closing,
        }
    }

    /// Writing has ended: what is still queued is dropped, and frames
    /// queued from now on are refused.
    fn stop(&self) {
        let mut queued = self.queued.lock().expect("outbox lock");
        queued.stopped = true;
        queued.before.clear();
        queued.small = BytesMut::new();
    }

    /// Frames queued so far, and of them data frames.
    pub(super) fn sent(&self) -> (u64, u64) {
        let queued = self.queued.lock().expect("outbox lock");
        (queued.frames_out, queued.data_out)
    }
}

/// Pieces written with one system call at most.
const GATHERED: usize = 64;

/// The link's write half and the batch being written on it: whoever holds
/// it writes — the writer task, or a sender writing at once. Everything
/// not yet written is here, in order, ahead of what is still queued in the
/// outbox, so whoever writes next goes on where the last one stopped.
struct Writing {
    write: LinkWriter,
    /// Frames with buffers of their own and runs of small frames, in
    /// order, written before `small`.
    before: Vec<Bytes>,
    /// How many pieces of `before` are written.
    before_written: usize,
    /// Small frames, encoded back to back (swapped with the outbox's
    /// buffer on every take: two buffers serve the link, each filled while
    /// the other is written).
    small: BytesMut,
    /// How many bytes of `small` are written.
    small_written: usize,
    /// What the batch being written counts, while one is.
    batch: Option<Taken>,
    /// A close was written: the stream is being shut down.
    shutting: bool,
    /// How writing ended, once it has: shut down, or failed (why).
    ended: Option<Result<(), String>>,
}

/// Where a turn of writing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// Everything queued is written.
    Idle,
    /// The batches it was to write are written; the next one is taken,
    /// for the writer task to write.
    Yielded,
    /// Writing has ended (see [`Writing::ended`]).
    Ended,
}

impl Writing {
    /// Writes what is queued — at most `batches` new batches of it —
    /// until nothing is, or writing has ended; or returns `Pending` when
    /// the link would block, and `cx` is woken once it can go on.
    fn drive(&mut self, link: &LinkHandle, cx: &mut Context<'_>, batches: usize) -> Poll<Drive> {
        if self.ended.is_some() {
            return Poll::Ready(Drive::Ended);
        }
        match ready!(self.write_queued(link, cx, batches)) {
            Ok(drive @ (Drive::Idle | Drive::Yielded)) => Poll::Ready(drive),
            end => {
                self.ended = Some(end.map(|_| ()).map_err(|error| error.to_string()));
                link.outbox.stop();
                Poll::Ready(Drive::Ended)
            }
        }
    }

    /// [`Writing::drive`], before an end is noted: `Ok(Drive::Ended)` once
    /// the stream is shut down.
    fn write_queued(
        &mut self,
        link: &LinkHandle,
        cx: &mut Context<'_>,
        mut batches: usize,
    ) -> Poll<std::io::Result<Drive>> {
        loop {
            if self.shutting {
                ready!(self.write.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(Drive::Ended));
            }
            let batch = match self.batch {
                Some(batch) => batch,
                None => {
                    let taken = link.outbox.take(&mut self.small, &mut self.before);
                    if self.small.is_empty() && self.before.is_empty() && !taken.closing {
                        return Poll::Ready(Ok(Drive::Idle));
                    }
                    // Credit owed to the peer rides along with whatever is written.
                    let owed = link.credit_to_piggyback();
                    if owed > 0 {
                        let _ = link
                            .codec
                            .clone()
                            .encode(&Frame::Credit { frames: owed }, &mut self.small);
                    }
                    (self.before_written, self.small_written) = (0, 0);
                    let batch = *self.batch.insert(taken);
                    if batches == 0 {
                        return Poll::Ready(Ok(Drive::Yielded));
                    }
                    batches -= 1;
                    batch
                }
            };
            ready!(self.write_batch(cx))?;
            ready!(self.write.as_mut().poll_flush(cx))?;
            self.batch = None;
            if self.small.capacity() > KEPT_OUTBOX_BYTES {
                self.small = BytesMut::new();
            } else {
                self.small.clear();
            }
            // Written: towards a peer that does not credit, the permits
            // come back now.
            if !link.peer_credits {
                link.permits.add_permits(batch.data_frames);
            }
            link.outbox.backlog.written(batch.data_bytes);
            self.shutting = batch.closing;
        }
    }

    /// Writes the batch's pieces, then its small frames, all of them:
    /// gathered into one vectored write as far as the writer takes them
    /// (up to [`GATHERED`] pieces a call). Small frames alone, the usual
    /// batch, go as one slice, with no gathered slices to fill.
    fn write_batch(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Writing {
            write,
            before,
            before_written,
            small,
            small_written,
            ..
        } = self;
        loop {
            let pieces = &before[*before_written..];
            let unwritten = &small[*small_written..];
            let mut written = if pieces.is_empty() {
                if unwritten.is_empty() {
                    before.clear();
                    *before_written = 0;
                    return Poll::Ready(Ok(()));
                }
                // Vectored all the same: over a Unix socket a plain write
                // is a `sendto`, and on one CPU that costs the asker more
                // context switches than a `writev` of the same bytes.
                ready!(write.as_mut().poll_write_vectored(cx, &[IoSlice::new(unwritten)]))?
            } else {
                let mut slices = [IoSlice::new(&[]); GATHERED];
                let mut count = 0;
                for piece in pieces.iter().filter(|piece| !piece.is_empty()).take(GATHERED) {
                    slices[count] = IoSlice::new(piece);
                    count += 1;
                }
                if count < GATHERED && !unwritten.is_empty() {
                    slices[count] = IoSlice::new(unwritten);
                    count += 1;
                }
                if count == 0 {
                    // Only empty pieces were left.
                    *before_written = before.len();
                    continue;
                }
                ready!(write.as_mut().poll_write_vectored(cx, &slices[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            while let Some(piece) = before.get_mut(*before_written) {
                if written < piece.len() {
                    piece.advance(written);
                    written = 0;
                    break;
                }
                written -= piece.len();
                *before_written += 1;
            }
            *small_written += written;
        }
    }
}

impl LinkHandle {
    /// Queues a frame that takes no permit — a control frame, a reply:
    /// never waits, and is written at once if it can be.
    pub(super) fn queue_control(&self, frame: &Frame) -> Result<(), QueueError> {
        let first_in_line = self
            .outbox
            .push(frame.body_len(), false, |dst, _| self.codec.clone().encode(frame, dst))?;
        self.queued(first_in_line, Urgency::Now);
        Ok(())
    }

    /// Queues the reply to ask `id`, its payload a value here encoded
    /// straight into the outbox as a data frame's is (its large blobs
    /// spliced in): no owned frame, name or body is made for it. `None` if
    /// the payload is no value here (bytes received), does not measure, or
    /// goes as JSON: the reply is queued as a whole frame then
    /// ([`LinkHandle::queue_control`]), which says what is wrong with it.
    pub(super) fn queue_reply_value(&self, id: u64, payload: &Payload, json: bool) -> Option<Result<(), QueueError>> {
        if self.sends_json(payload, json) {
            return None;
        }
        let body = payload.value_body()?.ok()?;
        let name = payload.name();
        let queued = self.outbox.push(body.len(), false, |dst, splices| {
            self.codec.encode_reply_value(id, name, &body, dst, splices)
        });
        Some(queued.map(|first_in_line| self.queued(first_in_line, Urgency::Now)))
    }

    /// Queues a data frame, `permit` taken from the window: it comes back
    /// with the peer's credit, or once written towards a peer that does not
    /// credit.
    pub(super) fn queue_data_frame(&self, frame: &Frame, permit: SemaphorePermit<'_>) -> Result<(), QueueError> {
        let urgency = match frame {
            Frame::Ask { .. } => Urgency::Now,
            _ => Urgency::Batched,
        };
        self.queue_data_with(frame.body_len(), permit, urgency, |dst, _| {
            self.codec.clone().encode(frame, dst)
        })
    }

    /// [`LinkHandle::queue_data_frame`] for a data frame that `encode`
    /// appends to the buffer it is given (leaving out what it notes in the
    /// splices, if given any), with a body of `body_len` bytes.
    pub(super) fn queue_data_with(
        &self,
        body_len: usize,
        permit: SemaphorePermit<'_>,
        urgency: Urgency,
        encode: impl Fn(&mut BytesMut, Option<&mut Splices>) -> Result<(), FrameError>,
    ) -> Result<(), QueueError> {
        let first_in_line = self.outbox.push(body_len, true, encode)?;
        permit.forget();
        self.queued(first_in_line, urgency);
        Ok(())
    }

    /// Queues the end of the link, after everything queued before it.
    pub(super) fn queue_close(&self) {
        self.outbox.push_close();
    }

    /// A frame was queued. If it is first in line, whoever queued it sees
    /// that it gets written: at once, here, if it is urgent and nobody else
    /// is writing; else by the writer task, woken for it. (A frame queued
    /// behind others is written with them.)
    fn queued(&self, first_in_line: bool, urgency: Urgency) {
        if first_in_line && !(urgency == Urgency::Now && self.write_now()) {
            self.outbox.ready.notify_one();
        }
    }

    /// Writes what is queued on this thread, without waiting, if nobody
    /// else is writing; whether everything was written. If not, the writer
    /// task must go on (it is woken with the waker it polls with, which a
    /// write here has replaced).
    fn write_now(&self) -> bool {
        // Some writers lean on a runtime (a file is written on tokio's
        // blocking pool): a thread outside any leaves writing to the task.
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let Ok(mut writing) = self.outbox.writing.try_lock() else {
            return false;
        };
        // A batch is half written: the writer task waits for the link to
        // take more, and goes on when it does.
        if writing.batch.is_some() {
            return false;
        }
        // One batch: what is queued with its frame. A sender does not go
        // on writing what others keep queuing meanwhile.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        writing.drive(self, &mut cx, 1) == Poll::Ready(Drive::Idle)
    }

    /// Why a frame cannot be sent on this link, naming the link: its limit
    /// may be the peer's.
    pub(super) fn cannot_send(&self, error: &FrameError) -> String {
        format!("{error}, on the link to `{}`", self.peer)
    }
}

impl QueueError {
    /// As an error of the send that queued the frame.
    pub(super) fn for_send(self, link: &LinkHandle) -> SendError {
        match self {
            QueueError::Encode(error) => SendError::Encode(link.cannot_send(&error)),
            QueueError::Stopped => SendError::Stopped(format!("link to `{}`", link.peer)),
        }
    }
}

/// The link's writer task: writes what senders queue and leave to it — on
/// each wake-up, everything queued since the last write, in one system
/// call — until the link closes.
pub(super) async fn write_loop(link: Arc<LinkHandle>) {
    let outbox = &link.outbox;
    // Made once: waiting on it registers with the token once, not per write.
    let closed = link.closed.cancelled();
    tokio::pin!(closed);
    loop {
        // Made before the writing, so a wake-up sent meanwhile is kept.
        let woken = outbox.ready.notified();
        tokio::pin!(woken);
        let drive = std::future::poll_fn(|cx| outbox.writing.lock().expect("writer lock").drive(&link, cx, usize::MAX));
        tokio::select! {
            biased;
            drive = drive => match drive {
                Drive::Ended => break,
                Drive::Yielded => {}
                // What was queued went out before the writer looks at
                // whether the link closed: a goodbye queued as the link
                // breaks (naming why) too.
                Drive::Idle => tokio::select! {
                    biased;
                    () = woken => {}
                    () = &mut closed => break,
                },
            },
            // A sender wrote meanwhile, and left the rest to this task:
            // write again, with this task's waker.
            () = woken.as_mut() => {}
        }
    }
    link.outbox.stop();
    let ended = outbox.writing.lock().expect("writer lock").ended.clone();
    let reason = match ended {
        Some(Err(error)) => {
            tracing::debug!(peer = %link.peer, %error, "link writer stopped");
            format!("writing to the peer failed: {error}")
        }
        Some(Ok(())) | None => "closed by this node".to_owned(),
    };
    link.close_reason.lock().expect("link lock").get_or_insert(reason);
    link.closed.cancel();
}
