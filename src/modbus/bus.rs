//! One scheduler per physical line: the devices on a bus are polled one request at a time, with
//! a pause between frames, over one connection kept open. A silent device costs its neighbours
//! at most its own timeout: after a miss the rest of its reads wait for the next cycle, and after
//! `offline_after` misses it is polled with back-off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::Utc;
use tokio::time::Instant;
use tokio_modbus::client::Context;
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decode::{decode, decode_bit};
use super::link::{self, Answer, Endpoint, ReadError};
use super::plan::{plan, split, ReadBlock};
use super::raw::RawLink;
use crate::config::{BusConfig, BusKind, Loaded};
use crate::hub::{Hub, RequestOutcome};
use crate::profile::{Kind, PointSource, Profile};
use crate::reading::{Reading, Value};

/// A line's connection, opened on demand and reopened with back-off after link failures.
pub struct Line {
    endpoint: Endpoint,
    connect_timeout: Duration,
    pause: Duration,
    max_backoff: Duration,
    ctx: Option<Context>,
    pub(crate) last_io: Option<Instant>,
    reconnect_at: Option<Instant>,
    backoff: ExponentialBackoff,
    last_link_error: Option<String>,
    /// An RS-485 HAT's driver-enable pin, bracketing every request.
    de: Option<super::de::DriverEnable>,
    /// The line opened for raw frames (DL/T 645, CJ/T 188) rather than Modbus.
    raw: Option<RawLink>,
}

impl Line {
    pub fn new(
        endpoint: Endpoint,
        connect_timeout: Duration,
        pause: Duration,
        max_backoff: Duration,
    ) -> Self {
        Self {
            backoff: Self::backoff(max_backoff),
            endpoint,
            connect_timeout,
            pause,
            max_backoff,
            ctx: None,
            last_io: None,
            reconnect_at: None,
            last_link_error: None,
            de: None,
            raw: None,
        }
    }

    /// Drives `de` around every request (serial lines only).
    pub fn with_driver_enable(mut self, de: super::de::DriverEnable) -> Self {
        self.de = Some(de);
        self
    }

    fn backoff(max: Duration) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The open connection, connecting first if allowed; `Err` while the line is down.
    pub(crate) async fn ensure(&mut self) -> Result<&mut Context, String> {
        if self.ctx.is_none() {
            self.may_reconnect()?;
            match link::connect(&self.endpoint, self.connect_timeout, self.de.as_ref()).await {
                // The back-off ends with the first answer, not here: a serial server that
                // accepts and then drops every connection must not be hammered.
                Ok(ctx) => self.ctx = Some(ctx),
                Err(e) => {
                    let msg = format!("cannot open {}: {e}", self.endpoint);
                    self.link_failed(msg.clone());
                    return Err(msg);
                }
            }
        }
        self.ctx.as_mut().ok_or_else(|| "link down".to_string())
    }

    /// `Err` with the last link error while a reconnect waits for its back-off.
    fn may_reconnect(&self) -> Result<(), String> {
        match self.reconnect_at {
            Some(at) if Instant::now() < at => Err(self
                .last_link_error
                .clone()
                .unwrap_or_else(|| "link down".into())),
            _ => Ok(()),
        }
    }

    /// The line opened for raw frames, opening it first if allowed; `Err` while it is down.
    pub(crate) async fn ensure_raw(&mut self) -> Result<&mut RawLink, String> {
        if self.raw.is_none() {
            self.may_reconnect()?;
            match RawLink::open(&self.endpoint, self.connect_timeout, self.de.as_ref()).await {
                Ok(raw) => self.raw = Some(raw),
                Err(e) => {
                    let msg = format!("cannot open {}: {e}", self.endpoint);
                    self.link_failed(msg.clone());
                    return Err(msg);
                }
            }
        }
        self.raw.as_mut().ok_or_else(|| "link down".to_string())
    }

    /// Something answered on the line: it works.
    pub(crate) fn answered(&mut self) {
        self.last_io = Some(Instant::now());
        self.reconnect_at = None;
        if self.last_link_error.take().is_some() {
            info!(endpoint = %self.endpoint, "line back");
            self.backoff = Self::backoff(self.max_backoff);
        }
    }

    /// Drops the connection after a late or garbled answer; the next request reopens it at once.
    pub(crate) fn reopen(&mut self) {
        self.ctx = None;
        self.raw = None;
    }

