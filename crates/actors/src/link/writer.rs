//! The link's writer: frames are encoded on the sending thread into a
//! per-thread arena, queued in FIFO order, and written by one task that
//! gathers everything queued since its last write into one system call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use botbus_core::{DataFrame, Frame, FrameError, LinkWriter};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::codec::Encoder;

use super::LinkHandle;

/// Bytes the writer gathers before it writes.
pub(super) const COALESCE_BYTES: usize = 256 * 1024;
/// Frames at least this large are written without being gathered.
pub(super) const DIRECT_WRITE_BYTES: usize = 16 * 1024;
/// The block frames are encoded into, a slice each.
pub(super) const ARENA_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where this thread encodes frames (see [`LinkHandle::encode`]).
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
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
        in_arena(|arena| self.codec.clone().encode(frame, arena))
    }

    /// [`LinkHandle::encode`] for a data frame that borrows what it carries.
    pub(super) fn encode_data(&self, frame: &DataFrame<'_>) -> Result<Bytes, FrameError> {
        in_arena(|arena| self.codec.encode_data(frame, arena))
    }
}

/// Runs `encode` on this thread's arena; the bytes it appended, as their own
/// `Bytes` (a slice of the arena's block).
fn in_arena(encode: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>) -> Result<Bytes, FrameError> {
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() - arena.len() < 4096 {
            arena.reserve(ARENA_BYTES);
        }
        encode(arena)?;
        Ok(arena.split().freeze())
    })
}

impl LinkHandle {}

pub(super) async fn write_loop(
    mut write: LinkWriter,
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    link: Arc<LinkHandle>,
) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    let mut held: Vec<Outgoing> = Vec::new();
    let result: std::io::Result<()> = async {
        loop {
            // What was queued goes out before the writer notices the link
            // closed: a goodbye queued as the link breaks (naming why) too.
            let first = tokio::select! {
                biased;
                next = queued.recv() => next,
                () = link.closed.cancelled() => return Ok(()),
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
            for outgoing in held.drain(..) {
                // Written: the permit comes back now, or with the peer's credit.
                if let Outgoing::Frame {
                    _permit: Some(permit), ..
                } = outgoing
                {
                    if link.peer_credits {
                        permit.forget();
                    }
                }
            }
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
