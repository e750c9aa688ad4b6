//! The read buffers of links: room for the next read without fresh memory
//! per frame.
//!
//! A link's reader hands whole frames on as slices of the bytes it read
//! (`Incoming::Postcard`), so a module holds a share of the read buffer
//! until it drops the message. Growing a buffer still shared that way
//! cannot reuse it: it takes new memory and copies the partial frame at its
//! end over. With frames of 64 KiB that was one allocation and up to 64 KiB
//! copied per frame — and the allocator, given each back soon after, handed
//! its pages to the kernel and had them faulted in and cleared again for
//! the next (a fifth of the receiving side's time, measured over a Unix
//! socket on one CPU).
//!
//! So a buffer that runs out of room while shared is *retired*, not grown:
//! kept on its thread until the last share of it is dropped, and then taken
//! again whole for a later read (`BytesMut::try_reclaim`, which moves
//! nothing and allocates nothing). A link that carries large frames reads
//! into larger buffers, so that the partial frame copied when one runs out
//! is a small part of what it held.

use std::cell::RefCell;

use bytes::BytesMut;

/// Room the reader keeps free between frames: how much one read takes at
/// most while frames are small.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// A buffer holds at least this many of the largest frame it has seen, so
/// that copying a partial frame over when it runs out costs little against
/// the frames it held.
const FRAMES_PER_BUFFER: usize = 8;

/// The largest buffer sized for large frames (a larger frame gets a buffer
/// of its own size).
const LARGEST_BUFFER: usize = 1024 * 1024;

/// Retired buffers kept per thread for reuse.
const KEPT: usize = 4;

/// Retired buffers larger than this are let go.
const KEPT_BYTES: usize = 2 * LARGEST_BUFFER;

thread_local! {
    /// Buffers this thread's readers retired, oldest first: each reusable
    /// once every frame read into it has been dropped.
    static RETIRED: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// How a reader's buffer grows.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReadRoom {
    /// The largest whole frame read into the current buffer (prefix
    /// included): what the next buffer is sized for.
    largest_frame: usize,
    /// The size of the current buffer, if this made it.
    buffer_size: usize,
}

impl ReadRoom {
    /// A whole frame of `len` bytes, prefix included, was read.
    pub(crate) fn read_frame(&mut self, len: usize) {
        self.largest_frame = self.largest_frame.max(len);
    }

    /// Makes room in `src` for the next read: at least `wanted` bytes, and
    /// at least half of [`READ_AHEAD`]. The bytes in `src` (a partial frame)
    /// stay as they are, moved to another buffer if this one is shared.
    pub(crate) fn make_room(&mut self, src: &mut BytesMut, wanted: usize) {
        let wanted = wanted.max(READ_AHEAD / 2);
        if src.capacity() - src.len() >= wanted {
            return;
        }
        // Nobody holds a frame of this buffer any more: its room is back,
        // with the partial frame moved to its start.
        if src.try_reclaim(wanted) {
            return;
        }
        let size = (src.len() + wanted.max(READ_AHEAD))
            .max(self.largest_frame.saturating_mul(FRAMES_PER_BUFFER).min(LARGEST_BUFFER));
        let mut next = reuse(size).unwrap_or_else(|| BytesMut::with_capacity(size));
        next.extend_from_slice(src);
        let mut retired = std::mem::replace(src, next);
        if std::mem::replace(&mut self.buffer_size, size) <= KEPT_BYTES {
            retired.clear();
            retire(retired);
        }
        self.largest_frame = 0;
    }
}

/// A retired buffer with room for `size` bytes that nobody reads from any
/// more, if this thread has one.
fn reuse(size: usize) -> Option<BytesMut> {
    RETIRED.with_borrow_mut(|retired| {
        let at = retired.iter_mut().position(|buffer| buffer.try_reclaim(size))?;
        Some(retired.remove(at))
    })
}

/// Keeps `buffer` (empty) for a later read on this thread; the oldest
/// retired buffer goes if too many are kept.
fn retire(buffer: BytesMut) {
    RETIRED.with_borrow_mut(|retired| {
        if retired.len() == KEPT {
            retired.remove(0);
        }
        retired.push(buffer);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_still_shared_is_retired_and_taken_again_once_free() {
        let mut room = ReadRoom::default();
        let mut src = BytesMut::with_capacity(READ_AHEAD);
        let first = src.as_ptr() as usize;
        src.resize(READ_AHEAD - 10, 1);
        let held = src.split_to(READ_AHEAD - 20).freeze(); // a module holds a frame
        room.make_room(&mut src, 100);
        assert_eq!(&src[..], &[1; 10][..], "the partial frame moved over");
        assert!(src.capacity() - src.len() >= READ_AHEAD / 2);
        assert_ne!(src.as_ptr() as usize, first, "a shared buffer is not written over");
        assert!(reuse(READ_AHEAD).is_none(), "not while a frame of it is held");

        drop(held);
        let again = reuse(READ_AHEAD).expect("the retired buffer, free again");
        assert_eq!(again.as_ptr() as usize, first, "taken again from its start");
        assert!(again.is_empty() && again.capacity() >= READ_AHEAD);
    }

    #[test]
    fn a_free_buffer_is_reclaimed_in_place() {
        let mut room = ReadRoom::default();
        let mut src = BytesMut::with_capacity(READ_AHEAD);
        let start = src.as_ptr() as usize;
        src.resize(READ_AHEAD - 10, 1);
        drop(src.split_to(READ_AHEAD - 20)); // taken and dropped already
        room.make_room(&mut src, 100);
        assert_eq!(src.as_ptr() as usize, start, "the partial frame moved to the start");
        assert_eq!(&src[..], &[1; 10][..]);
    }

    #[test]
    fn large_frames_get_large_buffers() {
        let mut room = ReadRoom::default();
        room.read_frame(64 * 1024 + 40);
        let mut src = BytesMut::with_capacity(READ_AHEAD);
        src.resize(READ_AHEAD, 1);
        let held = src.split_to(READ_AHEAD - 8).freeze();
        room.make_room(&mut src, 8);
        assert!(src.capacity() >= FRAMES_PER_BUFFER * (64 * 1024 + 40));
        drop(held);
    }
}