    /// Drops the connection after a link failure; reconnects wait for the back-off.
    pub(crate) fn link_failed(&mut self, error: String) {
        if self.last_link_error.is_none() {
            warn!(endpoint = %self.endpoint, %error, "line down");
        }
        self.ctx = None;
        self.raw = None;
        let delay = self.backoff.next().unwrap_or(self.max_backoff);
        self.reconnect_at = Some(Instant::now() + delay);
        self.last_link_error = Some(error);
    }

    pub(crate) async fn wait_pause(&mut self) {
        if let Some(last) = self.last_io {
            if let Some(at) = last.checked_add(self.pause) {
                tokio::time::sleep_until(at).await;
            }
        }
    }
}

/// How a device's reads went in one poll.
#[derive(Debug, Default)]
pub struct PollResult {
    pub readings: Vec<Reading>,
    /// Whether the device answered anything, even an exception.
    pub answered: bool,
    pub outcomes: Vec<RequestOutcome>,
    /// Point-level or device-level problems, for the status and `probe`.
    pub errors: Vec<String>,
    /// Counter points that went backwards since the last poll.
    pub counter_resets: Vec<Arc<str>>,
    /// What was thrown away on the line, by reason (`noise`, `bad_checksum`, `truncated`,
    /// `echo`, `other_meter`, …): the raw meter protocols' answer to "why is it silent".
    pub rejects: std::collections::BTreeMap<&'static str, u64>,
}

/// One device's read plan and what it remembers between polls.
pub struct Poller {
    pub id: Arc<str>,
    pub unit: u8,
    pub profile: Arc<Profile>,
    pub timeout: Duration,
    blocks: Vec<ReadBlock>,
    /// Blocks the device refused even point by point: not split again.
    refused_whole: Vec<bool>,
    rotation: usize,
    last_counter: HashMap<Arc<str>, f64>,
}

/// How one request went, for the poll loop.
enum Step {
    Read,
    Refused(ExceptionCode),
    /// The device did not answer (timeout, garbled answer, gateway found nobody).
    NoAnswer,
    /// The line itself is down.
    LineDown,
}

impl Poller {
    pub fn new(id: Arc<str>, unit: u8, profile: Arc<Profile>, timeout: Duration) -> Self {
        let blocks = plan(&profile.register_points(), profile.limits);
        Self {
            id,
            unit,
            timeout,
            refused_whole: vec![false; blocks.len()],
            rotation: 0,
            blocks,
            profile,
            last_counter: HashMap::new(),
        }
    }

    /// Requests one poll costs now (more after a device refused a coalesced read).
    pub fn requests_per_poll(&self) -> usize {
        self.blocks.len()
    }

    /// Reads every point once.
    pub async fn poll(&mut self, line: &mut Line) -> PollResult {
        let mut res = PollResult::default();
        let mut values: Vec<Option<(Value, chrono::DateTime<Utc>)>> =
            vec![None; self.profile.points.len()];
        let n = self.blocks.len();
        // Each poll starts one block further on, so that a block the device never answers
        // cannot hide the others for good.
        let first = if n == 0 { 0 } else { self.rotation % n };
        self.rotation = self.rotation.wrapping_add(1);
        let mut split_now: Vec<(usize, Vec<ReadBlock>)> = Vec::new();
        for bi in (0..n).map(|k| (first + k) % n) {
            let block = self.blocks[bi].clone();
            match self.read(line, &block, &mut values, &mut res).await {
                Step::Read => {}
                Step::Refused(code) => {
                    let refused_range = matches!(
                        code,
                        ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
                    );
                    if refused_range && block.points.len() > 1 && !self.refused_whole[bi] {
                        // Some meters refuse reads spanning registers they do not have: try the
                        // points one by one, and keep that if it works.
                        let profile = self.profile.clone();
                        let parts = split(&block, &|i| profile.points.get(i)?.register().cloned());
                        // The whole block's refusal is only news if its points fail too.
                        let block_error = res.errors.pop();
                        let mark = res.errors.len();
                        let mut any = false;
                        for part in &parts {
                            match self.read(line, part, &mut values, &mut res).await {
                                Step::Read => any = true,
                                Step::Refused(_) => {}
                                Step::NoAnswer | Step::LineDown => break,
                            }
                        }
                        if any {
                            debug!(device = %self.id, start = block.start, count = block.count, "coalesced read refused; reading its points singly from now on");
                            split_now.push((bi, parts));
                        } else {
                            // Refused point by point too: the map (or function) is wrong for
                            // this device, not the gap. Keep one request and report it.
                            self.refused_whole[bi] = true;
                            res.errors.truncate(mark);
                            res.errors.extend(block_error);
                        }
                    }
                }
                // A device that answered this poll is there: read its other blocks.
                Step::NoAnswer if res.answered => {}
                // Silent: its other reads wait for the next poll rather than delay the line.
                Step::NoAnswer | Step::LineDown => break,
            }
        }
        for (bi, parts) in split_now.into_iter().rev() {
            let k = parts.len();
            self.blocks.splice(bi..=bi, parts);
            self.refused_whole
                .splice(bi..=bi, std::iter::repeat_n(false, k));
        }
        self.collect(values, &mut res);
        res
    }

