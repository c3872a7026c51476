//! Times given on the command line and in the API: RFC 3339, unix seconds, or a local date.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;

use crate::store::rollup::day_start;

/// 2100-01-01T00:00:00Z: later times are typing mistakes, not history.
const LATEST: i64 = 4_102_444_800;

/// Unix seconds for `s`: `2026-11-26T08:00:00+08:00`, `1795000000`, or `2026-11-26` (local
/// midnight in the park's time zone). Times outside 1970..2100 are refused.
pub fn parse_time(s: &str, tz: Tz) -> Result<i64, String> {
    let s = s.trim();
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.timestamp()
    } else if let Ok(n) = s.parse::<i64>() {
        if n > LATEST && n / 1000 <= LATEST {
            return Err(format!(
                "`{s}` looks like milliseconds: give unix seconds ({})",
                n / 1000
            ));
        }
        n
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        // Noon is inside the day in every zone; its day start is the local midnight.
        let noon = d
            .and_hms_opt(12, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or_default();
        day_start(tz, noon)
    } else {
        return Err(format!(
            "`{s}` is not a time: use RFC 3339 (2026-11-26T08:00:00+08:00), unix seconds or YYYY-MM-DD"
        ));
    };
    if !(0..=LATEST).contains(&t) {
        return Err(format!("`{s}` is outside 1970..2100"));
    }
    Ok(t)
}

/// RFC 3339 in the park's time zone, e.g. `2026-11-26T08:00:00+08:00`.
pub fn format_local(ts: i64, tz: Tz) -> String {
    DateTime::from_timestamp(ts, 0)
        .map(|t| t.with_timezone(&tz).to_rfc3339())
        .unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    #[test]
    fn the_three_forms_of_a_time_are_understood() {
        assert_eq!(
            parse_time("2026-11-26T08:00:00+08:00", SH),
            Ok(1_795_651_200)
        );
        assert_eq!(parse_time("1795651200", SH), Ok(1_795_651_200));
        assert_eq!(parse_time("2026-11-26", SH), Ok(1_795_622_400)); // 00:00 +08:00
        assert!(parse_time("yesterday", SH)
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn absurd_times_are_refused_with_a_reason() {
        assert!(parse_time("1795651200000", SH)
            .unwrap_err()
            .contains("milliseconds"));
        assert!(parse_time("-9223372036854775808", SH)
            .unwrap_err()
            .contains("outside 1970..2100"));
        assert!(parse_time("9999-01-01", SH)
            .unwrap_err()
            .contains("outside"));
    }

    #[test]
    fn times_print_in_park_local_time() {
        assert_eq!(format_local(1_795_651_200, SH), "2026-11-26T08:00:00+08:00");
    }
}
