//! What the hub knows of one charger between messages: each connector's status, meter and
//! running session, and how a charge point's requests become the hub's readings. Pure code:
//! the connection task feeds it and sends what it returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::messages::{MeterValues, StatusNotification};
use super::meter::{self, point_name};
use super::sessions::energy_kwh;
use crate::reading::{Reading, Value};

/// A charger's clock this far ahead of the hub's is wrong: its timestamps give way to the hub's.
const CLOCK_AHEAD: Duration = Duration::minutes(5);

/// The time to stamp a charger's report with: its own (a report queued while the charger was
/// offline keeps the time it happened), unless that lies in the future.
pub fn stamp(given: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match given {
        Some(t) if t <= now + CLOCK_AHEAD => t,
        _ => now,
    }
}

/// A session running on a connector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Running {
    pub transaction_id: i32,
    pub id_tag: String,
    pub started_at: DateTime<Utc>,
    pub meter_start_wh: i64,
    /// kWh so far, from the connector's latest meter reading.
    pub energy_kwh: f64,
}

/// One connector as the console shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Connector {
    pub connector: u32,
    pub status: Option<String>,
    pub error_code: Option<String>,
    /// The charger's own words on a fault: `info` and `vendorErrorCode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    pub status_at: Option<DateTime<Utc>>,
    pub power_w: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub temperature: Option<f64>,
    pub soc: Option<f64>,
    pub session: Option<Running>,
}

/// A charger's state; `connectors[0]` is the charger as a whole.
#[derive(Debug, Clone)]
pub struct Charger {
    device: Arc<str>,
    /// Connectors configured (`connectors = N`), shown before they report.
    configured: u32,
    connectors: BTreeMap<u32, Connector>,
    /// The charger sends meter values of its own (connector 0); otherwise its total is the sum
    /// of its connectors'.
    whole_meter: bool,
}

/// The readings one request gave, and the sampled values refused.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub readings: Vec<Reading>,
    pub rejected: usize,
    pub problems: Vec<String>,
}

impl Charger {
    pub fn new(device: Arc<str>, configured: u32) -> Charger {
        let connectors = (0..=configured)
            .map(|n| {
                (
                    n,
                    Connector {
                        connector: n,
                        ..Connector::default()
                    },
                )
            })
            .collect();
        Charger {
            device,
            configured,
            connectors,
            whole_meter: false,
        }
    }

    fn connector(&mut self, n: u32) -> &mut Connector {
        self.connectors.entry(n).or_insert_with(|| Connector {
            connector: n,
            ..Connector::default()
        })
    }

    fn reading(
        &self,
        connector: u32,
        name: &str,
        value: Value,
        unit: Option<&'static str>,
        ts: DateTime<Utc>,
    ) -> Reading {
        Reading {
            device: self.device.clone(),
            point: Arc::from(point_name(connector, name)),
            ts,
            value,
            unit: unit.map(Arc::from),
        }
    }

    /// Picks up a session that was running when the hub stopped.
    pub fn resume(&mut self, connector: u32, session: Running) {
        self.connector(connector).session = Some(session);
    }

    /// A StatusNotification: the connector's status and error code.
    pub fn status(&mut self, n: &StatusNotification, now: DateTime<Utc>) -> Outcome {
        let ts = stamp(n.timestamp, now);
        let c = self.connector(n.connector_id);
        c.status = Some(n.status.as_str().to_string());
        c.error_code = Some(n.error_code.as_str().to_string());
        c.info = match (&n.info, &n.vendor_error_code) {
            (None, None) => None,
            (Some(i), None) => Some(i.clone()),
            (None, Some(v)) => Some(v.clone()),
            (Some(i), Some(v)) => Some(format!("{i} ({v})")),
        };
        c.status_at = Some(ts);
        let id = n.connector_id;
        Outcome {
            readings: vec![
                self.reading(
                    id,
                    "status",
                    Value::Text(n.status.as_str().into()),
                    None,
                    ts,
                ),
                self.reading(
                    id,
                    "error_code",
                    Value::Text(n.error_code.as_str().into()),
                    None,
                    ts,
                ),
            ],
            ..Outcome::default()
        }
    }