    /// One request on the line, its outcome recorded in `res`.
    async fn read(
        &self,
        line: &mut Line,
        block: &ReadBlock,
        values: &mut [Option<(Value, chrono::DateTime<Utc>)>],
        res: &mut PollResult,
    ) -> Step {
        line.wait_pause().await;
        let ctx = match line.ensure().await {
            Ok(ctx) => ctx,
            Err(e) => {
                res.errors.push(e);
                return Step::LineDown;
            }
        };
        let started = Instant::now();
        let r = link::read(ctx, self.unit, block, self.timeout).await;
        line.last_io = Some(Instant::now());
        match r {
            Ok(answer) => {
                line.answered();
                res.outcomes.push(RequestOutcome::Ok(started.elapsed()));
                res.answered = true;
                let ts = Utc::now();
                for &i in &block.points {
                    let Some(spec) = self.profile.points[i].register() else {
                        continue;
                    };
                    let range = block.slice_of(spec);
                    let v = match &answer {
                        Answer::Words(w) => decode(spec, &w[range]),
                        Answer::Bits(b) => Ok(decode_bit(b[range.start])),
                    };
                    match v {
                        Ok(v) => values[i] = Some((v, ts)),
                        Err(e) => res
                            .errors
                            .push(format!("{}: {e}", self.profile.points[i].name)),
                    }
                }
                Step::Read
            }
            // A gateway saying the device behind it did not answer: the line is fine, the
            // device is not there.
            Err(ReadError::Exception(
                code @ (ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable),
            )) => {
                line.answered();
                res.outcomes.push(RequestOutcome::Timeout);
                res.errors.push(format!(
                    "the gateway reached no device at unit {}: {code}",
                    self.unit
                ));
                Step::NoAnswer
            }
            Err(ReadError::Exception(code)) => {
                line.answered();
                res.outcomes.push(RequestOutcome::Exception);
                res.answered = true;
                let names: Vec<&str> = block
                    .points
                    .iter()
                    .map(|&i| &*self.profile.points[i].name)
                    .collect();
                res.errors.push(format!(
                    "{} {}..+{} ({}): device refused: {code}",
                    block.function,
                    block.start,
                    block.count,
                    names.join(", ")
                ));
                Step::Refused(code)
            }
            Err(e @ (ReadError::Timeout(_) | ReadError::Protocol(_))) => {
                res.outcomes.push(if matches!(e, ReadError::Timeout(_)) {
                    RequestOutcome::Timeout
                } else {
                    RequestOutcome::LinkError
                });
                // A late answer could be taken for the next request's: start the line afresh.
                line.reopen();
                res.errors.push(e.to_string());
                Step::NoAnswer
            }
            Err(ReadError::Link(e)) => {
                res.outcomes.push(RequestOutcome::LinkError);
                let msg = format!("link error: {e}");
                line.link_failed(msg.clone());
                res.errors.push(msg);
                Step::LineDown
            }
        }
    }

