//! The messages of the joined examples (`joined_sensor`, `joined_controller`,
//! `joined_motor`), shared so that the three programs agree.

#![allow(dead_code, unreachable_pub)]

use botbus::Message;
use serde::{Deserialize, Serialize};

/// A range reading, in metres.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Range(pub f32);
impl Message for Range {
    const NAME: &'static str = "joined.Range";
}

/// A speed command, in m/s; the motor answers the speed it set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetSpeed(pub f32);
impl Message for SetSpeed {
    const NAME: &'static str = "joined.SetSpeed";
}

/// The hub to join: `--hub ENDPOINT`, or `pipe://robot`.
pub fn hub() -> String {
    std::env::args()
        .skip_while(|a| a != "--hub")
        .nth(1)
        .unwrap_or_else(|| "pipe://robot".to_owned())
}
