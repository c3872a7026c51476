//! A simulated line of meters: a Modbus server (TCP, or RTU over TCP like a serial server) whose
//! units answer with the registers of a bundled profile, values moving plausibly with time.
//! The demo, the tests and the benchmarks poll it; it encodes with the same code the hub decodes
//! with, so tests of byte orders use the independent pymodbus peer instead.

use std::collections::HashMap;
use std::f64::consts::TAU;
use std::future::{ready, Ready};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use super::decode::encode;
use crate::profile::{Function, Kind, PointSource, Profile, RegisterSpec};
use crate::reading::Value;

/// How a simulated unit behaves on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Never answers: a dead meter on a shared line.
    Silent,
    /// Answers every request with this exception.
    Exception(ExceptionCode),
}

struct Unit {
    profile: Arc<Profile>,
    behaviour: Behaviour,
    /// Answer "illegal data address" for reads touching registers no point uses.
    strict: bool,
    /// Values pinned by a test, by point name.
    pinned: HashMap<String, Value>,
    /// Registers the meter ignores: requests touching them get no answer at all.
    ignored: Vec<(Function, std::ops::Range<u32>)>,
    /// Varies meters of one model from each other.
    seed: f64,
}

/// The simulated line; shared by every connection to it.
pub struct Simulator {
    units: RwLock<HashMap<u8, Unit>>,
    requests: AtomicU64,
    started: Instant,
}

