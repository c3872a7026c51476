//! History on real SQLite files: the writer, rollups in the park's time zone, consumption,
//! retention, late readings.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::DateTime;
use parkhub::config::HistoryConfig;
use parkhub::profile::Kind;
use parkhub::reading::{Reading, Value};
use parkhub::store::{spawn_writer, History, SeriesDef, WriterHandle, WriterOptions};
use tokio::sync::mpsc;

const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

fn ts(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

struct Harness {
    dir: tempfile::TempDir,
    tx: Option<mpsc::Sender<Vec<Reading>>>,
    writer: Option<WriterHandle>,
    now: Arc<AtomicI64>,
}

impl Harness {
    fn start(now: i64, retention: HistoryConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let series = vec![
            SeriesDef {
                device: "em".into(),
                point: "power_total".into(),
                unit: Some("W".into()),
                kind: Kind::Gauge,
            },
            SeriesDef {
                device: "em".into(),
                point: "energy_import".into(),
                unit: Some("kWh".into()),
                kind: Kind::Counter,
            },
        ];
        let clock = Arc::new(AtomicI64::new(now));
        let mut opts = WriterOptions::new(
            dir.path().join("history.sqlite"),
            SHANGHAI,
            retention,
            series,
        );
        let c = clock.clone();
        opts.clock = Arc::new(move || c.load(Ordering::SeqCst));
        let (tx, rx) = mpsc::channel(64);
        let writer = spawn_writer(opts, rx).unwrap();
        Self {
            dir,
            tx: Some(tx),
            writer: Some(writer),
            now: clock,
        }
    }

    async fn send(&self, point: &str, samples: &[(i64, f64)]) {
        let batch = samples
            .iter()
            .map(|&(t, v)| Reading {
                device: "em".into(),
                point: point.into(),
                ts: DateTime::from_timestamp(t, 0).unwrap(),
                value: Value::Number(v),
                unit: None,
            })
            .collect();
        self.tx.as_ref().unwrap().send(batch).await.unwrap();
    }

    async fn flush_at(&self, now: i64) {
        self.now.store(now, Ordering::SeqCst);
        self.writer.as_ref().unwrap().flush().await.unwrap();
    }

    fn history(&self) -> History {
        History::open(&self.dir.path().join("history.sqlite"), SHANGHAI).unwrap()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("history.sqlite")).unwrap()
    }

    async fn stop(mut self) -> tempfile::TempDir {
        drop(self.tx.take());
        self.writer.take().unwrap().join().await.unwrap();
        self.dir
    }
}

