//! `alarms.sqlite`: every alarm with its transitions (who, when, comment), shelved alarms,
//! devices out of service, and the outbox of pushes with their delivery state and attempts.
//!
//! A file of its own, apart from the history: alarm writes are small and must never queue
//! behind a history batch. WAL with `synchronous=NORMAL` makes each commit an append; the
//! outbox row of a push is committed before the push is attempted, so a push is never lost to
//! a crash, only possibly sent twice (receivers get `alarm_id` and `event` to drop repeats).

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{AlarmKey, AlarmState, Scope};

pub const DB_FILE: &str = "alarms.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alarm (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    source TEXT NOT NULL,
    rule TEXT NOT NULL,
    point TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    condition INTEGER NOT NULL,
    latched INTEGER NOT NULL,
    severity TEXT NOT NULL,
    category TEXT NOT NULL,
    message TEXT NOT NULL,
    value TEXT,
    raised_at INTEGER NOT NULL,
    acked_at INTEGER,
    acked_by TEXT,
    cleared_at INTEGER,
    closed_at INTEGER,
    suppressed INTEGER NOT NULL DEFAULT 0,
    escalated INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS alarm_open ON alarm(scope, source, rule, point)
    WHERE state != 'normal';
CREATE INDEX IF NOT EXISTS alarm_raised ON alarm(raised_at);
CREATE TABLE IF NOT EXISTS alarm_event (
    id INTEGER PRIMARY KEY,
    alarm INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    event TEXT NOT NULL,
    who TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS alarm_event_alarm ON alarm_event(alarm);
CREATE TABLE IF NOT EXISTS shelf (
    scope TEXT NOT NULL,
    source TEXT NOT NULL,
    rule TEXT NOT NULL,
    point TEXT NOT NULL,
    until INTEGER NOT NULL,
    who TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (scope, source, rule, point)
);
CREATE TABLE IF NOT EXISTS maintenance (
    device TEXT PRIMARY KEY,
    since INTEGER NOT NULL,
    until INTEGER,
    who TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    department TEXT NOT NULL,
    alarm INTEGER NOT NULL,
    event TEXT NOT NULL,
    urgent INTEGER NOT NULL,
    grp INTEGER NOT NULL,
    created INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt INTEGER,
    last_error TEXT,
    delivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(channel, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_alarm ON outbox(alarm);
";

/// An alarm as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRow {
    pub id: i64,
    pub key: AlarmKey,
    pub state: AlarmState,
    pub condition: bool,
    pub latched: bool,
    pub severity: String,
    pub category: String,
    pub message: String,
    /// JSON of the value that raised it.
    pub value: Option<String>,
    pub raised_at: DateTime<Utc>,
    pub acked_at: Option<DateTime<Utc>>,
    pub acked_by: Option<String>,
    pub cleared_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Inhibited (a dead bus explains it): stored, not pushed.
    pub suppressed: bool,
    pub escalated: bool,
}

/// One transition of an alarm.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventRow {
    pub ts: DateTime<Utc>,
    pub event: String,
    pub who: Option<String>,
    pub comment: Option<String>,
}

/// A push waiting in (or gone through) the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub channel: String,
    pub department: String,
    pub alarm: i64,
    pub event: String,
    pub urgent: bool,
    /// Pushes of one group go out as one message.
    pub group: i64,
    pub created: DateTime<Utc>,
    /// Held back until then (a group's window).
    pub not_before: DateTime<Utc>,
    /// The push as JSON (the webhook body of DESIGN.md).
    pub payload: String,
    pub attempts: u32,
}

/// Delivery of a push, for operators.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivery {
    pub id: i64,
    pub channel: String,
    pub department: String,
    pub event: String,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// An alarm shelved by an operator until `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shelf {
    pub key: AlarmKey,
    pub until: DateTime<Utc>,
    pub who: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    pub device: String,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    pub who: String,
    pub reason: String,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn key_parts(k: &AlarmKey) -> (&'static str, &str, &str, &str) {
    (
        k.scope.kind(),
        k.scope.id(),
        &k.rule,
        k.point.as_deref().unwrap_or(""),
    )
}

fn key_of(scope: &str, source: String, rule: String, point: String) -> AlarmKey {
    AlarmKey {
        scope: match scope {
            "bus" => Scope::Bus(source.into()),
            "hub" => Scope::Hub(source.into()),
            _ => Scope::Device(source.into()),
        },
        rule: rule.into(),
        point: (!point.is_empty()).then(|| point.into()),
    }
}

const ALARM_COLUMNS: &str = "id, scope, source, rule, point, state, condition, latched, severity, \
     category, message, value, raised_at, acked_at, acked_by, cleared_at, closed_at, suppressed, escalated";

