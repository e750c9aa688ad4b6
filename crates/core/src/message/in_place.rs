//! A small message value held in place, inside the payload that carries
//! it, instead of in a `Box` of its own: sending a tell or an ask of a
//! small message allocates nothing.
//!
//! This module has `unsafe` code, so that the rest needs none (the one
//! other such module is the reply slot of an ask made in this process, in
//! `bus`). A `Box<dyn ErasedMessage>` costs a `malloc` and a `free` per
//! message: about a fifth of an in-process tell's instructions, and 94 of
//! the 1,407 a 64 B tell sent over TCP cost its sender. Holding the value in
//! place takes an erased pointer to bytes that are not a `Box`, which safe
//! Rust cannot make on the stable compiler. What keeps it sound:
//!
//! - **Room.** A value goes in only if its type's size and alignment fit
//!   the room ([`InPlace::fits`], checked for each type where it is put).
//! - **One type.** The pointer functions ([`Ops`]) are made for the type
//!   the value was put in as, and are the only way to reach it; taking it
//!   out as another type is refused by its `TypeId`.
//! - **Once.** The value is dropped once: by `Drop`, or read out by
//!   [`InPlace::take`] or [`InPlace::into_shared`], which forget the room
//!   afterwards. Moving an `InPlace` moves the value's bytes, which every
//!   Rust value allows: nothing here pins it or keeps a pointer into it.
//! - **Interior mutability.** The room is an `UnsafeCell`, so a value that
//!   changes through a shared reference (a `Mutex` locked as it is
//!   serialized) is allowed to.
//! - **Threads.** Only [`Message`] types go in, and they are `Send + Sync`.
//!
//! Its tests run under Miri: `cargo +nightly miri test -p botbus-core --lib in_place`.

#![allow(unsafe_code)]

use std::any::TypeId;
use std::cell::UnsafeCell;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::sync::Arc;

use super::{ErasedMessage, Message};

/// How many eight-byte words a value held in place may take.
///
/// Four: a quaternion, a `String`, a `Vec` (their heap parts stay where
/// they are), a [`Blob`](crate::Blob). More would make an [`Envelope`]
/// larger than 128 bytes, which the compiler then moves with a call to
/// `memcpy` instead of eight register pairs — on every one of the ten or so
/// moves between `tell` and `process`, which costs more than the `Box`
/// saves (measured: 64 bytes held in place made an in-process tell no
/// cheaper, and an ask dearer).
///
/// [`Envelope`]: crate::Envelope
pub(super) const WORDS: usize = 4;

/// Eight-byte-aligned room for a value of up to [`WORDS`] words.
type Room = MaybeUninit<[u64; WORDS]>;

/// What can be done with the value in a room, made for its type.
struct Ops {
    /// The room's value, as a message.
    erase: fn(*mut u8) -> *mut dyn ErasedMessage,
    /// The type of the value.
    type_id: fn() -> TypeId,
    /// Reads the value out of the room into an `Arc`.
    ///
    /// # Safety
    /// The room holds a value of this type, which must not be used or
    /// dropped again.
    into_shared: unsafe fn(*mut u8) -> Arc<dyn ErasedMessage>,
}

/// The [`Ops`] of type `M`, one `'static` table per type.
struct OpsOf<M>(std::marker::PhantomData<M>);

impl<M: Message> OpsOf<M> {
    const OPS: &'static Ops = &Ops {
        erase: erase::<M>,
        type_id: TypeId::of::<M>,
        into_shared: into_shared::<M>,
    };
}

fn erase<M: Message>(room: *mut u8) -> *mut dyn ErasedMessage {
    room.cast::<M>()
}

/// # Safety
/// As [`Ops::into_shared`].
unsafe fn into_shared<M: Message>(room: *mut u8) -> Arc<dyn ErasedMessage> {
    // SAFETY: the caller's promise: `room` holds an `M`, used no more.
    Arc::new(unsafe { room.cast::<M>().read() })
}

/// A message value of up to [`WORDS`] words, held in place.
pub(super) struct InPlace {
    room: UnsafeCell<Room>,
    ops: &'static Ops,
}

// SAFETY: an `InPlace` holds one value of a `Message` type, which is `Send`
// and `Sync`, and lends it only as `&dyn ErasedMessage`.
unsafe impl Send for InPlace {}
// SAFETY: as for `Send`.
unsafe impl Sync for InPlace {}

