//! The one writer of the history database: a thread that takes batches of readings in single
//! transactions, moves closed five-minute chunks from the arrival table into the packed table
//! while rolling them up, and applies retention.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono_tz::Tz;
use rusqlite::{params, Connection, Transaction};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::key::{self, chunk_of, chunk_start, pack, MAX_SERIES};
use super::rollup::{day_start, hour_start, next_day_start, Agg, CounterState};
use super::space::{self, Room};
use super::summaries;
use super::{migrate, PERIOD_5M, PERIOD_DAY, PERIOD_HOUR};
use crate::config::HistoryConfig;
use crate::profile::Kind;
use crate::reading::{Reading, Value};

/// A point the writer should know before its first reading (its unit and whether it counts).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesDef {
    pub device: String,
    pub point: String,
    pub unit: Option<String>,
    pub kind: Kind,
}

pub struct WriterOptions {
    pub path: PathBuf,
    pub tz: Tz,
    pub retention: HistoryConfig,
    pub series: Vec<SeriesDef>,
    /// Most readings per transaction.
    pub max_batch: usize,
    /// How long a small batch may wait for company before it is written.
    pub linger: Duration,
    /// How often closed chunks are moved and rolled up.
    pub maintain_every: Duration,
    /// Wall-clock time in unix seconds; tests replace it to let days pass.
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl WriterOptions {
    pub fn new(path: PathBuf, tz: Tz, retention: HistoryConfig, series: Vec<SeriesDef>) -> Self {
        Self {
            path,
            tz,
            retention,
            series,
            max_batch: 10_000,
            linger: Duration::from_secs(1),
            maintain_every: Duration::from_secs(10),
            clock: Arc::new(|| chrono::Utc::now().timestamp()),
        }
    }
}

/// What the writer has done, for status pages and benchmarks.
#[derive(Debug)]
pub struct WriterStats {
    pub written: AtomicU64,
    /// Text values that repeat the state stored before them (history keeps a state's changes).
    pub skipped: AtomicU64,
    /// Readings given up after the database kept refusing them.
    pub dropped: AtomicU64,
    pub moved: AtomicU64,
    pub write_errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Readings deleted, oldest first, to leave the disk the room it must keep.
    pub shed: AtomicU64,
    /// Whether the disk is short of room (the storage alarm); the writer sends each change.
    pub storage_low: tokio::sync::watch::Sender<bool>,
    /// Seconds per committed batch of readings, for `/metrics`: a slowing SD card shows here
    /// long before it fails.
    pub write_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            written: AtomicU64::default(),
            skipped: AtomicU64::default(),
            dropped: AtomicU64::default(),
            moved: AtomicU64::default(),
            write_errors: AtomicU64::default(),
            last_error: Mutex::default(),
            shed: AtomicU64::default(),
            storage_low: tokio::sync::watch::Sender::new(false),
            // 0.5 ms .. 8 s: a commit on a healthy card takes milliseconds, a dying one seconds.
            write_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 15),
            ),
        }
    }
}

enum Control {
    Flush(oneshot::Sender<anyhow::Result<()>>),
}

/// The running writer. Dropping every sender of its readings channel stops it after it has
/// written what it holds; [`WriterHandle::join`] waits for that.
pub struct WriterHandle {
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Writes everything received so far and runs maintenance (move, rollups, retention) now.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Flush(tx))
            .map_err(|_| anyhow::anyhow!("history writer has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("history writer has stopped"))?
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Waits for the writer to finish (after its readings channel closed).
    pub async fn join(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || match self.thread.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("history writer panicked")),
        })
        .await
        .map_err(|e| anyhow::anyhow!("history writer: {e}"))?
    }
}

/// Opens the database and starts the writer thread on `readings`. Must be called inside a
/// tokio runtime (the thread waits on the channel through it).
pub fn spawn_writer(
    opts: WriterOptions,
    readings: mpsc::Receiver<Vec<Reading>>,
) -> anyhow::Result<WriterHandle> {
    if let Some(dir) = opts.path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    let conn = super::open(&opts.path)
        .with_context(|| format!("opening history {}", opts.path.display()))?;
    migrate(&conn).with_context(|| format!("preparing history {}", opts.path.display()))?;
    let stats = Arc::new(WriterStats::default());
    let mut writer = Writer::new(conn, opts, stats.clone())?;
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || writer.run(rt, readings, control_rx))
        .context("starting the history writer thread")?;
    Ok(WriterHandle {
        thread,
        control: control_tx,
        stats,
    })
}

