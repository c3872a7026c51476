//! `uplink.sqlite`: the records waiting to go up, the batch in flight, and the next `seq`.
//!
//! A record gets its `seq` when it is put in a batch, not when it is queued: readings shed for
//! lack of disk never leave a gap in what the cloud sees. The batch in flight is stored whole
//! (its exact bytes) before it is sent, so after a failure or a restart the very same batch is
//! sent again: the receiver sees repeats only as exact repeats, and drops them by `seq`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, OptionalExtension};

use super::record::{self, Kind, Record};

pub const DB_FILE: &str = "uplink.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inflight (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    next_seq INTEGER NOT NULL,
    shed INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (one, next_seq) VALUES (1, 1);
";

/// A batch formed and stored, ready to send (again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub first_seq: i64,
    pub last_seq: i64,
    last_id: i64,
    pub body: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        (self.last_seq - self.first_seq + 1) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct UplinkQueue {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for UplinkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UplinkQueue")
    }
}

impl UplinkQueue {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = crate::store::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues records, in order, in one transaction.
    pub fn push(&self, records: &[Record]) -> rusqlite::Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT INTO queue (kind, body) VALUES (?1, ?2)")?;
            for r in records {
                st.execute(params![r.kind as i64, r.body])?;
            }
        }
        tx.commit()
    }

    /// The batch in flight, or a new one of up to `max` of the oldest records and about
    /// `MAX_BODY` bytes (`None` when nothing waits). `sent_at` is stamped into a new batch and
    /// kept for its repeats.
    pub fn next_batch(
        &self,
        hub_id: &str,
        max: usize,
        sent_at: &str,
    ) -> rusqlite::Result<Option<Batch>> {
        let mut c = self.conn();
        if let Some(b) = inflight(&c)? {
            return Ok(Some(b));
        }
        // The batch's numbering must outlive a power cut before the batch is sent: with seq
        // rolled back under records the cloud already has, new records would reuse their seqs
        // and be dropped as repeats. A full sync here (it also syncs the records queued before
        // it) costs one fsync per batch, not one per hand-over.
        c.pragma_update(None, "synchronous", "FULL")?;
        let formed = form(&mut c, hub_id, max, sent_at);
        c.pragma_update(None, "synchronous", "NORMAL")?;
        formed
    }

    /// The receiver has the batch: its records leave the queue and `seq` moves on.
    pub fn delivered(&self, b: &Batch) -> rusqlite::Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("DELETE FROM queue WHERE id <= ?1", [b.last_id])?;
        tx.execute("DELETE FROM inflight", [])?;
        tx.execute("UPDATE meta SET next_seq = ?1", [b.last_seq + 1])?;
        tx.commit()
    }

    /// Records waiting (the batch in flight included).
    pub fn backlog(&self) -> rusqlite::Result<i64> {
        self.conn()
            .query_row("SELECT count(*) FROM queue", [], |r| r.get(0))
    }

    /// Bytes the database holds in use (free pages not counted: they are reused).
    pub fn used_bytes(&self) -> rusqlite::Result<i64> {
        let c = self.conn();
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((pages - free) * size)
    }

    /// Drops up to `n` of the oldest queued readings (never alarms or status, never what is in
    /// flight); returns how many.
    pub fn shed_readings(&self, n: usize) -> rusqlite::Result<usize> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let after: i64 = tx
            .query_row("SELECT last_id FROM inflight", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let shed = tx.execute(
            "DELETE FROM queue WHERE id IN
                 (SELECT id FROM queue WHERE kind = 0 AND id > ?1 ORDER BY id LIMIT ?2)",
            params![after, i64::try_from(n).unwrap_or(i64::MAX)],
        )?;
        tx.execute("UPDATE meta SET shed = shed + ?1", [shed as i64])?;
        tx.commit()?;
        Ok(shed)
    }

    /// Readings shed since the queue was made.
    pub fn shed_total(&self) -> rusqlite::Result<i64> {
        self.conn()
            .query_row("SELECT shed FROM meta", [], |r| r.get(0))
    }
}

/// A batch's body at most (before gzip), whatever `batch_max` says: brokers refuse packets
/// over 1 MiB by default (EMQX, rumqttc), proxies bodies over 1 MiB (nginx). A batch that can
/// never be taken would stop the uplink for good.
pub const MAX_BODY: usize = 900 * 1024;

