//! `parkhub demo`: a simulated park (meters on in-process Modbus servers, one of them failing on
//! a script; sensors on the embedded broker, with smoke, a trapped lift and a forced door on a
//! schedule) and the hub running it: a table of what it reads, and the alarm pushes as a local
//! webhook receiver gets them. No root, no set-up.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use crate::alarm::store::{AlarmStore, Listing};
use crate::app::{shutdown_signal, App};
use crate::cli::DemoArgs;
use crate::config::{self, Loaded};
use crate::hub::{DeviceState, Hub};
use crate::modbus::sim::{Behaviour, Simulator};
use crate::mqtt::sim::{self as sensors, Sensor, SensorKind};
use crate::ocpp::sim::{SimCharger, SimConfig, SimControl};
use crate::profile::ProfileRegistry;
use crate::reading::Value;
use crate::text::pad;

const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// The simulated lines: (unit, profile) on the TCP gateway and on the serial server.
const TCP_METERS: &[(u8, &str)] = &[
    (1, "chint-dtsu666"),
    (2, "eastron-sdm630"),
    (3, "acrel-adw300"),
    (4, "chint-ddsu666"),
    (5, "eastron-sdm120"),
    (6, "modbus-ebike-station"),
];
/// The demo's EV chargers: (charge point id, connectors, kW, vendor, model).
const CHARGERS: &[(&str, u32, f64, &str, &str)] = &[
    ("CP-B3-01", 2, 7.0, "星星充电", "AC 7kW 双枪"),
    ("CP-B3-02", 1, 60.0, "特来电", "DC 60kW"),
    ("CP-B5-01", 2, 7.0, "星星充电", "AC 7kW 双枪"),
];
/// The charger that needs a password.
const LOCKED_CHARGER: &str = "CP-B5-01";
/// The charger whose gun overheats for 40 s from 3:20 of every five minutes.
const HOT_CHARGER: usize = 1;
const RTU_METERS: &[(u8, &str)] = &[(1, "tuf-2000m"), (2, "xintai-water"), (3, "xintai-water")];
/// The water meter that dies for the second half of every minute.
const FLAKY_UNIT: u8 = 3;

/// Where the demo serves the console when the port is free (DESIGN.md).
const DEMO_LISTEN: &str = "127.0.0.1:8080";