impl Default for Simulator {
    fn default() -> Self {
        Self {
            units: RwLock::new(HashMap::new()),
            requests: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl Simulator {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Puts a meter of `profile` at `unit`.
    pub fn add(&self, unit: u8, profile: Arc<Profile>) {
        let seed = f64::from(unit) * 0.618_033_988_75 % 1.0;
        self.units().insert(
            unit,
            Unit {
                profile,
                behaviour: Behaviour::Normal,
                strict: false,
                pinned: HashMap::new(),
                ignored: Vec::new(),
                seed,
            },
        );
    }

    pub fn set_behaviour(&self, unit: u8, behaviour: Behaviour) {
        if let Some(u) = self.units().get_mut(&unit) {
            u.behaviour = behaviour;
        }
    }

    /// Refuse reads that span registers no point uses, as some real meters do.
    pub fn set_strict(&self, unit: u8, strict: bool) {
        if let Some(u) = self.units().get_mut(&unit) {
            u.strict = strict;
        }
    }

    /// Makes the meter ignore requests touching `registers` of `function` (as a firmware that
    /// lacks them and stays silent rather than answering an exception).
    pub fn ignore(&self, unit: u8, function: Function, registers: std::ops::Range<u16>) {
        if let Some(u) = self.units().get_mut(&unit) {
            u.ignored.push((
                function,
                u32::from(registers.start)..u32::from(registers.end),
            ));
        }
    }

    /// Fixes a point's value (engineering units) until changed again.
    pub fn pin(&self, unit: u8, point: &str, value: Value) {
        if let Some(u) = self.units().get_mut(&unit) {
            u.pinned.insert(point.to_string(), value);
        }
    }

    /// Requests received, for any unit, answered or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The value a point has now, as the simulator serves it.
    pub fn value(&self, unit: u8, point: &str) -> Option<Value> {
        let units = self.units.read().unwrap_or_else(PoisonError::into_inner);
        let u = units.get(&unit)?;
        let p = u.profile.point(point)?;
        Some(self.value_of(u, &p.name, p.kind))
    }

    fn units(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u8, Unit>> {
        self.units.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn value_of(&self, u: &Unit, name: &str, kind: Kind) -> Value {
        if let Some(v) = u.pinned.get(name) {
            return v.clone();
        }
        let t = self.started.elapsed().as_secs_f64();
        model(name, kind, t, u.seed)
    }

    /// Answers one request; `None` is silence.
    fn answer(&self, req: &SlaveRequest<'_>) -> Option<Result<Response, ExceptionCode>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let units = self.units.read().unwrap_or_else(PoisonError::into_inner);
        let u = units.get(&req.slave)?;
        match u.behaviour {
            Behaviour::Silent => return None,
            Behaviour::Exception(code) => return Some(Err(code)),
            Behaviour::Normal => {}
        }
        let (function, start, count) = match req.request {
            Request::ReadHoldingRegisters(a, n) => (Function::Holding, a, n),
            Request::ReadInputRegisters(a, n) => (Function::Input, a, n),
            Request::ReadCoils(a, n) => (Function::Coil, a, n),
            Request::ReadDiscreteInputs(a, n) => (Function::Discrete, a, n),
            // Writes are not part of a meter's simulation.
            _ => return Some(Err(ExceptionCode::IllegalFunction)),
        };
        if count == 0
            || count > function.max_quantity()
            || u32::from(start) + u32::from(count) > 65536
        {
            return Some(Err(ExceptionCode::IllegalDataValue));
        }
        let asked = u32::from(start)..u32::from(start) + u32::from(count);
        if u.ignored
            .iter()
            .any(|(f, r)| *f == function && r.start < asked.end && asked.start < r.end)
        {
            return None;
        }
        Some(self.image(u, function, start, count))
    }

    /// The registers (or bits) `start..start+count` of one unit.
    fn image(
        &self,
        u: &Unit,
        function: Function,
        start: u16,
        count: u16,
    ) -> Result<Response, ExceptionCode> {
        let end = u32::from(start) + u32::from(count);
        let mut words = vec![0u16; usize::from(count)];
        let mut covered = vec![false; usize::from(count)];
        for (spec, value) in self.register_values(u) {
            if spec.function != function
                || spec.end() <= u32::from(start)
                || u32::from(spec.address) >= end
            {
                continue;
            }
            let encoded = if function.is_bits() {
                vec![u16::from(value.as_f64().is_some_and(|x| x != 0.0))]
            } else {
                encode(&spec, &value)
            };
            for (k, w) in encoded.into_iter().enumerate() {
                let addr = u32::from(spec.address) + k as u32;
                if (u32::from(start)..end).contains(&addr) {
                    let idx = (addr - u32::from(start)) as usize;
                    // Several bool points may share a register, one bit each.
                    words[idx] |= w;
                    covered[idx] = true;
                }
            }
        }
        if u.strict && covered.iter().any(|c| !c) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(match function {
            Function::Holding => Response::ReadHoldingRegisters(words),
            Function::Input => Response::ReadInputRegisters(words),
            Function::Coil => Response::ReadCoils(words.iter().map(|w| *w != 0).collect()),
            Function::Discrete => {
                Response::ReadDiscreteInputs(words.iter().map(|w| *w != 0).collect())
            }
        })
    }

    /// Every register point with the value it holds now; the parts of a sum share its value
    /// (whole part first, the fraction in the second).
    fn register_values(&self, u: &Unit) -> Vec<(RegisterSpec, Value)> {
        let mut out = Vec::new();
        let mut parts: HashMap<&str, Value> = HashMap::new();
        for p in &u.profile.points {
            if let PointSource::Sum(names) = &p.source {
                let total = self.value_of(u, &p.name, p.kind).as_f64().unwrap_or(0.0);
                for (k, name) in names.iter().enumerate() {
                    let v = match k {
                        0 if names.len() > 1 => total.trunc(),
                        1 => total.fract(),
                        0 => total,
                        _ => 0.0,
                    };
                    parts.insert(name, Value::Number(v));
                }
            }
        }
        for p in &u.profile.points {
            if let Some(spec) = p.register() {
                let value = parts
                    .get(&*p.name)
                    .cloned()
                    .unwrap_or_else(|| self.value_of(u, &p.name, p.kind));
                out.push((spec.clone(), value));
            }
        }
        out
    }

    /// Serves Modbus TCP on `listener` until `shutdown`.
    pub async fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let sim = self.clone();
        let on_connected = move |stream, addr: SocketAddr| {
            let svc = SimService(sim.clone());
            async move {
                tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, move |_| {
                    Ok(Some(svc.clone()))
                })
            }
        };
        tokio::select! {
            r = server.serve(&on_connected, |e| tracing::debug!("simulator connection ended: {e}")) => r,
            _ = shutdown.cancelled() => Ok(()),
        }
    }

    /// Serves RTU frames over TCP (a serial server with meters behind it) until `shutdown`.
    pub async fn serve_rtu_over_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
        let sim = self.clone();
        let on_connected = move |stream, addr: SocketAddr| {
            let svc = SimService(sim.clone());
            async move {
                tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(stream, addr, move |_| {
                    Ok(Some(svc.clone()))
                })
            }
        };
        tokio::select! {
            r = server.serve(&on_connected, |e| tracing::debug!("simulator connection ended: {e}")) => r,
            _ = shutdown.cancelled() => Ok(()),
        }
    }
}

#[derive(Clone)]
struct SimService(Arc<Simulator>);

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(match self.0.answer(&req) {
            None => Ok(None),
            Some(Ok(r)) => Ok(Some(r)),
            Some(Err(e)) => Err(e),
        })
    }
}

