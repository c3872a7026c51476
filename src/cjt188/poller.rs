//! One CJ/T 188 water meter's read on a shared line: one request (DI 901F) gives its volume,
//! valve and battery, through the same scheduler as Modbus devices. Echoes, other meters'
//! answers, late answers to an earlier request and garbled bytes are passed over, and counted by
//! reason, until the answer or the timeout.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::frame::{interpret, scan, Address, Answer, Request, RequestOptions, Scan, Valve};
use crate::hub::RequestOutcome;
use crate::modbus::bus::{Line, PollResult};
use crate::modbus::raw::{RawError, Take};
use crate::profile::Profile;
use crate::reading::{Reading, Value};

/// The point names a `cjt188` profile may use.
pub const POINTS: &[&str] = &["volume_total", "valve", "battery_low"];

pub struct Cjt188Poller {
    pub id: Arc<str>,
    pub address: Address,
    timeout: Duration,
    points: Vec<(Arc<str>, Option<Arc<str>>)>,
    ser: u8,
}

impl Cjt188Poller {
    pub fn new(id: Arc<str>, address: Address, profile: &Profile, timeout: Duration) -> Self {
        let points = profile
            .visible_points()
            .filter(|p| POINTS.contains(&&*p.name))
            .map(|p| (p.name.clone(), p.unit.clone()))
            .collect();
        Self {
            id,
            address,
            timeout,
            points,
            ser: 0,
        }
    }

    /// Reads the meter once.
    pub async fn poll(&mut self, line: &mut Line) -> PollResult {
        let mut res = PollResult::default();
        line.wait_pause().await;
        let raw = match line.ensure_raw().await {
            Ok(raw) => raw,
            Err(e) => {
                res.outcomes.push(RequestOutcome::LinkError);
                res.errors.push(e);
                return res;
            }
        };
        // A fresh sequence number per request tells a late answer from this one.
        self.ser = self.ser.wrapping_add(1);
        let request = Request::Read {
            to: self.address,
            ser: self.ser,
        };
        let mut rejects = std::collections::BTreeMap::new();
        let started = Instant::now();
        let got = raw
            .exchange(
                &request.to_wire(RequestOptions::default()),
                self.timeout,
                |buf| match scan(buf) {
                    Scan::NeedMore => Take::NeedMore,
                    Scan::Skip { len, reason } => {
                        *rejects.entry(reason.as_str()).or_insert(0) += 1;
                        Take::Skip(len)
                    }
                    Scan::Frame { frame, consumed } => match interpret(&request, &frame) {
                        Ok(a) if a.settles() => Take::Done(a, consumed),
                        Ok(a) => {
                            let why = match a {
                                Answer::Echo => "echo",
                                Answer::OtherMeter(_) => "other_meter",
                                Answer::Stale { .. } => "stale",
                                _ => "unexpected",
                            };
                            *rejects.entry(why).or_insert(0) += 1;
                            Take::Skip(consumed)
                        }
                        Err(_) => {
                            *rejects.entry("bad_reply").or_insert(0) += 1;
                            Take::Skip(consumed)
                        }
                    },
                },
            )
            .await;
        line.last_io = Some(Instant::now());
        res.rejects = rejects;
        match got {
            Ok(Answer::Reading(r)) => {
                line.answered();
                res.outcomes.push(RequestOutcome::Ok(started.elapsed()));
                res.answered = true;
                let ts = Utc::now();
                for (name, unit) in &self.points {
                    let value = match &**name {
                        "volume_total" => Value::Number(r.volume_m3),
                        "battery_low" => Value::Bool(r.battery_low),
                        "valve" => Value::Text(
                            match r.valve {
                                Valve::Open => "open",
                                Valve::Closed => "closed",
                                Valve::Abnormal => "abnormal",
                                Valve::Unknown => "unknown",
                            }
                            .into(),
                        ),
                        _ => continue,
                    };
                    res.readings.push(Reading {
                        device: self.id.clone(),
                        point: name.clone(),
                        ts,
                        value,
                        unit: unit.clone(),
                    });
                }
            }
            Ok(Answer::Refused { status }) => {
                line.answered();
                res.outcomes.push(RequestOutcome::Exception);
                res.answered = true;
                res.errors.push(format!(
                    "meter {} refused the read (status {:02X} {:02X})",
                    self.address, status[0], status[1]
                ));
            }
            Ok(_) => {}
            Err(RawError::NoAnswer(t)) => {
                res.outcomes.push(RequestOutcome::Timeout);
                res.errors.push(format!(
                    "meter {} did not answer within {} ms",
                    self.address,
                    t.as_millis()
                ));
            }
            Err(RawError::Link(e)) => {
                line.link_failed(e.clone());
                res.outcomes.push(RequestOutcome::LinkError);
                res.errors.push(e);
            }
        }
        res
    }
}
