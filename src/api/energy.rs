//! Energy use per meter, building or tenant, per local hour, day or month: which meters make a
//! group, which buckets a range has, and the sums. Pure: the handler reads each meter's
//! consumption from history and hands it here.
//!
//! A building's use is what its own meters measure: the meters of the building that bill no
//! tenant (its main meters). Adding the tenants' sub-meters on top would count their use
//! twice. A building whose meters all bill tenants is the sum of those.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::config::Location;
use crate::store::rollup::{bucket_start, local_midnight, next_day_start};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Period::Hour,
            "day" => Period::Day,
            "month" => Period::Month,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The step history is asked for: months are summed from local days.
    pub fn history_step(self) -> i64 {
        match self {
            Period::Hour => 3_600,
            Period::Day | Period::Month => 86_400,
        }
    }

    /// How far back a request without `from` reaches.
    pub fn default_span(self) -> i64 {
        match self {
            Period::Hour => 86_400,
            Period::Day => 30 * 86_400,
            Period::Month => 365 * 86_400,
        }
    }

    /// At most this many buckets in one answer: a year of hours, ten years of days or months.
    pub fn max_buckets(self) -> usize {
        match self {
            Period::Hour => 366 * 24,
            Period::Day => 3_660,
            Period::Month => 120,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Device,
    Building,
    Tenant,
}

impl By {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "device" => By::Device,
            "building" => By::Building,
            "tenant" => By::Tenant,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            By::Device => "device",
            By::Building => "building",
            By::Tenant => "tenant",
        }
    }
}

/// What is metered: the profile category of its meters, the counter point and its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utility {
    Electricity,
    Water,
}

impl Utility {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "electricity" => Utility::Electricity,
            "water" => Utility::Water,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Utility::Electricity => "electricity",
            Utility::Water => "water",
        }
    }

    pub fn category(self) -> &'static str {
        match self {
            Utility::Electricity => "electricity_meter",
            Utility::Water => "water_meter",
        }
    }

    pub fn point(self) -> &'static str {
        match self {
            Utility::Electricity => "energy_import",
            Utility::Water => "volume_total",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Utility::Electricity => "kWh",
            Utility::Water => "m³",
        }
    }
}

/// A meter of the utility asked for.
#[derive(Debug, Clone)]
pub struct Meter {
    pub id: String,
    pub name: String,
    pub location: Location,
}

/// The start of the bucket `ts` falls in.
pub fn bucket_of(tz: Tz, period: Period, ts: i64) -> i64 {
    match period {
        Period::Hour | Period::Day => bucket_start(tz, ts, period.history_step()),
        Period::Month => {
            let local = DateTime::<Utc>::from_timestamp(ts, 0)
                .unwrap_or_default()
                .with_timezone(&tz);
            month_start(tz, local.year(), local.month())
        }
    }
}

fn month_start(tz: Tz, year: i32, month: u32) -> i64 {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    local_midnight(tz, first)
}

fn next_bucket(tz: Tz, period: Period, start: i64) -> i64 {
    match period {
        Period::Hour => start + 3_600,
        // Local days are 23 to 25 hours where DST exists.
        Period::Day => next_day_start(tz, start),
        Period::Month => {
            let local = DateTime::<Utc>::from_timestamp(start, 0)
                .unwrap_or_default()
                .with_timezone(&tz);
            let (y, m) = if local.month() == 12 {
                (local.year() + 1, 1)
            } else {
                (local.year(), local.month() + 1)
            };
            month_start(tz, y, m)
        }
    }
}

/// The starts of the buckets that overlap `from..to` (unix seconds), oldest first; `None` when
/// there would be more than the period allows.
pub fn buckets(tz: Tz, period: Period, from: i64, to: i64) -> Option<Vec<i64>> {
    let mut out = Vec::new();
    let mut b = bucket_of(tz, period, from);
    while b <= to {
        if out.len() == period.max_buckets() {
            return None;
        }
        out.push(b);
        b = next_bucket(tz, period, b);
    }
    Some(out)
}

/// The groups of `meters` by `by`, each with the indices of the meters whose use it sums,
/// sorted by group name. Meters without the grouping key (no building, no tenant) fall in the
/// group `""`; for tenants, such meters are left out (they bill nobody).
pub fn groups(meters: &[Meter], by: By) -> Vec<(String, Vec<usize>)> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    match by {
        By::Device => {
            for (i, m) in meters.iter().enumerate() {
                out.entry(m.id.clone()).or_default().push(i);
            }
        }
        By::Tenant => {
            for (i, m) in meters.iter().enumerate() {
                if let Some(t) = &m.location.tenant {
                    out.entry(t.clone()).or_default().push(i);
                }
            }
        }
        By::Building => {
            let mut all: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, m) in meters.iter().enumerate() {
                let b = m.location.building.clone().unwrap_or_default();
                all.entry(b).or_default().push(i);
            }
            for (b, idx) in all {
                let own: Vec<usize> = idx
                    .iter()
                    .copied()
                    .filter(|&i| meters[i].location.tenant.is_none())
                    .collect();
                out.insert(b, if own.is_empty() { idx } else { own });
            }
        }
    }
    out.into_iter().collect()
}

