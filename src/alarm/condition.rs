//! When an alarm's condition holds: a rule's test on a point's readings (or a device's status),
//! and the on- and off-delays that keep a chattering input from raising and clearing alarms.
//! Pure code: time comes in as arguments.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use tokio::time::Instant;

use crate::reading::Value;

/// What a rule tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// The value is this one (a bool, a number, an enumeration's state).
    Equals(serde_json::Value),
    /// The value is one of these.
    In(Vec<serde_json::Value>),
    /// The value is none of these.
    NotIn(Vec<serde_json::Value>),
    /// Above the limit; clears once at or below `limit - deadband`.
    Above { limit: f64, deadband: f64 },
    /// Below the limit; clears once at or above `limit + deadband`.
    Below { limit: f64, deadband: f64 },
    /// The device (or bus) is offline.
    Offline,
    /// A counter's use within the last `window` is above `above`.
    Consumption { window: Duration, above: f64 },
    /// Flow never fell to `above` or less during the local night window `from`..`to`: water
    /// running all night is a leak. For a counter the flow is its rise per hour.
    NightFlow {
        from: NaiveTime,
        to: NaiveTime,
        above: f64,
        counter: bool,
    },
    /// A counter went backwards.
    Backwards,
}

impl Cond {
    /// Whether readings drive it (every condition but `Offline`).
    pub fn on_readings(&self) -> bool {
        !matches!(self, Cond::Offline)
    }
}

/// Whether `value` is `expected`, across the payload's and the rule's representations.
pub fn value_is(value: &Value, expected: &serde_json::Value) -> bool {
    match (value, expected) {
        (Value::Bool(b), serde_json::Value::Bool(e)) => b == e,
        (Value::Number(n), serde_json::Value::Number(e)) => e
            .as_f64()
            .is_some_and(|e| (n - e).abs() <= 1e-9 * e.abs().max(1.0)),
        (Value::Text(t), serde_json::Value::String(e)) => t == e,
        _ => false,
    }
}

/// The per-point memory a condition needs between readings.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// The condition's last verdict (deadbands depend on it).
    raw: Option<bool>,
    /// Counter readings within the consumption window, oldest first (unix seconds, value).
    window: VecDeque<(i64, f64)>,
    prev: Option<(i64, f64)>,
    night: Option<Night>,
}

#[derive(Debug, Clone)]
struct Night {
    /// The end of the window being watched.
    end: DateTime<Utc>,
    min: Option<f64>,
}

impl Tracker {
    /// A tracker whose condition was last `active` (an alarm carried over a restart), so that
    /// deadbands hold as they did.
    pub fn resumed(active: bool) -> Self {
        Self {
            raw: Some(active),
            ..Self::default()
        }
    }

    /// The condition after a reading at `ts`; `None` when this reading says nothing about it
    /// (a value of another type, the first reading of a counter, a night not yet over).
    pub fn on_value(
        &mut self,
        cond: &Cond,
        value: &Value,
        ts: DateTime<Utc>,
        tz: Tz,
    ) -> Option<bool> {
        let verdict = match cond {
            Cond::Equals(e) => Some(value_is(value, e)),
            Cond::In(set) => Some(set.iter().any(|e| value_is(value, e))),
            Cond::NotIn(set) => Some(!set.iter().any(|e| value_is(value, e))),
            Cond::Above { limit, deadband } => {
                let v = value.as_f64()?;
                Some(if self.raw == Some(true) {
                    v > limit - deadband
                } else {
                    v > *limit
                })
            }
            Cond::Below { limit, deadband } => {
                let v = value.as_f64()?;
                Some(if self.raw == Some(true) {
                    v < limit + deadband
                } else {
                    v < *limit
                })
            }
            Cond::Offline => None,
            Cond::Consumption { window, above } => {
                let v = value.as_f64()?;
                Some(self.consumption(ts.timestamp(), v, *window) > *above)
            }
            Cond::NightFlow {
                from,
                to,
                above,
                counter,
            } => {
                let v = value.as_f64()?;
                self.night_flow(ts, v, (*from, *to), *above, *counter, tz)
            }
            Cond::Backwards => {
                let v = value.as_f64()?;
                let went_back = self.prev.map(|(_, p)| v < p - 1e-9 * p.abs().max(1.0));
                self.prev = Some((ts.timestamp(), v));
                went_back
            }
        };
        if verdict.is_some() {
            self.raw = verdict;
        }
        verdict
    }

