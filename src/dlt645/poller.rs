//! One DL/T 645 meter's reads on a shared line: one request per quantity, one at a time, through
//! the same scheduler as Modbus devices. Whatever else arrives on the line (wake-up bytes, noise,
//! a broken checksum, the echo of our own request, a late answer from another meter) is thrown
//! away and counted by reason, and the read goes on until its answer or its timeout.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::frame::{read_request, scan, Address, Quantity, Reply, Scan};
use crate::hub::RequestOutcome;
use crate::modbus::bus::{Line, PollResult};
use crate::modbus::raw::{RawError, Take};
use crate::profile::Profile;
use crate::reading::{Reading, Value};

/// The point names a `dlt645` profile may use: the quantities this driver reads.
pub fn point_names() -> impl Iterator<Item = &'static str> {
    Quantity::ALL.iter().map(|q| q.name())
}

pub struct Dlt645Poller {
    pub id: Arc<str>,
    pub address: Address,
    timeout: Duration,
    points: Vec<(Arc<str>, Quantity, Option<Arc<str>>)>,
}

/// How one read ended.
enum Answer {
    Value(Vec<u8>),
    Refused(String),
}

impl Dlt645Poller {
    /// The profile's points this driver knows (the loader refuses others).
    pub fn new(id: Arc<str>, address: Address, profile: &Profile, timeout: Duration) -> Self {
        let points = profile
            .visible_points()
            .filter_map(|p| {
                let q = Quantity::ALL.into_iter().find(|q| q.name() == &*p.name)?;
                Some((p.name.clone(), q, p.unit.clone()))
            })
            .collect();
        Self {
            id,
            address,
            timeout,
            points,
        }
    }

    pub fn requests_per_poll(&self) -> usize {
        self.points.len()
    }

    /// Reads every point once. After a read nobody answered, the rest wait for the next cycle:
    /// a dead meter costs its neighbours one timeout, not one per point.
    pub async fn poll(&mut self, line: &mut Line) -> PollResult {
        let mut res = PollResult::default();
        for (name, quantity, unit) in &self.points {
            line.wait_pause().await;
            let raw = match line.ensure_raw().await {
                Ok(raw) => raw,
                Err(e) => {
                    res.outcomes.push(RequestOutcome::LinkError);
                    res.errors.push(e);
                    break;
                }
            };
            let di = quantity.di();
            let address = self.address;
            let mut rejects = std::collections::BTreeMap::new();
            let started = Instant::now();
            let got = raw
                .exchange(&read_request(address, di), self.timeout, |buf| {
                    match scan(buf) {
                        Scan::NeedMore => Take::NeedMore,
                        Scan::Skip { len, reason } => {
                            *rejects.entry(reason.as_str()).or_insert(0) += 1;
                            Take::Skip(len)
                        }
                        Scan::Frame { frame, consumed } => match frame.reply() {
                            Ok(r) if r.answers(address, di) => match r {
                                Reply::Data { payload, .. } => {
                                    Take::Done(Answer::Value(payload), consumed)
                                }
                                Reply::Error { code, .. } => {
                                    Take::Done(Answer::Refused(code.to_string()), consumed)
                                }
                                _ => {
                                    *rejects.entry("unexpected").or_insert(0) += 1;
                                    Take::Skip(consumed)
                                }
                            },
                            Ok(r) => {
                                // Our own request echoed by a half-duplex adapter, or another
                                // meter's (or an earlier) answer: counted apart from garbage.
                                let why = match r {
                                    Reply::Echo(_) => "echo",
                                    r if r.address() != address => "other_meter",
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
                    }
                })
                .await;
            line.last_io = Some(Instant::now());
            for (reason, n) in rejects {
                *res.rejects.entry(reason).or_insert(0) += n;
            }
            match got {
                Ok(Answer::Value(payload)) => {
                    line.answered();
                    res.outcomes.push(RequestOutcome::Ok(started.elapsed()));
                    res.answered = true;
                    match quantity.decode(&payload) {
                        Ok(v) => res.readings.push(Reading {
                            device: self.id.clone(),
                            point: name.clone(),
                            ts: Utc::now(),
                            value: Value::Number(v),
                            unit: unit.clone(),
                        }),
                        Err(e) => res.errors.push(format!("{name}: {e}")),
                    }
                }
                Ok(Answer::Refused(why)) => {
                    line.answered();
                    res.outcomes.push(RequestOutcome::Exception);
                    res.answered = true;
                    res.errors
                        .push(format!("{name} (DI {di:08X}): meter refused: {why}"));
                }
                Err(RawError::NoAnswer(t)) => {
                    res.outcomes.push(RequestOutcome::Timeout);
                    res.errors.push(format!(
                        "meter {address} did not answer within {} ms",
                        t.as_millis()
                    ));
                    break;
                }
                Err(RawError::Link(e)) => {
                    line.link_failed(e.clone());
                    res.outcomes.push(RequestOutcome::LinkError);
                    res.errors.push(e);
                    break;
                }
            }
        }
        res
    }
}
