//! Downsampling, pure: min/max/sum/count/last of a bucket, consumption of a counter, and the
//! park's local hours and days that buckets align to.
//!
//! Consumption is the sum of a counter's rises. A reading below the last one is held back: if the
//! next reading is back up it was a glitch (a meter answering 0 while it powers up) and counts
//! nothing; if the next is low too, the meter was replaced or rolled over, and counting resumes
//! from the new values. Either way consumption is never negative and never a phantom jump.

use chrono::{DateTime, Duration, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Where a counter stands after some readings: rises are measured from `base`; `pending` is a
/// reading below it that the next reading will confirm (a reset) or refute (a glitch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterState {
    pub base: f64,
    pub pending: Option<f64>,
}

/// Feeds one reading to a counter; returns the consumption it adds.
pub fn count(state: &mut Option<CounterState>, v: f64) -> f64 {
    let Some(s) = state.as_mut() else {
        *state = Some(CounterState {
            base: v,
            pending: None,
        });
        return 0.0;
    };
    if v >= s.base {
        let used = v - s.base;
        *s = CounterState {
            base: v,
            pending: None,
        };
        return used;
    }
    match s.pending {
        // The first low reading: a glitch until the next one says otherwise.
        None => {
            s.pending = Some(v);
            0.0
        }
        // Low twice: a new meter or a rollover; count from the new values on.
        Some(low) => {
            *s = CounterState {
                base: v,
                pending: None,
            };
            (v - low).max(0.0)
        }
    }
}

/// The summary of a bucket of readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: i64,
    pub last: f64,
    pub last_ts: i64,
    /// Consumption within the bucket, for counters.
    pub delta: Option<f64>,
    /// A counter's state at the end of the bucket: where the next bucket's counting starts.
    pub end: Option<CounterState>,
}

impl Agg {
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            self.last
        } else {
            self.sum / self.count as f64
        }
    }

    /// Summarises `samples` (ts, value), sorted by time. For a counter, `prev` is its state at
    /// the end of the previous bucket, where this bucket's counting starts.
    pub fn of(samples: &[(i64, f64)], prev: Option<CounterState>, counter: bool) -> Option<Agg> {
        let (&(_, first), _) = samples.split_first()?;
        let mut a = Agg {
            min: first,
            max: first,
            sum: 0.0,
            count: 0,
            last: first,
            last_ts: i64::MIN,
            delta: counter.then_some(0.0),
            end: None,
        };
        let mut state = prev;
        for &(ts, v) in samples {
            a.min = a.min.min(v);
            a.max = a.max.max(v);
            a.sum += v;
            a.count += 1;
            if ts >= a.last_ts {
                a.last = v;
                a.last_ts = ts;
            }
            if let Some(d) = a.delta.as_mut() {
                *d += count(&mut state, v);
            }
        }
        if counter {
            a.end = state;
        }
        Some(a)
    }

    /// Folds `other`, the bucket after this one, into it.
    pub fn merge(&mut self, other: &Agg) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
        if other.last_ts >= self.last_ts {
            self.last = other.last;
            self.last_ts = other.last_ts;
        }
        self.delta = match (self.delta, other.delta) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.end = other.end.or(self.end);
    }

    /// One summary of several buckets.
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Agg>) -> Option<Agg> {
        let mut it = parts.into_iter();
        let mut acc = *it.next()?;
        for p in it {
            acc.merge(p);
        }
        Some(acc)
    }
}

fn offset_s(tz: Tz, ts: i64) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp(ts, 0).unwrap_or_default();
    i64::from(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// Start of the local hour `ts` falls in (unix seconds). Exact across DST changes, because the
/// offset in force at `ts` is used.
pub fn hour_start(tz: Tz, ts: i64) -> i64 {
    let local = ts + offset_s(tz, ts);
    ts - local.rem_euclid(3600)
}

/// Start of the local day `ts` falls in.
pub fn day_start(tz: Tz, ts: i64) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp(ts, 0).unwrap_or_default();
    let date = utc.with_timezone(&tz).date_naive();
    local_midnight(tz, date)
}

/// Start of the local day after the one `ts` falls in.
pub fn next_day_start(tz: Tz, ts: i64) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp(ts, 0).unwrap_or_default();
    let date = utc.with_timezone(&tz).date_naive();
    local_midnight(tz, date.succ_opt().unwrap_or(date))
}

pub fn local_midnight(tz: Tz, date: chrono::NaiveDate) -> i64 {
    // Where DST begins at midnight, the day starts at the first instant that exists.
    let mut t = date.and_time(NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp();
        }
        t += Duration::minutes(30);
    }
    t.and_utc().timestamp()
}

