//! The alarm engine: one task that owns every alarm. It takes the hub's readings and status
//! changes, runs each rule's condition and delays, moves alarms through their lifecycle,
//! stores every transition, and hands pushes to the outbox — grouped, inhibited, escalated and
//! repeated as the routes say. Operators' commands (acknowledge, shelve, maintenance) come in
//! on a channel of their own and are answered once stored.
//!
//! One task and no locks: every alarm decision is made in order, so two events can never race
//! on one alarm. Timers (delays, escalation, repeats, shelves, maintenance windows) sit in one
//! `DelayQueue`, which tokio's paused clock drives in the tests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};
use tracing::{debug, error, info, warn};

use super::condition::{Cond, Debounce, Tracker, Verdict};
use super::lifecycle::{Input, Life};
use super::route::{self, Inhibit, Labels, Matcher, Route, Routing};
use super::rules::{Rule, RuleList, Target};
use super::store::{AlarmRow, AlarmStore, EventRow, Maintenance, OutboxRow, Shelf};
use super::{is_urgent, AlarmKey, AlarmState, Category, EventKind, Scope, Severity};
use crate::config::{Language, Loaded, Location, RouteConfig, RouteMatch};
use crate::live::{LiveEvent, LiveSender};
use crate::notify::{message, Notifier, Push};
use crate::reading::{Reading, Value};
use crate::uplink::record::AlarmOut;
use crate::uplink::UplinkFeed;

/// What the hub tells the engine.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// Readings of points some rule watches.
    Readings(Vec<Reading>),
    /// A device went online or offline.
    Device {
        id: Arc<str>,
        online: bool,
        reason: Option<String>,
    },
    /// A bus (an RS-485 line, a gateway) went down or came back.
    Bus { id: Arc<str>, online: bool },
    /// A condition of the hub itself (`rule`) holds or is gone.
    Hub { rule: Arc<str>, active: bool },
}

/// The hub's side of the engine: it forwards readings of watched points and status changes.
/// Unbounded because the hub's sources must never wait on alarms; what goes in is filtered to
/// watched points, and the engine takes far more than the hub can produce (see the alarm bench).
#[derive(Debug, Clone)]
pub struct AlarmFeed {
    tx: mpsc::UnboundedSender<HubEvent>,
    watched: Arc<HashMap<Arc<str>, Vec<Target>>>,
}

impl AlarmFeed {
    pub fn new(cfg: &EngineConfig) -> (Self, mpsc::UnboundedReceiver<HubEvent>) {
        let watched = cfg
            .devices
            .iter()
            .map(|(id, d)| {
                let targets = d
                    .rules
                    .iter()
                    .filter(|r| r.cond.on_readings())
                    .map(|r| r.target.clone())
                    .collect();
                (id.clone(), targets)
            })
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                watched: Arc::new(watched),
            },
            rx,
        )
    }

    /// Whether a rule watches this point of this device.
    pub fn wants(&self, device: &str, point: &str) -> bool {
        self.watched
            .get(device)
            .is_some_and(|t| t.iter().any(|t| t.watches(point)))
    }

    pub fn readings(&self, batch: &[Reading]) {
        let watched: Vec<Reading> = batch
            .iter()
            .filter(|r| self.wants(&r.device, &r.point))
            .cloned()
            .collect();
        if !watched.is_empty() {
            // The engine gone means the hub is stopping.
            let _ = self.tx.send(HubEvent::Readings(watched));
        }
    }

    pub fn device(&self, id: Arc<str>, online: bool, reason: Option<String>) {
        let _ = self.tx.send(HubEvent::Device { id, online, reason });
    }

    pub fn bus(&self, id: Arc<str>, online: bool) {
        let _ = self.tx.send(HubEvent::Bus { id, online });
    }

    pub fn hub(&self, rule: &str, active: bool) {
        let _ = self.tx.send(HubEvent::Hub {
            rule: Arc::from(rule),
            active,
        });
    }
}

/// Why an operator's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no alarm {0}")]
    NotFound(i64),
    #[error("alarm {0} is closed")]
    Closed(i64),
    #[error("alarm {0} is already acknowledged")]
    AlreadyAcked(i64),
    #[error("no device `{0}`")]
    NoDevice(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the alarm database failed: {0}")]
    Store(String),
    #[error("the alarm engine has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// The longest maintenance window with an end (30 days): a forgotten device is better put
/// back after a month than silenced for ever, and timers much longer than that are refused by
/// the `DelayQueue` (about two years). Longer work is "until put back".
pub const MAX_MAINTENANCE_MINUTES: u64 = 43_200;

/// What operators ask of the engine.
#[derive(Debug)]
pub enum Command {
    Ack {
        id: i64,
        who: String,
        comment: Option<String>,
        reply: Reply<AlarmRow>,
    },
    Shelve {
        id: i64,
        who: String,
        minutes: u64,
        reason: String,
        reply: Reply<AlarmRow>,
    },
    /// Takes a device out of service (`on`) for `minutes` (or until put back), or puts it back.
    Maintenance {
        device: String,
        on: bool,
        who: String,
        reason: String,
        minutes: Option<u64>,
        reply: Reply<()>,
    },
    /// Answered at once: the engine's loop is turning (the service watchdog asks).
    Ping { reply: Reply<()> },
}

/// Sends commands to the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

impl EngineHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }

    /// Whether the engine answers: its loop is turning, not stuck or gone.
    pub async fn ping(&self) -> Result<(), CommandError> {
        self.ask(|reply| Command::Ping { reply }).await
    }

    pub async fn ack(
        &self,
        id: i64,
        who: &str,
        comment: Option<String>,
    ) -> Result<AlarmRow, CommandError> {
        let who = who.to_string();
        self.ask(|reply| Command::Ack {
            id,
            who,
            comment,
            reply,
        })
        .await
    }

    pub async fn shelve(
        &self,
        id: i64,
        who: &str,
        minutes: u64,
        reason: String,
    ) -> Result<AlarmRow, CommandError> {
        let who = who.to_string();
        self.ask(|reply| Command::Shelve {
            id,
            who,
            minutes,
            reason,
            reply,
        })
        .await
    }

    pub async fn maintenance(
        &self,
        device: &str,
        on: bool,
        who: &str,
        reason: String,
        minutes: Option<u64>,
    ) -> Result<(), CommandError> {
        let (device, who) = (device.to_string(), who.to_string());
        self.ask(|reply| Command::Maintenance {
            device,
            on,
            who,
            reason,
            minutes,
            reply,
        })
        .await
    }
}

/// What the engine knows of a device.
#[derive(Debug, Clone)]
pub struct DeviceMeta {
    pub name: Arc<str>,
    pub bus: Option<Arc<str>>,
    pub location: Arc<Location>,
    /// The location's labels, shared by every slot of the device.
    pub place: Place,
    pub rules: RuleList,
}

