//! The link's writer: frames are encoded on the sending thread into a
//! per-thread arena, queued in FIFO order, and written by one task that
//! gathers everything queued since its last write into one system call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use botbus_core::{DataFrame, Frame, FrameError, LinkWriter, SendError};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio_util::codec::Encoder;

use super::LinkHandle;

/// Bytes the writer gathers before it writes.
pub(super) const COALESCE_BYTES: usize = 256 * 1024;
/// Frames at least this large are written without being gathered.
pub(super) const DIRECT_WRITE_BYTES: usize = 16 * 1024;
/// The block frames are encoded into, a slice each.
pub(super) const ARENA_BYTES: usize = 64 * 1024;
/// Room for what a frame holds besides its body: names, ids, lengths.
const FRAME_HEAD_ROOM: usize = 4 * 1024;

thread_local! {
    /// Where this thread encodes frames (see [`LinkHandle::encode`]).
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

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

pub(super) enum Outgoing {
    Frame {
        bytes: Bytes,
        _permit: Option<OwnedSemaphorePermit>,
    },
    Close,
}

impl LinkHandle {
    /// Encodes a frame into the sending thread's arena and hands back its
    /// bytes: small frames share one allocation per 64 KiB instead of one
    /// each, and no lock is taken (every link on a thread shares its arena).
    pub(super) fn encode(&self, frame: &Frame) -> Result<Bytes, FrameError> {
        in_arena(frame.body_len(), |arena| self.codec.clone().encode(frame, arena))
    }

    /// Queues an encoded data frame, holding its permit until it is written.
    pub(super) fn push_data(&self, bytes: Bytes, permit: OwnedSemaphorePermit) -> Result<(), SendError> {
        self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
        self.counters.data_out.fetch_add(1, Ordering::Relaxed);
        self.backlog.queued(bytes.len());
        self.out
            .send(Outgoing::Frame {
                bytes,
                _permit: Some(permit),
            })
            .map_err(|_| SendError::Stopped(format!("link to `{}`", self.peer)))
    }

    /// [`LinkHandle::encode`] for a data frame that borrows what it carries.
    pub(super) fn encode_data(&self, frame: &DataFrame<'_>, body_len: usize) -> Result<Bytes, FrameError> {
        in_arena(body_len, |arena| self.codec.encode_data(frame, arena))
    }
}

/// Runs `encode` on this thread's arena; the bytes it appended, as their own
/// `Bytes` (a slice of the arena's block). A frame with a body of
/// [`DIRECT_WRITE_BYTES`] or more gets a [`LargeFrame`] buffer instead,
/// sized for it up front: in the arena it would outgrow the block.
fn in_arena(
    body_len: usize,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
) -> Result<Bytes, FrameError> {
    if body_len >= DIRECT_WRITE_BYTES {
        let mut own = LargeFrame::buffer(body_len + FRAME_HEAD_ROOM);
        encode(&mut own)?;
        return Ok(Bytes::from_owner(LargeFrame(own)));
    }
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() - arena.len() < body_len + FRAME_HEAD_ROOM {
            arena.reserve(ARENA_BYTES);
        }
        encode(arena)?;
        Ok(arena.split().freeze())
    })
}

pub(super) async fn write_loop(
    mut write: LinkWriter,
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    link: Arc<LinkHandle>,
) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    let mut held: Vec<Outgoing> = Vec::new();
    let result: std::io::Result<()> = async {
        // Made once: waiting on it registers with the token once, not per write.
        let closed = link.closed.cancelled();
        tokio::pin!(closed);
        loop {
            // What was queued goes out before the writer notices the link
            // closed: a goodbye queued as the link breaks (naming why) too.
            let first = tokio::select! {
                biased;
                next = queued.recv() => next,
                () = &mut closed => return Ok(()),
            };
            let mut closing = false;
            let mut next = first;
            // Gather everything queued since the last write into one write.
            while let Some(outgoing) = next.take() {
                match &outgoing {
                    // A large frame is written from where it lies, after
                    // what was gathered before it: copying it costs more
                    // than the extra write.
                    Outgoing::Frame { bytes, .. } if bytes.len() >= DIRECT_WRITE_BYTES => {
                        if !batch.is_empty() {
                            write.write_all(&batch).await?;
                            batch.clear();
                        }
                        write.write_all(bytes).await?;
                    }
                    Outgoing::Frame { bytes, .. } => batch.extend_from_slice(bytes),
                    Outgoing::Close => closing = true,
                }
                held.push(outgoing);
                if closing || batch.len() >= COALESCE_BYTES {
                    break;
                }
                next = queued.try_recv().ok();
            }
            // Credit owed to the peer rides along with whatever is written.
            let owed = link.inflow.owed.swap(0, Ordering::AcqRel);
            if owed > 0 {
                if let Ok(credit) = link.encode(&Frame::Credit { frames: owed }) {
                    batch.extend_from_slice(&credit);
                }
            }
            if !batch.is_empty() {
                write.write_all(&batch).await?;
                batch.clear();
            }
            write.flush().await?;
            let mut written = 0;
            for outgoing in held.drain(..) {
                // Written: the permit comes back now, or with the peer's credit.
                if let Outgoing::Frame {
                    bytes,
                    _permit: Some(permit),
                } = outgoing
                {
                    written += bytes.len();
                    if link.peer_credits {
                        permit.forget();
                    }
                }
            }
            link.backlog.written(written);
            if closing {
                return write.shutdown().await;
            }
        }
    }
    .await;
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