/// Plausible values by point name: a park's mains at 220 V/50 Hz, loads swinging over ten
/// minutes, counters that integrate what they count. `t` in seconds, `seed` in 0..1.
pub fn model(name: &str, kind: Kind, t: f64, seed: f64) -> Value {
    let phase = seed * TAU;
    let wave = |period: f64| (TAU * t / period + phase).sin();
    // Mean load of this meter, W, and its swing.
    let p0 = 3000.0 + 9000.0 * seed;
    let power = |t: f64| p0 * (1.0 + 0.25 * (TAU * t / 600.0 + phase).sin());
    // ∫power dt in kWh, in closed form so the counter is exact and never goes back.
    let energy = |t: f64| {
        let w = TAU / 600.0;
        let integral = p0 * (t + 0.25 * ((phase).cos() - (w * t + phase).cos()) / w);
        integral / 3.6e6
    };
    let flow0 = 0.8 + 2.0 * seed; // m³/h
    let flow = |t: f64| flow0 * (1.0 + 0.5 * (TAU * t / 900.0 + phase).sin());
    let volume = |t: f64| {
        let w = TAU / 900.0;
        flow0 * (t + 0.5 * ((phase).cos() - (w * t + phase).cos()) / w) / 3600.0
    };
    let n = |x: f64| Value::Number(x);
    if let Some((port, inner)) = port_point(name) {
        return ebike_port(port, inner, kind, t, seed);
    }
    match name {
        "voltage_ab" | "voltage_bc" | "voltage_ca" => {
            n(380.0 + 4.0 * wave(300.0) + phase_skew(name))
        }
        s if s.starts_with("voltage") => n(220.0 + 3.0 * wave(300.0) + phase_skew(name)),
        s if s.starts_with("current") => n(power(t) / 3.0 / 220.0 / 0.95),
        "power_total" => n(power(t)),
        s if s.starts_with("power_") => n(power(t) / 3.0),
        s if s.starts_with("reactive") => n(power(t) * 0.3),
        s if s.starts_with("apparent") => n(power(t) / 0.95),
        s if s.starts_with("pf") => n(0.95 + 0.03 * wave(420.0)),
        "frequency" => n(50.0 + 0.03 * wave(60.0)),
        s if s.starts_with("energy_import") || s == "energy_total" => {
            n(12_000.0 + 5_000.0 * seed + energy(t))
        }
        s if s.starts_with("energy_export") => n(100.0 + seed * 10.0 + energy(t) * 0.01),
        "flow_rate" => n(flow(t)),
        "volume_total" => n(3_000.0 + 1_000.0 * seed + volume(t)),
        "volume_negative" => n(0.0),
        "pipe_status" => Value::Text("full".into()),
        // An e-bike charging station's cabinet, and its energy over all ports (about 1.5 kW).
        "temperature" => n(30.0 + 3.0 * wave(900.0)),
        "total_energy" => n(5_000.0 + 2_000.0 * seed + 1_500.0 * t / 3.6e6),
        _ => fallback(kind, t, wave(120.0)),
    }
}

/// A point nothing above models, by its kind.
fn fallback(kind: Kind, t: f64, wave: f64) -> Value {
    match kind {
        Kind::Counter => Value::Number(1000.0 + t / 60.0),
        Kind::State => Value::Number(0.0),
        Kind::Gauge => Value::Number(1.0 + 0.1 * wave),
    }
}