impl InPlace {
    /// Whether a value of type `M` fits in place.
    pub(super) const fn fits<M>() -> bool {
        mem::size_of::<M>() <= mem::size_of::<Room>() && mem::align_of::<M>() <= mem::align_of::<Room>()
    }

    /// Holds `value` in place.
    ///
    /// # Panics
    /// If its type does not [fit](Self::fits): a test the compiler settles
    /// for each type, so that it costs nothing where it passes.
    pub(super) fn new<M: Message>(value: M) -> Self {
        assert!(Self::fits::<M>(), "`{}` does not fit in place", M::NAME);
        let mut room = Room::uninit();
        // SAFETY: the room is large and aligned enough for an `M` (above).
        unsafe { room.as_mut_ptr().cast::<M>().write(value) };
        Self {
            room: UnsafeCell::new(room),
            ops: OpsOf::<M>::OPS,
        }
    }

    fn value(&self) -> *mut dyn ErasedMessage {
        (self.ops.erase)(self.room.get().cast())
    }

    /// The value, lent.
    pub(super) fn get(&self) -> &dyn ErasedMessage {
        // SAFETY: the room holds the value `ops` were made for, until it is
        // dropped or read out, both of which take `self`.
        unsafe { &*self.value() }
    }

    /// The value, if it is an `M`; if not, `None`, and the value is dropped.
    pub(super) fn take<M: Message>(self) -> Option<M> {
        if (self.ops.type_id)() != TypeId::of::<M>() {
            return None;
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: the value is an `M` (its type id, above), and `this` is
        // never dropped, so it is read out once.
        Some(unsafe { this.room.get().cast::<M>().read() })
    }

    /// The value, moved into an `Arc` (not cloned).
    pub(super) fn into_shared(self) -> Arc<dyn ErasedMessage> {
        let this = ManuallyDrop::new(self);
        // SAFETY: `ops` were made for the value's type, and `this` is never
        // dropped, so it is read out once.
        unsafe { (this.ops.into_shared)(this.room.get().cast()) }
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        // SAFETY: the room still holds its value (taking it out forgets the
        // room), and it is dropped here once.
        unsafe { self.value().drop_in_place() }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use serde::{Deserialize, Serialize};

    use super::*;

    fn as_any(value: &dyn ErasedMessage) -> &dyn std::any::Any {
        value
    }

    /// Counts its clones and drops in counters its clones share.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counted {
        payload: Box<str>,
        #[serde(skip)]
        clones: Arc<AtomicUsize>,
        #[serde(skip)]
        drops: Arc<AtomicUsize>,
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Self {
                payload: self.payload.clone(),
                clones: self.clones.clone(),
                drops: self.drops.clone(),
            }
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Message for Counted {
        const NAME: &'static str = "test.Counted";
    }

    fn counted(payload: &str) -> (Counted, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let value = Counted {
            payload: payload.into(),
            clones: Arc::default(),
            drops: Arc::default(),
        };
        let (clones, drops) = (value.clones.clone(), value.drops.clone());
        (value, clones, drops)
    }

    #[test]
    fn what_fits_is_up_to_four_words_aligned_to_eight() {
        assert!(InPlace::fits::<[u64; WORDS]>());
        assert!(InPlace::fits::<()>());
        assert!(InPlace::fits::<String>());
        assert!(InPlace::fits::<Counted>());
        assert!(!InPlace::fits::<[u8; WORDS * 8 + 1]>());
        #[repr(align(16))]
        struct Wide(#[allow(dead_code)] u8);
        assert!(!InPlace::fits::<Wide>());
        assert!(InPlace::fits::<Vec<u8>>(), "a Vec's heap part stays where it is");
        assert!(InPlace::fits::<crate::Blob>());
    }

    #[test]
    #[should_panic(expected = "`test.Big` does not fit in place")]
    fn a_value_too_large_is_never_put_in_place() {
        InPlace::new(Big([0; WORDS + 1]));
    }

    #[test]
    fn an_envelope_with_a_value_in_place_is_still_moved_without_memcpy() {
        // Above 128 bytes every move of an envelope is a call to `memcpy`.
        assert!(std::mem::size_of::<crate::Envelope>() <= 128);
    }

    #[test]
    fn a_value_taken_out_is_the_value_put_in_moved_not_cloned() {
        let (value, clones, drops) = counted("cam/front");
        let held = InPlace::new(value);
        let moved = vec![held]; // the bytes move; the value stays whole
        let held = moved.into_iter().next().unwrap();
        assert!(format!("{:?}", held.get()).contains("cam/front"));
        let back: Counted = held.take().expect("the same type");
        assert_eq!(&*back.payload, "cam/front");
        assert_eq!((clones.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)), (0, 0));
        drop(back);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_value_of_another_type_is_refused_and_dropped_once() {
        let (value, _, drops) = counted("x");
        let held = InPlace::new(value);
        assert_eq!(held.take::<String>(), None);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_value_never_taken_is_dropped_once_with_its_room() {
        let (value, _, drops) = counted("x");
        drop(InPlace::new(value));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_value_shared_is_moved_into_the_arc_and_dropped_with_its_last_clone() {
        let (value, clones, drops) = counted("x");
        let shared = InPlace::new(value).into_shared();
        let twin = shared.clone();
        assert!(as_any(&*shared).is::<Counted>());
        drop(shared);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(twin);
        assert_eq!((clones.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)), (0, 1));
    }

    #[test]
    fn a_value_lent_in_place_encodes_as_itself() {
        let held = InPlace::new(300u32);
        assert_eq!(held.get().encode(Vec::new()).unwrap(), [0xac, 0x02]);
        let held = InPlace::new(());
        assert_eq!(held.get().encoded_len().unwrap(), 0);
        assert_eq!(held.take::<()>(), Some(()));
    }

    /// One word more than fits in place.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Big([u64; WORDS + 1]);

    impl Message for Big {
        const NAME: &'static str = "test.Big";
    }

    #[test]
    fn a_payload_holds_a_small_value_in_place_and_a_large_one_boxed_alike() {
        use super::super::{Body, Payload, Value};
        assert!(!InPlace::fits::<Big>());
        let (small, clones, drops) = counted("small");
        let payload = Payload::new(small);
        assert!(matches!(&payload.body, Body::Local(Value::InPlace(_))));
        let copy = payload.clone();
        assert_eq!(clones.load(Ordering::SeqCst), 1);
        assert_eq!(copy.decode::<Counted>().unwrap().payload, "small".into());
        let shared = payload.shared();
        let (one, two) = (shared.clone(), shared);
        assert_eq!(one.decode::<Counted>().unwrap().payload, "small".into()); // a clone
        assert_eq!(two.decode::<Counted>().unwrap().payload, "small".into()); // the value
        assert_eq!((clones.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)), (2, 3));

        let big = Payload::new(Big([7; WORDS + 1]));
        assert!(matches!(&big.body, Body::Local(Value::Boxed(_))));
        assert_eq!(big.to_bytes().unwrap().len(), WORDS + 1);
        assert_eq!(big.clone().decode::<Big>().unwrap(), Big([7; WORDS + 1]));
        assert_eq!(big.shared().decode::<Big>().unwrap(), Big([7; WORDS + 1]));
        assert!(Payload::new(Big([0; WORDS + 1])).decode::<Counted>().is_err());
        assert!(Payload::new(300u32).decode::<Counted>().is_err());
    }

    /// Locks itself as it is serialized: a write through the shared
    /// reference the room lends, which the `UnsafeCell` allows.
    #[derive(Debug, Serialize, Deserialize)]
    struct Locked(Mutex<u32>);

    impl Clone for Locked {
        fn clone(&self) -> Self {
            Locked(Mutex::new(*self.0.lock().unwrap()))
        }
    }

    impl Message for Locked {
        const NAME: &'static str = "test.Locked";
    }

    #[test]
    fn a_value_that_changes_through_a_shared_reference_may_in_place() {
        assert!(InPlace::fits::<Locked>());
        let held = InPlace::new(Locked(Mutex::new(7)));
        assert_eq!(held.get().encode(Vec::new()).unwrap(), [7]);
        let shared = Arc::new(held);
        let other = shared.clone();
        std::thread::spawn(move || other.get().encode(Vec::new()).unwrap())
            .join()
            .unwrap();
        let held = Arc::try_unwrap(shared).ok().expect("the thread let go");
        assert_eq!(*held.take::<Locked>().unwrap().0.lock().unwrap(), 7);
    }
}