    /// Use within `window` before `ts`: the sum of the counter's rises (a step down is a new
    /// meter or a rollover and counts nothing).
    fn consumption(&mut self, ts: i64, v: f64, window: Duration) -> f64 {
        if self.window.back().is_some_and(|&(t, _)| ts < t) {
            // A reading older than the last one: out of order, ignore it for the window.
            return self.sum_window();
        }
        self.window.push_back((ts, v));
        let start = ts - i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        // Keep one reading at or before the window's start as the base of the first rise.
        while self.window.len() > 1 && self.window.get(1).is_some_and(|&(t, _)| t <= start) {
            self.window.pop_front();
        }
        self.sum_window()
    }

    fn sum_window(&self) -> f64 {
        self.window
            .iter()
            .zip(self.window.iter().skip(1))
            .map(|(&(_, a), &(_, b))| (b - a).max(0.0))
            .sum()
    }

    fn night_flow(
        &mut self,
        ts: DateTime<Utc>,
        v: f64,
        (from, to): (NaiveTime, NaiveTime),
        above: f64,
        counter: bool,
        tz: Tz,
    ) -> Option<bool> {
        let rate = if counter {
            let r = self.prev.and_then(|(t, p)| {
                let hours = (ts.timestamp() - t) as f64 / 3600.0;
                (hours > 0.0 && v >= p).then(|| (v - p) / hours)
            });
            self.prev = Some((ts.timestamp(), v));
            r
        } else {
            Some(v)
        };
        let mut verdict = None;
        if let Some(n) = &self.night {
            if ts >= n.end {
                // The night is over: water that never stopped is a leak.
                verdict = Some(n.min.is_some_and(|m| m > above));
                self.night = None;
            }
        }
        if let Some(end) = night_end(ts, from, to, tz) {
            let n = self.night.get_or_insert(Night { end, min: None });
            if let Some(r) = rate {
                n.min = Some(n.min.map_or(r, |m| m.min(r)));
            }
        }
        verdict
    }
}

/// The end of the local night window `from..to` that `ts` falls in, or `None` if it is day.
fn night_end(ts: DateTime<Utc>, from: NaiveTime, to: NaiveTime, tz: Tz) -> Option<DateTime<Utc>> {
    let local = ts.with_timezone(&tz);
    let (date, time) = (local.date_naive(), local.time());
    let end_date = if from <= to {
        (from <= time && time < to).then_some(date)?
    } else if time >= from {
        date.succ_opt()?
    } else if time < to {
        date
    } else {
        return None;
    };
    tz.from_local_datetime(&end_date.and_time(to))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a night window `"01:00-05:00"` (local times; it may cross midnight).
pub fn parse_window(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a window like \"01:00-05:00\""))?;
    let t = |x: &str| {
        NaiveTime::parse_from_str(x.trim(), "%H:%M")
            .map_err(|_| format!("`{}` is not a time like 01:00", x.trim()))
    };
    let (from, to) = (t(a)?, t(b)?);
    if from == to {
        return Err(format!("window `{s}` is empty"));
    }
    Ok((from, to))
}

/// What a change of the raw condition means once the delays are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// The alarm's condition is now on (`true`) or off.
    Changed(bool),
    /// Ask again at this instant (a delay is running).
    CheckAt(Instant),
}

/// On-delay and off-delay: the raw condition must hold for the whole delay before the alarm's
/// condition follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    /// The alarm's condition.
    pub active: bool,
    raw: bool,
    since: Instant,
}

impl Debounce {
    pub fn new(active: bool, now: Instant) -> Self {
        Self {
            active,
            raw: active,
            since: now,
        }
    }

