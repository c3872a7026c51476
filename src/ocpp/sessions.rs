//! `charging.sqlite`: the log of charging sessions, and the source of OCPP transaction ids.
//!
//! A transaction id is the row id of its session (`AUTOINCREMENT`, so never handed out twice,
//! even after rows are deleted) and is committed before the charger hears it: a hub that
//! crashes and restarts never gives a second session an id the cloud has already seen.
//! `synchronous=FULL` because these commits are rare (one per plug-in) and an id must survive
//! a power cut.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

pub const DB_FILE: &str = "charging.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS session (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    connector INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    meter_start_wh INTEGER NOT NULL,
    stopped_at INTEGER,
    meter_stop_wh INTEGER,
    stop_reason TEXT,
    stop_id_tag TEXT
);
CREATE INDEX IF NOT EXISTS session_device ON session(device, id);
CREATE INDEX IF NOT EXISTS session_open ON session(device) WHERE stopped_at IS NULL;
";

/// One charging session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub transaction_id: i32,
    pub device_id: String,
    pub connector: u32,
    pub id_tag: String,
    pub started_at: DateTime<Utc>,
    pub meter_start_wh: i64,
    pub stopped_at: Option<DateTime<Utc>>,
    pub meter_stop_wh: Option<i64>,
    pub stop_reason: Option<String>,
    /// kWh charged; for a running session, up to its connector's latest meter reading (filled in
    /// by the caller, which knows it).
    pub energy_kwh: Option<f64>,
}

impl Session {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
        let start: i64 = r.get("meter_start_wh")?;
        let stop: Option<i64> = r.get("meter_stop_wh")?;
        Ok(Session {
            transaction_id: r.get("id")?,
            device_id: r.get("device")?,
            connector: r.get("connector")?,
            id_tag: r.get("id_tag")?,
            started_at: from_ms(r.get("started_at")?),
            meter_start_wh: start,
            stopped_at: r.get::<_, Option<i64>>("stopped_at")?.map(from_ms),
            meter_stop_wh: stop,
            stop_reason: r.get("stop_reason")?,
            energy_kwh: stop.map(|s| energy_kwh(start, s)),
        })
    }
}

/// kWh between two register readings in Wh; a register that went backwards (a replaced meter)
/// charged nothing rather than a negative amount.
pub fn energy_kwh(start_wh: i64, stop_wh: i64) -> f64 {
    (stop_wh.saturating_sub(start_wh)).max(0) as f64 / 1000.0
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What a stop did.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    /// The session is closed now.
    Closed(Session),
    /// It was closed before: a charger sending its StopTransaction again.
    Again(Session),
    /// No session has this id (the hub lost it, or the charger made it up offline).
    Unknown,
}

