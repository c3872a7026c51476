//! The `rollup` table (summaries per 5 minutes, local hour and local day) and `counter_state`
//! (where each counter's counting stands), shared by the writer and the readers.
//!
//! Rows are keyed (period, start, series): every series' summary of one bucket sits together,
//! so writing a closed bucket for all series appends a few pages instead of touching one page per
//! series, and retention is one range delete. One series over a time range is a point look-up per
//! bucket: 720 for a month of hours.

use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension};

use super::rollup::{day_start, hour_start, next_day_start, Agg, CounterState};
use super::{PERIOD_5M, PERIOD_DAY, PERIOD_HOUR};

/// Writes (or rewrites) one summary.
pub(super) fn upsert(
    conn: &Connection,
    series: i64,
    period: i64,
    start: i64,
    a: &Agg,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO rollup(period, start, series, min, max, sum, count, last, last_ts, delta, base, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        period,
        start,
        series,
        a.min,
        a.max,
        a.sum,
        a.count,
        a.last,
        a.last_ts,
        a.delta,
        a.end.map(|e| e.base),
        a.end.and_then(|e| e.pending)
    ])?;
    Ok(())
}

/// One summary, if there is one.
pub(super) fn get(
    conn: &Connection,
    series: i64,
    period: i64,
    start: i64,
) -> rusqlite::Result<Option<Agg>> {
    conn.prepare_cached(
        "SELECT min, max, sum, count, last, last_ts, delta, base, pending FROM rollup
         WHERE period = ?1 AND start = ?2 AND series = ?3",
    )?
    .query_row(params![period, start, series], |r| agg_at(r, 0))
    .optional()
}

/// The summary in the columns `min, max, sum, count, last, last_ts, delta, base, pending` of a
/// row, from column `first` on.
fn agg_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Agg> {
    Ok(Agg {
        min: r.get(first)?,
        max: r.get(first + 1)?,
        sum: r.get(first + 2)?,
        count: r.get(first + 3)?,
        last: r.get(first + 4)?,
        last_ts: r.get(first + 5)?,
        delta: r.get(first + 6)?,
        end: state(r.get(first + 7)?, r.get(first + 8)?),
    })
}

fn state(base: Option<f64>, pending: Option<f64>) -> Option<CounterState> {
    base.map(|base| CounterState { base, pending })
}

/// The buckets of `period` that start in `lo..hi`, in the park's local time.
fn starts(tz: Tz, period: i64, lo: i64, hi: i64) -> impl Iterator<Item = i64> {
    let first = match period {
        PERIOD_DAY => day_start(tz, lo),
        PERIOD_HOUR => hour_start(tz, lo),
        _ => lo - lo.rem_euclid(PERIOD_5M),
    };
    std::iter::successors(Some(first), move |&t| {
        let next = match period {
            PERIOD_DAY => next_day_start(tz, t),
            PERIOD_HOUR => hour_start(tz, t + 3600),
            _ => t + PERIOD_5M,
        };
        (next > t).then_some(next)
    })
    .skip_while(move |&t| t < lo)
    .take_while(move |&t| t < hi)
}

/// The summaries of one series and period that start in `lo..hi`, oldest first.
pub(super) fn range(
    conn: &Connection,
    tz: Tz,
    series: i64,
    period: i64,
    lo: i64,
    hi: i64,
) -> rusqlite::Result<Vec<(i64, Agg)>> {
    // Look only where summaries exist: a query reaching years past them costs nothing.
    // (Two statements: SQLite answers a lone min() or max() from the key, both at once by a scan.)
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(start) FROM rollup WHERE period = ?1")?
        .query_row([period], |r| r.get(0))?;
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(start) FROM rollup WHERE period = ?1")?
        .query_row([period], |r| r.get(0))?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, agg_at(r, 1)?));
    let (lo, hi) = (lo.max(first), hi.min(last.saturating_add(1)));
    if period >= PERIOD_HOUR {
        // `period >= 3600` repeats the index's condition, which SQLite needs to use it.
        let mut stmt = conn.prepare_cached(
            "SELECT start, min, max, sum, count, last, last_ts, delta, base, pending FROM rollup
             WHERE series = ?1 AND period = ?2 AND period >= 3600 AND start >= ?3 AND start < ?4
             ORDER BY start",
        )?;
        let rows = stmt.query_map(params![series, period, lo, hi], row)?;
        return rows.collect();
    }
    // Five-minute summaries are keyed time-first only: one seek per bucket, all inside one
    // statement (a fraction of a statement run per bucket).
    let mut list = String::from("[");
    for start in starts(tz, period, lo, hi) {
        if list.len() > 1 {
            list.push(',');
        }
        list.push_str(&start.to_string());
    }
    list.push(']');
    let mut stmt = conn.prepare_cached(
        "SELECT r.start, r.min, r.max, r.sum, r.count, r.last, r.last_ts, r.delta, r.base, r.pending
         FROM json_each(?1) AS j CROSS JOIN rollup AS r
         ON r.period = ?2 AND r.start = j.value AND r.series = ?3
         ORDER BY j.key",
    )?;
    let rows = stmt.query_map(params![list, period, series], row)?;
    rows.collect()
}

/// Where a counter's counting stands just before the 5-minute bucket `bucket`: the end of the
/// bucket before it, else the newest state recorded before it.
pub(super) fn counter_state_before(
    conn: &Connection,
    series: i64,
    bucket: i64,
) -> rusqlite::Result<Option<CounterState>> {
    if let Some(a) = get(conn, series, PERIOD_5M, bucket - PERIOD_5M)? {
        return Ok(a.end);
    }
    let row: Option<(i64, Option<f64>, Option<f64>)> = conn
        .prepare_cached("SELECT start, base, pending FROM counter_state WHERE series = ?1")?
        .query_row([series], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row
        .filter(|(start, _, _)| *start < bucket)
        .and_then(|(_, b, p)| state(b, p)))
}

/// Records a counter's state at the end of its newest 5-minute bucket.
pub(super) fn save_counter_state(
    conn: &Connection,
    series: i64,
    bucket: i64,
    s: Option<CounterState>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO counter_state(series, start, base, pending) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![series, bucket, s.map(|s| s.base), s.and_then(|s| s.pending)])?;
    Ok(())
}

/// Every counter's newest state: (series, bucket, state).
pub(super) fn counter_states(
    conn: &Connection,
) -> rusqlite::Result<Vec<(i64, i64, Option<CounterState>)>> {
    let mut stmt = conn.prepare("SELECT series, start, base, pending FROM counter_state")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, state(r.get(2)?, r.get(3)?)))
    })?;
    rows.collect()
}

/// Deletes the summaries of `period` that start before `cut`.
pub(super) fn expire(conn: &Connection, period: i64, cut: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM rollup WHERE period = ?1 AND start < ?2",
        params![period, cut],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    #[test]
    fn bucket_starts_follow_local_hours_and_days() {
        // 2026-11-24T00:00+08:00
        let d0 = 1_795_449_600;
        let hours: Vec<i64> = starts(SH, PERIOD_HOUR, d0 + 1, d0 + 3 * 3600 + 1).collect();
        assert_eq!(hours, vec![d0 + 3600, d0 + 7200, d0 + 10_800]);
        let days: Vec<i64> = starts(SH, PERIOD_DAY, d0, d0 + 2 * 86_400).collect();
        assert_eq!(days, vec![d0, d0 + 86_400]);
        assert_eq!(starts(SH, PERIOD_5M, d0, d0 + 900).count(), 3);
    }
}