/// The parts of a location that routes match on.
#[derive(Debug, Clone, Default)]
pub struct Place {
    pub building: Option<Arc<str>>,
    pub floor: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
}

impl Place {
    pub fn of(l: &Location) -> Self {
        Self {
            building: l.building.as_deref().map(Arc::from),
            floor: l.floor.as_deref().map(Arc::from),
            zone: l.zone.as_deref().map(Arc::from),
        }
    }
}

/// Everything the engine runs on, from the checked config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub hub_id: String,
    pub tz: Tz,
    pub language: Language,
    pub devices: HashMap<Arc<str>, DeviceMeta>,
    pub buses: HashMap<Arc<str>, RuleList>,
    /// The hub's own rules (its uplink).
    pub hub_rules: Vec<Arc<Rule>>,
    pub routes: Vec<Route>,
    pub inhibits: Vec<Inhibit>,
    /// Department → its channels.
    pub departments: HashMap<String, Vec<String>>,
    pub group_window: Duration,
    /// Re-alarm of unacknowledged urgent alarms, where no route says otherwise.
    pub repeat_urgent: Option<Duration>,
    pub max_shelve_minutes: u64,
    pub keep: Duration,
}

fn matcher(m: &RouteMatch) -> Matcher {
    Matcher(
        m.pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn route_of(r: &RouteConfig) -> Route {
    Route {
        matcher: matcher(&r.matcher),
        departments: r.departments.clone(),
        continue_matching: r.continue_matching,
        escalate_after: r.escalate_after_s.map(Duration::from_secs),
        escalate_to: r.escalate_to.clone(),
        repeat_after: r.repeat_after_s.map(Duration::from_secs),
        children: r.route.iter().map(route_of).collect(),
    }
}

impl EngineConfig {
    pub fn from_loaded(loaded: &Loaded) -> Self {
        let cfg = &loaded.config;
        let rules = |list: Option<&RuleList>| -> RuleList { list.cloned().unwrap_or_default() };
        let devices = cfg
            .devices
            .iter()
            .filter(|d| d.enabled)
            .map(|d| {
                (
                    Arc::from(d.id.as_str()),
                    DeviceMeta {
                        name: Arc::from(d.display_name()),
                        bus: d.bus.as_deref().map(Arc::from),
                        location: Arc::new(d.location.clone()),
                        place: Place::of(&d.location),
                        rules: rules(loaded.alarm_rules.devices.get(&d.id)),
                    },
                )
            })
            .collect();
        let buses = cfg
            .buses
            .iter()
            .map(|b| {
                (
                    Arc::from(b.id.as_str()),
                    rules(loaded.alarm_rules.buses.get(&b.id)),
                )
            })
            .collect();
        let mut inhibits = vec![Inhibit::bus_explains_its_devices()];
        inhibits.extend(cfg.inhibits.iter().map(|i| Inhibit {
            source: matcher(&i.source),
            target: matcher(&i.target),
            equal: i.equal.clone(),
        }));
        let a = &cfg.alarms;
        Self {
            hub_id: cfg.hub.id.clone(),
            tz: cfg.hub.timezone.0,
            language: cfg.hub.language,
            devices,
            buses,
            hub_rules: vec![
                Arc::new(super::rules::uplink_backlog_rule()),
                Arc::new(super::rules::storage_low_rule()),
            ],
            routes: cfg.routes.iter().map(route_of).collect(),
            inhibits,
            departments: cfg
                .departments
                .iter()
                .map(|d| (d.id.clone(), d.channels.clone()))
                .collect(),
            group_window: Duration::from_secs(a.group_window_s),
            repeat_urgent: (a.repeat_urgent_s > 0).then(|| Duration::from_secs(a.repeat_urgent_s)),
            max_shelve_minutes: a.max_shelve_minutes,
            keep: Duration::from_secs(u64::from(a.keep_days) * 86_400),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    Debounce(AlarmKey),
    Escalate(AlarmKey),
    Repeat(AlarmKey),
    Unshelve(AlarmKey),
    MaintenanceEnd(Arc<str>),
    /// An alarm whose source of inhibition has cleared: told then if it still holds.
    Release(AlarmKey),
    Prune,
}

/// How long an alarm explained by another (a device behind a dead bus) waits, once that other
/// clears, before it is told as its own: a device behind a bus that came back answers at its
/// next poll, which back-off may hold off for a minute or more. Without the wait every device
/// of a recovered line would be pushed as offline, and cleared, moments later.
pub const RELEASE_GRACE: Duration = Duration::from_secs(180);

/// An alarm that exists (not yet normal).
#[derive(Debug)]
struct Open {
    row: AlarmRow,
    life: Life,
    routing: Routing,
    escalate: Option<delay_queue::Key>,
    repeat: Option<delay_queue::Key>,
    release: Option<delay_queue::Key>,
    /// Whether its departments were told it was raised: an alarm suppressed only after that
    /// still tells them of its acknowledgement and its end.
    told: bool,
}

/// One rule on one device's point (or the device, or a bus).
#[derive(Debug)]
struct Slot {
    rule: Arc<Rule>,
    labels: Labels,
    device_name: Arc<str>,
    location: Arc<Location>,
    tracker: Tracker,
    debounce: Debounce,
    debounce_timer: Option<delay_queue::Key>,
    /// The value that last decided the condition.
    value: serde_json::Value,
    /// Boxed: an open alarm's row is most of a slot's size, and most slots are never open.
    open: Option<Box<Open>>,
}

/// The per-channel window that non-urgent pushes are grouped in.
#[derive(Debug, Clone, Copy)]
struct Window {
    group: i64,
    not_before: DateTime<Utc>,
    /// When the window closes, on the engine's clock (the one its timers and tests run on).
    closes: Instant,
}

pub struct Engine {
    cfg: EngineConfig,
    store: Arc<AlarmStore>,
    notifier: Notifier,
    uplink: Option<UplinkFeed>,
    live: Option<LiveSender>,
    /// Each siren channel with the alarms that have sounded it and wait for acknowledgement.
    sirens: Vec<(String, HashSet<i64>)>,
    /// A slot per rule per point: 12 000 for 2 000 sensors. Sized for the config's rules at the
    /// start, because growing it on the first readings held the old table and the new one at
    /// once (22 MB of the MQTT benchmark's peak, heaptrack).
    slots: HashMap<AlarmKey, Slot>,
    by_id: HashMap<i64, AlarmKey>,
    /// Active alarms that may inhibit others.
    sources: HashSet<AlarmKey>,
    shelves: HashMap<AlarmKey, (Shelf, delay_queue::Key)>,
    maintenance: HashMap<Arc<str>, (Maintenance, Option<delay_queue::Key>)>,
    timers: DelayQueue<Timer>,
    windows: HashMap<String, Window>,
    next_group: i64,
    next_synthetic: i64,
}

impl Engine {
    pub fn new(cfg: EngineConfig, store: Arc<AlarmStore>, notifier: Notifier) -> Self {
        let mut sirens: Vec<String> = cfg
            .departments
            .values()
            .flatten()
            .filter(|c| notifier.is_siren(c))
            .cloned()
            .collect();
        sirens.sort();
        sirens.dedup();
        let sirens = sirens.into_iter().map(|s| (s, HashSet::new())).collect();
        // Group ids of this run: negative (the outbox's own ids are positive) and below any
        // an earlier run can have used, so groups of two runs never merge.
        let start = -Utc::now().timestamp_millis().saturating_mul(1000);
        let rules = cfg.devices.values().map(|d| d.rules.len()).sum::<usize>()
            + cfg.buses.values().map(|r| r.len()).sum::<usize>()
            + cfg.hub_rules.len();
        Self {
            slots: HashMap::with_capacity(rules),
            cfg,
            store,
            notifier,
            uplink: None,
            live: None,
            sirens,
            by_id: HashMap::new(),
            sources: HashSet::new(),
            shelves: HashMap::new(),
            maintenance: HashMap::new(),
            timers: DelayQueue::new(),
            windows: HashMap::new(),
            next_group: start,
            next_synthetic: start,
        }
    }

    /// Sends every alarm transition to the cloud too.
    pub fn with_uplink(mut self, uplink: Option<UplinkFeed>) -> Self {
        self.uplink = uplink;
        self
    }

    /// Tells every stored alarm's transition to whoever watches live (the console).
    pub fn with_live(mut self, live: LiveSender) -> Self {
        self.live = Some(live);
        self
    }

    /// Starts the engine; returns the handle for commands and the task to spawn.
    pub fn start(
        self,
        events: mpsc::UnboundedReceiver<HubEvent>,
        shutdown: CancellationToken,
    ) -> (EngineHandle, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(64);
        (EngineHandle { tx }, self.run(events, rx, shutdown))
    }

    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<HubEvent>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        self.resume();
        self.timers.insert(Timer::Prune, Duration::from_secs(60));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(cmd) = commands.recv() => self.command(cmd),
                Some(t) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    self.timer(t.into_inner());
                }
                ev = events.recv() => match ev {
                    Some(ev) => self.event(ev),
                    None => break,
                },
            }
        }
    }

    // ---- restart ----

    /// Carries alarms, shelves and maintenance windows over a restart: an alarm still open is
    /// the same alarm, not a new one.
    fn resume(&mut self) {
        let now = Utc::now();
        match self.store.open_alarms() {
            Ok(rows) => {
                let n = rows.len();
                for row in rows {
                    self.resume_alarm(row, now);
                }
                if n > 0 {
                    info!(alarms = n, "alarms carried over from the last run");
                }
            }
            Err(e) => error!(error = %e, "cannot read open alarms; they are not carried over"),
        }
        match self.store.shelves() {
            Ok(shelves) => {
                for s in shelves {
                    let wait = until(s.until, now);
                    let key = self.timers.insert(Timer::Unshelve(s.key.clone()), wait);
                    self.shelves.insert(s.key.clone(), (s, key));
                }
            }
            Err(e) => error!(error = %e, "cannot read shelved alarms"),
        }
        match self.store.maintenance() {
            Ok(list) => {
                for m in list {
                    let device: Arc<str> = Arc::from(m.device.as_str());
                    let timer = m.until.map(|end| {
                        self.timers
                            .insert(Timer::MaintenanceEnd(device.clone()), until(end, now))
                    });
                    self.maintenance.insert(device, (m, timer));
                }
            }
            Err(e) => error!(error = %e, "cannot read devices in maintenance"),
        }
        let keys: Vec<AlarmKey> = self.by_id.values().cloned().collect();
        for key in keys {
            self.arm(&key);
            // Explained by an alarm that has since gone (cleared, or its rule removed): told
            // after the grace, as if its source had just cleared.
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            let waiting = slot
                .open
                .as_ref()
                .is_some_and(|o| o.row.suppressed && o.row.condition);
            if waiting && !self.inhibited(&key, &slot.labels.clone()) {
                self.schedule_release(&key);
            }
        }
        self.update_sirens();
    }

    fn resume_alarm(&mut self, mut row: AlarmRow, now: DateTime<Utc>) {
        let key = row.key.clone();
        if self.ensure_slot(&key).is_none() {
            // Its device or rule is gone from the config: nobody can clear it any more.
            row.state = AlarmState::Normal;
            row.closed_at = Some(now);
            let ev = EventRow {
                ts: now,
                event: EventKind::OutOfService.as_str().into(),
                who: Some("parkhub".into()),
                comment: Some("rule or device removed from the config".into()),
            };
            self.save(&row, Some(&ev));
            return;
        }
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.debounce = Debounce::new(row.condition, Instant::now());
        slot.tracker = Tracker::resumed(row.condition);
        if let Some(v) = row
            .value
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
        {
            slot.value = v;
        }
        let routing = route::route(&self.cfg.routes, &slot.labels);
        let suppressed = row.suppressed;
        let source = row.condition
            && self
                .cfg
                .inhibits
                .iter()
                .any(|i| i.source.matches(&slot.labels));
        self.by_id.insert(row.id, key.clone());
        slot.open = Some(Box::new(Open {
            life: Life {
                state: row.state,
                condition: row.condition,
                latched: row.latched,
            },
            row,
            routing,
            escalate: None,
            repeat: None,
            release: None,
            // Carried over: what was not suppressed was told in the last run.
            told: !suppressed,
        }));
        if source {
            self.sources.insert(key);
        }
    }

    // ---- slots ----

    /// The slot of `key`, made on first use; `None` if the config has no such rule.
    fn ensure_slot(&mut self, key: &AlarmKey) -> Option<&mut Slot> {
        if !self.slots.contains_key(key) {
            let slot = self.make_slot(key)?;
            self.slots.insert(key.clone(), slot);
        }
        self.slots.get_mut(key)
    }

    fn make_slot(&self, key: &AlarmKey) -> Option<Slot> {
        let (rule, name, location, place, bus) = match &key.scope {
            Scope::Device(id) => {
                let d = self.cfg.devices.get(id)?;
                let rule = d.rules.iter().find(|r| r.id == key.rule)?;
                (
                    rule.clone(),
                    d.name.clone(),
                    d.location.clone(),
                    d.place.clone(),
                    d.bus.clone(),
                )
            }
            Scope::Bus(id) => {
                let rule = self.cfg.buses.get(id)?.iter().find(|r| r.id == key.rule)?;
                (
                    rule.clone(),
                    id.clone(),
                    Arc::default(),
                    Place::default(),
                    Some(id.clone()),
                )
            }
            Scope::Hub(id) => {
                let rule = self.cfg.hub_rules.iter().find(|r| r.id == key.rule)?;
                (
                    rule.clone(),
                    id.clone(),
                    Arc::default(),
                    Place::default(),
                    None,
                )
            }
        };
        let labels = Labels {
            category: rule.category,
            severity: rule.severity,
            rule: rule.id.clone(),
            device: key.scope.id().clone(),
            bus,
            building: place.building,
            floor: place.floor,
            zone: place.zone,
        };
        Some(Slot {
            rule,
            labels,
            device_name: name,
            location,
            tracker: Tracker::default(),
            debounce: Debounce::new(false, Instant::now()),
            debounce_timer: None,
            value: serde_json::Value::Null,
            open: None,
        })
    }

    // ---- events ----

    fn event(&mut self, ev: HubEvent) {
        match ev {
            HubEvent::Readings(batch) => {
                for r in batch {
                    self.reading(&r);
                }
            }
            HubEvent::Device { id, online, reason } => {
                debug!(device = %id, online, reason = reason.as_deref().unwrap_or(""), "device status");
                let rules = self.cfg.devices.get(&id).map(|d| {
                    d.rules
                        .iter()
                        .filter(|r| r.cond == Cond::Offline)
                        .map(|r| r.id.clone())
                        .collect()
                });
                self.status(Scope::Device(id), rules.unwrap_or_default(), online);
            }
            HubEvent::Bus { id, online } => {
                let rules = self
                    .cfg
                    .buses
                    .get(&id)
                    .map(|rules| rules.iter().map(|r| r.id.clone()).collect());
                self.status(Scope::Bus(id), rules.unwrap_or_default(), online);
            }
            HubEvent::Hub { rule, active } => {
                let key = AlarmKey {
                    scope: Scope::Hub(Arc::from(self.cfg.hub_id.as_str())),
                    rule,
                    point: None,
                };
                self.feed(&key, active, serde_json::Value::Bool(active));
            }
        }
    }

    /// A device or bus went offline or came back: its offline rules follow.
    fn status(&mut self, scope: Scope, rules: Vec<Arc<str>>, online: bool) {
        for rule in rules {
            let key = AlarmKey {
                scope: scope.clone(),
                rule,
                point: None,
            };
            self.feed(&key, !online, serde_json::Value::Bool(online));
        }
    }

    fn reading(&mut self, r: &Reading) {
        let Some(d) = self.cfg.devices.get(&r.device) else {
            return;
        };
        let rules: Vec<Arc<Rule>> = d
            .rules
            .iter()
            .filter(|rule| rule.cond.on_readings() && rule.target.watches(&r.point))
            .cloned()
            .collect();
        for rule in rules {
            let key = AlarmKey {
                scope: Scope::Device(r.device.clone()),
                rule: rule.id.clone(),
                point: Some(r.point.clone()),
            };
            let tz = self.cfg.tz;
            let Some(slot) = self.ensure_slot(&key) else {
                continue;
            };
            if let Some(raw) = slot.tracker.on_value(&rule.cond, &r.value, r.ts, tz) {
                self.feed(&key, raw, json_value(&r.value));
            }
        }
    }

    /// The raw condition of `key` as of now.
    fn feed(&mut self, key: &AlarmKey, raw: bool, value: serde_json::Value) {
        let now = Instant::now();
        let Some(slot) = self.ensure_slot(key) else {
            return;
        };
        slot.value = value;
        let (on, off) = (slot.rule.on_delay, slot.rule.off_delay);
        let verdict = slot.debounce.feed(raw, now, on, off);
        self.verdict(key, verdict);
    }

    fn verdict(&mut self, key: &AlarmKey, verdict: Verdict) {
        match verdict {
            Verdict::Unchanged => {}
            Verdict::Changed(on) => self.change(key, on),
            Verdict::CheckAt(at) => {
                let Some(slot) = self.slots.get_mut(key) else {
                    return;
                };
                match &slot.debounce_timer {
                    Some(t) => self.timers.reset_at(t, at),
                    None => {
                        slot.debounce_timer =
                            Some(self.timers.insert_at(Timer::Debounce(key.clone()), at));
                    }
                }
            }
        }
    }

    fn in_maintenance(&self, key: &AlarmKey) -> bool {
        matches!(&key.scope, Scope::Device(d) if self.maintenance.contains_key(d))
    }

    fn change(&mut self, key: &AlarmKey, on: bool) {
        if on {
            if self.in_maintenance(key) {
                debug!(alarm = %key, "condition on, device out of service");
                return;
            }
            self.raise(key);
        } else {
            self.clear(key);
        }
        self.update_sirens();
    }

    fn raise(&mut self, key: &AlarmKey) {
        let now = Utc::now();
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let value = slot.value.to_string();
        if let Some(open) = slot.open.as_mut() {
            let event = open.life.step(Input::On);
            open.row.condition = true;
            open.row.value = Some(value);
            open.row.state = open.life.state;
            let ev = event.map(|e| {
                open.row.cleared_at = None;
                event_row(now, e, None, None)
            });
            let row = open.row.clone();
            self.save(&row, ev.as_ref());
            if self.matches_source(&self.slots[key].labels) {
                self.sources.insert(key.clone());
                self.inhibit_from(key);
            }
            if event == Some(EventKind::Raised) {
                self.announce(key, EventKind::Raised, None, None);
                self.arm(key);
            }
            return;
        }
        let rule = slot.rule.clone();
        let mut life = Life::normal(rule.latched);
        life.step(Input::On);
        let labels = slot.labels.clone();
        let suppressed = self.inhibited(key, &labels);
        let mut row = AlarmRow {
            id: 0,
            key: key.clone(),
            state: life.state,
            condition: true,
            latched: rule.latched,
            severity: rule.severity.as_str().into(),
            category: rule.category.as_str().into(),
            message: rule.message.clone(),
            value: Some(value),
            raised_at: now,
            acked_at: None,
            acked_by: None,
            cleared_at: None,
            closed_at: None,
            suppressed,
            escalated: false,
        };
        let kind = if suppressed {
            EventKind::Suppressed
        } else {
            EventKind::Raised
        };
        let first = event_row(now, kind, None, None);
        row.id = match self.store.insert(&row, &first) {
            Ok(id) => id,
            Err(e) => {
                // The alarm still goes out; only its record is missing.
                error!(alarm = %key, error = %e, "cannot store an alarm; pushing it anyway");
                self.synthetic_id()
            }
        };
        self.up(&row, &first);
        info!(alarm = %key, id = row.id, severity = %rule.severity, suppressed, "alarm raised");
        let routing = route::route(&self.cfg.routes, &labels);
        if routing.departments.is_empty() {
            debug!(alarm = %key, "no route sends this alarm anywhere");
        }
        self.by_id.insert(row.id, key.clone());
        if let Some(slot) = self.slots.get_mut(key) {
            slot.open = Some(Box::new(Open {
                row,
                life,
                routing,
                escalate: None,
                repeat: None,
                release: None,
                told: false,
            }));
        }
        if !suppressed {
            self.announce(key, EventKind::Raised, None, None);
            self.arm(key);
        }
        if self.matches_source(&labels) {
            self.sources.insert(key.clone());
            self.inhibit_from(key);
        }
    }

    fn clear(&mut self, key: &AlarmKey) {
        let now = Utc::now();
        let was_source = self.sources.remove(key);
        let Some(open) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) else {
            return;
        };
        let event = open.life.step(Input::Off);
        open.row.condition = false;
        open.row.cleared_at = Some(now);
        if open.row.suppressed && !open.told && open.life.state != AlarmState::Acked {
            // Nobody was told of it, so nobody need acknowledge its end (latched or not).
            open.life.state = AlarmState::Normal;
            open.life.condition = false;
        }
        open.row.state = open.life.state;
        if open.row.state == AlarmState::Normal {
            open.row.closed_at = Some(now);
        }
        let ev = event.map(|e| event_row(now, e, None, None));
        let row = open.row.clone();
        self.save(&row, ev.as_ref());
        if event == Some(EventKind::Cleared) {
            self.announce(key, EventKind::Cleared, None, None);
            self.disarm(key);
        }
        self.close_if_normal(key);
        if was_source {
            self.release_from(key);
        }
    }

    /// Forgets an alarm once it is normal.
    fn close_if_normal(&mut self, key: &AlarmKey) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.open.as_ref().is_some_and(|o| !o.life.state.is_open()) {
            self.disarm(key);
            if let Some(open) = self.slots.get_mut(key).and_then(|s| s.open.take()) {
                self.by_id.remove(&open.row.id);
            }
            // A shelf silences one alarm, not the next one of its kind.
            if let Some((_, t)) = self.shelves.remove(key) {
                self.timers.remove(&t);
                if let Err(e) = self.store.unshelve(key) {
                    warn!(alarm = %key, error = %e, "cannot store the end of a shelf");
                }
            }
        }
    }

    // ---- inhibition ----

    fn matches_source(&self, labels: &Labels) -> bool {
        self.cfg.inhibits.iter().any(|i| i.source.matches(labels))
    }

    /// Whether an active alarm explains this one.
    fn inhibited(&self, key: &AlarmKey, labels: &Labels) -> bool {
        self.sources.iter().any(|s| {
            s != key
                && self.slots.get(s).is_some_and(|src| {
                    self.cfg
                        .inhibits
                        .iter()
                        .any(|i| i.inhibits(&src.labels, labels))
                })
        })
    }

    /// A new source: the alarms it explains are suppressed and their unsent pushes withdrawn.
    fn inhibit_from(&mut self, source: &AlarmKey) {
        let Some(src) = self.slots.get(source).map(|s| s.labels.clone()) else {
            return;
        };
        let targets: Vec<AlarmKey> = self
            .by_id
            .values()
            .filter(|k| *k != source)
            .filter(|k| {
                self.slots.get(*k).is_some_and(|s| {
                    s.open.as_ref().is_some_and(|o| !o.row.suppressed)
                        && self
                            .cfg
                            .inhibits
                            .iter()
                            .any(|i| i.inhibits(&src, &s.labels))
                })
            })
            .cloned()
            .collect();
        let now = Utc::now();
        for key in targets {
            let Some(open) = self.slots.get_mut(&key).and_then(|s| s.open.as_mut()) else {
                continue;
            };
            open.row.suppressed = true;
            let row = open.row.clone();
            self.save(
                &row,
                Some(&event_row(now, EventKind::Suppressed, None, None)),
            );
            self.disarm(&key);
            if self.withdraw(row.id) {
                if let Some(o) = self.slots.get_mut(&key).and_then(|s| s.open.as_mut()) {
                    o.told = false;
                }
            }
        }
    }

    /// Takes back an alarm's pushes still waiting for their group's window; returns whether
    /// its "raised" was among them (then nobody has been told of it).
    fn withdraw(&self, alarm: i64) -> bool {
        match self.store.withdraw(alarm) {
            Ok(rows) => {
                let raised = rows.iter().any(|(_, _, e)| e == EventKind::Raised.as_str());
                let mut by_channel: HashMap<String, Vec<i64>> = HashMap::new();
                for (id, channel, _) in rows {
                    by_channel.entry(channel).or_default().push(id);
                }
                for (channel, ids) in by_channel {
                    self.notifier.withdraw(&channel, ids);
                }
                raised
            }
            Err(e) => {
                warn!(alarm, error = %e, "cannot withdraw pushes");
                false
            }
        }
    }

    /// A source is gone: what it explained is told, if it still holds after `RELEASE_GRACE`.
    fn release_from(&mut self, source: &AlarmKey) {
        let targets: Vec<AlarmKey> = self
            .by_id
            .values()
            .filter(|k| {
                self.slots.get(*k).is_some_and(|s| {
                    s.open
                        .as_ref()
                        .is_some_and(|o| o.row.suppressed && o.row.condition)
                })
            })
            .cloned()
            .collect();
        for key in targets {
            debug!(alarm = %key, source = %source, "no longer explained: told unless it clears soon");
            self.schedule_release(&key);
        }
    }

    fn schedule_release(&mut self, key: &AlarmKey) {
        let Some(open) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) else {
            return;
        };
        match &open.release {
            Some(t) => self.timers.reset(t, RELEASE_GRACE),
            None => {
                open.release = Some(
                    self.timers
                        .insert(Timer::Release(key.clone()), RELEASE_GRACE),
                );
            }
        }
    }

    fn release(&mut self, key: &AlarmKey) {
        if let Some(o) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) {
            // Fired: its key is no longer in the queue.
            o.release = None;
        }
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let holds = slot
            .open
            .as_ref()
            .is_some_and(|o| o.row.suppressed && o.row.condition);
        if !holds || self.inhibited(key, &slot.labels.clone()) {
            return;
        }
        let Some(open) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) else {
            return;
        };
        open.row.suppressed = false;
        let row = open.row.clone();
        // Told before it was suppressed, or acknowledged since: nothing new to say.
        let news = !open.told && row.state == AlarmState::Unacked;
        info!(alarm = %key, id = row.id, news, "no longer explained by another alarm");
        let event = if news {
            EventKind::Raised
        } else {
            EventKind::Unshelved
        };
        self.save(&row, Some(&event_row(Utc::now(), event, None, None)));
        if news {
            self.announce(key, EventKind::Raised, None, None);
        }
        self.arm(key);
        self.update_sirens();
    }

    // ---- timers ----

    fn timer(&mut self, t: Timer) {
        match t {
            Timer::Debounce(key) => {
                let now = Instant::now();
                let Some(slot) = self.slots.get_mut(&key) else {
                    return;
                };
                slot.debounce_timer = None;
                let (on, off) = (slot.rule.on_delay, slot.rule.off_delay);
                let v = slot.debounce.check(now, on, off);
                self.verdict(&key, v);
            }
            Timer::Escalate(key) => {
                let Some(open) = self.slots.get_mut(&key).and_then(|s| s.open.as_mut()) else {
                    return;
                };
                open.escalate = None;
                if open.row.state != AlarmState::Unacked || open.row.escalated {
                    return;
                }
                open.row.escalated = true;
                let row = open.row.clone();
                info!(alarm = %key, id = row.id, "not acknowledged in time: escalated");
                self.save(
                    &row,
                    Some(&event_row(Utc::now(), EventKind::Escalated, None, None)),
                );
                self.announce(&key, EventKind::Escalated, None, None);
                self.update_sirens();
            }
            Timer::Repeat(key) => {
                let Some(open) = self.slots.get_mut(&key).and_then(|s| s.open.as_mut()) else {
                    return;
                };
                open.repeat = None;
                if open.row.state != AlarmState::Unacked {
                    return;
                }
                let row = open.row.clone();
                self.save(
                    &row,
                    Some(&event_row(Utc::now(), EventKind::Repeated, None, None)),
                );
                self.announce(&key, EventKind::Repeated, None, None);
                self.arm(&key);
            }
            Timer::Unshelve(key) => {
                self.shelves.remove(&key);
                if let Err(e) = self.store.unshelve(&key) {
                    warn!(alarm = %key, error = %e, "cannot store the end of a shelf");
                }
                let Some(open) = self.slots.get_mut(&key).and_then(|s| s.open.as_mut()) else {
                    return;
                };
                let row = open.row.clone();
                info!(alarm = %key, id = row.id, "shelf expired");
                self.save(
                    &row,
                    Some(&event_row(Utc::now(), EventKind::Unshelved, None, None)),
                );
                if row.state == AlarmState::Unacked && !row.suppressed {
                    self.announce(&key, EventKind::Repeated, None, None);
                    self.arm(&key);
                }
                self.update_sirens();
            }
            Timer::MaintenanceEnd(device) => {
                // Fired: its key is no longer in the queue.
                if let Some(entry) = self.maintenance.get_mut(&device) {
                    entry.1 = None;
                }
                self.end_maintenance(&device);
            }
            Timer::Release(key) => self.release(&key),
            Timer::Prune => {
                let before = Utc::now()
                    - chrono::Duration::from_std(self.cfg.keep).unwrap_or(chrono::Duration::MAX);
                match self.store.prune(before) {
                    Ok(0) => {}
                    Ok(n) => info!(alarms = n, "old closed alarms pruned"),
                    Err(e) => warn!(error = %e, "cannot prune old alarms"),
                }
                self.timers
                    .insert(Timer::Prune, Duration::from_secs(24 * 3600));
            }
        }
    }

    /// Starts an alarm's escalation and repeat timers, where its routing has them.
    fn arm(&mut self, key: &AlarmKey) {
        let shelved = self.shelves.contains_key(key);
        let repeat_urgent = self.cfg.repeat_urgent;
        let Some(open) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) else {
            return;
        };
        if open.row.state != AlarmState::Unacked || open.row.suppressed || shelved {
            return;
        }
        if open.escalate.is_none() && !open.row.escalated && !open.routing.escalate_to.is_empty() {
            if let Some(after) = open.routing.escalate_after {
                let elapsed = (Utc::now() - open.row.raised_at)
                    .to_std()
                    .unwrap_or_default();
                open.escalate = Some(
                    self.timers
                        .insert(Timer::Escalate(key.clone()), after.saturating_sub(elapsed)),
                );
            }
        }
        let urgent = is_urgent(severity(&open.row), category(&open.row));
        let repeat = open
            .routing
            .repeat_after
            .or(if urgent { repeat_urgent } else { None });
        if open.repeat.is_none() && !open.routing.departments.is_empty() {
            if let Some(every) = repeat {
                open.repeat = Some(self.timers.insert(Timer::Repeat(key.clone()), every));
            }
        }
    }

    fn disarm(&mut self, key: &AlarmKey) {
        let Some(open) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) else {
            return;
        };
        for t in [
            open.escalate.take(),
            open.repeat.take(),
            open.release.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.timers.remove(&t);
        }
    }

    // ---- commands ----

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Ack {
                id,
                who,
                comment,
                reply,
            } => {
                let _ = reply.send(self.ack(id, &who, comment));
            }
            Command::Shelve {
                id,
                who,
                minutes,
                reason,
                reply,
            } => {
                let _ = reply.send(self.shelve(id, &who, minutes, reason));
            }
            Command::Maintenance {
                device,
                on,
                who,
                reason,
                minutes,
                reply,
            } => {
                let _ = reply.send(self.set_maintenance(&device, on, &who, reason, minutes));
            }
            Command::Ping { reply } => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn open_key(&self, id: i64) -> Result<AlarmKey, CommandError> {
        if let Some(k) = self.by_id.get(&id) {
            return Ok(k.clone());
        }
        match self.store.alarm(id) {
            Ok(Some(_)) => Err(CommandError::Closed(id)),
            Ok(None) => Err(CommandError::NotFound(id)),
            Err(e) => Err(CommandError::Store(e.to_string())),
        }
    }

    fn ack(
        &mut self,
        id: i64,
        who: &str,
        comment: Option<String>,
    ) -> Result<AlarmRow, CommandError> {
        let key = self.open_key(id)?;
        let now = Utc::now();
        let open = self
            .slots
            .get_mut(&key)
            .and_then(|s| s.open.as_mut())
            .ok_or(CommandError::NotFound(id))?;
        // Worked on copies: memory follows only once the store has it, so a failed write
        // leaves the alarm as it was and the operator can try again.
        let mut life = open.life;
        let Some(event) = life.step(Input::Ack) else {
            return Err(CommandError::AlreadyAcked(id));
        };
        let mut row = open.row.clone();
        row.state = life.state;
        row.acked_at = Some(now);
        row.acked_by = Some(who.to_string());
        if row.state == AlarmState::Normal {
            row.closed_at = Some(now);
        }
        let ev = event_row(now, event, Some(who), comment.as_deref());
        if row.id > 0 {
            self.store
                .update(&row, Some(&ev))
                .map_err(|e| CommandError::Store(e.to_string()))?;
        }
        open.life = life;
        open.row = row.clone();
        // Stored above (an operator must hear of a failed write); the cloud and the console
        // still have to hear of it.
        self.up(&row, &ev);
        info!(alarm = %key, id, who, "alarm acknowledged");
        self.announce(&key, event, Some(who), comment.as_deref());
        self.disarm(&key);
        self.close_if_normal(&key);
        self.update_sirens();
        Ok(row)
    }

    fn shelve(
        &mut self,
        id: i64,
        who: &str,
        minutes: u64,
        reason: String,
    ) -> Result<AlarmRow, CommandError> {
        let max = self.cfg.max_shelve_minutes;
        if minutes == 0 || minutes > max {
            return Err(CommandError::Invalid(format!(
                "minutes must be between 1 and {max}"
            )));
        }
        if reason.trim().is_empty() {
            return Err(CommandError::Invalid(
                "a shelved alarm needs a reason".into(),
            ));
        }
        let key = self.open_key(id)?;
        let now = Utc::now();
        let shelf = Shelf {
            key: key.clone(),
            until: now + chrono::Duration::minutes(i64::try_from(minutes).unwrap_or(1)),
            who: who.to_string(),
            reason: reason.clone(),
        };
        self.store
            .shelve(&shelf)
            .map_err(|e| CommandError::Store(e.to_string()))?;
        let row = self
            .slots
            .get(&key)
            .and_then(|s| s.open.as_ref())
            .map(|o| o.row.clone())
            .ok_or(CommandError::NotFound(id))?;
        self.save(
            &row,
            Some(&event_row(
                now,
                EventKind::Shelved,
                Some(who),
                Some(&reason),
            )),
        );
        if let Some((_, old)) = self.shelves.remove(&key) {
            self.timers.remove(&old);
        }
        let timer = self.timers.insert(
            Timer::Unshelve(key.clone()),
            Duration::from_secs(minutes * 60),
        );
        self.shelves.insert(key.clone(), (shelf, timer));
        self.disarm(&key);
        info!(alarm = %key, id, who, minutes, "alarm shelved");
        self.update_sirens();
        Ok(row)
    }

    fn set_maintenance(
        &mut self,
        device: &str,
        on: bool,
        who: &str,
        reason: String,
        minutes: Option<u64>,
    ) -> Result<(), CommandError> {
        let Some((id, _)) = self.cfg.devices.get_key_value(device) else {
            return Err(CommandError::NoDevice(device.to_string()));
        };
        if minutes.is_some_and(|m| !(1..=MAX_MAINTENANCE_MINUTES).contains(&m)) {
            return Err(CommandError::Invalid(format!(
                "minutes must be between 1 and {MAX_MAINTENANCE_MINUTES} (30 days), or left out"
            )));
        }
        let id = id.clone();
        if !on {
            if !self.maintenance.contains_key(&id) {
                return Ok(());
            }
            // Stored first: a device believed back in service but still out of service in the
            // database would go silent again at the next restart.
            self.store
                .set_maintenance(None, &id)
                .map_err(|e| CommandError::Store(e.to_string()))?;
            self.end_maintenance(&id);
            return Ok(());
        }
        let now = Utc::now();
        let m = Maintenance {
            device: id.to_string(),
            since: now,
            until: minutes.map(|m| now + chrono::Duration::minutes(i64::try_from(m).unwrap_or(0))),
            who: who.to_string(),
            reason: reason.clone(),
        };
        self.store
            .set_maintenance(Some(&m), &id)
            .map_err(|e| CommandError::Store(e.to_string()))?;
        if let Some((_, Some(t))) = self.maintenance.remove(&id) {
            self.timers.remove(&t);
        }
        let timer = minutes.map(|m| {
            self.timers.insert(
                Timer::MaintenanceEnd(id.clone()),
                Duration::from_secs(m * 60),
            )
        });
        self.maintenance.insert(id.clone(), (m, timer));
        // Its open alarms are closed: nobody is to be called for a device being worked on.
        let keys: Vec<AlarmKey> = self
            .by_id
            .values()
            .filter(|k| matches!(&k.scope, Scope::Device(d) if *d == id))
            .cloned()
            .collect();
        for key in keys {
            let was_source = self.sources.remove(&key);
            let Some(open) = self.slots.get_mut(&key).and_then(|s| s.open.as_mut()) else {
                continue;
            };
            open.life.state = AlarmState::Normal;
            open.row.state = AlarmState::Normal;
            open.row.closed_at = Some(now);
            let row = open.row.clone();
            self.save(
                &row,
                Some(&event_row(
                    now,
                    EventKind::OutOfService,
                    Some(who),
                    Some(&reason),
                )),
            );
            let _ = self.withdraw(row.id);
            self.close_if_normal(&key);
            if was_source {
                self.release_from(&key);
            }
        }
        info!(device = %id, who, ?minutes, "device out of service");
        self.update_sirens();
        Ok(())
    }

    /// Puts a device back in service: conditions that hold now raise their alarms.
    fn end_maintenance(&mut self, device: &Arc<str>) {
        let Some((_, timer)) = self.maintenance.remove(device) else {
            return;
        };
        if let Some(t) = timer {
            self.timers.remove(&t);
        }
        if let Err(e) = self.store.set_maintenance(None, device) {
            warn!(device = %device, error = %e, "cannot store the end of maintenance");
        }
        info!(device = %device, "device back in service");
        let active: Vec<AlarmKey> = self
            .slots
            .iter()
            .filter(|(k, s)| {
                matches!(&k.scope, Scope::Device(d) if d == device)
                    && s.debounce.active
                    && s.open.is_none()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in active {
            self.raise(&key);
        }
        self.update_sirens();
    }

    // ---- pushes ----

    fn save(&self, row: &AlarmRow, ev: Option<&EventRow>) {
        if let Some(ev) = ev {
            self.up(row, ev);
        }
        if row.id < 0 {
            return;
        }
        if let Err(e) = self.store.update(row, ev) {
            error!(alarm = row.id, error = %e, "cannot store an alarm's transition");
        }
    }

    /// An alarm's transition, to the cloud and the console.
    fn up(&self, row: &AlarmRow, ev: &EventRow) {
        // Only stored alarms: one the store refused has no id a watcher could act on.
        if let Some(live) = self.live.as_ref().filter(|_| row.id >= 0) {
            // A watcher treats a shelved alarm as suppressed (no banner, no sound). The shelf
            // is set just after its event is told, and gone just before its end is.
            let shelved = match ev.event.as_str() {
                "shelved" => true,
                "unshelved" => false,
                _ => self.shelves.contains_key(&row.key),
            };
            let mut alarm = row.clone();
            alarm.suppressed |= shelved;
            let _ = live.send(LiveEvent::Alarm {
                alarm: Arc::new(alarm),
                event: ev.event.clone(),
            });
        }
        let Some(u) = &self.uplink else {
            return;
        };
        let tz = self.cfg.tz;
        u.alarm(&AlarmOut {
            alarm_id: row.id.to_string(),
            event: ev.event.clone(),
            severity: row.severity.clone(),
            category: row.category.clone(),
            device_id: row.key.scope.id().to_string(),
            point: row.key.point.as_deref().map(str::to_owned),
            value: row
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
            state: row.state.as_str().into(),
            message: row.message.clone(),
            raised_at: row.raised_at.with_timezone(&tz).to_rfc3339(),
            ts: ev.ts.with_timezone(&tz).to_rfc3339(),
            who: ev.who.clone(),
            comment: ev.comment.clone(),
        });
    }

    fn synthetic_id(&mut self) -> i64 {
        self.next_synthetic -= 1;
        self.next_synthetic
    }

    /// The group a non-urgent push to `channel` joins, and when the group goes out.
    fn window(&mut self, channel: &str, now: DateTime<Utc>) -> Window {
        let at_once = Window {
            group: 0,
            not_before: now,
            closes: Instant::now(),
        };
        if self.cfg.group_window.is_zero() {
            return at_once;
        }
        if let Some(w) = self.windows.get(channel) {
            if w.closes > Instant::now() {
                return *w;
            }
        }
        self.next_group -= 1;
        let w = Window {
            group: self.next_group,
            not_before: now
                + chrono::Duration::from_std(self.cfg.group_window)
                    .unwrap_or(chrono::Duration::zero()),
            closes: Instant::now() + self.cfg.group_window,
        };
        self.windows.insert(channel.to_string(), w);
        w
    }

    /// Tells the alarm's departments (or, for an escalation, whom it escalates to) through
    /// their channels: stored in the outbox first, then handed to the channels' lanes.
    fn announce(
        &mut self,
        key: &AlarmKey,
        kind: EventKind,
        who: Option<&str>,
        comment: Option<&str>,
    ) {
        if self.shelves.contains_key(key) {
            return;
        }
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let Some(open) = slot.open.as_ref() else {
            return;
        };
        // A suppressed alarm is not news, unless its departments were told it was raised
        // before: then its acknowledgement and end are.
        let follow_up = matches!(kind, EventKind::Acknowledged | EventKind::Cleared);
        if open.row.suppressed && !(open.told && follow_up) {
            return;
        }
        let departments = if kind == EventKind::Escalated {
            &open.routing.escalate_to
        } else {
            &open.routing.departments
        };
        let urgent = is_urgent(slot.rule.severity, slot.rule.category);
        let now = Utc::now();
        let mut targets: Vec<(String, String)> = Vec::new();
        for d in departments {
            for c in self.cfg.departments.get(d).into_iter().flatten() {
                if self.notifier.has_lane(c) && !targets.iter().any(|(tc, _)| tc == c) {
                    targets.push((c.clone(), d.clone()));
                }
            }
        }
        if let Some(o) = self.slots.get_mut(key).and_then(|s| s.open.as_mut()) {
            o.told = true;
        }
        if targets.is_empty() {
            return;
        }
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let Some(row) = slot.open.as_ref().map(|o| &o.row) else {
            return;
        };
        let tz = self.cfg.tz;
        let mut push = Push {
            hub_id: self.cfg.hub_id.clone(),
            alarm_id: row.id.to_string(),
            event: kind.as_str().into(),
            severity: slot.rule.severity.as_str().into(),
            category: slot.rule.category.as_str().into(),
            device_id: key.scope.id().to_string(),
            device_name: slot.device_name.to_string(),
            point: key.point.as_deref().map(str::to_owned),
            value: slot.value.clone(),
            location: (*slot.location).clone(),
            department: String::new(),
            message: String::new(),
            raised_at: row.raised_at.with_timezone(&tz).to_rfc3339(),
            ts: now.with_timezone(&tz).to_rfc3339(),
            rule: slot.rule.id.to_string(),
            summary: slot.rule.message.clone(),
            summary_en: slot.rule.message_en.clone(),
            who: who.map(str::to_owned),
            comment: comment.map(str::to_owned),
        };
        push.message = message::line(&push, self.cfg.language);
        let alarm = row.id;
        let mut rows = Vec::with_capacity(targets.len());
        for (channel, department) in targets {
            let w = if urgent {
                Window {
                    group: 0,
                    not_before: now,
                    closes: Instant::now(),
                }
            } else {
                self.window(&channel, now)
            };
            push.department = department.clone();
            let payload = match serde_json::to_string(&push) {
                Ok(p) => p,
                Err(e) => {
                    error!(error = %e, "cannot encode a push");
                    continue;
                }
            };
            rows.push(OutboxRow {
                id: 0,
                channel,
                department,
                alarm,
                event: kind.as_str().into(),
                urgent,
                group: w.group,
                created: now,
                not_before: w.not_before,
                payload,
                attempts: 0,
            });
        }
        match self.store.enqueue(rows.clone()) {
            Ok(stored) => self.notifier.send(stored),
            Err(e) => {
                // A full disk must not silence an alarm: deliver it from memory.
                error!(alarm, error = %e, "cannot store pushes in the outbox; delivering from memory");
                for r in &mut rows {
                    r.id = self.synthetic_id();
                    if r.group == 0 {
                        r.group = r.id;
                    }
                }
                self.notifier.send(rows);
            }
        }
    }

    /// A siren sounds while an alarm routed to it is active and unacknowledged; an alarm new to
    /// it re-arms a siren that silenced itself.
    fn update_sirens(&mut self) {
        if self.sirens.is_empty() {
            return;
        }
        let mut on: HashMap<&str, HashSet<i64>> = HashMap::new();
        let mut unacknowledged: HashSet<i64> = HashSet::new();
        for (id, key) in &self.by_id {
            let Some(open) = self.slots.get(key).and_then(|s| s.open.as_ref()) else {
                continue;
            };
            if matches!(open.row.state, AlarmState::Unacked | AlarmState::RtnUnacked) {
                unacknowledged.insert(*id);
            }
            if self.shelves.contains_key(key)
                || open.row.state != AlarmState::Unacked
                || open.row.suppressed
            {
                continue;
            }
            let escalated = open
                .row
                .escalated
                .then_some(&open.routing.escalate_to)
                .into_iter()
                .flatten();
            for d in open.routing.departments.iter().chain(escalated) {
                for c in self.cfg.departments.get(d).into_iter().flatten() {
                    on.entry(c.as_str()).or_default().insert(*id);
                }
            }
        }
        for (s, heard) in self.sirens.iter_mut() {
            let now = on.remove(s.as_str()).unwrap_or_default();
            let fresh = now.iter().any(|id| !heard.contains(id));
            self.notifier.siren(s, !now.is_empty(), fresh);
            // Heard until acknowledged: an alarm that went quiet and comes back unacknowledged
            // (a flapping input) is not news to the siren; one acknowledged and raised again is.
            heard.retain(|id| unacknowledged.contains(id));
            heard.extend(now);
        }
    }
}

fn event_row(
    ts: DateTime<Utc>,
    kind: EventKind,
    who: Option<&str>,
    comment: Option<&str>,
) -> EventRow {
    EventRow {
        ts,
        event: kind.as_str().into(),
        who: who.map(str::to_owned),
        comment: comment.map(str::to_owned),
    }
}

/// The wait until `end`, bounded so that a stored date far ahead (an edited database, a
/// clock gone wild) cannot make a timer the queue refuses.
fn until(end: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (end - now)
        .to_std()
        .unwrap_or_default()
        .min(Duration::from_secs(MAX_MAINTENANCE_MINUTES * 60))
}

fn json_value(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn severity(row: &AlarmRow) -> Severity {
    row.severity.parse().unwrap_or(Severity::Major)
}

fn category(row: &AlarmRow) -> Category {
    row.category.parse().unwrap_or(Category::Comm)
}