pub struct Sessions {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// At most this many sessions are listed at once.
pub const MAX_LIST: usize = 1000;

impl Sessions {
    pub fn open(path: &Path) -> rusqlite::Result<Sessions> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Sessions {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session and returns its transaction id. The same start sent again (a charger
    /// that did not hear the answer retries with the same connector, time and meter) gets the
    /// same id rather than a second session.
    pub fn start(
        &self,
        device: &str,
        connector: u32,
        id_tag: &str,
        started_at: DateTime<Utc>,
        meter_start_wh: i64,
    ) -> rusqlite::Result<i32> {
        let conn = self.conn();
        let ts = started_at.timestamp_millis();
        let again: Option<i32> = conn
            .query_row(
                "SELECT id FROM session WHERE device = ?1 AND connector = ?2 AND started_at = ?3
                   AND meter_start_wh = ?4 AND id_tag = ?5",
                params![device, connector, ts, meter_start_wh, id_tag],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = again {
            return Ok(id);
        }
        conn.execute(
            "INSERT INTO session(device, connector, id_tag, started_at, meter_start_wh)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device, connector, id_tag, ts, meter_start_wh],
        )?;
        // Row ids stay far below i32::MAX in any park's lifetime (one per plug-in); should one
        // not fit, the error is better than a wrapped id.
        i32::try_from(conn.last_insert_rowid())
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }

    /// Closes a session of `device`.
    pub fn stop(
        &self,
        device: &str,
        transaction_id: i32,
        stopped_at: DateTime<Utc>,
        meter_stop_wh: i64,
        reason: &str,
        id_tag: Option<&str>,
    ) -> rusqlite::Result<Stopped> {
        let conn = self.conn();
        let Some(s) = conn
            .query_row(
                "SELECT * FROM session WHERE id = ?1 AND device = ?2",
                params![transaction_id, device],
                Session::from_row,
            )
            .optional()?
        else {
            return Ok(Stopped::Unknown);
        };
        if s.stopped_at.is_some() {
            return Ok(Stopped::Again(s));
        }
        conn.execute(
            "UPDATE session SET stopped_at = ?2, meter_stop_wh = ?3, stop_reason = ?4,
               stop_id_tag = ?5 WHERE id = ?1",
            params![
                transaction_id,
                stopped_at.timestamp_millis(),
                meter_stop_wh,
                reason,
                id_tag
            ],
        )?;
        Ok(Stopped::Closed(Session {
            stopped_at: Some(stopped_at),
            meter_stop_wh: Some(meter_stop_wh),
            stop_reason: Some(reason.to_string()),
            energy_kwh: Some(energy_kwh(s.meter_start_wh, meter_stop_wh)),
            ..s
        }))
    }

    /// Sessions still running, of every charger: what a restarted hub picks up again.
    pub fn running(&self) -> rusqlite::Result<Vec<Session>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT * FROM session WHERE stopped_at IS NULL ORDER BY id")?;
        let rows = st.query_map([], Session::from_row)?;
        rows.collect()
    }

    /// The latest sessions, newest first: of one charger, or of all.
    pub fn list(&self, device: Option<&str>, limit: usize) -> rusqlite::Result<Vec<Session>> {
        let conn = self.conn();
        let limit = limit.min(MAX_LIST) as i64;
        let mut st = conn.prepare(
            "SELECT * FROM session WHERE (?1 IS NULL OR device = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![device, limit], Session::from_row)?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn transaction_ids_survive_a_restart_and_are_never_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let first = {
            let s = Sessions::open(&path).unwrap();
            let a = s.start("cp-1", 1, "TAG1", at(0), 1000).unwrap();
            let b = s.start("cp-1", 2, "TAG2", at(5), 2000).unwrap();
            assert_ne!(a, b);
            // The newest row is deleted: AUTOINCREMENT still never reuses its id.
            s.conn()
                .execute("DELETE FROM session WHERE id = ?1", [b])
                .unwrap();
            b
        };
        let s = Sessions::open(&path).unwrap();
        let c = s.start("cp-1", 1, "TAG3", at(60), 1500).unwrap();
        assert!(c > first, "{c} after {first}");
        assert_eq!(s.running().unwrap().len(), 2);
    }

    #[test]
    fn a_start_sent_twice_gets_the_same_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::open(&dir.path().join(DB_FILE)).unwrap();
        let a = s.start("cp-1", 1, "TAG1", at(0), 1000).unwrap();
        assert_eq!(s.start("cp-1", 1, "TAG1", at(0), 1000).unwrap(), a);
        assert_ne!(s.start("cp-1", 1, "TAG1", at(1), 1000).unwrap(), a);
    }

    #[test]
    fn a_stop_closes_the_session_with_its_energy_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::open(&dir.path().join(DB_FILE)).unwrap();
        let id = s.start("cp-1", 1, "TAG1", at(0), 1000).unwrap();
        let Stopped::Closed(done) = s
            .stop("cp-1", id, at(3600), 8500, "Local", Some("TAG1"))
            .unwrap()
        else {
            panic!("not closed");
        };
        assert_eq!(done.energy_kwh, Some(7.5));
        assert_eq!(done.stopped_at, Some(at(3600)));
        assert!(matches!(
            s.stop("cp-1", id, at(3700), 9000, "Local", None).unwrap(),
            Stopped::Again(ref again) if again.meter_stop_wh == Some(8500)
        ));
        assert_eq!(
            s.stop("cp-2", id, at(3700), 9000, "Local", None).unwrap(),
            Stopped::Unknown,
            "another charger cannot stop this one's session"
        );
        assert_eq!(
            s.stop("cp-1", 999, at(3700), 9000, "Local", None).unwrap(),
            Stopped::Unknown
        );
        let listed = s.list(Some("cp-1"), 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].stop_reason.as_deref(), Some("Local"));
        assert!(s.running().unwrap().is_empty());
    }

    #[test]
    fn a_register_that_went_backwards_charged_nothing() {
        assert_eq!(energy_kwh(5000, 4000), 0.0);
        assert_eq!(energy_kwh(0, 1234), 1.234);
    }
}
