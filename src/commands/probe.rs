//! `parkhub probe` (read every point of one device once) and `parkhub scan` (which unit ids
//! answer): the installer's tools for checking wiring, addresses and serial settings.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use tokio_modbus::ExceptionCode;

use crate::cli::{parse_units, LineArgs, ProbeArgs, ScanArgs, ScanProtocol, SerialArgs};
use crate::dlt645::poller::Dlt645Poller;
use crate::modbus::bus::DevicePoller;
use crate::modbus::bus::Line;
use crate::modbus::link::{self, Endpoint, ReadError};
use crate::modbus::plan::ReadBlock;
use crate::modbus::Poller;
use crate::profile::Protocol;
use crate::profile::{Function, ProfileRegistry, SerialDefaults};
use crate::reading::Value;
use crate::text::pad;

/// Pause between frames on a serial line (the 3.5 characters of RTU, with margin).
const SERIAL_PAUSE: Duration = Duration::from_millis(20);

fn endpoint(
    line: &LineArgs,
    serial: &SerialArgs,
    defaults: SerialDefaults,
) -> anyhow::Result<Endpoint> {
    if let Some(a) = &line.tcp {
        return Ok(Endpoint::Tcp(a.clone()));
    }
    if let Some(a) = &line.rtu_over_tcp {
        return Ok(Endpoint::RtuOverTcp(a.clone()));
    }
    let path = line
        .serial
        .clone()
        .context("give --tcp, --rtu-over-tcp or --serial")?;
    Ok(Endpoint::Serial {
        path,
        line: SerialDefaults {
            baud: serial.baud.unwrap_or(defaults.baud),
            parity: serial.parity.unwrap_or(defaults.parity),
            data_bits: serial.data_bits.unwrap_or(defaults.data_bits),
            stop_bits: serial.stop_bits.unwrap_or(defaults.stop_bits),
            unit: defaults.unit,
        },
    })
}

fn new_line(endpoint: Endpoint, timeout: Duration) -> Line {
    let pause = if matches!(endpoint, Endpoint::Tcp(_)) {
        Duration::ZERO
    } else {
        SERIAL_PAUSE
    };
    Line::new(endpoint, timeout, pause, Duration::from_secs(1))
}

#[derive(Serialize)]
struct ProbeLine<'a> {
    point: &'a str,
    value: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

