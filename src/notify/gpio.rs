//! A siren or strobe on a relay at a Raspberry Pi GPIO pin (rppal): on while an alarm routed to
//! it waits for someone to acknowledge it. Off a Pi there is no GPIO: the channel says so once
//! and stays inert, so the same config runs on a test machine.

use rppal::gpio::{Gpio, OutputPin};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Drives the relay of channel `id` from `on` until `shutdown`, then switches it off.
pub async fn run(
    id: String,
    pin: u8,
    active_high: bool,
    mut on: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut relay: Option<OutputPin> = match Gpio::new().and_then(|g| g.get(pin)) {
        Ok(p) => {
            info!(channel = %id, pin, "siren relay ready");
            Some(if active_high {
                p.into_output_low()
            } else {
                p.into_output_high()
            })
        }
        Err(e) => {
            warn!(channel = %id, pin, error = %e, "no GPIO on this machine (not a Raspberry Pi?): the siren channel is inert, its state is only logged");
            None
        }
    };
    let mut set = |state: bool| {
        info!(channel = %id, siren = if state { "on" } else { "off" }, "siren");
        if let Some(r) = relay.as_mut() {
            if state == active_high {
                r.set_high();
            } else {
                r.set_low();
            }
        }
    };
    let mut current = false;
    loop {
        let want = *on.borrow_and_update();
        if want != current {
            set(want);
            current = want;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = on.changed() => if changed.is_err() { break },
        }
    }
    if current {
        set(false);
    }
}