/// The demo's console user; its password is new each run and printed.
const DEMO_USER: &str = "demo";

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("parkhub-demo-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let profiles =
        ProfileRegistry::bundled().map_err(|d| anyhow::anyhow!("bundled profiles: {d:?}"))?;
    let shutdown = CancellationToken::new();
    let scale = usize::from(args.scale.max(1));
    // Each copy of the park has its own meter lines, so a scaled demo polls N times the lines
    // as a park of N times the buildings would, not N times the units on one line.
    let mut lines = Vec::with_capacity(scale);
    for _ in 0..scale {
        lines.push(start_lines(&profiles, &shutdown).await?);
    }
    let (tcp_port, rtu_port, dlt_port) = (lines[0].tcp, lines[0].rtu, lines[0].dlt645);

    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // The departments' phones, here: a webhook receiver that checks each push's signature.
    let secret = crate::random::hex(16)?;
    let (pushes_tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let hook = start_receiver(secret.clone(), pushes_tx, shutdown.clone()).await?;
    let token = crate::random::hex(16)?;
    let charger_password = crate::random::hex(12)?;
    let ports = DemoPorts {
        lines,
        mqtt: mqtt_port,
        webhook_url: format!("http://{hook}/alarm"),
        webhook_secret: secret,
        token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
        charger_password_sha256: hex::encode(Sha256::digest(charger_password.as_bytes())),
    };
    let mut loaded = demo_config(&data_dir, &ports)?;
    // DESIGN.md promises the console at 127.0.0.1:8080; when something else holds that port
    // (a second demo), a free one does.
    loaded.0.config.api.listen = match args.listen {
        Some(at) => at,
        None => match std::net::TcpListener::bind(DEMO_LISTEN) {
            Ok(_) => DEMO_LISTEN.parse()?,
            Err(_) => "127.0.0.1:0".parse()?,
        },
    };
    // No default password: the demo's console user gets a new one each run.
    let password = crate::random::hex(8)?;
    crate::users::Users::open(&data_dir.join(crate::users::DB_FILE))?.add(
        DEMO_USER,
        crate::config::Role::Admin,
        &password,
    )?;
    let config_path = data_dir.join("parkhub.toml");
    std::fs::write(&config_path, &loaded.1)
        .with_context(|| format!("writing {}", config_path.display()))?;
    // The demo's GPIO pins are simulated: the same config drives real ones on a Pi.
    let pins = crate::gpio::sim::SimPins::new();
    let doors = door_pins(scale);
    for &pin in &doors {
        pins.drive(pin, false);
    }
    tokio::spawn(script_door(pins.clone(), doors.clone(), shutdown.clone()));
    let mut app = App::start_with(&loaded.0, Some(Arc::new(pins))).await?;
    if !app.subscribed(Duration::from_secs(10)).await {
        anyhow::bail!("the hub did not subscribe to the demo's embedded broker within 10 s");
    }
    // The simulated sensors: one MQTT connection each, to the hub's embedded broker.
    for d in &loaded.0.config.devices {
        let (Some(kind), Some(topics)) = (
            SensorKind::of_profile(&d.profile),
            loaded.0.mqtt_topics.get(&d.id),
        ) else {
            continue;
        };
        let sensor = Sensor {
            id: d.id.clone(),
            kind,
            topic: topics.data.clone(),
            availability: topics.availability.clone(),
        };
        tokio::spawn(sensors::run(sensor, mqtt_port, None, shutdown.clone()));
    }
    // The EV chargers, each a charge point of its own playing sessions.
    let ocpp = app.ocpp_addr.unwrap_or(app.api_addr);
    for copy in 0..scale {
        let mut controls = Vec::new();
        for (i, &(cp, connectors, kw, vendor, model)) in CHARGERS.iter().enumerate() {
            let (charger, control) = SimCharger::new(SimConfig {
                url: format!("ws://{ocpp}/ocpp"),
                charge_point_id: format!("{cp}{}", copy_suffix(copy)),
                password: (cp == LOCKED_CHARGER).then(|| charger_password.clone()),
                connectors,
                meter_interval: Duration::from_secs(10),
                max_power_w: kw * 1000.0,
                vendor: vendor.to_string(),
                model: model.to_string(),
                seed: (copy * CHARGERS.len() + i) as u64 + 1,
                autoplay: true,
            });
            tokio::spawn(charger.run(shutdown.clone()));
            controls.push(control);
        }
        if let Some(hot) = controls.get(HOT_CHARGER).cloned() {
            tokio::spawn(script_charger_fault(hot, shutdown.clone()));
        }
    }
    let mut out = std::io::stdout();

    // The hints name this very binary: `cargo run` does not put `parkhub` on the PATH.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "parkhub".into());
    let api = app.api_addr;
    let banner = format!(
        "parkhub demo — 示范小微园 (a simulated park)\n\
         \x20 electricity meters  Modbus TCP      127.0.0.1:{tcp_port}  (units 1-5)\n\
         \x20 water meters        RTU over TCP    127.0.0.1:{rtu_port}  (units 1-3; unit 3 fails for half of every minute)\n\
         \x20 DL/T 645 meter      DL/T 645-2007   127.0.0.1:{dlt_port}  (address {DLT645_METER}, behind a serial server)\n\
         \x20 sensors             MQTT            127.0.0.1:{mqtt_port}  (smoke, fire panel, door, lift, leak, environment, e-bike station)\n\
         \x20 EV chargers         OCPP 1.6J       ws://{ocpp}/ocpp/CP-B3-01 …  (3 simulated charge points; e-bike station on Modbus unit 6)\n\
         \x20 dry contact, siren  GPIO (simulated) pin 22, pin 17  (server-room door; the fire control room's siren)\n\
         \x20 alarm pushes        webhook         {hook}  (signed; printed below as they arrive)\n\
         \x20 cloud uplink        HTTP            {hook}/ingest  (batches every 10 s, printed below)\n\
         \x20 console             http://{api}/  (user {DEMO_USER}, password for this run: {password})\n\
         \x20 API                 http://{api}/api/v1  (token for this run: {token})\n\
         \x20 history             {}\n\
         {}\
         \x20 config              {}\n\
         \x20 what happens: a water meter drops out at 0:30, smoke at 1:00, the server-room door opens at\n\
         \x20 1:30, a trapped lift at 1:40, a forced door at 2:30, a fast charger's gun overheats at 3:20,\n\
         \x20 and so on every few minutes;\n\
         \x20 EV sessions start and stop by themselves.\n\
         \x20 try, from another terminal while it runs:\n\
         \x20   curl -H 'Authorization: Bearer {token}' http://{api}/api/v1/alarms\n\
         \x20   curl -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n\
         \x20        -d '{{\"comment\":\"已到现场\"}}' http://{api}/api/v1/alarms/ID/ack\n\
         \x20   {exe} probe --profile chint-dtsu666 --tcp 127.0.0.1:{tcp_port} --unit 1\n\
         \x20   {exe} history --config {} --device em-b3-main --point power_total --csv\n\
         \x20   mosquitto_sub -p {mqtt_port} -t 'park/#' -v\n\
         \x20 Ctrl-C stops{}.\n",
        app.db_path.display(),
        if scale > 1 {
            format!(
                "\x20 scale               ×{scale}: {scale} copies of every meter line, sensor, charger and \
                 scripted fault ({} with a door on GPIO), ids and charge points suffixed -02, -03, …; \
                 the lines above are the first copy's\n",
                doors.len()
            )
        } else {
            String::new()
        },
        config_path.display(),
        config_path.display(),
        if args.data_dir.is_none() {
            " (the temporary directory is removed)"
        } else {
            ""
        }
    );
    // Nobody reading (`parkhub demo | head`) stops the demo as Ctrl-C would.
    let mut reading = writeln!(out, "{banner}").is_ok();

    let hub = app.hub.clone();
    let alarms = app.alarms.clone();
    let every = Duration::from_secs(args.every.max(1));
    let show = async move {
        let until = async {
            match args.seconds {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => shutdown_signal().await,
            }
        };
        tokio::pin!(until);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        while reading {
            tokio::select! {
                _ = &mut until => break,
                _ = tick.tick() => reading = print_table(&mut out, &hub, &alarms).is_ok(),
                Some(line) = pushes.recv() => reading = writeln!(out, "{line}").is_ok(),
            }
        }
        let _ = writeln!(out, "stopping…");
    };
    let ran = app.run_until(show).await;
    shutdown.cancel();
    app.stop(super::run::STOP_DEADLINE).await?;
    ran?;
    Ok(ExitCode::SUCCESS)
}

/// One copy of the park's meter lines: the ports of its simulated servers.
struct LinePorts {
    tcp: u16,
    rtu: u16,
    dlt645: u16,
}

/// Starts one copy of the simulated meter lines (Modbus TCP gateway, water line behind a serial
/// server with its flaky meter, DL/T 645 meter) on ports the OS picks.
async fn start_lines(
    profiles: &ProfileRegistry,
    shutdown: &CancellationToken,
) -> anyhow::Result<LinePorts> {
    let tcp_sim = Simulator::new();
    for &(unit, id) in TCP_METERS {
        tcp_sim.add(unit, profiles.get(id).cloned().context(id)?);
    }
    let rtu_sim = Simulator::new();
    for &(unit, id) in RTU_METERS {
        rtu_sim.add(unit, profiles.get(id).cloned().context(id)?);
    }
    let tcp_listener = TcpListener::bind("127.0.0.1:0").await?;
    let rtu_listener = TcpListener::bind("127.0.0.1:0").await?;
    let tcp = tcp_listener.local_addr()?.port();
    let rtu = rtu_listener.local_addr()?.port();
    tokio::spawn(tcp_sim.clone().serve_tcp(tcp_listener, shutdown.clone()));
    tokio::spawn(
        rtu_sim
            .clone()
            .serve_rtu_over_tcp(rtu_listener, shutdown.clone()),
    );
    tokio::spawn(script_faults(rtu_sim.clone(), shutdown.clone()));
    // A DL/T 645 meter behind its own serial server, as most Chinese meters speak.
    let dlt_sim = crate::dlt645::sim::Simulator::new();
    let dlt_address = DLT645_METER
        .parse()
        .map_err(|e| anyhow::anyhow!("the demo's DL/T 645 address: {e}"))?;
    dlt_sim.add(dlt_address);
    let dlt_listener = TcpListener::bind("127.0.0.1:0").await?;
    let dlt645 = dlt_listener.local_addr()?.port();
    tokio::spawn(dlt_sim.clone().serve_tcp(dlt_listener, shutdown.clone()));
    Ok(LinePorts { tcp, rtu, dlt645 })
}

/// What tells copy `n` (0 is the park itself) of a scaled demo's ids apart.
fn copy_suffix(copy: usize) -> String {
    if copy == 0 {
        String::new()
    } else {
        format!("-{:02}", copy + 1)
    }
}

/// The door contacts' pins: the park's own, then free BCM pins for the copies of a scaled
/// demo while there are any (the siren keeps its pin; copies beyond the free pins have no
/// door).
fn door_pins(scale: usize) -> Vec<u8> {
    let spare = (2..=27u8).filter(|p| *p != DOOR_PIN && *p != SIREN_PIN);
    std::iter::once(DOOR_PIN).chain(spare).take(scale).collect()
}

/// What the demo fills into its config.
struct DemoPorts {
    charger_password_sha256: String,
    /// One per copy of the park; the first is the park itself.
    lines: Vec<LinePorts>,
    mqtt: u16,
    webhook_url: String,
    webhook_secret: String,
    token_sha256: String,
}

/// The demo config with its ports and directory filled in, and its text.
fn demo_config(data_dir: &std::path::Path, p: &DemoPorts) -> anyhow::Result<(Loaded, String)> {
    let mut text = fill(data_dir, p, &p.lines[0]);
    if p.lines.len() > 1 {
        text = scaled(&text, data_dir, p)?;
    }
    let loaded = config::load_str("config/demo.toml", &text, &PathBuf::from("."), &|_| None)
        .map_err(|d| anyhow::anyhow!("the demo config does not check:\n{d}"))?;
    Ok((loaded, text))
}

/// The demo config's text with `line`'s ports and the rest filled in.
fn fill(data_dir: &std::path::Path, p: &DemoPorts, line: &LinePorts) -> String {
    // The placeholders stand in string values only, so a plain replacement is exact.
    DEMO_CONFIG
        .replace(
            "${PARKHUB_DEMO_DATA}",
            &data_dir.display().to_string().replace('\\', "\\\\"),
        )
        .replace("${PARKHUB_DEMO_TCP_PORT}", &line.tcp.to_string())
        .replace("${PARKHUB_DEMO_RTU_PORT}", &line.rtu.to_string())
        .replace("${PARKHUB_DEMO_DLT645_PORT}", &line.dlt645.to_string())
        .replace("${PARKHUB_DEMO_MQTT_PORT}", &p.mqtt.to_string())
        .replace("${PARKHUB_DEMO_WEBHOOK_URL}", &p.webhook_url)
        .replace(
            "${PARKHUB_DEMO_UPLINK_URL}",
            &p.webhook_url.replace("/alarm", "/ingest"),
        )
        .replace("${PARKHUB_DEMO_WEBHOOK_SECRET}", &p.webhook_secret)
        .replace("${PARKHUB_DEMO_TOKEN_SHA256}", &p.token_sha256)
        .replace(
            "${PARKHUB_DEMO_CHARGER_PASSWORD_SHA256}",
            &p.charger_password_sha256,
        )
}

/// The park of `base` and its copies (one per further entry of `p.lines`): every bus, device
/// and device rule again with ids, names, topics, charge point ids and door pins of its own.
fn scaled(base: &str, data_dir: &std::path::Path, p: &DemoPorts) -> anyhow::Result<String> {
    use toml::{Table, Value};
    let mut park: Table = base.parse().context("the demo config")?;
    let doors = door_pins(p.lines.len());
    for (copy, line) in p.lines.iter().enumerate().skip(1) {
        let suffix = copy_suffix(copy);
        let this: Table = fill(data_dir, p, line).parse().context("the demo config")?;
        let tables = |key: &str| -> Vec<Table> {
            this.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
                .unwrap_or_default()
        };
        let mut dropped = Vec::new();
        let mut added: Vec<(&str, Table)> = Vec::new();
        for mut bus in tables("bus") {
            suffix_key(&mut bus, "id", &suffix);
            added.push(("bus", bus));
        }
        for mut device in tables("device") {
            if device.contains_key("pin") {
                match doors.get(copy) {
                    Some(&pin) => {
                        device.insert("pin".into(), Value::Integer(pin.into()));
                    }
                    None => {
                        dropped.extend(device.get("id").and_then(Value::as_str).map(String::from));
                        continue;
                    }
                }
            }
            for key in ["id", "bus", "topic", "charge_point_id"] {
                suffix_key(&mut device, key, &suffix);
            }
            suffix_key(&mut device, "name", &format!(" #{}", copy + 1));
            added.push(("device", device));
        }
        for mut rule in tables("rule") {
            let of = rule
                .get("device")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if dropped.iter().any(|d| d == of) {
                continue;
            }
            suffix_key(&mut rule, "device", &suffix);
            added.push(("rule", rule));
        }
        for (key, t) in added {
            if let Some(Value::Array(a)) = park.get_mut(key) {
                a.push(Value::Table(t));
            }
        }
    }
    Ok(format!(
        "# `parkhub demo --scale {}`: the demo park and {} copies of it.\n{}",
        p.lines.len(),
        p.lines.len() - 1,
        toml::to_string(&park).context("the scaled demo config")?
    ))
}

/// Appends `suffix` to the string at `key`, when there is one.
fn suffix_key(t: &mut toml::Table, key: &str, suffix: &str) {
    if let Some(toml::Value::String(s)) = t.get_mut(key) {
        s.push_str(suffix);
    }
}

/// The fast charger's gun overheats for 40 s from 3:20 of every five minutes (after a first
/// one at 3:20), then recovers.
async fn script_charger_fault(charger: SimControl, shutdown: CancellationToken) {
    use crate::ocpp::messages::ChargePointErrorCode;
    let first = Duration::from_secs(200);
    let mut at = tokio::time::Instant::now() + first;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        charger
            .fault(1, ChargePointErrorCode::HighTemperature)
            .await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(40)) => {}
        }
        charger.clear(1).await;
        at += Duration::from_secs(300);
    }
}

