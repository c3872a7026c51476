//! Reading history back: raw readings, summaries per step, and consumption, each from one
//! consistent snapshot of the database (rows move between tables while we read).

use std::path::Path;

use anyhow::Context as _;
use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension};

use super::key::{self, chunk_of, series_range};
use super::rollup::{bucket_start, Agg};
use super::summaries;
use super::{PERIOD_5M, PERIOD_DAY, PERIOD_HOUR};
use crate::profile::Kind;

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub id: i64,
    pub device: String,
    pub point: String,
    pub unit: Option<String>,
    pub kind: Kind,
}

/// A reader of the history database.
pub struct History {
    conn: Connection,
    tz: Tz,
}

impl History {
    pub fn open(path: &Path, tz: Tz) -> anyhow::Result<Self> {
        if !path.exists() {
            anyhow::bail!(
                "no history at {} (has the hub run with this data_dir?)",
                path.display()
            );
        }
        let conn =
            super::open(path).with_context(|| format!("opening history {}", path.display()))?;
        // A hub stopped before its first write leaves a file without tables: that is empty history.
        super::migrate(&conn).with_context(|| format!("reading history {}", path.display()))?;
        Ok(Self { conn, tz })
    }

    pub fn series(&self, device: &str, point: &str) -> anyhow::Result<Option<SeriesInfo>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, device, point, unit, kind FROM series WHERE device = ?1 AND point = ?2",
                params![device, point],
                series_row,
            )
            .optional()?)
    }

    pub fn all_series(&self) -> anyhow::Result<Vec<SeriesInfo>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, device, point, unit, kind FROM series ORDER BY device, point")?;
        let rows = stmt.query_map([], series_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every stored reading of `s` with `from <= ts <= to`, oldest first.
    pub fn raw(&self, s: &SeriesInfo, from: i64, to: i64) -> anyhow::Result<Vec<(i64, f64)>> {
        let tx = self.conn.unchecked_transaction()?;
        let out = raw_in(&tx, s.id, from, to)?;
        tx.commit()?;
        Ok(out)
    }

    /// Summaries of `s` per `step` seconds, aligned to the park's local time; each bucket's
    /// start with its summary. Uses the coarsest rollup that fits the step, plus the readings
    /// not yet rolled up.
    pub fn aggregated(
        &self,
        s: &SeriesInfo,
        from: i64,
        to: i64,
        step: i64,
    ) -> anyhow::Result<Vec<(i64, Agg)>> {
        let step = step.max(1);
        let tx = self.conn.unchecked_transaction()?;
        let counter = s.kind == Kind::Counter;
        let lo = bucket_start(self.tz, from, step);
        let mut parts: Vec<(i64, Agg)> = Vec::new();
        let watermark: i64 = if step < PERIOD_5M {
            i64::MIN
        } else {
            tx.query_row(
                "SELECT value FROM meta WHERE key = 'moved_until'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(i64::MIN)
        };
        if step >= PERIOD_5M {
            let period = if step >= PERIOD_DAY {
                PERIOD_DAY
            } else if step >= PERIOD_HOUR {
                PERIOD_HOUR
            } else {
                PERIOD_5M
            };
            parts = summaries::range(&tx, self.tz, s.id, period, lo, to.saturating_add(1))?;
        }
        // Readings not yet in a rollup: everything for fine steps, the newest minutes otherwise.
        let tail_from = if step < PERIOD_5M {
            lo
        } else {
            watermark.max(lo)
        };
        let tail = raw_in(&tx, s.id, tail_from, to)?;
        if !tail.is_empty() {
            let prev = if counter {
                summaries::counter_state_before(
                    &tx,
                    s.id,
                    bucket_start(self.tz, tail[0].0, PERIOD_5M),
                )?
            } else {
                None
            };
            let mut i = 0;
            let mut before = prev;
            while i < tail.len() {
                let b = bucket_start(self.tz, tail[i].0, step.clamp(1, PERIOD_5M));
                let mut j = i;
                while j < tail.len()
                    && bucket_start(self.tz, tail[j].0, step.clamp(1, PERIOD_5M)) == b
                {
                    j += 1;
                }
                if let Some(a) = Agg::of(&tail[i..j], before, counter) {
                    before = a.end;
                    parts.push((b, a));
                }
                i = j;
            }
        }
        tx.commit()?;
        // Regroup whatever granularity we read into the asked step.
        let mut out: Vec<(i64, Agg)> = Vec::new();
        parts.sort_by_key(|(t, _)| *t);
        for (t, a) in parts {
            let b = bucket_start(self.tz, t, step);
            if b > to {
                continue;
            }
            match out.last_mut() {
                Some((last, acc)) if *last == b => acc.merge(&a),
                _ => out.push((b, a)),
            }
        }
        Ok(out)
    }

    /// The states of a text series (an enumeration, a fault label) from `from` to `to`, as
    /// their changes, oldest first: the state in force at `from` (stamped when it began), then
    /// each change.
    pub fn states(&self, s: &SeriesInfo, from: i64, to: i64) -> anyhow::Result<Vec<(i64, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts_ms, value FROM (
                 SELECT ts_ms, value FROM state_log WHERE series = ?1 AND ts_ms < ?2
                 ORDER BY ts_ms DESC LIMIT 1)
             UNION ALL
             SELECT ts_ms, value FROM state_log
             WHERE series = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
             ORDER BY 1",
        )?;
        let ms = |s: i64| s.saturating_mul(1000);
        let to_end = ms(to).saturating_add(1000);
        let rows = stmt.query_map(rusqlite::params![s.id, ms(from), to_end], |r| {
            Ok((r.get::<_, i64>(0)?.div_euclid(1000), r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The value of `s` per step: the average for gauges, the reading at the bucket's end for
    /// counters; the raw readings when `step` is `None`.
    pub fn values(
        &self,
        s: &SeriesInfo,
        from: i64,
        to: i64,
        step: Option<i64>,
    ) -> anyhow::Result<Vec<(i64, f64)>> {
        match step {
            None => self.raw(s, from, to),
            Some(step) => Ok(self
                .aggregated(s, from, to, step)?
                .into_iter()
                .map(|(t, a)| {
                    (
                        t,
                        if s.kind == Kind::Counter {
                            a.last
                        } else {
                            a.avg()
                        },
                    )
                })
                .collect()),
        }
    }

    /// A counter's consumption per step (3 600 for hours, 86 400 for local days).
    pub fn consumption(
        &self,
        s: &SeriesInfo,
        from: i64,
        to: i64,
        step: i64,
    ) -> anyhow::Result<Vec<(i64, f64)>> {
        if s.kind != Kind::Counter {
            anyhow::bail!(
                "{}.{} is a {}, not a counter: it has no consumption",
                s.device,
                s.point,
                s.kind
            );
        }
        Ok(self
            .aggregated(s, from, to, step)?
            .into_iter()
            .map(|(t, a)| (t, a.delta.unwrap_or(0.0)))
            .collect())
    }
}

fn series_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SeriesInfo> {
    let kind: String = r.get(4)?;
    Ok(SeriesInfo {
        id: r.get(0)?,
        device: r.get(1)?,
        point: r.get(2)?,
        unit: r.get(3)?,
        kind: match kind.as_str() {
            "counter" => Kind::Counter,
            "state" => Kind::State,
            _ => Kind::Gauge,
        },
    })
}

fn raw_in(conn: &Connection, series: i64, from: i64, to: i64) -> anyhow::Result<Vec<(i64, f64)>> {
    let mut out = Vec::new();
    if from > to {
        return Ok(out);
    }
    // Walk only the chunks that hold anything: a range reaching far beyond what is stored (a
    // typo of a year) must not become millions of empty look-ups.
    let oldest: Option<i64> = conn.query_row("SELECT min(key) FROM sample", [], |r| r.get(0))?;
    let newest: Option<i64> = conn.query_row("SELECT max(key) FROM sample", [], |r| r.get(0))?;
    if let (Some(oldest), Some(newest)) = (oldest, newest) {
        let first = chunk_of(from).max(chunk_of(key::unpack(oldest).1));
        let last = chunk_of(to).min(chunk_of(key::unpack(newest).1));
        let mut stmt =
            conn.prepare_cached("SELECT key, value FROM sample WHERE key BETWEEN ?1 AND ?2")?;
        for chunk in first..=last {
            let (lo, hi) = series_range(chunk, series);
            let rows = stmt.query_map([lo, hi], |r| {
                Ok((key::unpack(r.get(0)?).1, r.get::<_, f64>(1)?))
            })?;
            for row in rows {
                let (ts, v) = row?;
                if (from..=to).contains(&ts) {
                    out.push((ts, v));
                }
            }
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT ts, value FROM sample_hot WHERE series = ?1 AND ts BETWEEN ?2 AND ?3 ORDER BY ts",
    )?;
    let hot = stmt.query_map(params![series, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    for row in hot {
        out.push(row?);
    }
    out.sort_by_key(|(ts, _)| *ts);
    // A reading stored in both places (moved while a late copy arrived) counts once.
    out.dedup_by_key(|(ts, _)| *ts);
    Ok(out)
}
