//! A nesting limit for any serde deserializer.
//!
//! A payload of a recursive message type (a tree, a linked list) nested a
//! few thousand levels deep makes a recursive decoder overflow the thread's
//! stack, which aborts the whole process — no `Result`, no `catch_unwind`.
//! serde_json stops at 128 levels by itself; postcard has no limit. [`Limit`]
//! wraps a deserializer and every visitor, seed and accessor it hands out,
//! and counts one level for each sequence, map, enum, `Some` and newtype it
//! enters: past the limit, decoding fails with an error instead.
//!
//! A limit (not a growing stack, as `serde_stacker` does) is also what keeps
//! the *decoded* value safe: a 20,000-deep `Box` tree that did decode would
//! overflow the stack again when it is dropped.
//!
//! ```
//! use std::cell::Cell;
//! use botbus_core::depth::{Limit, MAX_NESTING};
//! use serde::Deserialize;
//!
//! let nested = "[".repeat(5) + &"]".repeat(5);
//! let tripped = Cell::new(false);
//! let mut json = serde_json::Deserializer::from_str(&nested);
//! let shallow: Result<serde_json::Value, _> = serde_json::Value::deserialize(Limit::new(&mut json, 3, &tripped));
//! assert!(shallow.is_err() && tripped.get());
//! assert_eq!(MAX_NESTING, 128);
//! ```

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// The deepest nesting a payload may have: the same as serde_json's own
/// recursion limit, so a message is refused at the same depth in both codecs.
pub const MAX_NESTING: usize = 128;

/// A deserializer, visitor, seed or accessor that may nest `left` more levels.
///
/// `tripped` is set when the limit is hit, so the caller can say why decoding
/// failed even where the format's error type drops custom messages (as
/// postcard's does).
pub struct Limit<'t, T> {
    inner: T,
    left: usize,
    tripped: &'t Cell<bool>,
}

impl<'t, T> Limit<'t, T> {
    /// Wraps `inner`, allowing `levels` levels of nesting.
    pub fn new(inner: T, levels: usize, tripped: &'t Cell<bool>) -> Self {
        Self {
            inner,
            left: levels,
            tripped,
        }
    }

    fn wrap<U>(&self, inner: U) -> Limit<'t, U> {
        Limit {
            inner,
            left: self.left,
            tripped: self.tripped,
        }
    }

    /// One level down, or the error that says the limit was hit.
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(left),
            None => {
                self.tripped.set(true);
                Err(E::custom(format_args!("nested deeper than the limit")))
            }
        }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.wrap(visitor);
            self.inner.$method($($($arg,)*)? visitor)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limit<'_, D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any, deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64,
        deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32, deserialize_u64, deserialize_u128,
        deserialize_f32, deserialize_f64, deserialize_char, deserialize_str, deserialize_string, deserialize_bytes,
        deserialize_byte_buf, deserialize_option, deserialize_unit, deserialize_seq, deserialize_map,
        deserialize_identifier, deserialize_ignored_any,
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    );

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
            self.inner.$method(value)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Limit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let left = self.deeper()?;
        self.inner.visit_some(Limit::new(deserializer, left, self.tripped))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let left = self.deeper()?;
        self.inner
            .visit_newtype_struct(Limit::new(deserializer, left, self.tripped))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let left = self.deeper()?;
        self.inner.visit_seq(Limit::new(seq, left, self.tripped))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let left = self.deeper()?;
        self.inner.visit_map(Limit::new(map, left, self.tripped))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let left = self.deeper()?;
        self.inner.visit_enum(Limit::new(data, left, self.tripped))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Limit<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.deserialize(deserializer)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Limit<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Limit<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'t, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Limit<'t, A> {
    type Error = A::Error;
    type Variant = Limit<'t, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
        let (left, tripped) = (self.left, self.tripped);
        let (value, variant) = self.inner.variant_seed(Limit::new(seed, left, tripped))?;
        Ok((value, Limit::new(variant, left, tripped)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Limit<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}
