//! The link's writer. Whoever sends a frame encodes it on their own thread
//! straight into the link's outbox, behind what was queued before it; one
//! task takes everything queued since its last write and writes it with one
//! system call. Small frames are encoded back to back into one buffer (the
//! writer swaps it for the one it just wrote, so no frame gets a buffer or
//! a queue node of its own); a frame with a large body gets its own buffer,
//! written from where it lies, and the large [`Blob`](botbus_core::Blob)s
//! in it are not copied even there: the frame is encoded around them
//! ([`Splices`]) and the writer gathers the pieces into one vectored write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use botbus_core::{Frame, FrameError, LinkWriter, SendError, Splices};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, SemaphorePermit};
use tokio_util::codec::Encoder;

use super::LinkHandle;

/// Frames with a body at least this large are encoded into a buffer of
/// their own and written from it: gathering them would cost a copy more
/// than the extra write.
pub(super) const DIRECT_WRITE_BYTES: usize = 16 * 1024;
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

/// Frames waiting for the writer, in the order they were queued, and the
/// counts the writer settles once they are written.
#[derive(Default)]
pub(super) struct Outbox {
    queued: Mutex<Queued>,
    /// Wakes the writer when a frame is queued into an empty outbox (a
    /// wake-up sent while it writes is kept for its next look).
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
    /// The writer has stopped: nothing more is taken.
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
struct Taken {
    data_frames: usize,
    data_bytes: usize,
    closing: bool,
}

impl Outbox {
    /// Queues one frame, which `encode` appends to the buffer it is given:
    /// the outbox's own for a small frame, encoded in place under the lock
    /// (so frames keep the order they were queued in), or a buffer of its
    /// own for a body of [`DIRECT_WRITE_BYTES`] or more — and then `encode`
    /// is also given [`Splices`], for what it leaves out of the buffer.
    /// `data`: a data frame, counted in the backlog.
    fn push(
        &self,
        body_len: usize,
        data: bool,
        encode: impl Fn(&mut BytesMut, Option<&mut Splices>) -> Result<(), FrameError>,
    ) -> Result<(), QueueError> {
        let own = if body_len >= DIRECT_WRITE_BYTES {
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
        let was_empty = queued.is_empty();
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
        drop(queued);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues the end: the writer shuts the stream down once what is
    /// queued before it is written.
    fn push_close(&self) {
        let mut queued = self.queued.lock().expect("outbox lock");
        let was_empty = queued.is_empty();
        queued.closing = true;
        drop(queued);
        if was_empty {
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

    /// The writer has stopped: what is still queued is dropped, and frames
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

impl LinkHandle {
    /// Queues a frame that takes no permit — a control frame, a reply:
    /// never waits.
    pub(super) fn queue_control(&self, frame: &Frame) -> Result<(), QueueError> {
        self.outbox
            .push(frame.body_len(), false, |dst, _| self.codec.clone().encode(frame, dst))
    }

    /// Queues a data frame, `permit` taken from the window: it comes back
    /// with the peer's credit, or once written towards a peer that does not
    /// credit.
    pub(super) fn queue_data_frame(&self, frame: &Frame, permit: SemaphorePermit<'_>) -> Result<(), QueueError> {
        self.queue_data_with(frame.body_len(), permit, |dst, _| self.codec.clone().encode(frame, dst))
    }

    /// [`LinkHandle::queue_data_frame`] for a data frame that `encode`
    /// appends to the buffer it is given (leaving out what it notes in the
    /// splices, if given any), with a body of `body_len` bytes.
    pub(super) fn queue_data_with(
        &self,
        body_len: usize,
        permit: SemaphorePermit<'_>,
        encode: impl Fn(&mut BytesMut, Option<&mut Splices>) -> Result<(), FrameError>,
    ) -> Result<(), QueueError> {
        self.outbox.push(body_len, true, encode)?;
        permit.forget();
        Ok(())
    }

    /// Queues the end of the link, after everything queued before it.
    pub(super) fn queue_close(&self) {
        self.outbox.push_close();
    }
}

impl QueueError {
    /// As an error of the send that queued the frame.
    pub(super) fn for_send(self, link: &LinkHandle) -> SendError {
        match self {
            QueueError::Encode(error) => SendError::Encode(error.to_string()),
            QueueError::Stopped => SendError::Stopped(format!("link to `{}`", link.peer)),
        }
    }
}

/// Pieces written with one system call at most.
const GATHERED: usize = 64;

/// Writes `pieces`, then `tail`, all of them: gathered into one vectored
/// write as far as the writer takes them (up to [`GATHERED`] pieces a
/// call). `pieces` is left empty.
async fn write_gathered(write: &mut LinkWriter, pieces: &mut Vec<Bytes>, tail: &[u8]) -> std::io::Result<()> {
    use bytes::Buf;
    use std::io::IoSlice;
    let (mut first, mut tail_written) = (0, 0);
    loop {
        let mut slices = [IoSlice::new(&[]); GATHERED];
        let mut count = 0;
        for piece in pieces[first..].iter().filter(|piece| !piece.is_empty()).take(GATHERED) {
            slices[count] = IoSlice::new(piece);
            count += 1;
        }
        if count < GATHERED && tail_written < tail.len() {
            slices[count] = IoSlice::new(&tail[tail_written..]);
            count += 1;
        }
        if count == 0 {
            pieces.clear();
            return Ok(());
        }
        let mut written = write.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while let Some(piece) = pieces.get_mut(first) {
            if written < piece.len() {
                piece.advance(written);
                written = 0;
                break;
            }
            written -= piece.len();
            first += 1;
        }
        tail_written += written;
    }
}

/// Writes what senders queue, one system call per look at the outbox, until
/// the link closes.
pub(super) async fn write_loop(mut write: LinkWriter, link: std::sync::Arc<LinkHandle>) {
    // Swapped with the outbox's buffer on every look: two buffers serve
    // the link, each filled while the other is written.
    let mut small = BytesMut::new();
    let mut before: Vec<Bytes> = Vec::new();
    let result: std::io::Result<()> = async {
        // Made once: waiting on it registers with the token once, not per write.
        let closed = link.closed.cancelled();
        tokio::pin!(closed);
        loop {
            // What was queued goes out before the writer notices the link
            // closed: a goodbye queued as the link breaks (naming why) too.
            let taken = link.outbox.take(&mut small, &mut before);
            if small.is_empty() && before.is_empty() && !taken.closing {
                tokio::select! {
                    biased;
                    () = link.outbox.ready.notified() => continue,
                    () = &mut closed => return Ok(()),
                }
            }
            // Credit owed to the peer rides along with whatever is written.
            let owed = link.inflow.owed.swap(0, Ordering::AcqRel);
            if owed > 0 {
                let _ = link.codec.clone().encode(&Frame::Credit { frames: owed }, &mut small);
            }
            write_gathered(&mut write, &mut before, &small).await?;
            write.flush().await?;
            if small.capacity() > KEPT_OUTBOX_BYTES {
                small = BytesMut::new();
            } else {
                small.clear();
            }
            // Written: towards a peer that does not credit, the permits
            // come back now.
            if !link.peer_credits {
                link.permits.add_permits(taken.data_frames);
            }
            link.outbox.backlog.written(taken.data_bytes);
            if taken.closing {
                return write.shutdown().await;
            }
        }
    }
    .await;
    link.outbox.stop();
    let reason = match result {
        Err(error) => {
            tracing::debug!(peer = %link.peer, %error, "link writer stopped");
            format!("writing to the peer failed: {error}")
        }
        Ok(()) => "closed by this node".to_owned(),
    };
    link.close_reason.lock().expect("link lock").get_or_insert(reason);
    link.closed.cancel();
}