/// Consumption to the watt-hour (or litre) and no further: differences of meter readings
/// carry float noise in their last digits.
pub fn round_use(v: f64) -> f64 {
    // `+ 0.0` turns the -0.0 of an empty sum into 0.
    (v * 1e6).round() / 1e6 + 0.0
}

/// One group's use per bucket (`None`: no meter of the group has data there) and in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub group: String,
    pub values: Vec<Option<f64>>,
    pub total: f64,
}

/// Sums each group's meters per bucket. `usage[i]` is meter `i`'s consumption per history
/// step, keyed by the step's start.
pub fn assemble(
    tz: Tz,
    period: Period,
    buckets: &[i64],
    groups: &[(String, Vec<usize>)],
    usage: &[Vec<(i64, f64)>],
) -> Vec<Series> {
    let index: std::collections::HashMap<i64, usize> =
        buckets.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    groups
        .iter()
        .map(|(group, meters)| {
            let mut values = vec![None; buckets.len()];
            for &m in meters {
                for &(ts, v) in usage.get(m).map(Vec::as_slice).unwrap_or_default() {
                    if let Some(&i) = index.get(&bucket_of(tz, period, ts)) {
                        *values[i].get_or_insert(0.0) += v;
                    }
                }
            }
            let total = values.iter().flatten().sum();
            Series {
                group: group.clone(),
                values,
                total,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TZ: Tz = chrono_tz::Asia::Shanghai;

    fn local(s: &str) -> i64 {
        use chrono::TimeZone;
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        TZ.from_local_datetime(&naive).unwrap().timestamp()
    }

    fn meter(id: &str, building: Option<&str>, tenant: Option<&str>) -> Meter {
        Meter {
            id: id.into(),
            name: id.into(),
            location: Location {
                building: building.map(Into::into),
                tenant: tenant.map(Into::into),
                ..Location::default()
            },
        }
    }

    #[test]
    fn buckets_follow_the_parks_local_hours_days_and_months() {
        let hours = buckets(
            TZ,
            Period::Hour,
            local("2026-11-26 10:30"),
            local("2026-11-26 13:00"),
        )
        .unwrap();
        assert_eq!(
            hours,
            vec![
                local("2026-11-26 10:00"),
                local("2026-11-26 11:00"),
                local("2026-11-26 12:00"),
                local("2026-11-26 13:00")
            ]
        );
        let days = buckets(
            TZ,
            Period::Day,
            local("2026-11-29 23:00"),
            local("2026-12-01 01:00"),
        )
        .unwrap();
        assert_eq!(
            days,
            vec![
                local("2026-11-29 00:00"),
                local("2026-11-30 00:00"),
                local("2026-12-01 00:00")
            ]
        );
        let months = buckets(
            TZ,
            Period::Month,
            local("2026-11-15 00:00"),
            local("2027-01-02 00:00"),
        )
        .unwrap();
        assert_eq!(
            months,
            vec![
                local("2026-11-01 00:00"),
                local("2026-12-01 00:00"),
                local("2027-01-01 00:00")
            ]
        );
    }

    #[test]
    fn a_range_of_too_many_buckets_is_refused() {
        assert!(buckets(TZ, Period::Hour, 0, 400 * 86_400).is_none());
        assert!(buckets(TZ, Period::Month, 0, 9 * 365 * 86_400).is_some());
    }

    #[test]
    fn a_building_counts_its_main_meters_and_not_its_tenants_sub_meters_again() {
        let meters = vec![
            meter("b3-main", Some("3号楼"), None),
            meter("b3-t1", Some("3号楼"), Some("华数科技")),
            meter("b5-t1", Some("5号楼"), Some("云栖设计")),
            meter("b5-t2", Some("5号楼"), Some("华数科技")),
            meter("loose", None, None),
        ];
        let by_building = groups(&meters, By::Building);
        assert_eq!(
            by_building,
            vec![
                (String::new(), vec![4]),
                ("3号楼".into(), vec![0]),
                ("5号楼".into(), vec![2, 3]),
            ]
        );
        let by_tenant = groups(&meters, By::Tenant);
        assert_eq!(
            by_tenant,
            vec![
                ("云栖设计".into(), vec![2]),
                ("华数科技".into(), vec![1, 3])
            ]
        );
        assert_eq!(groups(&meters, By::Device).len(), 5);
    }

    #[test]
    fn use_is_rounded_to_a_millionth_and_never_negative_zero() {
        assert_eq!(round_use(0.0329999999976), 0.033);
        let empty: f64 = std::iter::empty::<f64>().sum();
        assert!(round_use(empty).is_sign_positive());
    }

    #[test]
    fn days_sum_into_their_month_and_empty_buckets_stay_empty() {
        let b = buckets(
            TZ,
            Period::Month,
            local("2026-10-01 00:00"),
            local("2026-12-31 00:00"),
        )
        .unwrap();
        let usage = vec![
            vec![
                (local("2026-11-01 00:00"), 10.0),
                (local("2026-11-30 00:00"), 5.0),
            ],
            vec![(local("2026-12-01 00:00"), 2.5)],
        ];
        let groups = vec![("park".to_string(), vec![0, 1])];
        let series = assemble(TZ, Period::Month, &b, &groups, &usage);
        assert_eq!(series[0].values, vec![None, Some(15.0), Some(2.5)]);
        assert_eq!(series[0].total, 17.5);
    }
}