fn count(db: &rusqlite::Connection, table: &str) -> i64 {
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn readings_come_back_whether_their_chunk_is_open_or_closed() {
    let now = ts("2026-11-26T10:07:30+08:00");
    let h = Harness::start(now, HistoryConfig::default());
    let samples: Vec<(i64, f64)> = (0..60)
        .map(|i| (now - 590 + i * 10, 1000.0 + i as f64))
        .collect();
    h.send("power_total", &samples).await;
    h.flush_at(now).await;
    // Chunks that closed more than a minute ago were moved; the open one was not.
    let db = h.db();
    assert!(count(&db, "sample") > 0, "closed chunks moved");
    assert!(
        count(&db, "sample_hot") > 0,
        "the open chunk stays in arrival order"
    );
    assert_eq!(count(&db, "sample") + count(&db, "sample_hot"), 60);
    let hist = h.history();
    let s = hist.series("em", "power_total").unwrap().unwrap();
    assert_eq!(s.unit.as_deref(), Some("W"));
    assert_eq!(hist.raw(&s, now - 600, now).unwrap(), samples);
    // The sqlite3 shell's view unpacks the stored keys.
    let via_view: i64 = db
        .query_row(
            "SELECT count(*) FROM sample_v WHERE series = ?1",
            [s.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(via_view, 60);
    h.stop().await;
}

#[tokio::test]
async fn rollups_summarise_five_minutes_local_hours_and_local_days() {
    // Two Shanghai days of a gauge, one reading a minute: value = minute of the local day.
    let day0 = ts("2026-11-24T00:00:00+08:00");
    let h = Harness::start(day0, HistoryConfig::default());
    let samples: Vec<(i64, f64)> = (0..2 * 1440)
        .map(|m| (day0 + m * 60, (m % 1440) as f64))
        .collect();
    for chunk in samples.chunks(500) {
        h.send("power_total", chunk).await;
    }
    h.flush_at(day0 + 2 * 86_400 + 600).await;
    let hist = h.history();
    let s = hist.series("em", "power_total").unwrap().unwrap();

    let five = hist.aggregated(&s, day0, day0 + 3600 - 1, 300).unwrap();
    assert_eq!(five.len(), 12);
    let (start, a) = five[1];
    assert_eq!(start, day0 + 300);
    assert_eq!((a.min, a.max, a.count, a.last), (5.0, 9.0, 5, 9.0));
    assert!((a.avg() - 7.0).abs() < 1e-9);

    let hours = hist.aggregated(&s, day0, day0 + 86_400 - 1, 3600).unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[10].0, ts("2026-11-24T10:00:00+08:00"));
    assert_eq!(
        (hours[10].1.min, hours[10].1.max, hours[10].1.count),
        (600.0, 659.0, 60)
    );

    let days = hist
        .aggregated(&s, day0, day0 + 2 * 86_400 - 1, 86_400)
        .unwrap();
    assert_eq!(
        days.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![day0, day0 + 86_400],
        "days start at Shanghai midnight (16:00 UTC)"
    );
    assert_eq!(
        (days[0].1.min, days[0].1.max, days[0].1.count),
        (0.0, 1439.0, 1440)
    );
    assert!((days[1].1.avg() - 719.5).abs() < 1e-9);

    // Step values: the average per bucket for a gauge.
    let values = hist.values(&s, day0, day0 + 7200 - 1, Some(3600)).unwrap();
    assert_eq!(values, vec![(day0, 29.5), (day0 + 3600, 89.5)]);
    h.stop().await;
}

#[tokio::test]
async fn consumption_per_hour_and_day_never_goes_negative_when_a_meter_is_replaced() {
    let day0 = ts("2026-11-24T00:00:00+08:00");
    let h = Harness::start(day0, HistoryConfig::default());
    // 1 kWh per minute for 3 hours; at 01:30 the meter is replaced by a new one reading 0.
    let mut samples = Vec::new();
    let mut reading = 5000.0;
    for m in 0..180 {
        if m == 90 {
            reading = 0.0;
        } else if m > 0 {
            reading += 1.0;
        }
        samples.push((day0 + m * 60, reading));
    }
    h.send("energy_import", &samples).await;
    h.flush_at(day0 + 86_400 + 120).await;
    let hist = h.history();
    let s = hist.series("em", "energy_import").unwrap().unwrap();
    let hourly = hist
        .consumption(&s, day0, day0 + 3 * 3600 - 1, 3600)
        .unwrap();
    // Hour 0: 59 rises (the first reading has nothing before it); hour 1: 60 minutes minus the
    // replacement step, which counts nothing; hour 2: 60.
    assert_eq!(
        hourly,
        vec![(day0, 59.0), (day0 + 3600, 59.0), (day0 + 7200, 60.0)]
    );
    assert!(hourly.iter().all(|(_, c)| *c >= 0.0));
    let daily = hist
        .consumption(&s, day0, day0 + 86_400 - 1, 86_400)
        .unwrap();
    assert_eq!(daily, vec![(day0, 178.0)]);
    // The raw readings keep the step back as it happened.
    let raw = hist.raw(&s, day0 + 89 * 60, day0 + 91 * 60).unwrap();
    assert_eq!(
        raw,
        vec![
            (day0 + 89 * 60, 5089.0),
            (day0 + 90 * 60, 0.0),
            (day0 + 91 * 60, 1.0)
        ]
    );
    // A gauge has no consumption.
    let g = hist.series("em", "power_total").unwrap();
    assert!(g.is_none() || hist.consumption(&g.unwrap(), day0, day0 + 1, 3600).is_err());
    h.stop().await;
}

#[tokio::test]
async fn consumption_continues_across_a_restart_of_the_writer() {
    let day0 = ts("2026-11-24T00:00:00+08:00");
    let h = Harness::start(day0, HistoryConfig::default());
    h.send(
        "energy_import",
        &(0..60)
            .map(|m| (day0 + m * 60, 100.0 + m as f64))
            .collect::<Vec<_>>(),
    )
    .await;
    h.flush_at(day0 + 3600 + 120).await;
    let dir = h.stop().await;

    // A new writer on the same file: its first bucket's consumption starts from the last value.
    let series = vec![SeriesDef {
        device: "em".into(),
        point: "energy_import".into(),
        unit: Some("kWh".into()),
        kind: Kind::Counter,
    }];
    let mut opts = WriterOptions::new(
        dir.path().join("history.sqlite"),
        SHANGHAI,
        HistoryConfig::default(),
        series,
    );
    opts.clock = Arc::new(move || day0 + 2 * 3600 + 120);
    let (tx, rx) = mpsc::channel(4);
    let writer = spawn_writer(opts, rx).unwrap();
    let batch = (60..120)
        .map(|m| Reading {
            device: "em".into(),
            point: "energy_import".into(),
            ts: DateTime::from_timestamp(day0 + m * 60, 0).unwrap(),
            value: Value::Number(100.0 + m as f64),
            unit: None,
        })
        .collect();
    tx.send(batch).await.unwrap();
    writer.flush().await.unwrap();
    let hist = History::open(&dir.path().join("history.sqlite"), SHANGHAI).unwrap();
    let s = hist.series("em", "energy_import").unwrap().unwrap();
    assert_eq!(
        hist.consumption(&s, day0, day0 + 7199, 3600).unwrap(),
        vec![(day0, 59.0), (day0 + 3600, 60.0)]
    );
    drop(tx);
    writer.join().await.unwrap();
}

#[tokio::test]
async fn retention_drops_old_readings_but_keeps_their_rollups() {
    let old = ts("2026-11-20T12:00:00+08:00");
    let retention = HistoryConfig {
        raw_days: 2,
        ..HistoryConfig::default()
    };
    let h = Harness::start(old, retention);
    h.send(
        "power_total",
        &(0..120).map(|m| (old + m * 60, 50.0)).collect::<Vec<_>>(),
    )
    .await;
    h.flush_at(old + 3 * 3600).await;
    let hist = h.history();
    let s = hist.series("em", "power_total").unwrap().unwrap();
    assert_eq!(hist.raw(&s, old, old + 7200).unwrap().len(), 120);
    // Four days later the raw readings are gone; the hourly summaries remain.
    let later = old + 4 * 86_400;
    h.send("power_total", &[(later - 30, 60.0)]).await;
    h.flush_at(later).await;
    assert!(hist.raw(&s, old, old + 7200).unwrap().is_empty());
    let hours = hist.aggregated(&s, old, old + 7199, 3600).unwrap();
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[0].1.count, 60);
    assert_eq!(
        hist.raw(&s, later - 60, later).unwrap(),
        vec![(later - 30, 60.0)]
    );
    h.stop().await;
}

#[tokio::test]
async fn a_late_reading_rebuilds_the_bucket_it_belongs_to() {
    let t0 = ts("2026-11-24T09:00:00+08:00");
    let h = Harness::start(t0, HistoryConfig::default());
    h.send("power_total", &[(t0 + 10, 1.0), (t0 + 20, 3.0)])
        .await;
    h.flush_at(t0 + 1200).await;
    let hist = h.history();
    let s = hist.series("em", "power_total").unwrap().unwrap();
    assert_eq!(
        hist.aggregated(&s, t0, t0 + 299, 300).unwrap()[0].1.count,
        2
    );
    // A reading for that closed bucket arrives late (a slow line, a clock fixed by NTP).
    h.send("power_total", &[(t0 + 30, 8.0)]).await;
    h.flush_at(t0 + 1500).await;
    let b = hist.aggregated(&s, t0, t0 + 299, 300).unwrap()[0].1;
    assert_eq!((b.count, b.min, b.max), (3, 1.0, 8.0));
    let hour = hist.aggregated(&s, t0, t0 + 3599, 3600).unwrap()[0].1;
    assert_eq!(hour.count, 3);
    h.stop().await;
}

#[tokio::test]
async fn text_values_are_stored_as_their_changes_and_unknown_points_get_a_series() {
    let t0 = ts("2026-11-24T09:00:00+08:00");
    let h = Harness::start(t0, HistoryConfig::default());
    let reading = |point: &str, t: i64, value: Value| Reading {
        device: "wm".into(),
        point: point.into(),
        ts: DateTime::from_timestamp(t, 0).unwrap(),
        value,
        unit: None,
    };
    let text = |s: &str| Value::Text(s.into());
    let batch = vec![
        reading("pipe_status", t0, text("full")),
        Reading {
            unit: Some("m³/h".into()),
            ..reading("flow_rate", t0, Value::Number(1.5))
        },
        Reading {
            device: "door".into(),
            ..reading("open", t0, Value::Bool(true))
        },
        // Polled again and again: one state, stored once.
        reading("pipe_status", t0 + 5, text("full")),
        reading("pipe_status", t0 + 10, text("full")),
    ];
    h.tx.as_ref().unwrap().send(batch).await.unwrap();
    h.tx.as_ref()
        .unwrap()
        .send(vec![
            reading("pipe_status", t0 + 20, text("empty")),
            reading("pipe_status", t0 + 30, text("full")),
            reading("pipe_status", t0 + 40, Value::Number(f64::NAN)),
            // A fault and its clearing within one second: two changes, in their order.
            Reading {
                ts: DateTime::from_timestamp_millis(t0 * 1000 + 50_200).unwrap(),
                ..reading("pipe_status", 0, text("fault"))
            },
            Reading {
                ts: DateTime::from_timestamp_millis(t0 * 1000 + 50_700).unwrap(),
                ..reading("pipe_status", 0, text("full"))
            },
        ])
        .await
        .unwrap();
    h.flush_at(t0 + 60).await;
    let stats = h.writer.as_ref().unwrap().stats().clone();
    assert_eq!(
        stats.skipped.load(Ordering::Relaxed),
        3,
        "two repeats and a NaN"
    );
    assert_eq!(stats.written.load(Ordering::Relaxed), 7);
    let hist = h.history();
    let flow = hist.series("wm", "flow_rate").unwrap().unwrap();
    assert_eq!(flow.unit.as_deref(), Some("m³/h"));
    assert_eq!(hist.raw(&flow, t0, t0).unwrap(), vec![(t0, 1.5)]);
    let door = hist.series("door", "open").unwrap().unwrap();
    assert_eq!(hist.raw(&door, t0, t0).unwrap(), vec![(t0, 1.0)]);
    let pipe = hist.series("wm", "pipe_status").unwrap().unwrap();
    assert!(hist.raw(&pipe, t0, t0 + 60).unwrap().is_empty());
    assert_eq!(
        hist.states(&pipe, t0, t0 + 60).unwrap(),
        vec![
            (t0, "full".to_string()),
            (t0 + 20, "empty".to_string()),
            (t0 + 30, "full".to_string()),
            (t0 + 50, "fault".to_string()),
            (t0 + 50, "full".to_string())
        ]
    );
    assert_eq!(
        hist.states(&pipe, t0 + 25, t0 + 30).unwrap(),
        vec![
            (t0 + 20, "empty".to_string()),
            (t0 + 30, "full".to_string())
        ],
        "the state in force at the start comes first"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_meter_answering_zero_once_adds_no_phantom_consumption() {
    let t0 = ts("2026-11-24T09:00:00+08:00");
    let h = Harness::start(t0, HistoryConfig::default());
    // 12 345 kWh, a power-up glitch of 0 at the end of a five-minute bucket, then on as before.
    let samples = [
        (t0, 12_345.0),
        (t0 + 60, 12_346.0),
        (t0 + 290, 0.0),
        (t0 + 310, 12_347.0),
        (t0 + 600, 12_348.0),
    ];
    h.send("energy_import", &samples).await;
    h.flush_at(t0 + 3600 + 120).await;
    let hist = h.history();
    let s = hist.series("em", "energy_import").unwrap().unwrap();
    assert_eq!(
        hist.consumption(&s, t0, t0 + 3599, 3600).unwrap(),
        vec![(t0, 3.0)]
    );
    let five = hist.consumption(&s, t0, t0 + 3599, 300).unwrap();
    assert_eq!(
        five.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        vec![1.0, 1.0, 1.0]
    );
    h.stop().await;
}

#[tokio::test]
async fn summaries_too_are_dropped_after_their_own_retention() {
    let old = ts("2026-10-01T12:00:00+08:00");
    let retention = HistoryConfig {
        raw_days: 1,
        rollup_5m_days: 3,
        hourly_days: 10,
        daily_days: 3650,
        ..HistoryConfig::default()
    };
    let h = Harness::start(old, retention);
    h.send(
        "power_total",
        &(0..60).map(|m| (old + m * 60, 5.0)).collect::<Vec<_>>(),
    )
    .await;
    h.flush_at(old + 7200).await;
    let hist = h.history();
    let s = hist.series("em", "power_total").unwrap().unwrap();
    let count = |period: i64| -> i64 {
        h.db()
            .query_row(
                "SELECT count(*) FROM rollup WHERE series = ?1 AND period = ?2",
                [s.id, period],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!((count(300), count(3600), count(86_400)), (12, 1, 1));
    // Five days on: 5-minute summaries are gone, hourly and daily ones stay.
    h.flush_at(old + 5 * 86_400).await;
    assert_eq!((count(300), count(3600), count(86_400)), (0, 1, 1));
    // Eleven days on: only the daily one.
    h.flush_at(old + 11 * 86_400).await;
    assert_eq!((count(300), count(3600), count(86_400)), (0, 0, 1));
    h.stop().await;
}

#[tokio::test]
async fn a_query_far_beyond_what_is_stored_returns_what_is_stored() {
    let t0 = ts("2026-11-24T09:00:00+08:00");
    let h = Harness::start(t0, HistoryConfig::default());
    h.send("power_total", &[(t0, 1.0), (t0 + 400, 2.0)]).await;
    h.flush_at(t0 + 400).await;
    let hist = h.history();
    let s = hist.series("em", "power_total").unwrap().unwrap();
    // Walks the stored chunks only, not the billions of empty ones up to i64::MAX.
    assert_eq!(
        hist.raw(&s, 0, i64::MAX).unwrap(),
        vec![(t0, 1.0), (t0 + 400, 2.0)]
    );
    assert_eq!(hist.raw(&s, i64::MIN, i64::MAX).unwrap().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn retention_keeps_a_state_still_in_force_however_old() {
    let old = ts("2026-11-01T09:00:00+08:00");
    let retention = HistoryConfig {
        hourly_days: 2,
        ..HistoryConfig::default()
    };
    let h = Harness::start(old, retention);
    let state = |t: i64, v: &str| Reading {
        device: "wm".into(),
        point: "pipe_status".into(),
        ts: DateTime::from_timestamp(t, 0).unwrap(),
        value: Value::Text(v.into()),
        unit: None,
    };
    h.tx.as_ref()
        .unwrap()
        .send(vec![state(old, "empty"), state(old + 60, "full")])
        .await
        .unwrap();
    h.flush_at(old + 120).await;
    // Ten days on, with retention run: the old change is gone, the state in force is not.
    let later = old + 10 * 86_400;
    h.send("power_total", &[(later - 30, 1.0)]).await;
    h.flush_at(later).await;
    let hist = h.history();
    let pipe = hist.series("wm", "pipe_status").unwrap().unwrap();
    assert_eq!(
        hist.states(&pipe, old - 60, later).unwrap(),
        vec![(old + 60, "full".to_string())],
        "`empty` went with retention; `full` is still in force"
    );
    h.stop().await;
}