fn alarm_row(r: &Row<'_>) -> rusqlite::Result<AlarmRow> {
    let state: String = r.get(5)?;
    Ok(AlarmRow {
        id: r.get(0)?,
        key: key_of(&r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
        state: AlarmState::parse(&state).unwrap_or(AlarmState::Unacked),
        condition: r.get(6)?,
        latched: r.get(7)?,
        severity: r.get(8)?,
        category: r.get(9)?,
        message: r.get(10)?,
        value: r.get(11)?,
        raised_at: time(r.get(12)?),
        acked_at: r.get::<_, Option<i64>>(13)?.map(time),
        acked_by: r.get(14)?,
        cleared_at: r.get::<_, Option<i64>>(15)?.map(time),
        closed_at: r.get::<_, Option<i64>>(16)?.map(time),
        suppressed: r.get(17)?,
        escalated: r.get(18)?,
    })
}

const OUTBOX_COLUMNS: &str =
    "id, channel, department, alarm, event, urgent, grp, created, not_before, payload, attempts";

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        channel: r.get(1)?,
        department: r.get(2)?,
        alarm: r.get(3)?,
        event: r.get(4)?,
        urgent: r.get(5)?,
        group: r.get(6)?,
        created: time(r.get(7)?),
        not_before: time(r.get(8)?),
        payload: r.get(9)?,
        attempts: r.get(10)?,
    })
}

/// Which alarms a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Not yet normal: active, or cleared but unacknowledged.
    Open,
    /// The most recent, whatever their state.
    All,
}

/// The alarm database. One connection, shared by the engine and the delivery workers; each
/// call is one short transaction.
pub struct AlarmStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for AlarmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlarmStore")
    }
}

impl AlarmStore {
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

    /// Alarms not yet normal (to carry them over a restart).
    pub fn open_alarms(&self) -> rusqlite::Result<Vec<AlarmRow>> {
        self.list(Listing::Open, usize::MAX)
    }