    /// Takes the raw condition as of `now`.
    pub fn feed(&mut self, raw: bool, now: Instant, on: Duration, off: Duration) -> Verdict {
        if raw != self.raw {
            self.raw = raw;
            self.since = now;
            if raw == self.active {
                return Verdict::Unchanged;
            }
            return self
                .settle(now, on, off)
                .unwrap_or_else(|| Verdict::CheckAt(self.since + if raw { on } else { off }));
        }
        self.settle(now, on, off).unwrap_or(Verdict::Unchanged)
    }

    /// A delay has run out (or a timer fired late or for nothing).
    pub fn check(&mut self, now: Instant, on: Duration, off: Duration) -> Verdict {
        self.settle(now, on, off).unwrap_or(Verdict::Unchanged)
    }

    fn settle(&mut self, now: Instant, on: Duration, off: Duration) -> Option<Verdict> {
        if self.raw == self.active {
            return None;
        }
        let delay = if self.raw { on } else { off };
        (now.duration_since(self.since) >= delay).then(|| {
            self.active = self.raw;
            Verdict::Changed(self.active)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TZ: Tz = chrono_tz::Asia::Shanghai;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn feed(t: &mut Tracker, c: &Cond, vals: &[(i64, f64)]) -> Vec<Option<bool>> {
        vals.iter()
            .map(|&(ts, v)| t.on_value(c, &Value::Number(v), at(ts), TZ))
            .collect()
    }

    #[test]
    fn a_limit_with_deadband_clears_only_below_limit_minus_deadband() {
        let c = Cond::Above {
            limit: 60.0,
            deadband: 5.0,
        };
        let mut t = Tracker::default();
        let got = feed(
            &mut t,
            &c,
            &[
                (0, 59.0),
                (1, 61.0),
                (2, 58.0),
                (3, 55.5),
                (4, 54.9),
                (5, 58.0),
            ],
        );
        let want = [false, true, true, true, false, false];
        assert_eq!(got, want.map(Some).to_vec());
    }

    #[test]
    fn a_low_limit_with_deadband_mirrors_the_high_one() {
        let c = Cond::Below {
            limit: 200.0,
            deadband: 3.0,
        };
        let mut t = Tracker::default();
        let got = feed(&mut t, &c, &[(0, 199.0), (1, 202.0), (2, 203.5)]);
        assert_eq!(got, vec![Some(true), Some(true), Some(false)]);
    }

    #[test]
    fn equality_compares_across_representations_and_refuses_other_types() {
        assert!(value_is(&Value::Bool(true), &json!(true)));
        assert!(value_is(&Value::Number(3.0), &json!(3)));
        assert!(value_is(&Value::Text("trapped".into()), &json!("trapped")));
        assert!(!value_is(&Value::Text("true".into()), &json!(true)));
        assert!(!value_is(&Value::Number(1.0), &json!(true)));
        let c = Cond::In(vec![json!("fire"), json!("fault")]);
        let mut t = Tracker::default();
        assert_eq!(
            t.on_value(&c, &Value::Text("fault".into()), at(0), TZ),
            Some(true)
        );
        assert_eq!(
            t.on_value(&c, &Value::Text("normal".into()), at(1), TZ),
            Some(false)
        );
    }

    #[test]
    fn a_text_value_says_nothing_about_a_limit() {
        let c = Cond::Above {
            limit: 1.0,
            deadband: 0.0,
        };
        let mut t = Tracker::default();
        assert_eq!(t.on_value(&c, &Value::Text("x".into()), at(0), TZ), None);
    }

    #[test]
    fn consumption_over_a_window_sums_rises_and_ignores_a_meter_swap() {
        let c = Cond::Consumption {
            window: Duration::from_secs(3600),
            above: 10.0,
        };
        let mut t = Tracker::default();
        // 4 kWh per quarter hour: 16 in an hour.
        let got = feed(
            &mut t,
            &c,
            &[(0, 100.0), (900, 104.0), (1800, 108.0), (2700, 112.0)],
        );
        assert_eq!(got, vec![Some(false), Some(false), Some(false), Some(true)]);
        // A new meter starting from 0 counts nothing for the step down.
        assert_eq!(feed(&mut t, &c, &[(3000, 0.5)]), vec![Some(true)]);
        // An hour of little use later, the window holds only that.
        let got = feed(&mut t, &c, &[(6600, 1.0), (7200, 1.5)]);
        assert_eq!(got, vec![Some(false), Some(false)]);
    }

    #[test]
    fn water_running_all_night_is_a_leak_and_a_quiet_night_is_not() {
        let (from, to) = parse_window("01:00-05:00").unwrap();
        let c = Cond::NightFlow {
            from,
            to,
            above: 0.0,
            counter: true,
        };
        // 2026-11-26 00:00 Shanghai = 2026-11-25T16:00Z.
        let midnight = 1_764_086_400;
        let mut t = Tracker::default();
        let mut volume = 100.0;
        let mut verdicts = Vec::new();
        for minutes in (60..=300).step_by(30) {
            volume += 0.05;
            verdicts.push(t.on_value(&c, &Value::Number(volume), at(midnight + minutes * 60), TZ));
        }
        // No verdict during the night; the first reading after 05:00 gives it.
        assert!(verdicts[..verdicts.len() - 1].iter().all(Option::is_none));
        assert_eq!(verdicts.last(), Some(&Some(true)));

        // The next night the flow stops for half an hour: no leak.
        let next = midnight + 86_400;
        let mut verdicts = Vec::new();
        for (i, minutes) in (60..=300).step_by(30).enumerate() {
            if i != 3 {
                volume += 0.05;
            }
            verdicts.push(t.on_value(&c, &Value::Number(volume), at(next + minutes * 60), TZ));
        }
        assert_eq!(verdicts.last(), Some(&Some(false)));
    }

    #[test]
    fn a_night_window_may_cross_midnight() {
        let (from, to) = parse_window("23:00-05:00").unwrap();
        let midnight = 1_764_086_400; // 2026-11-26 00:00 Shanghai
        let end = night_end(at(midnight - 1800), from, to, TZ).unwrap();
        assert_eq!(end, at(midnight + 5 * 3600));
        assert_eq!(night_end(at(midnight + 12 * 3600), from, to, TZ), None);
        assert!(parse_window("5am").is_err());
        assert!(parse_window("01:00-01:00").is_err());
    }

    #[test]
    fn a_counter_going_backwards_is_seen_once() {
        let mut t = Tracker::default();
        let got = feed(
            &mut t,
            &Cond::Backwards,
            &[(0, 10.0), (1, 11.0), (2, 3.0), (3, 4.0)],
        );
        assert_eq!(got, vec![None, Some(false), Some(true), Some(false)]);
    }

    #[test]
    fn an_on_delay_needs_the_condition_to_hold_throughout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Debounce::new(false, t0);
        let (on, off) = (s(10), s(0));
        assert_eq!(d.feed(true, t0, on, off), Verdict::CheckAt(t0 + s(10)));
        // A dip restarts it.
        assert_eq!(d.feed(false, t0 + s(5), on, off), Verdict::Unchanged);
        assert_eq!(d.check(t0 + s(10), on, off), Verdict::Unchanged);
        assert_eq!(
            d.feed(true, t0 + s(6), on, off),
            Verdict::CheckAt(t0 + s(16))
        );
        assert_eq!(d.check(t0 + s(15), on, off), Verdict::Unchanged);
        assert_eq!(d.check(t0 + s(16), on, off), Verdict::Changed(true));
        assert!(d.active);
        // No delay off: clears at once.
        assert_eq!(d.feed(false, t0 + s(20), on, off), Verdict::Changed(false));
    }

    #[test]
    fn an_off_delay_rides_through_brief_dips() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Debounce::new(true, t0);
        let (on, off) = (s(0), s(30));
        assert_eq!(d.feed(false, t0, on, off), Verdict::CheckAt(t0 + s(30)));
        assert_eq!(d.feed(true, t0 + s(20), on, off), Verdict::Unchanged);
        assert_eq!(d.check(t0 + s(30), on, off), Verdict::Unchanged);
        assert!(d.active);
        assert_eq!(
            d.feed(false, t0 + s(40), on, off),
            Verdict::CheckAt(t0 + s(70))
        );
        assert_eq!(d.check(t0 + s(70), on, off), Verdict::Changed(false));
    }
}
