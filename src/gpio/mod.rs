//! General-purpose I/O pins: dry contacts in, relays and RS-485 driver enables out.
//!
//! Everything goes through [`Pins`], so the hub runs the same on a Raspberry Pi (rppal), on a
//! machine without GPIO (every pin unavailable, said once) and in tests ([`sim::SimPins`]).

pub mod debounce;
pub mod rppal;
pub mod sim;
pub mod source;

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::{ChannelKind, Loaded};

/// The internal bias resistor of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// A contact switching to ground (the usual dry contact wiring).
    #[default]
    Up,
    Down,
    /// An external resistor biases the line.
    None,
}

/// Which level means "active" (contact closed, relay energised, driver enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Active {
    /// Active when pulled to ground: a contact to GND with the pull-up.
    #[default]
    Low,
    High,
}

impl Active {
    pub fn is_active(self, high: bool) -> bool {
        high == (self == Active::High)
    }

    /// The level that makes an output active (`true`) or inactive (`false`).
    pub fn level(self, active: bool) -> bool {
        active == (self == Active::High)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GpioError {
    /// No GPIO at all on this machine (not a Pi, no access): nothing will work until it is fixed.
    #[error("no GPIO on this machine ({0})")]
    Unavailable(String),
    /// The pin is held already (by this process or, through the kernel, another one).
    #[error("GPIO {0} is already in use")]
    Busy(u8),
    #[error("GPIO {pin}: {reason}")]
    Pin { pin: u8, reason: String },
}

/// The machine's pins. Object-safe and synchronous: rppal's calls are register writes and ioctls
/// that return at once.
pub trait Pins: Send + Sync + fmt::Debug {
    fn input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputLine>, GpioError>;
    /// An output, driven to `high` before it becomes an output so a relay never clicks on.
    fn output(&self, pin: u8, high: bool) -> Result<Box<dyn OutputLine>, GpioError>;
    /// Why there is no GPIO at all, if so; said once by the app rather than by every user.
    fn unavailable(&self) -> Option<&str> {
        None
    }
}

pub trait InputLine: Send {
    /// The level now (`true` = high).
    fn level(&self) -> bool;
    /// One message per edge, as it happens, carrying the level after it. Edges may be lost when
    /// the receiver lags, and the level may be stale by the time it is read: readers take an
    /// edge as a wake-up, read [`level`](Self::level), and resample it now and then.
    fn edges(&mut self) -> Result<mpsc::Receiver<bool>, GpioError>;
}

pub trait OutputLine: Send {
    fn set(&mut self, high: bool);
}

/// The machine's GPIO: rppal's on a Raspberry Pi, else one that says why there is none.
pub fn open() -> Arc<dyn Pins> {
    match rppal::RppalPins::new() {
        Ok(p) => Arc::new(p),
        Err(GpioError::Unavailable(reason)) => Arc::new(NoPins(reason)),
        Err(e) => Arc::new(NoPins(e.to_string())),
    }
}

/// What in the config needs GPIO, in words for an installer.
pub fn users(loaded: &Loaded) -> Vec<String> {
    let cfg = &loaded.config;
    let contacts = source::contacts(loaded)
        .into_iter()
        .map(|c| format!("dry contact {}", c.device));
    let sirens = cfg
        .channels
        .iter()
        .filter(|c| c.kind == ChannelKind::Gpio)
        .map(|c| format!("siren channel {}", c.id));
    let enables = cfg
        .buses
        .iter()
        .filter(|b| b.de_pin.is_some())
        .map(|b| format!("RS-485 driver enable of bus {}", b.id));
    contacts.chain(sirens).chain(enables).collect()
}

/// The pins the hub runs with: `given` (tests, the demo), else the machine's, opened only when
/// the config needs GPIO. Without GPIO this says so once, naming what goes without, and the hub
/// carries on: each user then finds its pins unavailable and stays quiet about it.
pub fn for_config(loaded: &Loaded, given: Option<Arc<dyn Pins>>) -> Arc<dyn Pins> {
    let users = users(loaded);
    if users.is_empty() {
        return given.unwrap_or_else(|| Arc::new(NoPins("no GPIO in the config".into())));
    }
    let pins = given.unwrap_or_else(open);
    if let Some(reason) = pins.unavailable() {
        warn!(
            "no GPIO on this machine ({reason}): {} without it (dry contacts offline, sirens only logged)",
            users.join(", ")
        );
    }
    pins
}

/// A machine without usable GPIO: every pin is unavailable, for the same reason.
#[derive(Debug, Clone)]
pub struct NoPins(pub String);

impl Pins for NoPins {
    fn input(&self, _: u8, _: Pull) -> Result<Box<dyn InputLine>, GpioError> {
        Err(GpioError::Unavailable(self.0.clone()))
    }
    fn output(&self, _: u8, _: bool) -> Result<Box<dyn OutputLine>, GpioError> {
        Err(GpioError::Unavailable(self.0.clone()))
    }
    fn unavailable(&self) -> Option<&str> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_low_means_a_low_level_is_active_and_drives_low_to_switch_on() {
        assert!(Active::Low.is_active(false));
        assert!(!Active::Low.is_active(true));
        assert!(!Active::Low.level(true));
        assert!(Active::High.is_active(true));
        assert!(Active::High.level(true));
        assert!(!Active::High.level(false));
    }

    #[test]
    fn a_machine_without_gpio_refuses_every_pin_with_its_reason() {
        let p = NoPins("Unknown Raspberry Pi model".into());
        let Err(e) = p.output(17, false) else {
            panic!("an output without GPIO")
        };
        assert_eq!(
            e.to_string(),
            "no GPIO on this machine (Unknown Raspberry Pi model)"
        );
        assert!(matches!(
            p.input(4, Pull::Up),
            Err(GpioError::Unavailable(_))
        ));
    }
}
