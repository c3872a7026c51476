//! An MQTT device's JSON payload to values, by its profile: pointers to points, value maps for
//! enumerations, arrays of ports to `port{N}.…` points. Pure code.
//!
//! Nothing wrong becomes a reading: a value of the wrong type, an enumeration value the profile
//! does not know, a number that is not finite — each is reported and left out, while the
//! payload's good values are kept. `null` or a missing field is simply not there.

use std::sync::Arc;

use serde_json::Value as Json;
use thiserror::Error;

use crate::profile::{JsonSpec, JsonType, Point, Profile};
use crate::reading::Value;
use crate::text::{clip, json_kind};

/// Why a whole payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    #[error("payload of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is JSON but not an object")]
    NotAnObject,
}

/// What a payload said: values by point name, and what was wrong with parts of it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    pub values: Vec<(Arc<str>, Value, Option<Arc<str>>)>,
    pub problems: Vec<String>,
}

/// Most ports read from one payload; more is not a charging station.
pub const MAX_PORTS: usize = 256;
/// Longest text value kept.
pub const MAX_TEXT: usize = 256;

pub fn decode(
    profile: &Profile,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Decoded, PayloadError> {
    if payload.len() > max_bytes {
        return Err(PayloadError::TooLarge {
            size: payload.len(),
            max: max_bytes,
        });
    }
    let root: Json =
        serde_json::from_slice(payload).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let Json::Object(fields) = &root else {
        return Err(PayloadError::NotAnObject);
    };
    let mut out = Decoded::default();
    for p in profile.points.iter().filter(|p| !p.hidden) {
        if let Some(spec) = p.json() {
            take(&root, p, spec, p.name.clone(), &mut out);
        }
    }
    for g in &profile.ports {
        let Some(found) = root.pointer(&g.pointer).filter(|v| !v.is_null()) else {
            continue;
        };
        let Json::Array(elements) = found else {
            out.problems.push(format!("{} is not an array", g.pointer));
            continue;
        };
        if elements.len() > MAX_PORTS {
            out.problems.push(format!(
                "{} has {} elements (at most {MAX_PORTS})",
                g.pointer,
                elements.len()
            ));
            continue;
        }
        for (i, element) in elements.iter().enumerate() {
            let number = match &g.number {
                None => Some(i as u64 + 1),
                Some(ptr) => element
                    .pointer(ptr)
                    .and_then(Json::as_u64)
                    .filter(|n| (1..=9999).contains(n)),
            };
            let Some(n) = number else {
                out.problems
                    .push(format!("element {i} of {} has no port number", g.pointer));
                continue;
            };
            for p in g.points.iter().filter(|p| !p.hidden) {
                if let Some(spec) = p.json() {
                    let name: Arc<str> = Arc::from(format!("{}{n}.{}", g.prefix, p.name));
                    take(element, p, spec, name, &mut out);
                }
            }
        }
    }
    if out.values.is_empty() && out.problems.is_empty() && !fields.is_empty() {
        out.problems.push("no field this profile knows".to_string());
    }
    Ok(out)
}

fn take(from: &Json, p: &Point, spec: &JsonSpec, name: Arc<str>, out: &mut Decoded) {
    let Some(raw) = from.pointer(&spec.pointer).filter(|v| !v.is_null()) else {
        return;
    };
    match value_of(spec, raw) {
        Ok(v) => out.values.push((name, v, p.unit.clone())),
        Err(e) => out.problems.push(format!("{name}: {e}")),
    }
}

/// A JSON scalar as the key of a value map: `"trapped"`, `3`, `true`.
fn key_of(raw: &Json) -> Option<String> {
    match raw {
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn value_of(spec: &JsonSpec, raw: &Json) -> Result<Value, String> {
    if let Some(values) = &spec.values {
        let key = key_of(raw).ok_or_else(|| format!("expected a state, got {}", json_kind(raw)))?;
        return values
            .get(&key)
            .map(|state| Value::Text(state.clone()))
            .ok_or_else(|| format!("unknown state {}", clip(&key)));
    }
    match spec.json {
        JsonType::Number => {
            let x = raw
                .as_f64()
                .ok_or_else(|| format!("expected a number, got {}", json_kind(raw)))?;
            let v = x * spec.scale + spec.offset;
            if v.is_finite() {
                Ok(Value::Number(v))
            } else {
                Err("not a finite number".to_string())
            }
        }
        JsonType::Bool => raw
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| format!("expected true or false, got {}", json_kind(raw))),
        JsonType::String => match raw.as_str() {
            Some(s) if s.chars().count() <= MAX_TEXT => Ok(Value::Text(s.to_string())),
            Some(_) => Err(format!("text longer than {MAX_TEXT} characters")),
            None => Err(format!("expected text, got {}", json_kind(raw))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileRegistry;
    use proptest::prelude::*;

    static PROFILES: std::sync::LazyLock<ProfileRegistry> =
        std::sync::LazyLock::new(|| ProfileRegistry::bundled().unwrap());

    fn profile(id: &str) -> Arc<Profile> {
        PROFILES.get(id).unwrap().clone()
    }

    fn values(d: &Decoded) -> Vec<(String, Value)> {
        d.values
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.clone()))
            .collect()
    }

    const MAX: usize = 65_536;

    #[test]
    fn the_design_payload_of_a_smoke_detector_gives_its_four_points() {
        let d = decode(
            &profile("mqtt-smoke-detector"),
            br#"{"smoke":true,"temperature":24.1,"battery":87,"tamper":false}"#,
            MAX,
        )
        .unwrap();
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(
            values(&d),
            vec![
                ("smoke".into(), Value::Bool(true)),
                ("temperature".into(), Value::Number(24.1)),
                ("battery".into(), Value::Number(87.0)),
                ("tamper".into(), Value::Bool(false)),
            ]
        );
        assert_eq!(d.values[1].2.as_deref(), Some("°C"));
    }

    #[test]
    fn enumerations_are_normalised_and_unknown_states_refused() {
        let lift = profile("mqtt-lift-monitor");
        let d = decode(
            &lift,
            r#"{"status":"困人","floor":5,"moving":false,"door_open":false}"#.as_bytes(),
            MAX,
        )
        .unwrap();
        assert_eq!(d.values[0].1, Value::Text("trapped".into()));
        let d = decode(&lift, br#"{"status":"flying","floor":5}"#, MAX).unwrap();
        assert_eq!(values(&d), vec![("floor".into(), Value::Number(5.0))]);
        assert_eq!(
            d.problems,
            vec!["status: unknown state \"flying\"".to_string()]
        );
    }

    #[test]
    fn ports_become_numbered_points_and_null_is_absent() {
        let st = profile("mqtt-ebike-station");
        let payload = br#"{"smoke":false,"ports":[{"port":1,"state":"charging","power_w":180,"temperature":41.5,"fault":null},{"port":7,"state":"fault","power_w":0,"temperature":66,"fault":"over_temp"}]}"#;
        let d = decode(&st, payload, MAX).unwrap();
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let v = values(&d);
        assert!(v.contains(&("port1.state".into(), Value::Text("charging".into()))));
        assert!(v.contains(&("port1.temperature".into(), Value::Number(41.5))));
        assert!(
            !v.iter().any(|(n, _)| n == "port1.fault"),
            "null is no reading"
        );
        assert!(v.contains(&("port7.fault".into(), Value::Text("over_temp".into()))));
        assert!(v.contains(&("port7.state".into(), Value::Text("fault".into()))));
        assert_eq!(v.len(), 1 + 3 + 4);
    }

    #[test]
    fn wrong_types_are_refused_point_by_point() {
        let d = decode(
            &profile("mqtt-smoke-detector"),
            br#"{"smoke":"yes","temperature":"hot","battery":87}"#,
            MAX,
        )
        .unwrap();
        assert_eq!(values(&d), vec![("battery".into(), Value::Number(87.0))]);
        assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
        assert!(d.problems[0].starts_with("smoke: expected true or false, got text"));
    }

    #[test]
    fn whole_payloads_that_are_not_json_objects_are_refused() {
        let p = profile("mqtt-water-leak");
        assert!(matches!(
            decode(&p, b"leak!", MAX),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(decode(&p, b"[1,2]", MAX), Err(PayloadError::NotAnObject));
        assert_eq!(
            decode(&p, &vec![b' '; 70_000], MAX),
            Err(PayloadError::TooLarge {
                size: 70_000,
                max: MAX
            })
        );
        // A heartbeat says nothing, and nothing is wrong with it.
        assert_eq!(decode(&p, b"{}", MAX), Ok(Decoded::default()));
        // An object of unknown fields is a device on the wrong topic or profile.
        assert_eq!(
            decode(&p, br#"{"wet":1}"#, MAX).unwrap().problems,
            vec!["no field this profile knows".to_string()]
        );
    }

    #[test]
    fn hostile_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let payload = format!(r#"{{"status":"{long}"}}"#);
        let d = decode(&profile("mqtt-lift-monitor"), payload.as_bytes(), MAX).unwrap();
        assert!(d.problems[0].len() < 80, "{}", d.problems[0]);
    }

    fn any_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
            any::<i64>().prop_map(|i| Json::Number(i.into())),
            "[a-z困人]{0,8}".prop_map(Json::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("smoke".to_string()),
                        Just("status".to_string()),
                        Just("ports".to_string()),
                        Just("port".to_string()),
                        Just("temperature".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for id in ["mqtt-smoke-detector", "mqtt-ebike-station", "mqtt-lift-monitor"] {
                let _ = decode(&profile(id), &bytes, MAX);
            }
        }

        #[test]
        fn every_value_decoded_from_any_json_has_the_type_its_point_declares(json in any_json()) {
            let bytes = serde_json::to_vec(&json).unwrap();
            for id in ["mqtt-smoke-detector", "mqtt-ebike-station", "mqtt-lift-monitor", "mqtt-fire-panel", "mqtt-env-sensor"] {
                let p = profile(id);
                if let Ok(d) = decode(&p, &bytes, MAX) {
                    for (name, v, _) in &d.values {
                        let base = name.rsplit('.').next().unwrap_or(name);
                        let spec = p.points.iter().chain(p.ports.iter().flat_map(|g| g.points.iter()))
                            .find(|q| &*q.name == base).and_then(|q| q.json()).unwrap();
                        match (v, &spec.values, spec.json) {
                            (Value::Text(s), Some(map), _) => prop_assert!(map.values().any(|m| m == s)),
                            (Value::Number(x), None, JsonType::Number) => prop_assert!(x.is_finite()),
                            (Value::Bool(_), None, JsonType::Bool) => {}
                            (Value::Text(_), None, JsonType::String) => {}
                            other => prop_assert!(false, "{name}: {other:?}"),
                        }
                    }
                }
            }
        }

        #[test]
        fn a_well_formed_reading_comes_back_exactly(smoke in any::<bool>(), t in -40.0f64..120.0, battery in 0u8..=100) {
            let payload = serde_json::json!({"smoke": smoke, "temperature": t, "battery": battery, "tamper": false});
            let d = decode(&profile("mqtt-smoke-detector"), payload.to_string().as_bytes(), MAX).unwrap();
            prop_assert!(d.problems.is_empty());
            prop_assert_eq!(&d.values[0].1, &Value::Bool(smoke));
            prop_assert_eq!(&d.values[1].1, &Value::Number(t));
            prop_assert_eq!(&d.values[2].1, &Value::Number(f64::from(battery)));
        }
    }
}
