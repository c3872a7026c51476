//! The unit of data every source emits and every consumer takes.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A value read from a device point.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl Value {
    /// The value as a number for history and rules: booleans are 0/1, text has none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Text(_) => None,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Number(n) => s.serialize_f64(round_for_display(*n)),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Meter values carry at most a few significant decimals; print them without float noise.
            Value::Number(n) => write!(f, "{}", round_for_display(*n)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// Rounds to 12 significant digits, so that the noise of scaling (`2298 × 0.1` is
/// `229.79999999999998`) prints as `229.8` while every digit a meter sends survives.
pub fn round_for_display(n: f64) -> f64 {
    if !n.is_finite() || n == 0.0 {
        return n;
    }
    let digits = 11 - n.abs().log10().floor() as i32;
    if !(0..=15).contains(&digits) {
        return n;
    }
    let factor = 10f64.powi(digits);
    (n * factor).round() / factor
}

/// One reading of one point of one device.
///
/// Device ids, point names and units are shared `Arc<str>` so that a reading costs no allocation
/// beyond its value on the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub ts: DateTime<Utc>,
    pub value: Value,
    pub unit: Option<Arc<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_rounds_away_float_noise() {
        assert_eq!(Value::Number(0.1 + 0.2).to_string(), "0.3");
        assert_eq!(Value::Number(12345.678).to_string(), "12345.678");
        assert_eq!(Value::Number(-3.0).to_string(), "-3");
        assert_eq!(Value::Number(2298.0 * 0.1).to_string(), "229.8");
        assert_eq!(
            serde_json::to_string(&Value::Number(2298.0 * 0.1)).unwrap(),
            "229.8"
        );
    }

    #[test]
    fn booleans_count_as_zero_or_one_and_text_as_nothing() {
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
        assert_eq!(Value::Bool(false).as_f64(), Some(0.0));
        assert_eq!(Value::Text("trapped".into()).as_f64(), None);
    }
}
