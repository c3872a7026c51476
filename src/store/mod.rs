//! Local history in SQLite: one writer thread takes batches of readings in single
//! transactions; readers open their own connections (WAL lets them read while it writes).
//!
//! Layout (see `key.rs` for why):
//! - `series(id, device, point, unit, kind)`: one row per point;
//! - `sample_hot(series, ts, value)`: readings of the still-open five-minute chunks, appended as
//!   they arrive;
//! - `sample(key, value)`: every older reading, key = (chunk, series, second) packed; the view
//!   `sample_v(series, ts, value)` unpacks it for people with the `sqlite3` shell;
//! - `rollup(period, start, series, min, max, sum, count, last, last_ts, delta, base, pending)`:
//!   summaries per 5 minutes, local hour and local day (see `summaries.rs` for the key order);
//!   `delta` is a counter's consumption, `base` and `pending` where its counting stands at the
//!   bucket's end (see `rollup.rs`);
//! - `counter_state(series, start, base, pending)`: each counter's newest such state;
//! - `meta(key, value)`: schema version and the rollup watermark.

mod key;
mod query;
pub mod rollup;
pub mod space;
mod summaries;
mod writer;

use std::path::Path;

use rusqlite::Connection;

pub use query::{History, SeriesInfo};
pub use writer::{spawn_writer, SeriesDef, WriterHandle, WriterOptions, WriterStats};

pub use key::{CHUNK_S, EPOCH};

/// Period of each rollup, seconds (days are local days; 86 400 is their nominal length).
pub const PERIOD_5M: i64 = 300;
pub const PERIOD_HOUR: i64 = 3600;
pub const PERIOD_DAY: i64 = 86_400;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series(
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    unit TEXT,
    kind TEXT NOT NULL DEFAULT 'gauge',
    UNIQUE(device, point)
);
CREATE TABLE IF NOT EXISTS sample_hot(series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sample(key INTEGER PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rollup(
    period INTEGER NOT NULL,
    start INTEGER NOT NULL,
    series INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    last REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    delta REAL,
    base REAL,
    pending REAL,
    PRIMARY KEY(period, start, series)
) WITHOUT ROWID;
-- Hourly and daily summaries by series as well: a chart of one point over a month reads one
-- stretch of this instead of seeking a bucket at a time through every series. Covering, so the
-- table is not read; only the coarse periods, so it costs about 1/13 of the rollups' size.
CREATE INDEX IF NOT EXISTS rollup_by_series
    ON rollup(series, period, start, min, max, sum, count, last, last_ts, delta, base, pending)
    WHERE period >= 3600;
-- Text values (an enumeration's state, a charger's status, a fault's label) as their changes:
-- a state repeated in every poll is stored once, when it begins. In milliseconds: a fault and
-- its clearing within one second are two changes.
CREATE TABLE IF NOT EXISTS state_log(
    series INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY(series, ts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter_state(
    series INTEGER PRIMARY KEY,
    start INTEGER NOT NULL,
    base REAL,
    pending REAL
);
CREATE VIEW IF NOT EXISTS sample_v(series, ts, value) AS
    SELECT (key >> 9) & 65535, 1577836800 + (key >> 25) * 300 + (key & 511), value FROM sample
    UNION ALL SELECT series, ts, value FROM sample_hot;
";

/// Bytes SQLite holds right now across every connection of the process (page caches,
/// prepared statements, schema): the part of the hub's memory that grows with its databases.
pub fn sqlite_memory_used() -> i64 {
    // SAFETY: sqlite3_memory_used only reads SQLite's own counter (thread-safe in the bundled
    // build, which is serialized).
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// Opens (creating if needed) the history database with the settings every connection needs.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer; NORMAL: a power cut may lose the last commits but
    // never corrupts the file, and each commit costs no fsync (kind to SD cards).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // 1 MiB of page cache a connection (SQLite's default is 2 MiB), so each cache is full
    // within minutes and the hub's memory stays flat afterwards: at the default the caches
    // grew 1.6 MB over the first hour of a ten-park soak, half the hub's growth.
    conn.pragma_update(None, "cache_size", -1024)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Creates the tables of a new database and checks the version of an old one.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // Pages freed by shedding go back to the disk, where alarms and the outbox need them. Only
    // takes effect on a new database (before its first table); an older one reuses its free
    // pages for history instead.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.execute_batch(SCHEMA)?;
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .ok();
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "history schema {v} was written by a newer parkhub (this one reads {SCHEMA_VERSION})"
            )));
        }
        Some(_) => {}
    }
    Ok(())
}

/// The file name of the history database inside `hub.data_dir`.
pub const DB_FILE: &str = "history.sqlite";

#[cfg(test)]
mod tests {
    #[test]
    fn every_connection_keeps_at_most_a_mebibyte_of_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open(&dir.path().join(super::DB_FILE)).unwrap();
        let kib: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        // Negative: a size in KiB, not in pages.
        assert_eq!(kib, -1024);
    }
}