/// `port3.power_w` → (3, "power_w"): a point of one port of a multi-port device.
fn port_point(name: &str) -> Option<(u32, &str)> {
    let (n, inner) = name.strip_prefix("port")?.split_once('.')?;
    Some((n.parse().ok()?, inner))
}

/// A port of an e-bike charging station: half the ports charging (about 200 W, warm), a quarter
/// idle, a quarter full (cut off, a trickle), none faulty. Each port keeps its state.
fn ebike_port(port: u32, inner: &str, kind: Kind, t: f64, seed: f64) -> Value {
    let phase = (seed + f64::from(port) * 0.37) * TAU;
    let wave = |period: f64| (TAU * t / period + phase).sin();
    let (state, mean_w) = match (port + (seed * 4.0) as u32) % 4 {
        0 => ("idle", 0.0),
        3 => ("full", 3.0),
        _ => ("charging", 200.0),
    };
    let charging = state == "charging";
    let n = Value::Number;
    match inner {
        "state" => Value::Text(state.into()),
        "power_w" if charging => n((mean_w + 40.0 * wave(600.0)).round()),
        "power_w" => n(mean_w),
        "temperature" if charging => n(37.0 + 2.0 * wave(900.0)),
        "temperature" => n(29.0),
        "fault" => n(0.0),
        // The mean power integrated, so the counter never goes back.
        "energy" => n(20.0 + 15.0 * seed + 3.0 * f64::from(port) + mean_w * t / 3.6e6),
        "remaining_min" if charging => {
            n(240.0 - ((t / 60.0 + 37.0 * f64::from(port)) % 240.0).floor())
        }
        "remaining_min" => n(0.0),
        _ => fallback(kind, t, wave(120.0)),
    }
}

/// Phases of a real supply differ by a volt or so.
fn phase_skew(name: &str) -> f64 {
    match name.as_bytes().last() {
        Some(b'b') => 0.8,
        Some(b'c') => -0.6,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_counters_never_go_backwards() {
        for seed in [0.0, 0.3, 0.9] {
            let mut last = f64::MIN;
            for step in 0..5000 {
                let t = f64::from(step) * 0.7;
                let e = model("energy_import", Kind::Counter, t, seed)
                    .as_f64()
                    .unwrap();
                let v = model("volume_total", Kind::Counter, t, seed)
                    .as_f64()
                    .unwrap();
                assert!(e >= last, "energy went back at t={t}");
                last = e;
                assert!(v >= 3000.0);
            }
        }
    }

    #[test]
    fn simulated_ebike_ports_charge_warm_and_count_up() {
        let v = |name: &str, kind, t| model(name, kind, t, 0.3);
        let states: Vec<Value> = (1..=10)
            .map(|p| v(&format!("port{p}.state"), Kind::State, 5.0))
            .collect();
        assert!(states.contains(&Value::Text("charging".into())));
        assert!(states.contains(&Value::Text("idle".into())));
        for p in 1..=10 {
            let name = |inner: &str| format!("port{p}.{inner}");
            let w = v(&name("power_w"), Kind::Gauge, 5.0).as_f64().unwrap();
            let c = v(&name("temperature"), Kind::Gauge, 5.0).as_f64().unwrap();
            assert!((0.0..=400.0).contains(&w) && (20.0..=45.0).contains(&c));
            let e0 = v(&name("energy"), Kind::Counter, 5.0).as_f64().unwrap();
            let e1 = v(&name("energy"), Kind::Counter, 3600.0).as_f64().unwrap();
            assert!(e1 >= e0);
        }
    }

    #[test]
    fn simulated_mains_look_like_a_chinese_park() {
        let v = model("voltage_a", Kind::Gauge, 10.0, 0.5).as_f64().unwrap();
        assert!((215.0..=225.0).contains(&v));
        let f = model("frequency", Kind::Gauge, 10.0, 0.5).as_f64().unwrap();
        assert!((49.9..=50.1).contains(&f));
    }
}
