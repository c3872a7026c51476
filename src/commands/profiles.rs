//! `parkhub profiles list | show ID`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::profile::{PointSource, ProfileRegistry, ProfileSource};
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
        pad("vendor / model", 30),
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
            pad(&format!("{} {}", p.vendor, p.model), 30),
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
    let s = p.serial;
    writeln!(out,
        "serial defaults: {} baud {}{}{}, unit {} · reads of at most {} registers, gaps up to {} filled",
        s.baud, s.data_bits, s.parity, s.stop_bits, s.unit, p.limits.max_registers, p.limits.max_gap
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{} {} {} {:<9} {:<7} {:<5} {:>9} {:<6} kind",
        pad("point", 22),
        pad("label", 20),
        pad_left("register", 8),
        "function",
        "type",
        "order",
        "scale",
        "unit"
    )?;
    for pt in &p.points {
        let label = pt.label.as_deref().unwrap_or("");
        let name = if pt.hidden {
            format!("({})", pt.name)
        } else {
            pt.name.to_string()
        };
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
                pad(pt.unit.as_deref().unwrap_or(""), 6),
                pt.kind
            )?,
            PointSource::Sum(parts) => writeln!(
                out,
                "{} {} {} = {} {} {}",
                pad(&name, 22),
                pad(label, 20),
                pad_left("", 8),
                pad(
                    &parts
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(" + "),
                    35
                ),
                pad(pt.unit.as_deref().unwrap_or(""), 6),
                pt.kind
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
