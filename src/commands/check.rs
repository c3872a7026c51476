//! `parkhub check`: every error at once, or a summary an installer can read back.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Loaded};
use crate::modbus::bus::endpoint_of;
use crate::modbus::Poller;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    match config::load(path) {
        Ok(loaded) => {
            write!(std::io::stdout().lock(), "{}", summary(&loaded))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => Ok(super::report_config_errors(&d)),
    }
}

/// What the config sets up, bus by bus.
pub fn summary(l: &Loaded) -> String {
    let c = &l.config;
    let mut out = format!(
        "{}: OK\nhub {}{} · time zone {} · history in {}\n",
        l.path.display(),
        c.hub.id,
        c.hub
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        c.hub.timezone.0,
        c.hub.data_dir.display(),
    );
    for bus in &c.buses {
        let devices: Vec<_> = c
            .devices
            .iter()
            .filter(|d| d.enabled && d.bus.as_deref() == Some(bus.id.as_str()))
            .collect();
        let endpoint = endpoint_of(l, bus)
            .map(|e| e.to_string())
            .unwrap_or_else(|e| e.to_string());
        let requests: usize = devices
            .iter()
            .filter_map(|d| l.device_profiles.get(&d.id))
            .map(|p| {
                if bus.is_meter_protocol() {
                    // One request per quantity.
                    p.visible_points().count()
                } else {
                    Poller::new("".into(), 1, p.clone(), std::time::Duration::from_secs(1))
                        .requests_per_poll()
                }
            })
            .sum();
        out += &format!(
            "bus {} ({}, {}): {} device{}, {} request{} per poll cycle\n",
            bus.id,
            bus.kind,
            endpoint,
            devices.len(),
            if devices.len() == 1 { "" } else { "s" },
            requests,
            if requests == 1 { "" } else { "s" },
        );
        for d in devices {
            let points = l
                .device_profiles
                .get(&d.id)
                .map_or(0, |p| p.visible_points().count());
            let at = match (&d.address, bus.is_meter_protocol()) {
                (Some(a), true) => format!("address {a}"),
                _ => format!(
                    "unit {}",
                    d.unit
                        .map_or_else(|| "default".to_string(), |u| u.to_string())
                ),
            };
            out += &format!(
                "  {} [{}] {at} every {} s: {} points\n",
                d.id,
                d.profile,
                d.poll_interval_s(),
                points
            );
        }
    }
    if let Some(m) = &c.mqtt {
        let devices: Vec<_> = c
            .devices
            .iter()
            .filter(|d| d.enabled && l.mqtt_topics.contains_key(&d.id))
            .collect();
        out += &format!(
            "mqtt ({}): {} device{}\n",
            crate::mqtt::describe(m),
            devices.len(),
            if devices.len() == 1 { "" } else { "s" }
        );
        for d in devices {
            let t = &l.mqtt_topics[&d.id];
            out += &format!(
                "  {} [{}] on {}{}\n",
                d.id,
                d.profile,
                t.data,
                t.availability
                    .as_ref()
                    .map(|a| format!(" (availability {a})"))
                    .unwrap_or_default()
            );
        }
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if let Some(o) = crate::ocpp::central::CentralConfig::from_loaded(l) {
        let scheme = if c.api.tls.is_some() { "wss" } else { "ws" };
        let listen = c.ocpp.listen.unwrap_or(c.api.listen);
        out += &format!(
            "ocpp: {} on {scheme}://{listen}/ocpp/{{charge_point_id}}{}, heartbeat every {} s, offline after {} s, {}\n",
            plural(o.chargers.len(), "charger"),
            if listen.ip().is_loopback() {
                " (loopback: chargers on the network need [api] listen or [ocpp] listen on its address)"
            } else {
                ""
            },
            o.heartbeat_interval.as_secs(),
            o.offline_after.as_secs(),
            match o.authorize {
                crate::config::Authorize::AcceptAll => "every id tag may charge".to_string(),
                crate::config::Authorize::LocalList => format!("{} may charge", plural(o.id_tags.len(), "id tag")),
            }
        );
        for ch in &o.chargers {
            out += &format!(
                "  {} as {} with {}{}\n",
                ch.device,
                ch.charge_point_id,
                plural(ch.connectors as usize, "connector"),
                if ch.password_sha256.is_some() {
                    ", password required"
                } else {
                    ", no password (add password_sha256 unless the network is closed)"
                }
            );
        }
    }
    let contacts = crate::gpio::source::contacts(l);
    let relays: Vec<_> = c
        .channels
        .iter()
        .filter(|ch| ch.kind == crate::config::ChannelKind::Gpio)
        .collect();
    let enables: Vec<_> = c.buses.iter().filter(|b| b.de_pin.is_some()).collect();
    if !contacts.is_empty() || !relays.is_empty() || !enables.is_empty() {
        out += &format!(
            "gpio (BCM numbering; off a Raspberry Pi the hub says so once and runs without): {}, {}, {}\n",
            plural(contacts.len(), "dry contact"),
            plural(relays.len(), "siren relay"),
            plural(enables.len(), "RS-485 driver enable"),
        );
        for ct in &contacts {
            let category = l
                .device_profiles
                .get(&*ct.device)
                .map_or("?", |p| p.category.as_str());
            out += &format!(
                "  {} on pin {} ({category}): active {}, pull {}, debounce {} ms\n",
                ct.device,
                ct.pin,
                if ct.active == crate::gpio::Active::High {
                    "high"
                } else {
                    "low"
                },
                match ct.pull {
                    crate::gpio::Pull::Up => "up",
                    crate::gpio::Pull::Down => "down",
                    crate::gpio::Pull::None => "none",
                },
                ct.debounce.as_millis()
            );
        }
        for ch in relays {
            let plan = crate::notify::relay::RelayConfig::from_channel(ch);
            out += &format!(
                "  siren {} on pin {}: {}, {}\n",
                ch.id,
                ch.pin.unwrap_or_default(),
                match plan.pattern {
                    crate::notify::relay::Pattern::Steady => "steady".to_string(),
                    crate::notify::relay::Pattern::Pulse { on, off, pulses } => format!(
                        "pulses of {} ms every {} ms{}",
                        on.as_millis(),
                        (on + off).as_millis(),
                        if pulses == 0 {
                            String::new()
                        } else {
                            format!(", {pulses} per alarm")
                        }
                    ),
                },
                match plan.max_on {
                    Some(m) => format!("off by itself after {} s until a new alarm", m.as_secs()),
                    None => "on until acknowledged".to_string(),
                }
            );
        }
        for b in enables {
            let baud = l.bus_lines.get(&b.id).map_or(9600, |s| s.baud);
            out += &format!(
                "  bus {} drives its transceiver's DE on pin {} (active {}){}\n",
                b.id,
                b.de_pin.unwrap_or_default(),
                if b.de_active == Some(crate::gpio::Active::Low) {
                    "low"
                } else {
                    "high"
                },
                if baud > 9600 {
                    format!("; at {baud} baud a fast meter's first byte can be lost: prefer a HAT with automatic direction (README, GPIO)")
                } else {
                    String::new()
                }
            );
        }
    }
    let rules: usize = l
        .alarm_rules
        .devices
        .values()
        .map(|r| r.len())
        .sum::<usize>()
        + l.alarm_rules.buses.values().map(|r| r.len()).sum::<usize>();
    out += &format!(
        "alarms: {} on {} and {}; {}, {}, {}\n",
        plural(rules, "rule"),
        plural(l.alarm_rules.devices.len(), "device"),
        match l.alarm_rules.buses.len() {
            1 => "1 bus".to_string(),
            n => format!("{n} buses"),
        },
        plural(c.departments.len(), "department"),
        plural(c.channels.len(), "channel"),
        plural(c.routes.len(), "route"),
    );
    for ch in &c.channels {
        let departments: Vec<&str> = c
            .departments
            .iter()
            .filter(|d| d.channels.contains(&ch.id))
            .map(|d| d.id.as_str())
            .collect();
        out += &format!(
            "  channel {} ({}) for {}\n",
            ch.id,
            ch.kind.as_str(),
            if departments.is_empty() {
                "no department (unused)".to_string()
            } else {
                departments.join(", ")
            }
        );
    }
    out += &format!(
        "api and console on {}://{} with {}{}; console users: `parkhub user add NAME --role …`\n",
        if c.api.tls.is_some() { "https" } else { "http" },
        c.api.listen,
        plural(c.api.token.len(), "token"),
        if c.api.cors_origins.is_empty() {
            String::new()
        } else {
            format!(", open to {}", c.api.cors_origins.join(", "))
        }
    );
    if let Some(u) = &c.uplink {
        // Scheme, host and port only: a query may carry a credential.
        let to = url::Url::parse(&u.url)
            .map(|p| {
                format!(
                    "{}://{}{}",
                    p.scheme(),
                    p.host_str().unwrap_or("?"),
                    p.port().map(|n| format!(":{n}")).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        out += &format!(
            "uplink {} to {to} every {} s ({} records a batch at most, backlog up to {} MB), {} point choices\n",
            match u.kind {
                crate::config::UplinkKind::Http => "http",
                crate::config::UplinkKind::Mqtt => "mqtt",
            },
            u.interval_s,
            u.batch_max,
            u.max_backlog_mb,
            u.point.len()
        );
    }
    out
}