/// The DL/T 645 meter's address (config/demo.toml).
const DLT645_METER: &str = "000000001234";

/// The server room's door contact (GPIO 22 in config/demo.toml).
const DOOR_PIN: u8 = 22;

/// The fire control room's siren (GPIO 17 in config/demo.toml).
const SIREN_PIN: u8 = 17;

/// The server room's door (and its copies' in a scaled demo) opens for 20 s from 1:30 of every
/// five minutes, with a rattle.
async fn script_door(pins: crate::gpio::sim::SimPins, doors: Vec<u8>, shutdown: CancellationToken) {
    let mut at = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        for i in 0..6 {
            for &pin in &doors {
                pins.drive(pin, i % 2 == 0);
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        for &pin in &doors {
            pins.drive(pin, true);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(20)) => {}
        }
        for &pin in &doors {
            pins.drive(pin, false);
        }
        at += Duration::from_secs(300);
    }
}

/// Unit 3 of the water line stops answering from second 30 to 59 of every minute.
async fn script_faults(sim: Arc<Simulator>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let second = started.elapsed().as_secs() % 60;
                let b = if second >= 30 { Behaviour::Silent } else { Behaviour::Normal };
                sim.set_behaviour(FLAKY_UNIT, b);
            }
        }
    }
}

/// The demo's webhook receiver on 127.0.0.1:0: checks each push's signature and age as a
/// receiver must (DESIGN.md) and hands the pushes' text to the screen.
async fn start_receiver(
    secret: String,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let cloud_secret = secret.clone();
    let lines2 = lines.clone();
    let take = move |headers: HeaderMap, body: axum::body::Bytes| {
        let (secret, lines) = (secret.clone(), lines.clone());
        async move {
            let header = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let ts: i64 = header("x-parkhub-timestamp").parse().unwrap_or_default();
            let fresh = (chrono::Utc::now().timestamp() - ts).abs() <= 300;
            let signed = header("x-parkhub-signature")
                == crate::notify::channel::webhook_signature(&secret, ts, &body);
            if !(fresh && signed) {
                let _ = lines.send("  ✗ a push with a bad or stale signature was refused".into());
                return StatusCode::UNAUTHORIZED;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let now = chrono::Local::now().format("%H:%M:%S");
            let to = v["department"].as_str().unwrap_or("several departments");
            let text = v["message"]
                .as_str()
                .unwrap_or_default()
                .replace('\n', "\n      ");
            let _ = lines.send(format!(
                "{now}  ▶ push to {to} (signature ok)\n      {text}\n"
            ));
            StatusCode::OK
        }
    };
    let cloud = move |headers: HeaderMap, body: axum::body::Bytes| {
        let (secret, lines) = (cloud_secret.clone(), lines2.clone());
        async move { take_batch(&secret, &headers, &body, &lines) }
    };
    let app = axum::Router::new()
        .route("/alarm", axum::routing::post(take))
        .route("/ingest", axum::routing::post(cloud));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

/// The demo's cloud: checks an uplink batch's token and signature, unpacks it and says what
/// it holds.
fn take_batch(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    lines: &tokio::sync::mpsc::UnboundedSender<String>,
) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let ts: i64 = header("x-parkhub-timestamp").parse().unwrap_or_default();
    let signed = header("x-parkhub-signature")
        == crate::notify::channel::webhook_signature(secret, ts, body);
    if !signed || header("authorization") != format!("Bearer {secret}") {
        let _ = lines.send("  ✗ an uplink batch with a bad token or signature was refused".into());
        return StatusCode::UNAUTHORIZED;
    }
    let json = if header("content-encoding") == "gzip" {
        let mut out = Vec::new();
        match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out) {
            Ok(_) => out,
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    } else {
        body.to_vec()
    };
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
    let now = chrono::Local::now().format("%H:%M:%S");
    let _ = lines.send(format!(
        "{now}  ⇡ cloud got batch {} (seq {}–{}): {} readings, {} alarm events, {} status changes; {} bytes{}\n",
        v["batch_id"].as_str().unwrap_or("?"),
        v["first_seq"],
        v["last_seq"],
        n("readings"),
        n("alarms"),
        n("device_status"),
        body.len(),
        if header("content-encoding") == "gzip" { " gzipped" } else { "" },
    ));
    StatusCode::OK
}

fn print_table(out: &mut impl Write, hub: &Hub, alarms: &AlarmStore) -> std::io::Result<()> {
    let now = chrono::Local::now().format("%H:%M:%S");
    writeln!(
        out,
        "{now}  {} {} {:<8} {:>6} {:>5}  readings",
        pad("device", 15),
        pad("name", 18),
        "status",
        "msgs",
        "err"
    )?;
    for d in hub.devices() {
        writeln!(
            out,
            "          {} {} {:<8} {:>6} {:>5}  {}",
            pad(&d.info.id, 15),
            pad(&d.info.name, 18),
            match d.online {
                Some(true) => "online",
                Some(false) => "OFFLINE",
                None => "…",
            },
            // Requests of a polled meter, messages of a sensor.
            d.stats.requests + d.stats.messages,
            d.stats.errors + d.stats.rejected,
            headline(&d)
        )?;
    }
    writeln!(
        out,
        "          {} readings stored so far",
        hub.readings_total()
    )?;
    let open = alarms.list(Listing::Open, 100).unwrap_or_default();
    if !open.is_empty() {
        writeln!(out, "          alarms open: {}", open.len())?;
    }
    for a in open.iter().take(8) {
        writeln!(
            out,
            "          #{:<4} {:<11} {:<8} {} {} {}",
            a.id,
            a.state.as_str(),
            a.severity,
            pad(a.key.scope.id(), 15),
            a.message,
            a.acked_by
                .as_deref()
                .map(|w| format!("(acknowledged by {w})"))
                .unwrap_or_default()
        )?;
    }
    writeln!(out)
}

/// The few values that tell a device's story at a glance.
fn headline(d: &DeviceState) -> String {
    const KEYS: &[&str] = &[
        "power_total",
        "energy_import",
        "voltage_a",
        "voltage",
        "flow_rate",
        "volume_total",
        "smoke",
        "temperature",
        "event",
        "status",
        "floor",
        "open",
        "forced",
        "active",
        "leak",
        "pm25",
        "noise_db",
        "port2.state",
        "port2.temperature",
        "connector1.status",
        "connector1.power",
        "connector2.status",
    ];
    if d.online == Some(false) {
        return d.last_error.clone().unwrap_or_default();
    }
    KEYS.iter()
        .filter_map(|k| {
            let l = d.points.get(*k)?;
            let v = match &l.value {
                // A count without a unit (a floor) reads as one.
                Value::Number(x) if l.unit.is_none() && x.fract() == 0.0 => format!("{x}"),
                Value::Number(x) => format!("{x:.2}"),
                other => other.to_string(),
            };
            Some(
                format!("{k} {v} {}", l.unit.as_deref().unwrap_or(""))
                    .trim_end()
                    .to_string(),
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ports(copies: u16) -> DemoPorts {
        DemoPorts {
            charger_password_sha256: "0".repeat(64),
            lines: (0..copies)
                .map(|c| LinePorts {
                    tcp: 20_000 + c,
                    rtu: 21_000 + c,
                    dlt645: 22_000 + c,
                })
                .collect(),
            mqtt: 1883,
            webhook_url: "http://127.0.0.1:9/alarm".into(),
            webhook_secret: "s".into(),
            token_sha256: "0".repeat(64),
        }
    }

    #[test]
    fn the_demo_at_scale_one_is_the_shipped_demo_config() {
        let dir = std::path::Path::new("/tmp/parkhub-demo-test");
        let p = ports(1);
        let (_, text) = demo_config(dir, &p).unwrap();
        assert_eq!(text, fill(dir, &p, &p.lines[0]));
        assert!(!text.contains("${PARKHUB_DEMO"));
    }

    #[test]
    fn a_scaled_demo_has_every_device_bus_and_charger_again_with_ids_and_ports_of_its_own() {
        let dir = std::path::Path::new("/tmp/parkhub-demo-test");
        let (one, _) = demo_config(dir, &ports(1)).unwrap();
        let (ten, _) = demo_config(dir, &ports(10)).unwrap();
        let (one, ten) = (&one.config, &ten.config);
        assert_eq!(ten.devices.len(), 10 * one.devices.len());
        assert_eq!(ten.buses.len(), 10 * one.buses.len());
        let distinct = |v: Vec<String>| v.iter().collect::<BTreeSet<_>>().len() == v.len();
        assert!(distinct(ten.devices.iter().map(|d| d.id.clone()).collect()));
        assert!(distinct(
            ten.buses.iter().filter_map(|b| b.address.clone()).collect()
        ));
        let chargers: Vec<String> = ten
            .devices
            .iter()
            .filter_map(|d| d.charge_point_id.clone())
            .collect();
        assert_eq!(chargers.len(), 10 * CHARGERS.len());
        assert!(distinct(chargers.clone()));
        // The simulated chargers connect under the ids the config expects.
        for copy in 0..10 {
            for (cp, ..) in CHARGERS {
                let id = format!("{cp}{}", copy_suffix(copy));
                assert!(chargers.contains(&id), "{id}");
            }
        }
        let pins: Vec<u8> = ten.devices.iter().filter_map(|d| d.pin).collect();
        assert_eq!(pins, door_pins(10));
        assert!(!pins.contains(&SIREN_PIN));
        assert_eq!(ten.rules.len(), 10 * one.rules.len());
    }

    #[test]
    fn copies_beyond_the_free_pins_have_no_door() {
        let dir = std::path::Path::new("/tmp/parkhub-demo-test");
        let (fifty, _) = demo_config(dir, &ports(50)).unwrap();
        let doors = fifty.config.devices.iter().filter(|d| d.pin.is_some());
        assert_eq!(doors.count(), door_pins(50).len());
        assert_eq!(door_pins(50).len(), 25);
    }
}
