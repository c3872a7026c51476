//! The Raspberry Pi's pins through rppal. rppal identifies the Pi first, so anywhere else
//! [`RppalPins::new`] fails with "Unknown Raspberry Pi model" before touching a device file.

use rppal::gpio::{Error, Gpio, InputPin, OutputPin, Trigger};
use tokio::sync::mpsc;

use super::{GpioError, InputLine, OutputLine, Pins, Pull};

#[derive(Debug)]
pub struct RppalPins(Gpio);

impl RppalPins {
    pub fn new() -> Result<Self, GpioError> {
        Gpio::new().map(Self).map_err(|e| map_error(None, e))
    }
}

/// Machine-wide failures become [`GpioError::Unavailable`] (nothing to retry per pin); the
/// permission case says what an installer does about it.
pub fn map_error(pin: Option<u8>, e: Error) -> GpioError {
    match (e, pin) {
        (Error::PinUsed(p), _) => GpioError::Busy(p),
        (Error::PermissionDenied(path), _) => GpioError::Unavailable(format!(
            "permission denied on {path}: add the user to group gpio"
        )),
        (Error::UnknownModel, _) => GpioError::Unavailable(Error::UnknownModel.to_string()),
        (e, Some(pin)) => GpioError::Pin {
            pin,
            reason: e.to_string(),
        },
        (e, None) => GpioError::Unavailable(e.to_string()),
    }
}

impl Pins for RppalPins {
    fn input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputLine>, GpioError> {
        let p = self.0.get(pin).map_err(|e| map_error(Some(pin), e))?;
        let input = match pull {
            Pull::Up => p.into_input_pullup(),
            Pull::Down => p.into_input_pulldown(),
            Pull::None => p.into_input(),
        };
        Ok(Box::new(RppalInput { pin, input }))
    }

    fn output(&self, pin: u8, high: bool) -> Result<Box<dyn OutputLine>, GpioError> {
        let p = self.0.get(pin).map_err(|e| map_error(Some(pin), e))?;
        let mut out = if high {
            p.into_output_high()
        } else {
            p.into_output_low()
        };
        // rppal would put the pin back to an input on drop, leaving a relay to float; the owner
        // drives it inactive itself before letting go.
        out.set_reset_on_drop(false);
        Ok(Box::new(RppalOutput(out)))
    }
}

struct RppalInput {
    pin: u8,
    input: InputPin,
}

impl InputLine for RppalInput {
    fn level(&self) -> bool {
        self.input.is_high()
    }

    fn edges(&mut self) -> Result<mpsc::Receiver<bool>, GpioError> {
        let (tx, rx) = mpsc::channel(64);
        // No kernel debounce: the hub debounces itself, the same way on every backend.
        self.input
            .set_async_interrupt(Trigger::Both, None, move |event| {
                // A full channel drops the edge; the reader's resample catches up.
                let _ = tx.try_send(event.trigger == Trigger::RisingEdge);
            })
            .map_err(|e| map_error(Some(self.pin), e))?;
        Ok(rx)
    }
}

struct RppalOutput(OutputPin);

impl OutputLine for RppalOutput {
    fn set(&mut self, high: bool) {
        if high {
            self.0.set_high();
        } else {
            self.0.set_low();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rppal_errors_map_to_unavailable_busy_or_a_pin_error() {
        assert_eq!(map_error(Some(4), Error::PinUsed(4)), GpioError::Busy(4));
        assert!(matches!(
            map_error(None, Error::UnknownModel),
            GpioError::Unavailable(r) if r.contains("Unknown Raspberry Pi model")
        ));
        assert!(matches!(
            map_error(Some(4), Error::PermissionDenied("/dev/gpiomem".into())),
            GpioError::Unavailable(r) if r.contains("group gpio") && r.contains("/dev/gpiomem")
        ));
        assert!(matches!(
            map_error(Some(60), Error::PinNotAvailable(60)),
            GpioError::Pin { pin: 60, .. }
        ));
    }

    /// On this build machine (not a Pi) the real backend must say there is no GPIO, not panic.
    #[test]
    fn the_real_backend_reports_no_gpio_on_a_machine_that_is_not_a_pi() {
        let model = std::fs::read("/sys/firmware/devicetree/base/compatible").unwrap_or_default();
        let on_a_pi = String::from_utf8_lossy(&model).contains("raspberrypi");
        match RppalPins::new() {
            Err(GpioError::Unavailable(reason)) => {
                assert!(!on_a_pi, "a Pi without GPIO: {reason}");
                assert!(reason.contains("Unknown Raspberry Pi model"), "{reason}");
            }
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => assert!(on_a_pi, "GPIO found on a machine that is not a Pi"),
        }
    }
}