    fn collect(
        &mut self,
        values: Vec<Option<(Value, chrono::DateTime<Utc>)>>,
        res: &mut PollResult,
    ) {
        for (i, p) in self.profile.points.iter().enumerate() {
            if p.hidden {
                continue;
            }
            let value = match &p.source {
                PointSource::Register(_) | PointSource::Json(_) | PointSource::Reported(_) => {
                    values[i].clone()
                }
                PointSource::Sum(parts) => {
                    let mut sum = 0.0;
                    let mut ts = None;
                    let mut complete = true;
                    for part in parts {
                        let found = self
                            .profile
                            .points
                            .iter()
                            .position(|q| q.name == *part)
                            .and_then(|j| values[j].as_ref());
                        match found.and_then(|(v, t)| v.as_f64().map(|x| (x, *t))) {
                            Some((x, t)) => {
                                sum += x;
                                ts = Some(ts.map_or(t, |old: chrono::DateTime<Utc>| old.max(t)));
                            }
                            None => complete = false,
                        }
                    }
                    // A partial sum would be a wrong total: publish none.
                    match (complete, ts) {
                        (true, Some(t)) => Some((Value::Number(sum), t)),
                        _ => None,
                    }
                }
            };
            let Some((value, ts)) = value else { continue };
            if p.kind == Kind::Counter {
                if let Some(x) = value.as_f64() {
                    if let Some(prev) = self.last_counter.insert(p.name.clone(), x) {
                        if x < prev {
                            res.counter_resets.push(p.name.clone());
                        }
                    }
                }
            }
            res.readings.push(Reading {
                device: self.id.clone(),
                point: p.name.clone(),
                ts,
                value,
                unit: p.unit.clone(),
            });
        }
    }
}

/// When a device is polled next. Online: on its fixed rhythm, skipping cycles it overran.
/// Offline: back-off doubling from the interval up to `max_backoff`.
pub fn next_due(
    due: Instant,
    now: Instant,
    interval: Duration,
    offline_polls: u32,
    max_backoff: Duration,
) -> Instant {
    // Config checks bound every duration; this only keeps arithmetic from panicking.
    let far = now + Duration::from_secs(86_400);
    if offline_polls == 0 {
        let next = due.checked_add(interval).unwrap_or(far);
        if next > now {
            return next;
        }
        let behind = now.duration_since(due).as_nanos();
        let cycles = behind / interval.as_nanos().max(1) + 1;
        u32::try_from(cycles)
            .ok()
            .and_then(|c| interval.checked_mul(c))
            .and_then(|d| due.checked_add(d))
            .unwrap_or(far)
    } else {
        let factor = 1u32 << offline_polls.min(16);
        now.checked_add(
            interval
                .saturating_mul(factor)
                .min(max_backoff.max(interval)),
        )
        .unwrap_or(far)
    }
}

/// One device's reads, in the protocol of its bus.
pub enum DevicePoller {
    Modbus(Poller),
    Dlt645(crate::dlt645::poller::Dlt645Poller),
    Cjt188(crate::cjt188::poller::Cjt188Poller),
}

impl DevicePoller {
    pub fn id(&self) -> &Arc<str> {
        match self {
            DevicePoller::Modbus(p) => &p.id,
            DevicePoller::Dlt645(p) => &p.id,
            DevicePoller::Cjt188(p) => &p.id,
        }
    }

    pub async fn poll(&mut self, line: &mut Line) -> PollResult {
        match self {
            DevicePoller::Modbus(p) => p.poll(line).await,
            DevicePoller::Dlt645(p) => p.poll(line).await,
            DevicePoller::Cjt188(p) => p.poll(line).await,
        }
    }
}

struct Scheduled {
    poller: DevicePoller,
    interval: Duration,
    due: Instant,
    failures: u32,
    offline_polls: u32,
    /// As last reported to the hub; `None` before the first verdict.
    online: Option<bool>,
}

/// A bus and its devices, ready to run.
pub struct ModbusBus {
    pub id: String,
    line: Line,
    offline_after: u32,
    max_backoff: Duration,
    devices: Vec<Scheduled>,
    /// Polls in a row that nobody answered, and of how many devices: the bus's own verdict.
    silent_polls: u32,
    silent_devices: std::collections::HashSet<usize>,
    bus_online: Option<bool>,
}

