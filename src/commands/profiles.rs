//! `parkhub profiles list | show ID`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::profile::{Condition, Point, PointSource, ProfileRegistry, ProfileSource, Protocol};
use crate::text::{pad, pad_left};

fn registry(dir: Option<&Path>) -> Result<ProfileRegistry, ExitCode> {
    let mut reg = match ProfileRegistry::bundled() {
        Ok(r) => r,
        Err(d) => {
            d.iter().for_each(|e| eprintln!("{e}"));
            return Err(ExitCode::FAILURE);
        }
    };
    if let Some(dir) = dir {
        let errs = reg.load_dir(dir);
        if !errs.is_empty() {
            errs.iter().for_each(|e| eprintln!("{e}"));
            return Err(ExitCode::from(super::EXIT_CONFIG));
        }
    }
    Ok(reg)
}

pub fn list(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let reg = match registry(dir) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {} {} {} {}  source",
        pad("id", 20),
        pad("category", 18),
        pad("protocol", 8),
        pad("vendor / model", 40),
        pad_left("points", 6)
    )?;
    for e in reg.entries() {
        let p = &e.profile;
        let source = match &e.source {
            ProfileSource::Bundled => "bundled".to_string(),
            ProfileSource::File(f) => f.display().to_string(),
        };
        writeln!(
            out,
            "{} {} {} {} {}  {}",
            pad(&p.id, 20),
            pad(&p.category, 18),
            pad(&p.protocol.to_string(), 8),
            pad(&format!("{} {}", p.vendor, p.model), 40),
            pad_left(&p.visible_points().count().to_string(), 6),
            source
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(id: &str, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let reg = match registry(dir) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let Some(p) = reg.get(id) else {
        eprintln!("no profile `{id}` (see `parkhub profiles list`)");
        return Ok(ExitCode::FAILURE);
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} — {} {} ({}, {})",
        p.id, p.vendor, p.model, p.category, p.protocol
    )?;
    if let Some(d) = &p.description {
        writeln!(out, "{d}")?;
    }
    match &p.mqtt {
        Some(m) => {
            writeln!(
                out,
                "topic: {} · offline after {} · availability: {}",
                m.topic.as_deref().unwrap_or("(each device gives its own)"),
                m.expire_after_s
                    .map_or("(never, by silence)".to_string(), |s| format!(
                        "{s} s of silence"
                    )),
                m.availability_topic
                    .as_ref()
                    .map_or("(none)".to_string(), |t| format!(
                        "{t} ({}/{})",
                        m.payload_online, m.payload_offline
                    )),
            )?;
        }
        None if p.protocol == Protocol::Ocpp => {
            writeln!(
                out,
                "charger connects to ws://HUB:PORT/ocpp/{{charge_point_id}} (subprotocol ocpp1.6)"
            )?;
        }
        None => {
            let s = p.serial;
            writeln!(
                out,
                "serial defaults: {} baud {}{}{}, unit {} · reads of at most {} registers, gaps up to {} filled",
                s.baud, s.data_bits, s.parity, s.stop_bits, s.unit, p.limits.max_registers, p.limits.max_gap
            )?;
        }
    }
    writeln!(out)?;
    if p.protocol == Protocol::Ocpp {
        writeln!(
            out,
            "{} {} {} {} kind",
            pad("point", 22),
            pad("label", 20),
            pad("type / values", 49),
            pad("unit", 6)
        )?;
    } else if p.mqtt.is_some() {
        writeln!(
            out,
            "{} {} {} {} {} kind",
            pad("point", 22),
            pad("label", 20),
            pad("pointer", 20),
            pad("type / values", 28),
            pad("unit", 6)
        )?;
    } else {
        writeln!(
            out,
            "{} {} {} {:<9} {:<7} {:<5} {:>9} {} kind",
            pad("point", 22),
            pad("label", 20),
            pad_left("register", 8),
            "function",
            "type",
            "order",
            "scale",
            pad("unit", 6)
        )?;
    }
    for pt in &p.points {
        point_line(&mut out, pt, "")?;
    }
    // A Modbus profile's ports are plain points already (listed above).
    for g in p.ports.iter().filter(|_| p.protocol != Protocol::Modbus) {
        if p.protocol == Protocol::Ocpp {
            writeln!(out, "each {} gives points {}{{N}}.…:", g.prefix, g.prefix)?;
            for pt in &g.points {
                point_line(&mut out, pt, &format!("{}{{N}}.", g.prefix))?;
            }
            continue;
        }
        writeln!(
            out,
            "each element of {} ({}) gives points {}{{N}}.…:",
            g.pointer,
            g.number
                .as_ref()
                .map_or("numbered from 1".to_string(), |n| format!(
                    "numbered by {n}"
                )),
            g.prefix
        )?;
        for pt in &g.points {
            point_line(&mut out, pt, &format!("{}{{N}}.", g.prefix))?;
        }
    }
    if !p.alarms.is_empty() {
        writeln!(out)?;
        writeln!(out, "default alarms:")?;
        for a in &p.alarms {
            let when = match &a.condition {
                Condition::Equals(v) => format!("{} = {v}", a.point.as_deref().unwrap_or("")),
                Condition::In(vs) | Condition::NotIn(vs) => format!(
                    "{} {} [{}]",
                    a.point.as_deref().unwrap_or(""),
                    if matches!(a.condition, Condition::In(_)) {
                        "in"
                    } else {
                        "not in"
                    },
                    vs.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Condition::Above { limit, deadband } => format!(
                    "{} > {limit} (±{deadband})",
                    a.point.as_deref().unwrap_or("")
                ),
                Condition::Below { limit, deadband } => format!(
                    "{} < {limit} (±{deadband})",
                    a.point.as_deref().unwrap_or("")
                ),
                Condition::Offline => "offline".to_string(),
            };
            let delay = if a.on_delay_s > 0 {
                format!(" for {} s", a.on_delay_s)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {} {} {} {} {}{}",
                pad(&a.id, 22),
                pad(&format!("{when}{delay}"), 34),
                pad(&a.severity, 9),
                pad(&a.category, 12),
                if a.latched { "latched  " } else { "" },
                a.message
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn point_line(out: &mut impl Write, pt: &Point, prefix: &str) -> std::io::Result<()> {
    let label = pt.label.as_deref().unwrap_or("");
    let name = if pt.hidden {
        format!("({prefix}{})", pt.name)
    } else {
        format!("{prefix}{}", pt.name)
    };
    let unit = pad(pt.unit.as_deref().unwrap_or(""), 6);
    match &pt.source {
        PointSource::Register(r) => writeln!(
            out,
            "{} {} {} {:<9} {:<7} {:<5} {:>9} {} {}",
            pad(&name, 22),
            pad(label, 20),
            pad_left(&format!("{:#06X}", r.address).replace("0X", "0x"), 8),
            r.function.to_string(),
            r.dtype.to_string(),
            r.order.to_string(),
            r.scale,
            unit,
            pt.kind
        ),
        PointSource::Json(j) => {
            let ty = match &j.values {
                Some(v) => {
                    let mut states: Vec<&str> = v.values().map(String::as_str).collect();
                    states.dedup();
                    states.sort_unstable();
                    states.dedup();
                    states.join("|")
                }
                None => format!("{:?}", j.json).to_lowercase(),
            };
            writeln!(
                out,
                "{} {} {} {} {} {}",
                pad(&name, 22),
                pad(label, 20),
                pad(&j.pointer, 20),
                pad(&ty, 28),
                unit,
                pt.kind
            )
        }
        PointSource::Reported(r) => {
            let ty = match &r.values {
                Some(v) => v.keys().map(String::as_str).collect::<Vec<_>>().join("|"),
                None => format!("{:?}", r.json).to_lowercase(),
            };
            writeln!(
                out,
                "{} {} {} {} {}",
                pad(&name, 22),
                pad(label, 20),
                pad(&ty, 49),
                unit,
                pt.kind
            )
        }
        PointSource::Sum(parts) => writeln!(
            out,
            "{} {} = {} {} {}",
            pad(&name, 22),
            pad(label, 20),
            pad(
                &parts
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" + "),
                44
            ),
            unit,
            pt.kind
        ),
    }
}