    /// MeterValues: each moment's sampled values reduced to readings, the running session's
    /// energy, and the charger's total when it sends none of its own.
    pub fn meter_values(&mut self, m: &MeterValues, now: DateTime<Utc>) -> Outcome {
        let mut out = Outcome::default();
        let id = m.connector_id;
        let mut latest = None;
        for mv in &m.meter_value {
            let ts = stamp(Some(mv.timestamp), now);
            let reduced = meter::reduce(id, &mv.sampled_value);
            out.rejected += reduced.rejected;
            out.problems.extend(reduced.problems);
            for (name, value, unit) in reduced.readings {
                let local = name.rsplit('.').next().unwrap_or(&name).to_string();
                let c = self.connector(id);
                match local.as_str() {
                    "energy" => c.energy_kwh = Some(value),
                    "power" => c.power_w = Some(value),
                    "temperature" => c.temperature = Some(value),
                    "soc" => c.soc = Some(value),
                    _ => {}
                }
                if id == 0 && matches!(local.as_str(), "energy" | "power") {
                    self.whole_meter = true;
                }
                out.readings.push(Reading {
                    device: self.device.clone(),
                    point: Arc::from(name),
                    ts,
                    value: Value::Number(value),
                    unit: Some(Arc::from(unit)),
                });
            }
            latest = Some(latest.map_or(ts, |t: DateTime<Utc>| t.max(ts)));
        }
        let Some(ts) = latest else {
            return out;
        };
        if id > 0 {
            let c = self.connector(id);
            if let (Some(s), Some(kwh)) = (c.session.as_mut(), c.energy_kwh) {
                s.energy_kwh = energy_kwh(s.meter_start_wh, (kwh * 1000.0).round() as i64);
                let e = s.energy_kwh;
                out.readings.push(self.reading(
                    id,
                    "session_energy",
                    Value::Number(e),
                    Some("kWh"),
                    ts,
                ));
            }
            out.readings.extend(self.totals(ts));
        }
        out
    }

    /// The charger's power and energy as the sum of its connectors', when it sends no total and
    /// every connector's meter is known (a total that jumps as connectors first report would
    /// read as energy used).
    fn totals(&self, ts: DateTime<Utc>) -> Vec<Reading> {
        if self.whole_meter {
            return Vec::new();
        }
        let ports: Vec<&Connector> = self
            .connectors
            .values()
            .filter(|c| c.connector > 0)
            .collect();
        let mut out = Vec::new();
        if ports.len() >= self.configured as usize && ports.iter().all(|c| c.energy_kwh.is_some()) {
            let e: f64 = ports.iter().filter_map(|c| c.energy_kwh).sum();
            out.push(self.reading(0, "energy", Value::Number(e), Some("kWh"), ts));
        }
        // A connector that never reported power draws none.
        let p: f64 = ports.iter().filter_map(|c| c.power_w).sum();
        out.push(self.reading(0, "power", Value::Number(p), Some("W"), ts));
        out
    }

    /// A session began (its id is stored): its energy starts at 0. Returns, besides the
    /// readings, another session the connector was still running: its stop never came (the
    /// charger lost it), and the new one supersedes it.
    pub fn started(&mut self, connector: u32, session: Running) -> (Outcome, Option<Running>) {
        let ts = session.started_at;
        let id = session.transaction_id;
        let c = self.connector(connector);
        c.energy_kwh = Some(session.meter_start_wh as f64 / 1000.0);
        let old = c
            .session
            .replace(session)
            .filter(|s| s.transaction_id != id);
        let out = Outcome {
            readings: vec![self.reading(
                connector,
                "session_energy",
                Value::Number(0.0),
                Some("kWh"),
                ts,
            )],
            ..Outcome::default()
        };
        (out, old)
    }

    /// The connector a transaction runs on.
    pub fn connector_of(&self, transaction_id: i32) -> Option<u32> {
        self.connectors
            .values()
            .find(|c| {
                c.session
                    .as_ref()
                    .is_some_and(|s| s.transaction_id == transaction_id)
            })
            .map(|c| c.connector)
    }