struct Writer {
    conn: Connection,
    opts: WriterOptions,
    stats: Arc<WriterStats>,
    /// device → point → series, looked up by `&str` so a reading costs no allocation.
    series: HashMap<Arc<str>, HashMap<Arc<str>, i64>>,
    /// The last state stored of each text series.
    states: HashMap<i64, String>,
    rollups: Rollups,
    last_retention: Option<Instant>,
    error_logged: bool,
    room: Room,
    /// The last write was refused for lack of room.
    full: bool,
    /// The storage alarm stands.
    low: bool,
    /// The disk's free space could not be read (logged once).
    free_unknown: bool,
    reserve: space::Reserve,
    /// While short of room, history's size after its last shedding: it sheds what it grew
    /// since, so it rotates at that size instead of shrinking to nothing when something else
    /// holds the disk.
    ceiling: Option<u64>,
    /// No reading in `sample_hot` is older than this. The arrival table has no index (it is
    /// appended to at full speed), so asking it for closed chunks reads all of it: at 200 000
    /// readings a second that took longer than the ten seconds between two asks, and the
    /// writer fell behind. Known, the ask is skipped until a chunk can have closed.
    hot_floor: i64,
}

/// Closed chunks are moved a minute after they end: readings are stamped when their answer
/// arrives, and a poll may straddle the boundary.
const GRACE_S: i64 = 60;
/// Beyond this many buffered readings while the database refuses writes, the oldest go.
const MAX_BUFFERED: usize = 200_000;

impl Writer {
    fn new(conn: Connection, opts: WriterOptions, stats: Arc<WriterStats>) -> anyhow::Result<Self> {
        let room = Room::from_mb(opts.retention.min_free_mb, opts.retention.max_db_mb);
        let reserve = space::Reserve::beside(&opts.path, opts.retention.min_free_mb);
        let mut w = Self {
            conn,
            opts,
            stats,
            series: HashMap::new(),
            states: HashMap::new(),
            rollups: Rollups::default(),
            last_retention: None,
            error_logged: false,
            room,
            full: false,
            low: false,
            free_unknown: false,
            reserve,
            ceiling: None,
            // Unknown until the first move has looked.
            hot_floor: i64::MIN,
        };
        w.register_series().context("registering series")?;
        w.states = last_states(&w.conn).context("reading the last states")?;
        // The move sorts by key inside SQLite: it needs our packing.
        let flags = rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC
            | rusqlite::functions::FunctionFlags::SQLITE_UTF8;
        w.conn
            .create_scalar_function("parkhub_key", 2, flags, |ctx| {
                Ok(pack(ctx.get(0)?, ctx.get(1)?))
            })
            .context("registering the key function")?;
        w.conn
            .create_scalar_function("parkhub_chunk", 1, flags, |ctx| Ok(chunk_of(ctx.get(0)?)))
            .context("registering the chunk function")?;
        for (series, bucket, state) in
            summaries::counter_states(&w.conn).context("reading counter states")?
        {
            w.rollups.last_bucket.insert(series, (bucket, state));
        }
        // Before the hub starts: the storage alarm's state is known from the first moment.
        w.make_room();
        Ok(w)
    }

