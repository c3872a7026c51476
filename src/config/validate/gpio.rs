//! GPIO in the config: dry contact devices, siren relay channels and RS-485 driver enables.
//! Every pin has one owner, so rppal's run-time "pin in use" becomes a `check` error instead.

use std::collections::HashMap;
use std::sync::Arc;

use super::{check_range, Check, Parts, Resolved};
use crate::config::{BusKind, ChannelKind, DeviceConfig, KeyPath, RelayMode, CATEGORIES};
use crate::profile::Profile;

/// The BCM GPIOs on a Raspberry Pi's 40-pin header.
const MAX_PIN: u8 = 27;

/// What a dry contact may be: any alarm category but `comm`, which is the hub's own.
fn contact_categories() -> impl Iterator<Item = &'static str> {
    CATEGORIES.iter().copied().filter(|c| *c != "comm")
}

pub(super) fn check_pin(c: &mut Check<'_, '_>, path: KeyPath, pin: u8) {
    if pin > MAX_PIN {
        c.err(
            path,
            format!("pin {pin} is not a Raspberry Pi BCM GPIO (0..={MAX_PIN})"),
        );
    } else if pin < 2 {
        // ID_SD and ID_SC: the firmware reads a HAT's EEPROM on them at boot.
        c.err(
            path,
            format!("pin {pin} is reserved for a HAT's ID EEPROM: use 2..={MAX_PIN}"),
        );
    }
}

/// A dry contact: its pin, its category, its debounce, nothing of other kinds of device; and its
/// profile made its own, with the alarm in the device's category.
pub(super) fn check_device(
    c: &mut Check<'_, '_>,
    i: usize,
    d: &DeviceConfig,
    profile: &Arc<Profile>,
    resolved: &mut Resolved,
) {
    let at = |k: &str| KeyPath::from("device").index(i).key(k);
    c.refuse_keys(
        i,
        &d.id,
        "GPIO",
        [
            ("bus", d.bus.is_some()),
            ("unit", d.unit.is_some()),
            ("poll_interval_s", d.poll_interval_s.is_some()),
            ("timeout_ms", d.timeout_ms.is_some()),
            ("topic", d.topic.is_some()),
            ("charge_point_id", d.charge_point_id.is_some()),
            ("password_sha256", d.password_sha256.is_some()),
            ("connectors", d.connectors.is_some()),
            ("address", d.address.is_some()),
            ("expire_after_s", d.expire_after_s.is_some()),
            ("availability_topic", d.availability_topic.is_some()),
            ("point", !d.point.is_empty()),
        ],
    );
    match d.pin {
        None => c.err(
            at("profile"),
            format!("dry contact `{}` needs `pin` (BCM numbering)", d.id),
        ),
        Some(p) => check_pin(c, at("pin"), p),
    }
    if let (Some(p @ (2 | 3)), Some(crate::gpio::Pull::Down)) = (d.pin, d.pull) {
        c.err(
            at("pull"),
            format!("pin {p} has a fixed 1.8 kΩ pull-up on the board: a pull-down cannot hold it low (use pull = \"up\" or another pin)"),
        );
    }
    if let Some(ms) = d.debounce_ms {
        check_range(c, at("debounce_ms"), super::clamp_i64(ms), 0, 60_000);
    }
    let known: Vec<&str> = contact_categories().collect();
    let Some(category) = d.category.as_deref() else {
        c.err(
            at("profile"),
            format!(
                "dry contact `{}` needs `category`: what it is ({})",
                d.id,
                known.join(", ")
            ),
        );
        return;
    };
    if !known.contains(&category) {
        c.err(
            at("category"),
            format!(
                "unknown category `{category}` (one of: {})",
                known.join(", ")
            ),
        );
        return;
    }
    resolved
        .device_profiles
        .insert(d.id.clone(), Arc::new(in_category(profile, category)));
}

/// The profile as the device's: the profile's alarms in the device's category; a fire contact
/// (a fire panel's alarm relay) critical and latched, like a smoke detector.
fn in_category(profile: &Profile, category: &str) -> Profile {
    let mut p = profile.clone();
    for a in &mut p.alarms {
        if a.category == p.category {
            a.category = category.to_string();
            if category == "fire" {
                a.severity = "critical".into();
                a.latched = true;
            }
        }
    }
    p.category = category.to_string();
    p
}

