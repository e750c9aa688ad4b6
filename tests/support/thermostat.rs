//! A Rust module that talks to the Python `thermo` module
//! (`examples/python_child/child.py`): it asks it to convert, publishes the
//! readings it subscribes to, and hears its alerts. Built into the
//! `child_services` binary, it runs as a postcard child beside the JSON
//! Python child, so every word between them crosses their parent.

#![allow(dead_code, unreachable_pub)]

use botbus::{Context, Message, Module, ModuleError, Payload};
use serde::{Deserialize, Serialize};

use crate::messages::{Alert, Reading, ToFahrenheit};

/// What the thermostat is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ThermostatCmd {
    /// Ask `thermo` to convert this many degrees Celsius; reply its answer.
    Convert(f64),
    /// Publish a reading on `robot/temp`; reply how many it reached.
    Heat(f64),
    /// Reply the temperature of the last alert heard (-1 if none).
    LastAlert,
}

impl Message for ThermostatCmd {
    const NAME: &'static str = "test.ThermostatCmd";
}

/// Takes its commands and the alerts it subscribes to (so its message type
/// is any payload).
#[derive(Default)]
pub struct Thermostat {
    last_alert: Option<f64>,
}

impl Module for Thermostat {
    type Message = Payload;
    type Reply = f64;

    async fn started(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        ctx.subscribe("alerts/**").map_err(|e| ModuleError::new(e.to_string()))
    }

    async fn process(&mut self, payload: Payload, ctx: &mut Context) -> Result<f64, ModuleError> {
        if payload.name() == Alert::NAME {
            self.last_alert = Some(payload.decode::<Alert>()?.celsius);
            return Ok(0.0);
        }
        match payload.decode::<ThermostatCmd>()? {
            ThermostatCmd::Convert(celsius) => Ok(ctx.ask::<_, f64>("thermo", ToFahrenheit(celsius)).await?),
            ThermostatCmd::Heat(celsius) => {
                let reached = ctx.publish("robot/temp", Reading { celsius }).await?;
                Ok(reached as f64)
            }
            ThermostatCmd::LastAlert => Ok(self.last_alert.unwrap_or(-1.0)),
        }
    }
}
