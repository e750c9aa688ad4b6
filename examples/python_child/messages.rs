//! The messages `child.py` understands and sends, shared by the example and
//! its test (`tests/python_child.rs`), so neither can drift from the script.

#![allow(dead_code, unreachable_pub)]

use botbus::Message;
use serde::{Deserialize, Serialize};

/// A temperature reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reading {
    pub(crate) celsius: f64,
}
impl Message for Reading {
    const NAME: &'static str = "thermo.Reading";
}

/// What the Python module publishes when it is too hot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Alert {
    pub(crate) celsius: f64,
    pub(crate) message: String,
}
impl Message for Alert {
    const NAME: &'static str = "thermo.Alert";
}

/// Ask: convert Celsius to Fahrenheit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ToFahrenheit(pub(crate) f64);
impl Message for ToFahrenheit {
    const NAME: &'static str = "thermo.ToFahrenheit";
}

/// Ask: calibrate in this many steps (answered with progress first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Calibrate(pub(crate) u32);
impl Message for Calibrate {
    const NAME: &'static str = "thermo.Calibrate";
}