impl ModbusBus {
    /// Builds the bus `bus` of a checked config with its enabled devices; `pins` gives its
    /// driver-enable pin, if it has one.
    pub fn from_config(
        loaded: &Loaded,
        bus: &BusConfig,
        pins: &dyn crate::gpio::Pins,
    ) -> anyhow::Result<Self> {
        let endpoint = endpoint_of(loaded, bus)?;
        let timeout = Duration::from_millis(bus.timeout_ms);
        let max_backoff = Duration::from_secs(bus.max_backoff_s);
        let mut line = Line::new(
            endpoint,
            timeout,
            Duration::from_millis(bus.pause_ms()),
            max_backoff,
        );
        if let Some(pin) = bus.de_pin {
            let active = bus.de_active.unwrap_or(crate::gpio::Active::High);
            match pins.output(pin, active.level(false)) {
                Ok(out) => {
                    line = line.with_driver_enable(super::de::DriverEnable::new(out, active))
                }
                // No GPIO at all is said once by the app.
                Err(crate::gpio::GpioError::Unavailable(_)) => {}
                // The line is polled anyway: its meters' silence then says the rest.
                Err(e) => warn!(bus = %bus.id, error = %e, "RS-485 driver enable cannot be driven"),
            }
        }
        let now = Instant::now();
        let mut devices = Vec::new();
        for d in loaded
            .config
            .devices
            .iter()
            .filter(|d| d.enabled && d.bus.as_deref() == Some(bus.id.as_str()))
        {
            let profile = loaded
                .device_profiles
                .get(&d.id)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("device {} has no resolved profile", d.id))?;
            let unit = d
                .unit
                .and_then(|u| u8::try_from(u).ok())
                .unwrap_or(profile.serial.unit);
            let timeout = d.timeout_ms.map_or(timeout, Duration::from_millis);
            let id = Arc::from(d.id.as_str());
            let poller = match bus.kind {
                BusKind::Dlt645 => {
                    let address = d
                        .address
                        .as_deref()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|e| anyhow::anyhow!("device {}: address: {e}", d.id))?;
                    DevicePoller::Dlt645(crate::dlt645::poller::Dlt645Poller::new(
                        id, address, &profile, timeout,
                    ))
                }
                BusKind::Cjt188 => {
                    let address = d
                        .address
                        .as_deref()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|e| anyhow::anyhow!("device {}: address: {e}", d.id))?;
                    DevicePoller::Cjt188(crate::cjt188::poller::Cjt188Poller::new(
                        id, address, &profile, timeout,
                    ))
                }
                _ => DevicePoller::Modbus(Poller::new(id, unit, profile, timeout)),
            };
            devices.push(Scheduled {
                poller,
                interval: Duration::from_secs(d.poll_interval_s()),
                due: now,
                failures: 0,
                offline_polls: 0,
                online: None,
            });
        }
        Ok(Self {
            id: bus.id.clone(),
            line,
            offline_after: bus.offline_after,
            max_backoff,
            devices,
            silent_polls: 0,
            silent_devices: std::collections::HashSet::new(),
            bus_online: None,
        })
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Polls until `shutdown`. Never returns early: a dead line is retried with back-off.
    pub async fn run(mut self, hub: Arc<Hub>, shutdown: CancellationToken) {
        if self.devices.is_empty() {
            return;
        }
        info!(bus = %self.id, endpoint = %self.line.endpoint(), devices = self.devices.len(), "bus started");
        loop {
            let Some(next) = self
                .devices
                .iter()
                .enumerate()
                .min_by_key(|(_, d)| d.due)
                .map(|(i, _)| i)
            else {
                return;
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(self.devices[next].due) => {}
            }
            let offline_after = self.offline_after;
            let max_backoff = self.max_backoff;
            let d = &mut self.devices[next];
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = d.poller.poll(&mut self.line) => r,
            };
            for o in &result.outcomes {
                hub.record_request(d.poller.id(), *o);
            }
            if !result.rejects.is_empty() {
                hub.record_line_rejects(d.poller.id(), &result.rejects);
            }
            for point in &result.counter_resets {
                hub.record_counter_reset(d.poller.id());
                warn!(device = %d.poller.id(), %point, "counter went backwards (meter replaced or rolled over); consumption counts from the new value");
            }
            let error = (!result.errors.is_empty()).then(|| result.errors.join("; "));
            // The bus is down when `offline_after` polls in a row went unanswered and every
            // device not already known to be offline was among them: a line where some meters
            // are dead and others answer is not down. Usually decided within the first round,
            // before the devices' own verdicts, so that their comm alarms are explained by it.
            let bus_online = if result.answered {
                self.silent_polls = 0;
                self.silent_devices.clear();
                Some(true)
            } else {
                self.silent_polls += 1;
                self.silent_devices.insert(next);
                let all_silent = self
                    .devices
                    .iter()
                    .enumerate()
                    .all(|(i, d)| d.online == Some(false) || self.silent_devices.contains(&i));
                (self.silent_polls >= offline_after && all_silent)
                    .then_some(false)
                    .or(self.bus_online)
            };
            if bus_online.is_some() && bus_online != self.bus_online {
                let was_down = self.bus_online == Some(false);
                self.bus_online = bus_online;
                let online = bus_online == Some(true);
                if online {
                    info!(bus = %self.id, "bus answers");
                } else {
                    warn!(bus = %self.id, "bus offline: none of its devices answers");
                }
                if online && was_down {
                    // The line is back: its devices in back-off are asked now, not minutes
                    // later, so that their own verdicts follow the line's.
                    let now = Instant::now();
                    for (i, d) in self.devices.iter_mut().enumerate() {
                        if i != next && d.online == Some(false) {
                            d.offline_polls = 0;
                            d.due = d.due.min(now);
                        }
                    }
                }
                hub.set_bus_online(&self.id, online);
            }
            let d = &mut self.devices[next];
            if result.answered {
                d.failures = 0;
                d.offline_polls = 0;
                d.online = Some(true);
            } else {
                d.failures += 1;
                // Until then, a miss on a noisy line is no verdict.
                if d.failures >= offline_after {
                    d.offline_polls += 1;
                    d.online = Some(false);
                }
            }
            let online = d.online;
            match hub.record_poll(d.poller.id(), online, error.clone()) {
                Some(true) => info!(device = %d.poller.id(), bus = %self.id, "device online"),
                Some(false) => {
                    warn!(device = %d.poller.id(), bus = %self.id, error = error.as_deref().unwrap_or(""), "device offline")
                }
                None => {
                    if let Some(e) = &error {
                        debug!(device = %d.poller.id(), error = %e, "poll problem");
                    }
                }
            }
            let now = Instant::now();
            d.due = next_due(d.due, now, d.interval, d.offline_polls, max_backoff);
            if !result.readings.is_empty() {
                hub.ingest(result.readings).await;
            }
        }
        info!(bus = %self.id, "bus stopped");
    }
}