pub async fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let mut reg =
        ProfileRegistry::bundled().map_err(|d| anyhow::anyhow!("bundled profiles: {d:?}"))?;
    if let Some(dir) = &args.profiles_dir {
        let errs = reg.load_dir(dir);
        if !errs.is_empty() {
            errs.iter().for_each(|e| eprintln!("{e}"));
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    }
    let Some(profile) = reg.get(&args.profile).cloned() else {
        eprintln!(
            "no profile `{}` (see `parkhub profiles list`)",
            args.profile
        );
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    };
    let unit = args.unit.unwrap_or(profile.serial.unit);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let endpoint = endpoint(&args.line, &args.serial, profile.serial)?;
    let shown = endpoint.to_string();
    let mut line = new_line(endpoint, timeout);
    let (mut poller, who) = match profile.protocol {
        Protocol::Dlt645 => {
            let Some(address) = args.address.as_deref() else {
                eprintln!("a DL/T 645 meter is asked by its 12-digit --address (`parkhub scan --protocol dlt645` finds it)");
                return Ok(ExitCode::from(super::EXIT_CONFIG));
            };
            let address: crate::dlt645::frame::Address = match address.parse() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("--address: {e}");
                    return Ok(ExitCode::from(super::EXIT_CONFIG));
                }
            };
            let p = Dlt645Poller::new(Arc::from("probe"), address, &profile, timeout);
            (DevicePoller::Dlt645(p), format!("meter {address}"))
        }
        Protocol::Cjt188 => {
            let Some(address) = args.address.as_deref() else {
                eprintln!("a CJ/T 188 meter is asked by its 14-digit --address (`parkhub scan --protocol cjt188` finds it)");
                return Ok(ExitCode::from(super::EXIT_CONFIG));
            };
            let address: crate::cjt188::frame::Address = match address.parse() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("--address: {e}");
                    return Ok(ExitCode::from(super::EXIT_CONFIG));
                }
            };
            let p = crate::cjt188::poller::Cjt188Poller::new(
                Arc::from("probe"),
                address,
                &profile,
                timeout,
            );
            (DevicePoller::Cjt188(p), format!("meter {address}"))
        }
        Protocol::Modbus => (
            DevicePoller::Modbus(Poller::new(
                Arc::from("probe"),
                unit,
                profile.clone(),
                timeout,
            )),
            format!("unit {unit}"),
        ),
        other => {
            eprintln!(
                "profile {} is a {other} device: `probe` reads Modbus, DL/T 645 and CJ/T 188 meters",
                profile.id
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let res = poller.poll(&mut line).await;
    if !res.answered {
        eprintln!("no answer from {who} on {shown}: {}", res.errors.join("; "));
        eprintln!(
            "check wiring (A/B), unit id, baud/parity, and that nothing else polls this line"
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &res.readings {
            let line = ProbeLine {
                point: &r.point,
                value: &r.value,
                unit: r.unit.as_deref(),
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        }
    } else {
        writeln!(out, "{} {who} on {shown}:", profile.id)?;
        for r in &res.readings {
            let label = profile
                .point(&r.point)
                .and_then(|p| p.label.as_deref())
                .unwrap_or("");
            writeln!(
                out,
                "  {:<22} {:>14} {} {}",
                r.point,
                r.value.to_string(),
                pad(r.unit.as_deref().unwrap_or(""), 6),
                label
            )?;
        }
    }
    for e in &res.errors {
        eprintln!("warning: {e}");
    }
    Ok(if res.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    if args.protocol != ScanProtocol::Modbus {
        return scan_addresses(args).await;
    }
    let units = match parse_units(&args.units) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("--units: {e}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let endpoint = endpoint(&args.line, &args.serial, SerialDefaults::default())?;
    let shown = endpoint.to_string();
    let mut line = new_line(endpoint, timeout);
    let block = ReadBlock {
        function: Function::Holding,
        start: args.register,
        count: 1,
        points: vec![],
    };
    eprintln!(
        "scanning {} unit id(s) on {shown}, {} ms each…",
        units.len(),
        timeout.as_millis()
    );
    let mut found = Vec::new();
    let mut out = std::io::stdout().lock();
    for unit in units {
        line.wait_pause().await;
        let ctx = match line.ensure().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        match link::read(ctx, unit, &block, timeout).await {
            Ok(_) => {
                writeln!(out, "unit {unit}: answers")?;
                found.push(unit);
            }
            // A gateway answering for a unit that is not there.
            Err(ReadError::Exception(
                ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable,
            )) => {}
            Err(ReadError::Exception(code)) => {
                writeln!(
                    out,
                    "unit {unit}: answers (refuses holding register {}: {code})",
                    args.register
                )?;
                found.push(unit);
            }
            Err(ReadError::Timeout(_)) | Err(ReadError::Protocol(_)) => line.reopen(),
            Err(ReadError::Link(e)) => {
                eprintln!("link error at unit {unit}: {e}");
                line.link_failed(e.to_string());
            }
        }
    }
    let list: Vec<String> = found.iter().map(u8::to_string).collect();
    eprintln!(
        "{} unit(s) answer{}",
        found.len(),
        if found.is_empty() {
            String::new()
        } else {
            format!(": {}", list.join(", "))
        }
    );
    Ok(if found.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The broadcast read-address request; every meter that hears it answers with its address. Two
/// or more on one line answer at once and garble each other (CJ/T 188 meters may not answer at
/// all then): the clean answers are printed, and the installer scans meters one at a time when
/// the count looks short.
async fn scan_addresses(args: ScanArgs) -> anyhow::Result<ExitCode> {
    use crate::modbus::raw::{RawError, Take};
    let timeout = Duration::from_millis(args.timeout_ms.max(1000));
    let line = SerialDefaults {
        baud: 2400,
        parity: crate::config::Parity::Even,
        ..SerialDefaults::default()
    };
    let endpoint = endpoint(&args.line, &args.serial, line)?;
    let shown = endpoint.to_string();
    let mut line = new_line(endpoint, timeout);
    let (name, request) = match args.protocol {
        ScanProtocol::Cjt188 => ("CJ/T 188", crate::cjt188::frame::read_address_request()),
        _ => ("DL/T 645", crate::dlt645::frame::read_address_request()),
    };
    eprintln!(
        "asking every {name} meter on {shown} for its address (broadcast), {} ms…",
        timeout.as_millis()
    );
    let raw = match line.ensure_raw().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Err(e) = raw.send(&request).await {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found: Vec<String> = Vec::new();
    let mut garbled = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let got = raw
            .receive(deadline, |buf| match args.protocol {
                ScanProtocol::Cjt188 => {
                    use crate::cjt188::frame::{scan, Control, Scan};
                    match scan(buf) {
                        Scan::NeedMore => Take::NeedMore,
                        Scan::Skip { len, .. } => {
                            garbled += 1;
                            Take::Skip(len)
                        }
                        Scan::Frame { frame, consumed }
                            if frame.control() == Control::READ_ADDRESS_REPLY =>
                        {
                            Take::Done(frame.address().to_string(), consumed)
                        }
                        Scan::Frame { consumed, .. } => Take::Skip(consumed),
                    }
                }
                _ => {
                    use crate::dlt645::frame::{scan, Reply, Scan};
                    match scan(buf) {
                        Scan::NeedMore => Take::NeedMore,
                        Scan::Skip { len, .. } => {
                            garbled += 1;
                            Take::Skip(len)
                        }
                        Scan::Frame { frame, consumed } => match frame.reply() {
                            Ok(Reply::Address(a)) => Take::Done(a.to_string(), consumed),
                            _ => Take::Skip(consumed),
                        },
                    }
                }
            })
            .await;
        match got {
            Ok(a) => {
                if !found.contains(&a) {
                    writeln!(out, "{a}")?;
                    found.push(a);
                }
            }
            Err(RawError::NoAnswer(_)) => break,
            Err(RawError::Link(e)) => {
                eprintln!("{e}");
                break;
            }
        }
    }
    eprintln!(
        "{} meter(s) answered{}",
        found.len(),
        if garbled > 0 {
            " (and garbled bytes: several meters answering at once? scan them one at a time)"
        } else {
            ""
        }
    );
    Ok(if found.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
