//! Pins in memory, for tests and the demo: a test closes a contact with [`SimPins::drive`] and
//! reads what a relay was told with [`SimPins::writes`]. Times are tokio's, so a paused clock
//! tests debounce and pulse lengths exactly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{GpioError, InputLine, OutputLine, Pins, Pull};

#[derive(Debug, Default)]
struct State {
    levels: HashMap<u8, bool>,
    held: HashSet<u8>,
    edges: HashMap<u8, mpsc::Sender<bool>>,
    writes: HashMap<u8, Vec<(Instant, bool)>>,
    broken: HashMap<u8, String>,
}

#[derive(Debug, Clone, Default)]
pub struct SimPins(Arc<Mutex<State>>);

impl SimPins {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets an input's level from outside, as a contact would, with the edge it makes.
    pub fn drive(&self, pin: u8, high: bool) {
        let mut s = self.state();
        let before = s.levels.insert(pin, high);
        if before != Some(high) {
            if let Some(tx) = s.edges.get(&pin) {
                let _ = tx.try_send(high);
            }
        }
    }

    /// Sets a level without an edge: an interrupt the backend lost.
    pub fn drive_without_edge(&self, pin: u8, high: bool) {
        self.state().levels.insert(pin, high);
    }

    /// Ends the pin's edge stream, as a dead interrupt thread would.
    pub fn stop_edges(&self, pin: u8) {
        self.state().edges.remove(&pin);
    }

    /// Makes opening `pin` fail with `reason`.
    pub fn break_pin(&self, pin: u8, reason: &str) {
        self.state().broken.insert(pin, reason.to_string());
    }

    /// Every level an output was set to, with when, the initial level first.
    pub fn writes(&self, pin: u8) -> Vec<(Instant, bool)> {
        self.state().writes.get(&pin).cloned().unwrap_or_default()
    }

    /// An output's level now.
    pub fn output_level(&self, pin: u8) -> Option<bool> {
        self.writes(pin).last().map(|w| w.1)
    }

    pub fn is_held(&self, pin: u8) -> bool {
        self.state().held.contains(&pin)
    }

    fn take(&self, pin: u8) -> Result<(), GpioError> {
        let mut s = self.state();
        if let Some(reason) = s.broken.get(&pin) {
            return Err(GpioError::Pin {
                pin,
                reason: reason.clone(),
            });
        }
        if !s.held.insert(pin) {
            return Err(GpioError::Busy(pin));
        }
        Ok(())
    }
}

impl Pins for SimPins {
    fn input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputLine>, GpioError> {
        self.take(pin)?;
        // An open contact reads as its pull resistor makes it.
        self.state().levels.entry(pin).or_insert(pull == Pull::Up);
        Ok(Box::new(SimLine {
            pins: self.clone(),
            pin,
        }))
    }

    fn output(&self, pin: u8, high: bool) -> Result<Box<dyn OutputLine>, GpioError> {
        self.take(pin)?;
        let line = SimLine {
            pins: self.clone(),
            pin,
        };
        let mut boxed: Box<dyn OutputLine> = Box::new(line);
        boxed.set(high);
        Ok(boxed)
    }
}

struct SimLine {
    pins: SimPins,
    pin: u8,
}

impl InputLine for SimLine {
    fn level(&self) -> bool {
        self.pins
            .state()
            .levels
            .get(&self.pin)
            .copied()
            .unwrap_or(false)
    }

    fn edges(&mut self) -> Result<mpsc::Receiver<bool>, GpioError> {
        let (tx, rx) = mpsc::channel(64);
        self.pins.state().edges.insert(self.pin, tx);
        Ok(rx)
    }
}

impl OutputLine for SimLine {
    fn set(&mut self, high: bool) {
        self.pins
            .state()
            .writes
            .entry(self.pin)
            .or_default()
            .push((Instant::now(), high));
    }
}

impl Drop for SimLine {
    fn drop(&mut self) {
        let mut s = self.pins.state();
        s.held.remove(&self.pin);
        s.edges.remove(&self.pin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pin_serves_one_owner_until_it_is_dropped() {
        let pins = SimPins::new();
        let line = pins.output(17, true);
        assert!(line.is_ok());
        assert!(matches!(pins.input(17, Pull::Up), Err(GpioError::Busy(17))));
        drop(line);
        assert!(pins.input(17, Pull::Up).is_ok());
    }

    #[tokio::test]
    async fn an_open_contact_reads_as_its_pull_and_driving_it_sends_one_edge() {
        let pins = SimPins::new();
        let Ok(mut up) = pins.input(4, Pull::Up) else {
            panic!("input")
        };
        let Ok(down) = pins.input(5, Pull::Down) else {
            panic!("input")
        };
        assert!(up.level());
        assert!(!down.level());
        let Ok(mut edges) = up.edges() else {
            panic!("edges")
        };
        pins.drive(4, false);
        pins.drive(4, false);
        assert_eq!(edges.try_recv(), Ok(false));
        assert!(edges.try_recv().is_err(), "no edge without a change");
        assert!(!up.level());
    }
}