/// GPIO keys given to a device that is not a dry contact.
pub(super) fn refuse_on_other_devices(
    c: &mut Check<'_, '_>,
    i: usize,
    d: &DeviceConfig,
    kind: &str,
) {
    c.refuse_keys(
        i,
        &d.id,
        kind,
        [
            ("pin", d.pin.is_some()),
            ("pull", d.pull.is_some()),
            ("active", d.active.is_some()),
            ("debounce_ms", d.debounce_ms.is_some()),
        ],
    );
    if d.category.is_some() {
        c.err(
            KeyPath::from("device").index(i).key("category"),
            format!(
                "`category` is for dry contacts; {kind} device `{}` takes its category from its profile (a [[rule]] changes an alarm's)",
                d.id
            ),
        );
    }
}

/// Relay channel settings, driver enables, and one owner per pin across all of them.
pub(super) fn check(c: &mut Check<'_, '_>, parts: &Parts) {
    let mut owners: HashMap<u8, String> = HashMap::new();
    // The Pi's UART: TXD and RXD are GPIO 14 and 15 while a bus uses it.
    let uart = parts.buses.iter().find(|(_, b)| {
        (b.kind == BusKind::Rtu || b.is_meter_protocol())
            && b.serial.as_deref().is_some_and(|p| {
                let p = p.to_string_lossy();
                ["ttyAMA0", "serial0", "ttyS0"]
                    .iter()
                    .any(|n| p.ends_with(&format!("/{n}")))
            })
    });
    if let Some((_, b)) = uart {
        for pin in [14, 15] {
            owners.insert(pin, format!("the UART of bus `{}`", b.id));
        }
    }
    let mut claim = |c: &mut Check<'_, '_>, path: KeyPath, pin: u8, owner: String| {
        if let Some(other) = owners.get(&pin) {
            c.err(path, format!("pin {pin} is already {other}"));
        } else {
            owners.insert(pin, owner);
        }
    };
    for (i, d) in &parts.devices {
        if let (Some(pin), true) = (d.pin, d.enabled) {
            if pin <= MAX_PIN {
                let path = KeyPath::from("device").index(*i).key("pin");
                claim(c, path, pin, format!("device `{}`", d.id));
            }
        }
    }
    for (i, ch) in &parts.channels {
        let at = |k: &str| KeyPath::from("channel").index(*i).key(k);
        if ch.kind != ChannelKind::Gpio {
            for (key, given) in [
                ("mode", ch.mode.is_some()),
                ("pulse_on_ms", ch.pulse_on_ms.is_some()),
                ("pulse_off_ms", ch.pulse_off_ms.is_some()),
                ("pulses", ch.pulses.is_some()),
                ("max_on_s", ch.max_on_s.is_some()),
            ] {
                if given {
                    c.err(at(key), format!("`{key}` is for gpio channels"));
                }
            }
            continue;
        }
        if let Some(pin) = ch.pin.filter(|p| *p <= MAX_PIN) {
            claim(c, at("pin"), pin, format!("channel `{}`", ch.id));
        }
        if ch.mode.unwrap_or_default() == RelayMode::Steady {
            for (key, given) in [
                ("pulse_on_ms", ch.pulse_on_ms.is_some()),
                ("pulse_off_ms", ch.pulse_off_ms.is_some()),
                ("pulses", ch.pulses.is_some()),
            ] {
                if given {
                    c.err(at(key), format!("`{key}` needs mode = \"pulse\""));
                }
            }
        }
        for (key, v) in [
            ("pulse_on_ms", ch.pulse_on_ms),
            ("pulse_off_ms", ch.pulse_off_ms),
        ] {
            if let Some(ms) = v {
                check_range(c, at(key), super::clamp_i64(ms), 10, 60_000);
            }
        }
        if let Some(n) = ch.pulses {
            check_range(c, at("pulses"), i64::from(n), 0, 1000);
        }
        if let Some(s) = ch.max_on_s {
            check_range(c, at("max_on_s"), super::clamp_i64(s), 0, 86_400);
        }
    }
    for (i, b) in &parts.buses {
        let at = |k: &str| KeyPath::from("bus").index(*i).key(k);
        match b.de_pin {
            Some(_) if b.serial.is_none() || !(b.kind == BusKind::Rtu || b.is_meter_protocol()) => {
                c.err(
                    at("de_pin"),
                    format!(
                        "`de_pin` drives a local RS-485 transceiver: buses on a serial port of this box only, not {}",
                        if b.kind == BusKind::Tcp { "tcp" } else { "one behind a serial server" }
                    ),
                )
            }
            Some(pin) if !(2..=MAX_PIN).contains(&pin) => check_pin(c, at("de_pin"), pin),
            Some(pin) => claim(
                c,
                at("de_pin"),
                pin,
                format!("the driver enable of bus `{}`", b.id),
            ),
            None if b.de_active.is_some() => c.err(at("de_active"), "`de_active` needs `de_pin`"),
            None => {}
        }
    }
}
