//! What the benches share with `botbus bench`: the messages and modules
//! they measure with, the raw channels they compare against, and the
//! statistics — all in [`botbus::bench`].

#![allow(unused_imports, unreachable_pub)]

pub use botbus::bench::*;
