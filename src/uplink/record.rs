//! What goes up to the park's cloud, and the batch it goes up in (DESIGN.md "Uplink"). Pure
//! code: records are encoded once, when they are queued, as the inside of their JSON object;
//! a batch puts each one's `seq` in front, so forming a batch is string work, not encoding.

use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::reading::Reading;

/// The three kinds of record, in the batch's three arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reading = 0,
    Alarm = 1,
    Status = 2,
}

impl Kind {
    pub fn from_i64(k: i64) -> Option<Kind> {
        Some(match k {
            0 => Kind::Reading,
            1 => Kind::Alarm,
            2 => Kind::Status,
            _ => return None,
        })
    }
}

/// A record ready for the queue: its kind and the inside of its JSON object (without `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub body: String,
}

fn time(ts: DateTime<Utc>, tz: Tz) -> String {
    ts.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The inside of `{…}` for a serializable struct: its JSON without the braces.
fn inside(v: &impl Serialize) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    s.strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_default()
        .to_string()
}

#[derive(Serialize)]
struct ReadingOut<'a> {
    device_id: &'a str,
    point: &'a str,
    ts: String,
    value: &'a crate::reading::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

pub fn reading(r: &Reading, tz: Tz) -> Record {
    Record {
        kind: Kind::Reading,
        body: inside(&ReadingOut {
            device_id: &r.device,
            point: &r.point,
            ts: time(r.ts, tz),
            value: &r.value,
            unit: r.unit.as_deref(),
        }),
    }
}

#[derive(Serialize)]
struct StatusOut<'a> {
    device_id: &'a str,
    online: bool,
    ts: String,
}

pub fn status(device: &str, online: bool, ts: DateTime<Utc>, tz: Tz) -> Record {
    Record {
        kind: Kind::Status,
        body: inside(&StatusOut {
            device_id: device,
            online,
            ts: time(ts, tz),
        }),
    }
}

/// One transition of an alarm, as the cloud gets it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmOut {
    pub alarm_id: String,
    pub event: String,
    pub severity: String,
    pub category: String,
    pub device_id: String,
    pub point: Option<String>,
    pub value: serde_json::Value,
    pub state: String,
    pub message: String,
    pub raised_at: String,
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

pub fn alarm(a: &AlarmOut) -> Record {
    Record {
        kind: Kind::Alarm,
        body: inside(a),
    }
}

/// A batch's body: DESIGN.md's JSON, records numbered from `first_seq` in queue order.
pub fn batch_body(hub_id: &str, first_seq: i64, records: &[Record], sent_at: &str) -> Vec<u8> {
    let last_seq = first_seq + records.len() as i64 - 1;
    let hub = serde_json::to_string(hub_id).unwrap_or_else(|_| "\"\"".into());
    let mut arrays: [Vec<u8>; 3] = Default::default();
    for (i, r) in records.iter().enumerate() {
        let a = &mut arrays[r.kind as usize];
        a.push(if a.is_empty() { b'[' } else { b',' });
        let _ = write!(a, "{{\"seq\":{}", first_seq + i as i64);
        if !r.body.is_empty() {
            a.push(b',');
            a.extend_from_slice(r.body.as_bytes());
        }
        a.push(b'}');
    }
    let mut out = Vec::with_capacity(arrays.iter().map(Vec::len).sum::<usize>() + 256);
    let _ = write!(
        out,
        "{{\"hub_id\":{hub},\"batch_id\":{},\"first_seq\":{first_seq},\"last_seq\":{last_seq},\"sent_at\":{}",
        serde_json::to_string(&format!("{hub_id}-{first_seq}")).unwrap_or_default(),
        serde_json::to_string(sent_at).unwrap_or_default(),
    );
    for (name, a) in ["readings", "alarms", "device_status"].iter().zip(arrays) {
        let _ = write!(out, ",\"{name}\":");
        if a.is_empty() {
            out.extend_from_slice(b"[]");
        } else {
            out.extend_from_slice(&a);
            out.push(b']');
        }
    }
    out.push(b'}');
    out
}

/// The body as sent: gzip when it is big enough for it to pay (DESIGN.md allows either).
pub fn encode(body: &[u8]) -> (Vec<u8>, bool) {
    const WORTH_IT: usize = 1024;
    if body.len() < WORTH_IT {
        return (body.to_vec(), false);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    match gz.write_all(body).and_then(|_| gz.finish()) {
        Ok(z) if z.len() < body.len() => (z, true),
        _ => (body.to_vec(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;

    const TZ: Tz = chrono_tz::Asia::Shanghai;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn a_batch_numbers_its_records_across_the_three_arrays_in_queue_order() {
        let r = reading(
            &Reading {
                device: "em-1".into(),
                point: "energy_import".into(),
                ts: at(1_764_000_000),
                value: Value::Number(12345.6),
                unit: Some("kWh".into()),
            },
            TZ,
        );
        let s = status("em-2", false, at(1_764_000_001), TZ);
        let body = batch_body(
            "hz-1",
            1201,
            &[r.clone(), s, r],
            "2026-11-26T10:00:00+08:00",
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["batch_id"], "hz-1-1201");
        assert_eq!(
            (v["first_seq"].as_i64(), v["last_seq"].as_i64()),
            (Some(1201), Some(1203))
        );
        assert_eq!(v["readings"][0]["seq"], 1201);
        assert_eq!(v["readings"][1]["seq"], 1203);
        assert_eq!(v["readings"][0]["value"], 12345.6);
        assert_eq!(v["readings"][0]["unit"], "kWh");
        assert_eq!(v["readings"][0]["ts"], "2025-11-25T00:00:00+08:00");
        assert_eq!(v["device_status"][0]["seq"], 1202);
        assert_eq!(v["device_status"][0]["online"], false);
        assert_eq!(v["alarms"], serde_json::json!([]));
    }

    #[test]
    fn small_bodies_go_plain_and_big_ones_gzipped() {
        assert_eq!(encode(b"{}"), (b"{}".to_vec(), false));
        let big = br#"{"seq":1,"device_id":"em-1","point":"voltage_a","value":229.8}"#.repeat(100);
        let (z, gz) = encode(&big);
        assert!(gz && z.len() < big.len() / 5);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut back).unwrap();
        assert_eq!(back, big);
    }
}