/// Where a configured bus's frames go.
pub fn endpoint_of(loaded: &Loaded, bus: &BusConfig) -> anyhow::Result<Endpoint> {
    Ok(match bus.kind {
        BusKind::Tcp => Endpoint::Tcp(bus.address.clone().unwrap_or_default()),
        BusKind::RtuOverTcp => Endpoint::RtuOverTcp(bus.address.clone().unwrap_or_default()),
        BusKind::Rtu => Endpoint::Serial {
            path: bus.serial.clone().unwrap_or_default(),
            line: loaded.bus_lines.get(&bus.id).copied().unwrap_or_default(),
        },
        // A serial server passes the line's bytes through, as it does RTU frames.
        BusKind::Dlt645 | BusKind::Cjt188 => match &bus.address {
            Some(a) => Endpoint::SerialServer(a.clone()),
            None => Endpoint::Serial {
                path: bus.serial.clone().unwrap_or_default(),
                line: loaded.bus_lines.get(&bus.id).copied().unwrap_or_default(),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_online_device_keeps_its_rhythm_and_skips_overrun_cycles() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(
            next_due(t0, t0 + Duration::from_millis(300), 5 * s, 0, max),
            t0 + 5 * s
        );
        // the poll overran two whole cycles: the next one is on the rhythm, not a burst
        assert_eq!(
            next_due(t0, t0 + Duration::from_millis(12_500), 5 * s, 0, max),
            t0 + 15 * s
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_offline_device_backs_off_up_to_the_ceiling() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(next_due(t0, t0, 5 * s, 1, max), t0 + 10 * s);
        assert_eq!(next_due(t0, t0, 5 * s, 2, max), t0 + 20 * s);
        assert_eq!(next_due(t0, t0, 5 * s, 3, max), t0 + 40 * s);
        assert_eq!(next_due(t0, t0, 5 * s, 4, max), t0 + 60 * s);
        assert_eq!(next_due(t0, t0, 5 * s, 40, max), t0 + 60 * s);
        // a ceiling below the interval never polls faster than the interval
        assert_eq!(next_due(t0, t0, 120 * s, 3, max), t0 + 120 * s);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_line_is_not_retried_before_its_back_off() {
        // Nothing listens on port 1 of 127.0.0.1: the first attempt fails at once.
        let mut line = Line::new(
            Endpoint::Tcp("127.0.0.1:1".into()),
            Duration::from_millis(200),
            Duration::ZERO,
            Duration::from_secs(30),
        );
        assert!(line.ensure().await.is_err());
        let retry_at = line.reconnect_at.expect("a reconnect is scheduled");
        assert!(retry_at > Instant::now());
        // Before the back-off ends, no connection is attempted: the error comes back at once.
        let before = Instant::now();
        assert!(line.ensure().await.is_err());
        assert_eq!(Instant::now(), before);
        assert_eq!(line.reconnect_at, Some(retry_at));
    }
}