/// Start of the `step`-second bucket `ts` falls in, aligned to local time: whole local days for
/// steps of a day or more, else multiples of `step` from local midnight.
pub fn bucket_start(tz: Tz, ts: i64, step: i64) -> i64 {
    let step = step.max(1);
    if step % 86_400 == 0 {
        let days = step / 86_400;
        let day = day_start(tz, ts);
        if days == 1 {
            return day;
        }
        let local_days = (day + offset_s(tz, day)).div_euclid(86_400);
        let mut start = day;
        for _ in 0..local_days.rem_euclid(days) {
            start = day_start(tz, start - 1);
        }
        start
    } else {
        let local = ts + offset_s(tz, ts);
        ts - local.rem_euclid(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn a_bucket_summary_has_min_max_average_and_last() {
        let a = Agg::of(&[(10, 2.0), (20, 6.0), (30, 4.0)], None, false).unwrap();
        assert_eq!(
            (a.min, a.max, a.avg(), a.last, a.last_ts, a.delta),
            (2.0, 6.0, 4.0, 4.0, 30, None)
        );
        assert!(Agg::of(&[], None, false).is_none());
    }

    fn at(base: f64) -> Option<CounterState> {
        Some(CounterState {
            base,
            pending: None,
        })
    }

    fn used(readings: &[f64]) -> f64 {
        let mut state = None;
        readings.iter().map(|&v| count(&mut state, v)).sum()
    }

    #[test]
    fn consumption_counts_from_the_previous_bucket_and_never_goes_negative() {
        // 100 → 103 → 105, then the meter is replaced (reads 2, 3) and rises to 4.
        let a = Agg::of(
            &[(10, 103.0), (20, 105.0), (30, 2.0), (40, 3.0), (50, 4.0)],
            at(100.0),
            true,
        )
        .unwrap();
        assert_eq!(a.delta, Some(7.0));
        assert_eq!(a.end, at(4.0));
        let first_ever = Agg::of(&[(10, 103.0), (20, 105.0)], None, true).unwrap();
        assert_eq!(first_ever.delta, Some(2.0));
    }

    #[test]
    fn a_single_reading_of_zero_is_a_glitch_not_a_new_meter() {
        // A meter answering 0 while it powers up: neither the drop nor the return counts.
        assert_eq!(used(&[12_345.0, 0.0, 12_346.0]), 1.0);
        // Two low readings in a row: a new meter; its rises count from its first reading.
        assert_eq!(used(&[12_345.0, 0.0, 1.0, 3.0]), 3.0);
        // A rollover of a 5-digit register.
        assert_eq!(used(&[99_998.0, 99_999.0, 1.0, 2.0]), 2.0);
        assert_eq!(used(&[5.0, 4.0, 3.0, 2.0, 1.0]), 0.0);
    }

    #[test]
    fn a_glitch_at_the_end_of_a_bucket_is_settled_by_the_next() {
        let a = Agg::of(&[(1, 500.0), (2, 0.0)], at(499.0), true).unwrap();
        assert_eq!(a.delta, Some(1.0));
        let b = Agg::of(&[(3, 501.0)], a.end, true).unwrap();
        assert_eq!(
            b.delta,
            Some(1.0),
            "the return from the glitch counts from 500, not from 0"
        );
    }

    #[test]
    fn merged_buckets_equal_one_bucket_of_all_samples() {
        let s = [(1, 5.0), (2, 7.0), (3, 6.0), (4, 9.0)];
        let whole = Agg::of(&s, at(4.0), true).unwrap();
        let a = Agg::of(&s[..2], at(4.0), true).unwrap();
        let b = Agg::of(&s[2..], a.end, true).unwrap();
        let merged = Agg::combine([&a, &b]).unwrap();
        assert_eq!(merged, whole);
    }

    #[test]
    fn shanghai_days_start_at_local_midnight() {
        // 2026-11-26 03:00 in Shanghai is 2026-11-25 19:00 UTC.
        let t = ts("2026-11-25T19:00:00Z");
        assert_eq!(day_start(SHANGHAI, t), ts("2026-11-25T16:00:00Z"));
        assert_eq!(next_day_start(SHANGHAI, t), ts("2026-11-26T16:00:00Z"));
        assert_eq!(hour_start(SHANGHAI, ts("2026-11-25T19:42:10Z")), t);
    }

    #[test]
    fn days_around_a_dst_change_have_23_and_25_hours() {
        let spring = ts("2026-03-29T12:00:00Z");
        assert_eq!(
            next_day_start(BERLIN, spring) - day_start(BERLIN, spring),
            23 * 3600
        );
        let autumn = ts("2026-10-25T12:00:00Z");
        assert_eq!(
            next_day_start(BERLIN, autumn) - day_start(BERLIN, autumn),
            25 * 3600
        );
        // the repeated 02:00-03:00 local hour is two distinct hours
        let first = ts("2026-10-25T00:30:00Z");
        let second = ts("2026-10-25T01:30:00Z");
        assert_ne!(hour_start(BERLIN, first), hour_start(BERLIN, second));
    }

    #[test]
    fn buckets_align_to_local_time() {
        let t = ts("2026-11-25T19:42:10Z"); // 03:42:10 local
        assert_eq!(bucket_start(SHANGHAI, t, 300), ts("2026-11-25T19:40:00Z"));
        assert_eq!(
            bucket_start(SHANGHAI, t, 86_400),
            ts("2026-11-25T16:00:00Z")
        );
        assert_eq!(
            bucket_start(SHANGHAI, t, 4 * 3600),
            ts("2026-11-25T16:00:00Z")
        );
    }
}