    /// Session `transaction_id` ended on `connector`: its final energy, and the register where
    /// it stopped. A late stop of a session the connector has since replaced leaves the new one
    /// alone.
    pub fn stopped(
        &mut self,
        connector: u32,
        transaction_id: i32,
        meter_stop_wh: i64,
        ts: DateTime<Utc>,
    ) -> Outcome {
        let c = self.connector(connector);
        let Some(s) = c.session.take_if(|s| s.transaction_id == transaction_id) else {
            return Outcome::default();
        };
        let kwh = meter_stop_wh as f64 / 1000.0;
        c.energy_kwh = Some(c.energy_kwh.map_or(kwh, |e| e.max(kwh)));
        c.power_w = Some(0.0);
        let mut readings = vec![
            self.reading(
                connector,
                "session_energy",
                Value::Number(energy_kwh(s.meter_start_wh, meter_stop_wh)),
                Some("kWh"),
                ts,
            ),
            self.reading(connector, "energy", Value::Number(kwh), Some("kWh"), ts),
            self.reading(connector, "power", Value::Number(0.0), Some("W"), ts),
        ];
        readings.extend(self.totals(ts));
        Outcome {
            readings,
            ..Outcome::default()
        }
    }

    /// Every connector (0, the charger itself, first).
    pub fn view(&self) -> Vec<Connector> {
        self.connectors.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::messages::{
        ChargePointErrorCode, ChargePointStatus, Measurand, MeterValue, SampledValue, UnitOfMeasure,
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap_or_default()
    }

    fn sv(value: &str, m: Measurand, unit: Option<UnitOfMeasure>) -> SampledValue {
        SampledValue {
            value: value.into(),
            context: None,
            format: None,
            measurand: Some(m),
            phase: None,
            location: None,
            unit,
        }
    }

    fn values(connector: u32, ts: DateTime<Utc>, sampled: Vec<SampledValue>) -> MeterValues {
        MeterValues {
            connector_id: connector,
            transaction_id: None,
            meter_value: vec![MeterValue {
                timestamp: ts,
                sampled_value: sampled,
            }],
        }
    }

    fn point<'a>(o: &'a Outcome, name: &str) -> Option<&'a Value> {
        o.readings
            .iter()
            .find(|r| &*r.point == name)
            .map(|r| &r.value)
    }

    fn running(id: i32, start_wh: i64, at: DateTime<Utc>) -> Running {
        Running {
            transaction_id: id,
            id_tag: "TAG".into(),
            started_at: at,
            meter_start_wh: start_wh,
            energy_kwh: 0.0,
        }
    }

    #[test]
    fn a_status_gives_the_connectors_status_and_error_code_points() {
        let mut c = Charger::new(Arc::from("cp-1"), 2);
        let o = c.status(
            &StatusNotification {
                connector_id: 2,
                error_code: ChargePointErrorCode::HighTemperature,
                info: Some("gun hot".into()),
                status: ChargePointStatus::Faulted,
                timestamp: Some(t(0)),
                vendor_id: None,
                vendor_error_code: Some("E42".into()),
            },
            t(1),
        );
        assert_eq!(
            point(&o, "connector2.status"),
            Some(&Value::Text("Faulted".into()))
        );
        assert_eq!(
            point(&o, "connector2.error_code"),
            Some(&Value::Text("HighTemperature".into()))
        );
        assert_eq!(o.readings[0].ts, t(0), "the charger's own time counts");
        assert_eq!(c.view()[2].info.as_deref(), Some("gun hot (E42)"));
    }

    #[test]
    fn connector_zero_is_the_charger_as_a_whole() {
        let mut c = Charger::new(Arc::from("cp-1"), 1);
        let o = c.status(
            &StatusNotification {
                connector_id: 0,
                error_code: ChargePointErrorCode::NoError,
                info: None,
                status: ChargePointStatus::Available,
                timestamp: None,
                vendor_id: None,
                vendor_error_code: None,
            },
            t(1),
        );
        assert_eq!(point(&o, "status"), Some(&Value::Text("Available".into())));
        assert_eq!(o.readings[0].ts, t(1), "no timestamp: the hub's time");
    }

    #[test]
    fn a_timestamp_from_the_future_gives_way_to_the_hubs_clock() {
        assert_eq!(stamp(Some(t(3600)), t(0)), t(0));
        assert_eq!(stamp(Some(t(60)), t(0)), t(60), "a little ahead is fine");
        assert_eq!(
            stamp(Some(t(-86_400)), t(0)),
            t(-86_400),
            "queued offline: kept"
        );
    }

    #[test]
    fn meter_values_during_a_session_give_its_energy_and_the_chargers_total() {
        let mut c = Charger::new(Arc::from("cp-1"), 2);
        assert_eq!(c.started(1, running(7, 10_000, t(0))).1, None);
        assert_eq!(
            c.started(1, running(7, 10_000, t(0))).1,
            None,
            "the same start again"
        );
        assert_eq!(c.connector_of(7), Some(1));
        let o = c.meter_values(
            &values(
                1,
                t(60),
                vec![
                    sv(
                        "12500",
                        Measurand::EnergyActiveImportRegister,
                        Some(UnitOfMeasure::Wh),
                    ),
                    sv("7.2", Measurand::PowerActiveImport, Some(UnitOfMeasure::KW)),
                    sv("41.5", Measurand::Temperature, Some(UnitOfMeasure::Celcius)),
                ],
            ),
            t(61),
        );
        assert_eq!(point(&o, "connector1.energy"), Some(&Value::Number(12.5)));
        assert_eq!(point(&o, "connector1.power"), Some(&Value::Number(7200.0)));
        assert_eq!(
            point(&o, "connector1.temperature"),
            Some(&Value::Number(41.5))
        );
        assert_eq!(
            point(&o, "connector1.session_energy"),
            Some(&Value::Number(2.5))
        );
        assert_eq!(point(&o, "power"), Some(&Value::Number(7200.0)));
        assert_eq!(
            point(&o, "energy"),
            None,
            "connector 2's meter is not known yet"
        );

        let o = c.meter_values(
            &values(
                2,
                t(70),
                vec![sv("3000", Measurand::EnergyActiveImportRegister, None)],
            ),
            t(71),
        );
        assert_eq!(point(&o, "energy"), Some(&Value::Number(15.5)));

        assert!(
            c.stopped(1, 6, 13_000, t(120)).readings.is_empty(),
            "another transaction's stop leaves this one running"
        );
        let o = c.stopped(1, 7, 13_000, t(120));
        assert_eq!(
            point(&o, "connector1.session_energy"),
            Some(&Value::Number(3.0))
        );
        assert_eq!(point(&o, "connector1.power"), Some(&Value::Number(0.0)));
        assert_eq!(point(&o, "energy"), Some(&Value::Number(16.0)));
        assert_eq!(c.connector_of(7), None);
        assert!(
            c.stopped(1, 7, 13_000, t(130)).readings.is_empty(),
            "nothing runs any more"
        );
    }

    #[test]
    fn a_new_session_on_a_busy_connector_supersedes_the_one_whose_stop_never_came() {
        let mut c = Charger::new(Arc::from("cp-1"), 1);
        c.started(1, running(7, 10_000, t(0)));
        let (_, old) = c.started(1, running(8, 12_000, t(600)));
        assert_eq!(old.map(|s| s.transaction_id), Some(7));
        assert_eq!(c.connector_of(8), Some(1));
        assert_eq!(c.connector_of(7), None);
    }

    #[test]
    fn a_charger_with_its_own_meter_sends_its_total_itself() {
        let mut c = Charger::new(Arc::from("cp-1"), 1);
        c.meter_values(
            &values(
                0,
                t(0),
                vec![sv("100000", Measurand::EnergyActiveImportRegister, None)],
            ),
            t(0),
        );
        let o = c.meter_values(
            &values(
                1,
                t(10),
                vec![sv("5000", Measurand::EnergyActiveImportRegister, None)],
            ),
            t(10),
        );
        assert_eq!(point(&o, "energy"), None);
        assert_eq!(point(&o, "power"), None);
    }

    #[test]
    fn refused_sampled_values_are_counted_and_the_rest_kept() {
        let mut c = Charger::new(Arc::from("cp-1"), 1);
        let o = c.meter_values(
            &values(
                1,
                t(0),
                vec![
                    sv("abc", Measurand::PowerActiveImport, None),
                    sv("230", Measurand::Voltage, None),
                ],
            ),
            t(0),
        );
        assert_eq!(o.rejected, 1);
        assert!(!o.problems.is_empty());
        assert_eq!(point(&o, "connector1.voltage"), Some(&Value::Number(230.0)));
    }
}