fn form(
    c: &mut Connection,
    hub_id: &str,
    max: usize,
    sent_at: &str,
) -> rusqlite::Result<Option<Batch>> {
    let tx = c.transaction()?;
    let (records, last_id) = {
        let mut st = tx.prepare_cached("SELECT id, kind, body FROM queue ORDER BY id LIMIT ?1")?;
        let rows = st.query_map([i64::try_from(max).unwrap_or(i64::MAX)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut records = Vec::new();
        let mut last_id = 0;
        let mut bytes = 0;
        for row in rows {
            let (id, kind, body) = row?;
            bytes += body.len() + 16;
            if bytes > MAX_BODY && !records.is_empty() {
                break;
            }
            last_id = id;
            // A kind this version does not know (a newer database downgraded): skipped.
            if let Some(kind) = Kind::from_i64(kind) {
                records.push(Record { kind, body });
            }
        }
        (records, last_id)
    };
    if last_id == 0 {
        return Ok(None);
    }
    let first_seq: i64 = tx.query_row("SELECT next_seq FROM meta", [], |r| r.get(0))?;
    let body = record::batch_body(hub_id, first_seq, &records, sent_at);
    let last_seq = first_seq + records.len() as i64 - 1;
    tx.execute(
        "INSERT INTO inflight (one, first_seq, last_seq, last_id, body) VALUES (1, ?1, ?2, ?3, ?4)",
        params![first_seq, last_seq, last_id, body],
    )?;
    tx.commit()?;
    Ok(Some(Batch {
        first_seq,
        last_seq,
        last_id,
        body,
    }))
}

fn inflight(c: &Connection) -> rusqlite::Result<Option<Batch>> {
    c.query_row(
        "SELECT first_seq, last_seq, last_id, body FROM inflight",
        [],
        |r| {
            Ok(Batch {
                first_seq: r.get(0)?,
                last_seq: r.get(1)?,
                last_id: r.get(2)?,
                body: r.get(3)?,
            })
        },
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn status(i: i64) -> Record {
        record::status(
            &format!("d{i}"),
            i % 2 == 0,
            DateTime::from_timestamp(i, 0).unwrap(),
            chrono_tz::UTC,
        )
    }

    fn reading(i: i64) -> Record {
        Record {
            kind: Kind::Reading,
            body: format!("\"device_id\":\"m\",\"point\":\"p\",\"value\":{i}"),
        }
    }

    #[test]
    fn seq_continues_across_batches_and_reopening_and_a_failed_batch_is_sent_again_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let q = UplinkQueue::open(&path).unwrap();
        q.push(&(1..=5).map(status).collect::<Vec<_>>()).unwrap();
        let b1 = q.next_batch("h", 3, "t1").unwrap().unwrap();
        assert_eq!((b1.first_seq, b1.last_seq), (1, 3));
        // Not delivered: the same bytes again, even after reopening.
        drop(q);
        let q = UplinkQueue::open(&path).unwrap();
        let again = q.next_batch("h", 3, "t2").unwrap().unwrap();
        assert_eq!(again, b1);
        q.delivered(&again).unwrap();
        let b2 = q.next_batch("h", 3, "t3").unwrap().unwrap();
        assert_eq!((b2.first_seq, b2.last_seq), (4, 5));
        q.delivered(&b2).unwrap();
        assert_eq!(q.next_batch("h", 3, "t4").unwrap(), None);
        q.push(&[status(6)]).unwrap();
        assert_eq!(q.next_batch("h", 3, "t5").unwrap().unwrap().first_seq, 6);
    }

    #[test]
    fn a_batch_stops_short_of_a_megabyte_whatever_batch_max_says() {
        let dir = tempfile::tempdir().unwrap();
        let q = UplinkQueue::open(&dir.path().join(DB_FILE)).unwrap();
        let big = Record {
            kind: Kind::Alarm,
            body: format!("\"message\":\"{}\"", "x".repeat(10_000)),
        };
        q.push(&vec![big; 200]).unwrap();
        let b = q.next_batch("h", 100_000, "t").unwrap().unwrap();
        assert!(b.body.len() <= MAX_BODY + 1024, "{}", b.body.len());
        assert!(b.len() >= 80, "{}", b.len());
        q.delivered(&b).unwrap();
        let rest = q.next_batch("h", 100_000, "t").unwrap().unwrap();
        assert_eq!(rest.first_seq, b.last_seq + 1);
    }

    #[test]
    fn shedding_takes_the_oldest_readings_and_leaves_no_gap_in_seq() {
        let dir = tempfile::tempdir().unwrap();
        let q = UplinkQueue::open(&dir.path().join(DB_FILE)).unwrap();
        q.push(&[reading(1), status(2), reading(3), reading(4), status(5)])
            .unwrap();
        let b = q.next_batch("h", 1, "t").unwrap().unwrap();
        // reading 1 is in flight: kept. Readings 3 and 4 go; the status never does.
        assert_eq!(q.shed_readings(10).unwrap(), 2);
        assert_eq!(q.shed_total().unwrap(), 2);
        q.delivered(&b).unwrap();
        let rest = q.next_batch("h", 10, "t").unwrap().unwrap();
        assert_eq!((rest.first_seq, rest.last_seq), (2, 3));
        let v: serde_json::Value = serde_json::from_slice(&rest.body).unwrap();
        assert_eq!(v["device_status"].as_array().unwrap().len(), 2);
        assert_eq!(v["readings"], serde_json::json!([]));
    }
}