    pub fn list(&self, which: Listing, limit: usize) -> rusqlite::Result<Vec<AlarmRow>> {
        let filter = match which {
            Listing::Open => "WHERE state != 'normal'",
            Listing::All => "",
        };
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {ALARM_COLUMNS} FROM alarm {filter} ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], alarm_row)?;
        rows.collect()
    }

    pub fn alarm(&self, id: i64) -> rusqlite::Result<Option<AlarmRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {ALARM_COLUMNS} FROM alarm WHERE id = ?1"),
                [id],
                alarm_row,
            )
            .optional()
    }

    /// Stores a new alarm and its first event; returns its id.
    pub fn insert(&self, a: &AlarmRow, ev: &EventRow) -> rusqlite::Result<i64> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let (scope, source, rule, point) = key_parts(&a.key);
        tx.execute(
            "INSERT INTO alarm (scope, source, rule, point, state, condition, latched, severity,
                 category, message, value, raised_at, suppressed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                scope,
                source,
                rule,
                point,
                a.state.as_str(),
                a.condition,
                a.latched,
                a.severity,
                a.category,
                a.message,
                a.value,
                ms(a.raised_at),
                a.suppressed
            ],
        )?;
        let id = tx.last_insert_rowid();
        insert_event(&tx, id, ev)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores an alarm's new state and the event that made it.
    pub fn update(&self, a: &AlarmRow, ev: Option<&EventRow>) -> rusqlite::Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "UPDATE alarm SET state = ?2, condition = ?3, severity = ?4, message = ?5, value = ?6,
                 acked_at = ?7, acked_by = ?8, cleared_at = ?9, closed_at = ?10, suppressed = ?11,
                 escalated = ?12
             WHERE id = ?1",
            params![
                a.id,
                a.state.as_str(),
                a.condition,
                a.severity,
                a.message,
                a.value,
                a.acked_at.map(ms),
                a.acked_by,
                a.cleared_at.map(ms),
                a.closed_at.map(ms),
                a.suppressed,
                a.escalated
            ],
        )?;
        if let Some(ev) = ev {
            insert_event(&tx, a.id, ev)?;
        }
        tx.commit()
    }

    pub fn events(&self, alarm: i64) -> rusqlite::Result<Vec<EventRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT ts, event, who, comment FROM alarm_event WHERE alarm = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([alarm], |r| {
            Ok(EventRow {
                ts: time(r.get(0)?),
                event: r.get(1)?,
                who: r.get(2)?,
                comment: r.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// Puts pushes in the outbox; returns them with their ids.
    pub fn enqueue(&self, rows: Vec<OutboxRow>) -> rusqlite::Result<Vec<OutboxRow>> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let mut out = Vec::with_capacity(rows.len());
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO outbox (channel, department, alarm, event, urgent, grp, created,
                     not_before, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for mut r in rows {
                st.execute(params![
                    r.channel,
                    r.department,
                    r.alarm,
                    r.event,
                    r.urgent,
                    r.group,
                    ms(r.created),
                    ms(r.not_before),
                    r.payload
                ])?;
                r.id = tx.last_insert_rowid();
                if r.group == 0 {
                    // A push of its own is a group of its own.
                    r.group = r.id;
                    tx.execute("UPDATE outbox SET grp = id WHERE id = ?1", [r.id])?;
                }
                out.push(r);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Pushes not yet delivered, oldest first.
    pub fn pending(&self) -> rusqlite::Result<Vec<OutboxRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY id"
        ))?;
        let rows = st.query_map([], outbox_row)?;
        rows.collect()
    }

    pub fn delivered(&self, ids: &[i64], at: DateTime<Utc>) -> rusqlite::Result<()> {
        self.each(ids, |tx, id| {
            tx.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = ?2, last_attempt = ?2,
                     attempts = attempts + 1
                 WHERE id = ?1",
                params![id, ms(at)],
            )
        })
    }

    pub fn failed(&self, ids: &[i64], at: DateTime<Utc>, error: &str) -> rusqlite::Result<()> {
        self.each(ids, |tx, id| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, ms(at), error],
            )
        })
    }

    /// Takes back pushes not yet sent (their alarm turned out to be explained by another);
    /// returns them as (id, channel, event).
    pub fn withdraw(&self, alarm: i64) -> rusqlite::Result<Vec<(i64, String, String)>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "UPDATE outbox SET state = 'withdrawn'
             WHERE alarm = ?1 AND state = 'pending' AND attempts = 0 AND urgent = 0
             RETURNING id, channel, event",
        )?;
        let ids = st.query_map([alarm], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        ids.collect()
    }

    fn each(
        &self,
        ids: &[i64],
        f: impl Fn(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<usize>,
    ) -> rusqlite::Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        for &id in ids {
            f(&tx, id)?;
        }
        tx.commit()
    }

    pub fn deliveries(&self, alarm: i64) -> rusqlite::Result<Vec<Delivery>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT id, channel, department, event, state, attempts, last_error, created,
                 delivered_at
             FROM outbox WHERE alarm = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([alarm], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                channel: r.get(1)?,
                department: r.get(2)?,
                event: r.get(3)?,
                state: r.get(4)?,
                attempts: r.get(5)?,
                last_error: r.get(6)?,
                created: time(r.get(7)?),
                delivered_at: r.get::<_, Option<i64>>(8)?.map(time),
            })
        })?;
        rows.collect()
    }

    /// Pushes waiting, per channel.
    pub fn backlog(&self) -> rusqlite::Result<Vec<(String, i64)>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT channel, count(*) FROM outbox WHERE state = 'pending' GROUP BY channel",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    pub fn shelves(&self) -> rusqlite::Result<Vec<Shelf>> {
        let c = self.conn();
        let mut st =
            c.prepare_cached("SELECT scope, source, rule, point, until, who, reason FROM shelf")?;
        let rows = st.query_map([], |r| {
            Ok(Shelf {
                key: key_of(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                until: time(r.get(4)?),
                who: r.get(5)?,
                reason: r.get(6)?,
            })
        })?;
        rows.collect()
    }

    pub fn shelve(&self, s: &Shelf) -> rusqlite::Result<()> {
        let (scope, source, rule, point) = key_parts(&s.key);
        self.conn().execute(
            "INSERT OR REPLACE INTO shelf (scope, source, rule, point, until, who, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![scope, source, rule, point, ms(s.until), s.who, s.reason],
        )?;
        Ok(())
    }

    pub fn unshelve(&self, key: &AlarmKey) -> rusqlite::Result<()> {
        let (scope, source, rule, point) = key_parts(key);
        self.conn().execute(
            "DELETE FROM shelf WHERE scope = ?1 AND source = ?2 AND rule = ?3 AND point = ?4",
            params![scope, source, rule, point],
        )?;
        Ok(())
    }

    pub fn maintenance(&self) -> rusqlite::Result<Vec<Maintenance>> {
        let c = self.conn();
        let mut st =
            c.prepare_cached("SELECT device, since, until, who, reason FROM maintenance")?;
        let rows = st.query_map([], |r| {
            Ok(Maintenance {
                device: r.get(0)?,
                since: time(r.get(1)?),
                until: r.get::<_, Option<i64>>(2)?.map(time),
                who: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    pub fn set_maintenance(&self, m: Option<&Maintenance>, device: &str) -> rusqlite::Result<()> {
        let c = self.conn();
        match m {
            Some(m) => c.execute(
                "INSERT OR REPLACE INTO maintenance (device, since, until, who, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![m.device, ms(m.since), m.until.map(ms), m.who, m.reason],
            )?,
            None => c.execute("DELETE FROM maintenance WHERE device = ?1", [device])?,
        };
        Ok(())
    }

    /// Forgets closed alarms, their events and deliveries older than `before`.
    pub fn prune(&self, before: DateTime<Utc>) -> rusqlite::Result<usize> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let t = ms(before);
        tx.execute(
            "DELETE FROM alarm_event WHERE alarm IN
                 (SELECT id FROM alarm WHERE state = 'normal' AND closed_at < ?1)",
            [t],
        )?;
        tx.execute(
            "DELETE FROM outbox WHERE state != 'pending' AND alarm IN
                 (SELECT id FROM alarm WHERE state = 'normal' AND closed_at < ?1)",
            [t],
        )?;
        let n = tx.execute(
            "DELETE FROM alarm WHERE state = 'normal' AND closed_at < ?1",
            [t],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

fn insert_event(tx: &rusqlite::Transaction<'_>, alarm: i64, ev: &EventRow) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO alarm_event (alarm, ts, event, who, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![alarm, ms(ev.ts), ev.event, ev.who, ev.comment],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(rule: &str) -> AlarmKey {
        AlarmKey {
            scope: Scope::Device(Arc::from("smoke-1")),
            rule: Arc::from(rule),
            point: Some(Arc::from("smoke")),
        }
    }

    fn alarm(rule: &str) -> AlarmRow {
        AlarmRow {
            id: 0,
            key: key(rule),
            state: AlarmState::Unacked,
            condition: true,
            latched: true,
            severity: "critical".into(),
            category: "fire".into(),
            message: "烟雾报警".into(),
            value: Some("true".into()),
            raised_at: time(1_000),
            acked_at: None,
            acked_by: None,
            cleared_at: None,
            closed_at: None,
            suppressed: false,
            escalated: false,
        }
    }

    fn event(kind: &str, ms: i64) -> EventRow {
        EventRow {
            ts: time(ms),
            event: kind.into(),
            who: None,
            comment: None,
        }
    }

    #[test]
    fn an_alarm_and_its_transitions_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let store = AlarmStore::open(&path).unwrap();
        let id = store
            .insert(&alarm("smoke"), &event("raised", 1_000))
            .unwrap();
        let mut a = store.alarm(id).unwrap().unwrap();
        a.state = AlarmState::Acked;
        a.acked_by = Some("张三".into());
        a.acked_at = Some(time(2_000));
        let ack = EventRow {
            who: Some("张三".into()),
            comment: Some("已到现场".into()),
            ..event("acknowledged", 2_000)
        };
        store.update(&a, Some(&ack)).unwrap();
        drop(store);

        let store = AlarmStore::open(&path).unwrap();
        let open = store.open_alarms().unwrap();
        assert_eq!(open, vec![AlarmRow { id, ..a }]);
        let events = store.events(id).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].comment.as_deref(), Some("已到现场"));
    }

    #[test]
    fn only_one_alarm_per_key_may_be_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlarmStore::open(&dir.path().join(DB_FILE)).unwrap();
        store.insert(&alarm("smoke"), &event("raised", 1)).unwrap();
        assert!(store.insert(&alarm("smoke"), &event("raised", 2)).is_err());
        store.insert(&alarm("heat"), &event("raised", 3)).unwrap();
    }

    #[test]
    fn the_outbox_keeps_what_is_not_delivered_and_counts_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlarmStore::open(&dir.path().join(DB_FILE)).unwrap();
        let row = |channel: &str, urgent| OutboxRow {
            id: 0,
            channel: channel.into(),
            department: "fire-control".into(),
            alarm: 7,
            event: "raised".into(),
            urgent,
            group: 0,
            created: time(1),
            not_before: time(1),
            payload: "{}".into(),
            attempts: 0,
        };
        let rows = store
            .enqueue(vec![row("hook", true), row("ding", false)])
            .unwrap();
        assert_eq!(rows[0].group, rows[0].id);
        store.failed(&[rows[0].id], time(2), "503").unwrap();
        store.delivered(&[rows[1].id], time(3)).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].channel.as_str(), pending[0].attempts),
            ("hook", 1)
        );
        let d = store.deliveries(7).unwrap();
        assert_eq!(d[0].last_error.as_deref(), Some("503"));
        assert_eq!(d[1].state, "delivered");
        // Urgent pushes are never withdrawn.
        assert!(store.withdraw(7).unwrap().is_empty());
    }
}