    fn register_series(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut up = tx.prepare(
                "INSERT INTO series(device, point, unit, kind) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(device, point) DO UPDATE SET unit = excluded.unit, kind = excluded.kind",
            )?;
            for s in &self.opts.series {
                up.execute(params![s.device, s.point, s.unit, s.kind.to_string()])?;
            }
        }
        tx.commit()?;
        let mut stmt = self
            .conn
            .prepare("SELECT id, device, point, kind FROM series")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (id, device, point, kind) = row?;
            if id >= MAX_SERIES {
                // Its readings are counted as dropped (see `create_series`).
                warn!(%device, %point, "history holds its maximum of {} series; this point is not stored", MAX_SERIES - 1);
                continue;
            }
            if kind == "counter" {
                self.rollups.counters.insert(id);
            }
            self.series
                .entry(Arc::from(device.as_str()))
                .or_default()
                .insert(Arc::from(point.as_str()), id);
        }
        Ok(())
    }

    fn run(
        &mut self,
        rt: tokio::runtime::Handle,
        mut readings: mpsc::Receiver<Vec<Reading>>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) -> anyhow::Result<()> {
        enum Got {
            Batch(Vec<Reading>),
            Closed,
            Idle,
            Control(Control),
        }
        let mut buf: Vec<Reading> = Vec::new();
        let mut first_at: Option<Instant> = None;
        let mut last_maintain = Instant::now();
        loop {
            let wait = match first_at {
                Some(t) => self.opts.linger.saturating_sub(t.elapsed()),
                None => self
                    .opts
                    .maintain_every
                    .saturating_sub(last_maintain.elapsed()),
            };
            let got = rt.block_on(async {
                tokio::select! {
                    biased;
                    Some(c) = control.recv() => Got::Control(c),
                    r = tokio::time::timeout(wait, readings.recv()) => match r {
                        Ok(Some(b)) => Got::Batch(b),
                        Ok(None) => Got::Closed,
                        Err(_) => Got::Idle,
                    },
                }
            });
            match got {
                Got::Batch(b) => {
                    first_at.get_or_insert_with(Instant::now);
                    buf.extend(b);
                    while buf.len() < self.opts.max_batch {
                        match readings.try_recv() {
                            Ok(b) => buf.extend(b),
                            Err(_) => break,
                        }
                    }
                }
                Got::Closed => {
                    self.write(&mut buf);
                    info!(
                        written = self.stats.written.load(Ordering::Relaxed),
                        "history writer stopped"
                    );
                    return Ok(());
                }
                Got::Idle => {}
                Got::Control(Control::Flush(reply)) => {
                    while let Ok(b) = readings.try_recv() {
                        buf.extend(b);
                    }
                    self.write(&mut buf);
                    first_at = None;
                    let r = if buf.is_empty() {
                        self.maintain(true)
                    } else {
                        Err(anyhow::anyhow!("readings could not be written"))
                    };
                    last_maintain = Instant::now();
                    let _ = reply.send(r);
                    continue;
                }
            }
            let lingered = first_at.is_some_and(|t| t.elapsed() >= self.opts.linger);
            if buf.len() >= self.opts.max_batch || lingered {
                self.write(&mut buf);
                first_at = if buf.is_empty() {
                    None
                } else {
                    Some(Instant::now())
                };
            }
            if last_maintain.elapsed() >= self.opts.maintain_every {
                self.make_room();
                self.keep_reserve();
                if let Err(e) = self.maintain(false) {
                    self.full |= is_full(&e);
                    self.note_error(format!("history maintenance: {e:#}"));
                }
                last_maintain = Instant::now();
            }
        }
    }

    fn note_error(&mut self, msg: String) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        // Logged once per streak: a full disk must not also fill the log.
        if !self.error_logged {
            error!("{msg}");
            self.error_logged = true;
        }
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(msg);
    }

    /// Writes `buf` in one transaction; on failure keeps it for the next attempt (up to a cap).
    fn write(&mut self, buf: &mut Vec<Reading>) {
        if buf.is_empty() {
            return;
        }
        let started = Instant::now();
        // Before each batch, not each tick: a busy history fills megabytes between two ticks,
        // and must not take what alarms and the outbox need. (A statvfs and three pragmas.)
        self.make_room();
        let mut done = self.insert(buf);
        if done.as_ref().is_err_and(is_full) {
            // Room is made at once rather than at the next tick: the readings wait in memory.
            self.full = true;
            self.make_room();
            done = self.insert(buf);
        }
        self.full = done.as_ref().is_err_and(is_full);
        match done {
            Ok(n) => {
                self.stats
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.stats.written.fetch_add(n, Ordering::Relaxed);
                if self.error_logged {
                    info!("history writes succeed again");
                    self.error_logged = false;
                }
                buf.clear();
            }
            Err(e) => {
                self.note_error(format!("writing {} readings to history: {e:#}", buf.len()));
                if buf.len() > MAX_BUFFERED {
                    let excess = buf.len() - MAX_BUFFERED;
                    buf.drain(..excess);
                    self.stats
                        .dropped
                        .fetch_add(excess as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Looks at the room left and sheds the oldest readings when there is too little; raises
    /// or clears the storage alarm.
    fn make_room(&mut self) {
        let mut free = self.disk_free();
        // Full to the last byte (a refused write, or all but a sliver gone): whoever needs to
        // write next, history to delete or the alarm engine to record, gets the reserve.
        let nearly_full = free.is_some_and(|f| f < self.reserve.size() / 2);
        if (self.full || nearly_full) && self.reserve.release() {
            warn!("the disk is full: released the reserve kept for this");
            free = self.disk_free();
        }
        let pages = match db_pages(&self.conn) {
            Ok(p) => p,
            Err(e) => {
                self.note_error(format!("measuring history: {e}"));
                return;
            }
        };
        // Free pages inside the file are room for history too: it reuses them before it asks
        // the disk for more (they stay there when the database predates incremental vacuum).
        let free = free.map(|f| f.saturating_add(pages.free_bytes()));
        let verdict = self
            .room
            .verdict(free, pages.used_bytes(), self.full, self.low);
        let used = pages.used_bytes();
        let allowed = match self.ceiling {
            Some(c) => used.saturating_sub(c),
            // The first shedding of a shortage may take a quarter of history at most.
            None => used / 4,
        };
        // A refused write needs room for its batch whatever history has grown.
        let slice = if self.full { (used / 16).max(1) } else { 0 };
        let want = verdict.shed.min(allowed.max(slice));
        if want > 0 {
            match self.shed(want) {
                Ok(rows) => {
                    self.stats.shed.fetch_add(rows, Ordering::Relaxed);
                    // Told once per shortage; then it happens with every batch.
                    if self.low {
                        tracing::debug!(rows, "history: shed the oldest readings");
                    } else {
                        warn!(
                            rows,
                            free_mb = free.map(|f| f / (1 << 20)),
                            "history: short of disk room; the oldest readings were deleted"
                        );
                    }
                }
                Err(e) => self.note_error(format!("shedding history: {e:#}")),
            }
        }
        self.ceiling = match (verdict.low, db_pages(&self.conn)) {
            // Kept from the first shedding: an overshoot must not lower it for good.
            (true, Ok(p)) => Some(self.ceiling.unwrap_or(p.used_bytes())),
            (true, Err(_)) => self.ceiling,
            (false, _) => None,
        };
        if verdict.low != self.low {
            self.low = verdict.low;
            if verdict.low {
                warn!("storage low: history sheds its oldest readings to keep room for alarms and the outbox");
            } else {
                info!("storage has room again");
            }
            self.stats.storage_low.send_replace(verdict.low);
        }
    }

    /// Makes the disk reserve again once there is room for it. On the maintenance tick only:
    /// its megabytes and their fsync would otherwise delay start-up (and READY) or a batch.
    fn keep_reserve(&mut self) {
        if self.low || self.full {
            return;
        }
        if let Some(f) = self.disk_free() {
            self.reserve.restore(f);
        }
    }

    /// The data directory's free bytes, `None` (said once) if they cannot be read.
    fn disk_free(&mut self) -> Option<u64> {
        match self.opts.path.parent().map(space::free_bytes) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) if !self.free_unknown => {
                warn!(error = %e, "cannot read the data directory's free space; history sheds only when a write is refused");
                self.free_unknown = true;
                None
            }
            _ => None,
        }
    }

    /// Deletes readings, oldest first, until about `bytes` are free, and gives the pages back
    /// to the disk. Closed chunks go first, a chunk at a time; the open chunks' readings only
    /// when no closed one is left. Rollups stay: the summaries of what was shed remain.
    fn shed(&mut self, bytes: u64) -> anyhow::Result<u64> {
        let start = db_pages(&self.conn)?;
        let goal = bytes.div_ceil(start.page_size.max(1));
        let mut rows = 0u64;
        while start.used().saturating_sub(db_pages(&self.conn)?.used()) < goal {
            let oldest: Option<i64> =
                self.conn
                    .query_row("SELECT min(key) FROM sample", [], |r| r.get(0))?;
            let n = match oldest {
                Some(k) => self.conn.execute(
                    "DELETE FROM sample WHERE key < ?1",
                    [key::before_chunk(chunk_of(key::unpack(k).1) + 1)],
                )?,
                None => self.conn.execute(
                    "DELETE FROM sample_hot WHERE rowid IN
                       (SELECT rowid FROM sample_hot ORDER BY rowid LIMIT 512)",
                    [],
                )?,
            };
            if n == 0 {
                break;
            }
            rows += n as u64;
            // The pages go back to the disk and the WAL starts over at every step: on a full
            // disk the WAL cannot grow by a whole shedding's worth. (Incremental vacuum is a
            // no-op for a database made before it; the file shrinks at the checkpoint, which
            // a reader may hold back: PASSIVE.)
            self.conn.execute_batch("PRAGMA incremental_vacuum;")?;
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        // The WAL's own blocks too: it keeps its largest size for reuse, which a short disk
        // cannot spare. TRUNCATE waits for readers (up to the busy timeout); a busy answer
        // only means it is given back at a later shedding.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(rows)
    }

    fn insert(&mut self, buf: &[Reading]) -> anyhow::Result<u64> {
        let tx = self.conn.unchecked_transaction()?;
        let mut written = 0;
        // States stored by this transaction; remembered once it commits.
        let mut changed: HashMap<i64, String> = HashMap::new();
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO sample_hot(series, ts, value) VALUES (?1, ?2, ?3)")?;
            let mut state = tx.prepare_cached(
                "INSERT OR REPLACE INTO state_log(series, ts_ms, value) VALUES (?1, ?2, ?3)",
            )?;
            for r in buf {
                let number = r.value.as_f64();
                if number.is_some_and(|v| !v.is_finite()) {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let id = match self.series.get(&*r.device).and_then(|m| m.get(&*r.point)) {
                    Some(&id) => id,
                    None => match create_series(&tx, r)? {
                        Some(id) => {
                            self.series
                                .entry(r.device.clone())
                                .or_default()
                                .insert(r.point.clone(), id);
                            id
                        }
                        None => {
                            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                };
                match (number, &r.value) {
                    (Some(v), _) => {
                        let ts = r.ts.timestamp();
                        stmt.execute(params![id, ts, v])?;
                        // Lowered even if the transaction fails: a floor may only be too low.
                        self.hot_floor = self.hot_floor.min(ts);
                    }
                    (None, Value::Text(t))
                        if changed.get(&id).or(self.states.get(&id)) != Some(t) =>
                    {
                        state.execute(params![id, r.ts.timestamp_millis(), t])?;
                        changed.insert(id, t.clone());
                    }
                    _ => {
                        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                written += 1;
            }
        }
        tx.commit()?;
        self.states.extend(changed);
        Ok(written)
    }

    /// Moves closed chunks and rolls them up; applies retention once an hour (or when forced).
    fn maintain(&mut self, force: bool) -> anyhow::Result<()> {
        let now = (self.opts.clock)();
        let moved = self.move_closed(now)?;
        self.stats.moved.fetch_add(moved as u64, Ordering::Relaxed);
        let due = self
            .last_retention
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
        if force || due {
            self.retention(now)?;
            self.last_retention = Some(Instant::now());
        }
        Ok(())
    }

    /// Moves the arrival table's closed chunks into `sample` and rolls them up. SQLite sorts
    /// the rows into key order itself (spilling to disk if it must), so a chunk of millions of
    /// readings never has to fit in memory; each moved chunk is then summarised from what is
    /// stored for it, series by series, which also takes in readings that arrived late.
    fn move_closed(&mut self, now: i64) -> anyhow::Result<usize> {
        let boundary = chunk_start(chunk_of(now - GRACE_S));
        if self.hot_floor >= boundary {
            return Ok(0);
        }
        let tx = self.conn.unchecked_transaction()?;
        let chunks: Vec<i64> = {
            let mut stmt = tx.prepare_cached(
                "SELECT DISTINCT parkhub_chunk(ts) FROM sample_hot WHERE ts < ?1",
            )?;
            let it = stmt.query_map([boundary], |r| r.get(0))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        if chunks.is_empty() {
            self.hot_floor = boundary;
            return Ok(0);
        }
        // Of two readings of one series in one second, the later arrival wins.
        let moved = tx.execute(
            "INSERT OR REPLACE INTO sample(key, value)
             SELECT parkhub_key(series, ts), value FROM sample_hot WHERE ts < ?1
             ORDER BY 1, rowid",
            [boundary],
        )?;
        tx.execute("DELETE FROM sample_hot WHERE ts < ?1", [boundary])?;

        let tz = self.opts.tz;
        let mut hours = BTreeSet::new();
        let mut days = BTreeSet::new();
        for chunk in chunks {
            let bucket = chunk_start(chunk);
            let mut stmt =
                tx.prepare_cached("SELECT key, value FROM sample WHERE key >= ?1 AND key < ?2")?;
            let mut rows = stmt.query([key::before_chunk(chunk), key::before_chunk(chunk + 1)])?;
            let mut current: Option<i64> = None;
            let mut samples: Vec<(i64, f64)> = Vec::new();
            loop {
                let row = rows.next()?;
                let next = match row {
                    Some(r) => Some((key::unpack(r.get(0)?), r.get::<_, f64>(1)?)),
                    None => None,
                };
                let series = next.map(|((s, _), _)| s);
                if series != current {
                    if let Some(done) = current {
                        self.rollups.bucket(&tx, done, bucket, &samples)?;
                        hours.insert((done, hour_start(tz, bucket)));
                        days.insert((done, day_start(tz, bucket)));
                    }
                    samples.clear();
                    current = series;
                }
                match next {
                    Some(((_, ts), v)) => samples.push((ts, v)),
                    None => break,
                }
            }
        }
        for &(series, hour) in &hours {
            combine_into(&tx, tz, series, PERIOD_5M, PERIOD_HOUR, hour, hour + 3600)?;
        }
        for &(series, day) in &days {
            combine_into(
                &tx,
                tz,
                series,
                PERIOD_HOUR,
                PERIOD_DAY,
                day,
                next_day_start(tz, day),
            )?;
        }
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('moved_until', ?1)
             ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            [boundary],
        )?;
        tx.commit()?;
        self.hot_floor = boundary;
        Ok(moved)
    }

    fn retention(&mut self, now: i64) -> anyhow::Result<()> {
        let r = &self.opts.retention;
        let day = 86_400i64;
        let raw_cut = key::before_chunk(chunk_of(now - i64::from(r.raw_days) * day));
        // Deleted a day of chunks per transaction, so a shortened retention never stalls writes.
        loop {
            let oldest: Option<i64> =
                self.conn
                    .query_row("SELECT min(key) FROM sample", [], |row| row.get(0))?;
            let Some(oldest) = oldest.filter(|&k| k < raw_cut) else {
                break;
            };
            let step = key::before_chunk(chunk_of(key::unpack(oldest).1) + 288);
            let n = self
                .conn
                .execute("DELETE FROM sample WHERE key < ?1", [step.min(raw_cut)])?;
            if n == 0 {
                break;
            }
        }
        let tx = self.conn.unchecked_transaction()?;
        for (period, days) in [
            (PERIOD_5M, r.rollup_5m_days),
            (PERIOD_HOUR, r.hourly_days),
            (PERIOD_DAY, r.daily_days),
        ] {
            summaries::expire(&tx, period, now - i64::from(days) * day)?;
        }
        // States change rarely; they are kept as long as the hourly summaries, except each
        // series' newest, which is still in force however old it is.
        tx.execute(
            "DELETE FROM state_log WHERE ts_ms < ?1
               AND ts_ms < (SELECT max(ts_ms) FROM state_log AS s WHERE s.series = state_log.series)",
            [(now - i64::from(r.hourly_days) * day) * 1000],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// What rolling up remembers between moves.
#[derive(Default)]
struct Rollups {
    counters: HashSet<i64>,
    /// Each series' latest 5-minute bucket and a counter's state at its end: where the next
    /// bucket's consumption starts.
    last_bucket: HashMap<i64, (i64, Option<CounterState>)>,
}

impl Rollups {
    /// The 5-minute rollup of one series' chunk, from every reading stored for it.
    fn bucket(
        &mut self,
        tx: &Transaction<'_>,
        series: i64,
        bucket: i64,
        samples: &[(i64, f64)],
    ) -> anyhow::Result<()> {
        let counter = self.counters.contains(&series);
        let prev = if !counter {
            None
        } else {
            match self.last_bucket.get(&series) {
                Some(&(b, end)) if b < bucket && self.is_latest(series, bucket) => end,
                _ => summaries::counter_state_before(tx, series, bucket)?,
            }
        };
        let Some(agg) = Agg::of(samples, prev, counter) else {
            return Ok(());
        };
        summaries::upsert(tx, series, PERIOD_5M, bucket, &agg)?;
        if self.is_latest(series, bucket) {
            self.last_bucket.insert(series, (bucket, agg.end));
            if counter {
                summaries::save_counter_state(tx, series, bucket, agg.end)?;
            }
        }
        Ok(())
    }

    /// Whether `bucket` is the newest this series has been rolled up to (or newer).
    fn is_latest(&self, series: i64, bucket: i64) -> bool {
        self.last_bucket
            .get(&series)
            .is_none_or(|&(b, _)| b <= bucket)
    }
}

fn create_series(tx: &Transaction<'_>, r: &Reading) -> rusqlite::Result<Option<i64>> {
    tx.execute(
        "INSERT OR IGNORE INTO series(device, point, unit, kind) VALUES (?1, ?2, ?3, 'gauge')",
        params![&*r.device, &*r.point, r.unit.as_deref()],
    )?;
    let id: i64 = tx.query_row(
        "SELECT id FROM series WHERE device = ?1 AND point = ?2",
        params![&*r.device, &*r.point],
        |row| row.get(0),
    )?;
    if id >= MAX_SERIES {
        warn!(device = %r.device, point = %r.point, "history holds its maximum of {} series; this point is not stored", MAX_SERIES - 1);
        return Ok(None);
    }
    Ok(Some(id))
}

/// Summarises the `from` rows of `[lo, hi)` into one `to` row starting at `lo`.
fn combine_into(
    conn: &Connection,
    tz: chrono_tz::Tz,
    series: i64,
    from: i64,
    to: i64,
    lo: i64,
    hi: i64,
) -> rusqlite::Result<()> {
    let parts = summaries::range(conn, tz, series, from, lo, hi)?;
    if let Some(a) = Agg::combine(parts.iter().map(|(_, a)| a)) {
        summaries::upsert(conn, series, to, lo, &a)?;
    }
    Ok(())
}

/// The newest stored state of every text series.
/// The database's pages: its size and what of it is in use.
struct Pages {
    page_size: u64,
    count: u64,
    free: u64,
}

impl Pages {
    fn used(&self) -> u64 {
        self.count.saturating_sub(self.free)
    }
    fn used_bytes(&self) -> u64 {
        self.used() * self.page_size
    }
    fn free_bytes(&self) -> u64 {
        self.free * self.page_size
    }
}

fn db_pages(conn: &Connection) -> rusqlite::Result<Pages> {
    let get = |pragma: &str| -> rusqlite::Result<u64> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
            .map(|v| u64::try_from(v).unwrap_or(0))
    };
    Ok(Pages {
        page_size: get("page_size")?,
        count: get("page_count")?,
        free: get("freelist_count")?,
    })
}

/// Whether an error was SQLite refusing a write for lack of room.
fn is_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .is_some_and(space::is_full)
    })
}

fn last_states(conn: &Connection) -> rusqlite::Result<HashMap<i64, String>> {
    let mut stmt = conn.prepare(
        "SELECT series, value FROM state_log AS s
         WHERE ts_ms = (SELECT max(ts_ms) FROM state_log WHERE series = s.series)",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}
