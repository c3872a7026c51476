//! Real parts for the integration tests: the in-process simulator on 127.0.0.1:0, the
//! independent pymodbus peer, socat pty pairs, and configs loaded the way the hub loads them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parkhub::config::{load_str, Loaded};
use parkhub::hub::{DeviceInfo, Hub};
use parkhub::modbus::sim::Simulator;
use parkhub::modbus::ModbusBus;
use parkhub::profile::{Profile, ProfileRegistry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn bundled(id: &str) -> Arc<Profile> {
    ProfileRegistry::bundled()
        .expect("bundled profiles load")
        .get(id)
        .unwrap_or_else(|| panic!("no bundled profile {id}"))
        .clone()
}

/// A simulator serving Modbus TCP (or RTU over TCP) on a free loopback port.
pub struct SimServer {
    pub sim: Arc<Simulator>,
    pub addr: SocketAddr,
    pub rtu: bool,
    stop: CancellationToken,
}

impl SimServer {
    pub async fn start(units: &[(u8, &str)], rtu: bool) -> Self {
        let sim = Simulator::new();
        for &(unit, id) in units {
            sim.add(unit, bundled(id));
        }
        Self::serve(sim, "127.0.0.1:0".parse().unwrap(), rtu).await
    }

    pub async fn serve(sim: Arc<Simulator>, addr: SocketAddr, rtu: bool) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind simulator");
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        if rtu {
            tokio::spawn(sim.clone().serve_rtu_over_tcp(listener, stop.clone()));
        } else {
            tokio::spawn(sim.clone().serve_tcp(listener, stop.clone()));
        }
        Self {
            sim,
            addr,
            rtu,
            stop,
        }
    }

    /// Stops serving: the listener closes and every connection is dropped.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Serves the same meters again on the same port.
    pub async fn restart(&self) -> Self {
        Self::serve(self.sim.clone(), self.addr, self.rtu).await
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Loads a config text (with `${VAR}` from `vars`) the way `parkhub run` would.
pub fn load(text: &str, dir: &Path) -> Loaded {
    match load_str("test.toml", text, dir, &|_| None) {
        Ok(l) => l,
        Err(d) => panic!("test config does not check:\n{d}\n---\n{text}"),
    }
}

/// The hub state for a loaded config, without a history writer.
pub fn hub_for(loaded: &Loaded) -> Arc<Hub> {
    let devices = loaded
        .config
        .devices
        .iter()
        .map(|d| DeviceInfo {
            id: d.id.as_str().into(),
            name: d.display_name().to_string(),
            profile: d.profile.clone(),
            category: String::new(),
            location: d.location.clone(),
        })
        .collect();
    Hub::new(devices, None)
}

/// Runs every bus of `loaded` until `stop` is cancelled.
pub fn run_buses(
    loaded: &Loaded,
    hub: &Arc<Hub>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    loaded
        .config
        .buses
        .iter()
        .map(|b| {
            let bus = ModbusBus::from_config(
                loaded,
                b,
                &parkhub::gpio::NoPins("no GPIO in tests".into()),
            )
            .expect("bus builds");
            tokio::spawn(bus.run(hub.clone(), stop.clone()))
        })
        .collect()
}

/// Waits (real time, polling every 20 ms) until `f` holds; panics with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The independent pymodbus server (`tests/peers/modbus_peer.py`), killed on drop.
pub struct PyPeer {
    child: Child,
    pub port: u16,
    args: Vec<String>,
    _map: tempfile::NamedTempFile,
}

impl PyPeer {
    /// Starts the peer with `map` (MAP.json) and the where-arguments (`--tcp-port 0`, …).
    pub fn start(map: &serde_json::Value, args: &[&str]) -> Self {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        serde_json::to_writer(&mut file, map).unwrap();
        let mut all = vec!["--map".to_string(), file.path().display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let (child, port) = spawn_peer(&all);
        Self {
            child,
            port,
            args: all,
            _map: file,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same peer again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--tcp-port") {
            args[i + 1] = self.port.to_string();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger a moment after the old process exits.
            match try_spawn_peer(&args) {
                Ok((child, _)) => {
                    self.child = child;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("peer restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("pymodbus peer did not restart: {e}"),
            }
        }
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_peer(args: &[String]) -> (Child, u16) {
    try_spawn_peer(args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_spawn_peer(args: &[String]) -> Result<(Child, u16), String> {
    let script = repo().join("tests/peers/modbus_peer.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start python3 {}: {e} (run ./scripts/test, which installs the test peers)",
                script.display()
            )
        })?;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    match line.trim().strip_prefix("READY ") {
        Some(p) => Ok((
            child,
            p.parse().map_err(|_| format!("bad READY line {line:?}"))?,
        )),
        None => {
            let status = child.wait().ok();
            Err(format!(
                "pymodbus peer did not start (exit {status:?}); is pymodbus==3.16.1 installed? `./scripts/test` installs it"
            ))
        }
    }
}

/// A pair of connected pseudo-terminals from socat: a serial line in a box. Killed on drop.
pub struct PtyPair {
    child: Child,
    pub a: PathBuf,
    pub b: PathBuf,
}

impl PtyPair {
    pub fn new() -> Self {
        let mut child = Command::new("socat")
            .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("socat is needed for the serial tests (./scripts/test installs it)");
        let stderr = child.stderr.take().unwrap();
        let mut reader = BufReader::new(stderr);
        let mut ptys = Vec::new();
        let mut line = String::new();
        while ptys.len() < 2 {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("socat exited before opening two ptys");
            }
            if let Some(i) = line.find("PTY is ") {
                ptys.push(PathBuf::from(line[i + 7..].trim()));
            }
        }
        // Keep draining socat's log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Self {
            child,
            a: ptys[0].clone(),
            b: ptys[1].clone(),
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A register as the peer's MAP.json describes it.
pub fn reg(
    function: &str,
    address: u16,
    ty: &str,
    order: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({"function": function, "address": address, "type": ty, "order": order, "value": value})
}

pub fn assert_close(what: &str, got: f64, want: f64) {
    let tol = 1e-6 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

/// A free TCP port on loopback (bound and released: another process may take it first, which
/// the callers' retries absorb).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real mosquitto on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `extra` is appended to the listener's configuration (TLS files, auth).
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("user root\npersistence false\nlog_dest stderr\nlog_type error\nlistener {port} 127.0.0.1\n{extra}\n"),
        )
        .unwrap();
        let child = Self::spawn(&conf, port);
        Self {
            child,
            port,
            conf,
            _dir: dir,
        }
    }

    fn spawn(conf: &Path, port: u16) -> Child {
        // Debian installs it in /usr/sbin, which is not on a normal user's PATH.
        let program = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(program)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto is needed for the MQTT tests (./scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port (with no memory of sessions: persistence is off).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.conf, self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A device publishing over MQTT (rumqttc), its event loop driven in the background.
pub struct MqttDevice {
    pub client: rumqttc::AsyncClient,
    acks: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttDevice {
    /// Connects; `Err` with the reason when the broker refuses.
    pub async fn connect(
        port: u16,
        id: &str,
        login: Option<(&str, &str)>,
        will: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        use rumqttc::{Event, MqttOptions, Packet};
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        if let Some((topic, payload)) = will {
            o.set_last_will(rumqttc::LastWill::new(
                topic,
                payload,
                rumqttc::QoS::AtLeastOnce,
                true,
            ));
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1024);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let (ack_tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Self { client, acks, task }),
            Ok(Ok(Err(e))) => Err(e),
            _ => Err("no answer from the broker".into()),
        }
    }

    /// Publishes with QoS 1 and waits for the broker's acknowledgement.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .expect("the broker acknowledged the publish")
            .expect("the device is still connected");
    }

    /// Vanishes without a goodbye (power cut): the broker publishes its last will.
    pub fn vanish(self) {
        self.task.abort();
    }
}

/// The MQTT side of a hub for a config text, running until dropped.
pub struct MqttHub {
    pub hub: Arc<Hub>,
    pub loaded: Loaded,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl MqttHub {
    pub async fn start(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(text, dir.path());
        Self::start_loaded(loaded, dir).await
    }

    pub async fn start_loaded(loaded: Loaded, dir: tempfile::TempDir) -> Self {
        let hub = hub_for(&loaded);
        let source = parkhub::mqtt::MqttSource::start(&loaded)
            .await
            .expect("MQTT source starts")
            .expect("config has [mqtt]");
        let mut subscribed = source.subscriptions();
        let stop = CancellationToken::new();
        let task = tokio::spawn(source.run(hub.clone(), stop.clone()));
        // Messages published before the hub has subscribed would be lost: wait for it.
        tokio::time::timeout(Duration::from_secs(15), subscribed.wait_for(|n| *n > 0))
            .await
            .expect("the hub subscribed in time")
            .expect("the MQTT client runs");
        Self {
            hub,
            loaded,
            stop,
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the source (a clean disconnect) and waits for it.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for MqttHub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One HTTP request as a receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A real HTTP server on 127.0.0.1:0 that records every request and answers what the test
/// tells it to (a chat service's success, its rate-limit error, a 503).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
    answer: Arc<std::sync::Mutex<(u16, String)>>,
    stop: CancellationToken,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        use axum::extract::{OriginalUri, State};
        type Shared = (
            Arc<std::sync::Mutex<Vec<Received>>>,
            Arc<std::sync::Mutex<(u16, String)>>,
        );
        async fn take(
            State((got, answer)): State<Shared>,
            OriginalUri(uri): OriginalUri,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> (axum::http::StatusCode, String) {
            got.lock().unwrap().push(Received {
                path: uri.path().to_string(),
                query: uri.query().map(str::to_owned),
                headers,
                body: body.to_vec(),
                at: Instant::now(),
            });
            let (status, body) = answer.lock().unwrap().clone();
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        }
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = Arc::new(std::sync::Mutex::new((
            200,
            r#"{"errcode":0,"errmsg":"ok"}"#.to_string(),
        )));
        let app = axum::Router::new()
            .fallback(take)
            .with_state((got.clone(), answer.clone()));
        let listener = TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Self {
            addr,
            got,
            answer,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it answers from now on.
    pub fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Whether `signature` is DESIGN.md's `sha256=<hex HMAC-SHA256(secret, ts + "." + body)>`,
/// checked here independently of the hub's code.
pub fn webhook_signature_ok(secret: &str, r: &Received) -> bool {
    use hmac::{KeyInit, Mac};
    let ts = r.header("x-parkhub-timestamp");
    let Some(hex_sig) = r.header("x-parkhub-signature").strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    mac.verify_slice(&sig).is_ok()
}

/// An HTTP client that trusts `roots` (empty for plain HTTP). reqwest is built without a
/// default crypto provider (the hub picks ring), so it needs a TLS configuration even when it
/// never speaks TLS. `cookies`: it keeps cookies, as a browser does.
pub fn http_client_trusting(
    roots: tokio_rustls::rustls::RootCertStore,
    cookies: bool,
) -> reqwest::Client {
    use tokio_rustls::rustls;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .cookie_store(cookies)
        .build()
        .unwrap()
}

/// A plain-HTTP client without cookies.
pub fn http_client() -> reqwest::Client {
    http_client_trusting(tokio_rustls::rustls::RootCertStore::empty(), false)
}

/// A plain-HTTP client that keeps cookies (a console session).
pub fn cookie_client() -> reqwest::Client {
    http_client_trusting(tokio_rustls::rustls::RootCertStore::empty(), true)
}

/// What an uplink receiver took (2xx answers only), in arrival order.
#[derive(Debug, Default)]
pub struct CloudLog {
    /// Every `seq` of every batch it took, repeats included, as they came.
    pub seqs: Vec<i64>,
    pub requests: usize,
    pub refused: usize,
    /// Batches that did not read as DESIGN.md's uplink JSON.
    pub problems: Vec<String>,
}

impl CloudLog {
    /// The highest seq when every seq from 1 to it came at least once.
    pub fn complete(&self) -> Option<i64> {
        let set: std::collections::BTreeSet<i64> = self.seqs.iter().copied().collect();
        let max = *set.iter().next_back()?;
        (set.len() as i64 == max && *set.iter().next()? == 1).then_some(max)
    }

    /// The seqs missing between 1 and the highest (at most `n` of them).
    pub fn gaps(&self, n: usize) -> Vec<i64> {
        let set: std::collections::BTreeSet<i64> = self.seqs.iter().copied().collect();
        let max = set.iter().next_back().copied().unwrap_or(0);
        (1..=max).filter(|s| !set.contains(s)).take(n).collect()
    }

    /// Seqs that arrived for the first time below one that had already arrived: the records
    /// were not sent oldest first.
    pub fn out_of_order(&self) -> Vec<i64> {
        let mut seen = std::collections::HashSet::new();
        let mut high = 0;
        let mut late = Vec::new();
        for &s in &self.seqs {
            if seen.insert(s) {
                if s < high {
                    late.push(s);
                }
                high = high.max(s);
            }
        }
        late
    }
}

/// A park brain's HTTP ingest on 127.0.0.1 (DESIGN.md's uplink): takes batches, refuses the
/// requests `refuse(n)` picks with 503, and can go away and come back on the same port.
#[derive(Clone)]
pub struct Cloud {
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<CloudLog>>,
    refuse: Arc<dyn Fn(usize) -> bool + Send + Sync>,
    stop: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Cloud {
    pub async fn start(refuse: impl Fn(usize) -> bool + Send + Sync + 'static) -> Self {
        let mut c = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            log: Default::default(),
            refuse: Arc::new(refuse),
            stop: Default::default(),
        };
        c.addr = c.serve(c.addr).await;
        c
    }

    async fn serve(&self, addr: SocketAddr) -> SocketAddr {
        use std::io::Read as _;
        let (log, refuse) = (self.log.clone(), self.refuse.clone());
        let take = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (log, refuse) = (log.clone(), refuse.clone());
            async move {
                let mut log = log.lock().unwrap();
                let n = log.requests;
                log.requests += 1;
                if refuse(n) {
                    log.refused += 1;
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let gz = headers
                    .get("content-encoding")
                    .is_some_and(|v| v.as_bytes() == b"gzip");
                let json = if gz {
                    let mut out = Vec::new();
                    let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out);
                    out
                } else {
                    body.to_vec()
                };
                match serde_json::from_slice::<serde_json::Value>(&json) {
                    Ok(v) => {
                        let mut seqs: Vec<i64> = ["readings", "alarms", "device_status"]
                            .iter()
                            .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
                            .filter_map(|r| r["seq"].as_i64())
                            .collect();
                        seqs.sort_unstable();
                        let (f, l) = (v["first_seq"].as_i64(), v["last_seq"].as_i64());
                        if seqs.first().copied() != f || seqs.last().copied() != l {
                            log.problems
                                .push(format!("batch {f:?}..={l:?} carries {seqs:?}"));
                        }
                        log.seqs.extend(seqs);
                    }
                    Err(e) => log.problems.push(format!("not JSON: {e}")),
                }
                axum::http::StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/ingest", axum::routing::post(take));
        // The port may linger a moment after the last run closed it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("cloud bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind the cloud on {addr}: {e}"),
            }
        };
        let bound = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        *self.stop.lock().unwrap() = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        bound
    }

    pub fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    /// Goes away: the port refuses connections.
    pub fn stop(&self) {
        self.stop.lock().unwrap().cancel();
    }

    /// Comes back on the same port.
    pub async fn restart(&self) {
        self.serve(self.addr).await;
    }

    pub fn complete(&self) -> Option<i64> {
        self.log.lock().unwrap().complete()
    }
}

/// `parkhub run --config PATH` with extra environment, its stderr appended to `log`.
pub fn spawn_hub(config: &Path, env: &[(&str, &str)], log: &Path) -> Child {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(["run", "--config", config.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

/// SIGTERM, then waits (SIGKILL after 20 s).
pub fn stop_hub(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a log, for a failure's message.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `PRAGMA integrity_check` of every `*.sqlite` in `dir`: (file, answer) for each not "ok".
pub fn sqlite_damage(dir: &Path) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "sqlite") {
            let answer = rusqlite::Connection::open(&p)
                .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
                .unwrap_or_else(|e| e.to_string());
            if answer != "ok" {
                bad.push((p.display().to_string(), answer));
            }
        }
    }
    bad
}

/// Hex SHA-256, as `[[api.token]] sha256` takes a token.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

impl PtyPair {
    /// A pair whose device nodes are reached through the symlinks `a` and `b` (socat's
    /// `link=`): a pair started again with the same paths is the same serial line back.
    pub fn linked(a: &Path, b: &Path) -> Self {
        let mut child = Command::new("socat")
            .args(["-d", "-d"])
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("socat is needed for the serial tests (./scripts/test installs it)");
        let stderr = child.stderr.take().unwrap();
        let mut reader = BufReader::new(stderr);
        let mut opened = 0;
        let mut line = String::new();
        while opened < 2 {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("socat exited before opening two ptys");
            }
            if line.contains("PTY is ") {
                opened += 1;
            }
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        // socat makes the links after it reports the ptys.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(a.exists() && b.exists()) {
            assert!(Instant::now() < deadline, "socat made no links");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            a: a.to_path_buf(),
            b: b.to_path_buf(),
        }
    }

    /// The line vanishes: socat ends, its ptys close and its links go.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
