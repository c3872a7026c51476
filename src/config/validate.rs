//! Checks across the whole configuration: references between sections, ranges, duplicates and
//! the rules each kind of bus, device, channel and uplink has. Every problem is collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

mod gpio;

use super::{
    AlarmsConfig, ApiConfig, BusConfig, BusKind, ChannelConfig, ChannelKind, DepartmentConfig,
    DeviceConfig, Diagnostic, Document, HistoryConfig, HubConfig, InhibitConfig, KeyPath,
    MqttConfig, OcppConfig, OneOrMany, RouteConfig, RouteMatch, RuleConfig, Seg, UplinkConfig,
    UplinkKind, CATEGORIES, SEVERITIES,
};
use crate::alarm::route::LABELS;
use crate::alarm::rules::{self, AlarmRules};
use crate::profile::{check_serial_settings, Profile, ProfileRegistry, Protocol, SerialDefaults};

pub(crate) struct Parts {
    pub hub: Option<HubConfig>,
    pub api: ApiConfig,
    pub history: HistoryConfig,
    pub mqtt: Option<MqttConfig>,
    pub buses: Vec<(usize, BusConfig)>,
    pub devices: Vec<(usize, DeviceConfig)>,
    pub departments: Vec<(usize, DepartmentConfig)>,
    pub channels: Vec<(usize, ChannelConfig)>,
    pub routes: Vec<(usize, RouteConfig)>,
    pub alarms: AlarmsConfig,
    pub rules: Vec<(usize, RuleConfig)>,
    pub inhibits: Vec<(usize, InhibitConfig)>,
    pub uplink: Option<UplinkConfig>,
    pub ocpp: OcppConfig,
}

#[derive(Default)]
pub(crate) struct Resolved {
    pub device_profiles: BTreeMap<String, Arc<Profile>>,
    pub bus_lines: BTreeMap<String, SerialDefaults>,
    pub mqtt_topics: BTreeMap<String, MqttTopics>,
    pub alarm_rules: AlarmRules,
}

/// Where an MQTT device publishes, and says whether it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTopics {
    pub data: String,
    pub availability: Option<String>,
}

struct Check<'a, 'd> {
    doc: &'a Document<'d>,
    diags: &'a mut Vec<Diagnostic>,
}

impl Check<'_, '_> {
    fn err(&mut self, path: KeyPath, msg: impl Into<String>) {
        self.diags.push(self.doc.diag(&path, msg));
    }

    /// Device `i`'s keys that belong to other kinds of device, given (`true`) by mistake.
    fn refuse_keys<const N: usize>(
        &mut self,
        i: usize,
        id: &str,
        kind: &str,
        keys: [(&str, bool); N],
    ) {
        for (key, _) in keys.into_iter().filter(|(_, given)| *given) {
            self.err(
                KeyPath::from("device").index(i).key(key),
                format!("`{key}` does not apply to {kind} device `{id}`"),
            );
        }
    }
}

pub(crate) fn validate(
    doc: &Document<'_>,
    parts: &Parts,
    profiles: &ProfileRegistry,
    diags: &mut Vec<Diagnostic>,
) -> Resolved {
    let mut c = Check { doc, diags };
    if let Some(hub) = &parts.hub {
        check_hub(&mut c, hub);
    }
    check_api(&mut c, &parts.api);
    check_history(&mut c, &parts.history);
    if let Some(m) = &parts.mqtt {
        check_mqtt(&mut c, m);
    }
    check_buses(&mut c, &parts.buses);
    check_ocpp(&mut c, parts);
    let mut resolved = Resolved::default();
    check_devices(&mut c, parts, profiles, &mut resolved);
    check_bus_lines(&mut c, parts, &mut resolved);
    check_notify(&mut c, parts);
    gpio::check(&mut c, parts);
    check_alarms(&mut c, parts, profiles, &mut resolved);
    if let Some(u) = &parts.uplink {
        let devices: Vec<&str> = parts.devices.iter().map(|(_, d)| d.id.as_str()).collect();
        check_uplink(&mut c, u, &devices, profiles);
    }
    resolved
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
}

fn id_rule() -> &'static str {
    "ids are 1-64 letters, digits, `-`, `_` or `.`"
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|ch| ch.is_ascii_hexdigit())
}

/// Flags ids that are malformed or repeated within one section.
fn check_ids<'x>(
    c: &mut Check<'_, '_>,
    section: &str,
    ids: impl Iterator<Item = (usize, &'x str)>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids {
        let path = KeyPath::from(section).index(i).key("id");
        if !valid_id(id) {
            c.err(path.clone(), format!("invalid id `{id}`: {}", id_rule()));
        }
        if let Some(first) = seen.insert(id, i) {
            c.err(
                path,
                format!("duplicate id `{id}` (also {section}[{first}])"),
            );
        }
    }
}

fn check_hub(c: &mut Check<'_, '_>, hub: &HubConfig) {
    if !valid_id(&hub.id) {
        c.err(
            KeyPath::from("hub").key("id"),
            format!("invalid hub id `{}`: {}", hub.id, id_rule()),
        );
    }
    if let Some(dir) = &hub.profiles_dir {
        if !dir.is_dir() {
            c.err(
                KeyPath::from("hub").key("profiles_dir"),
                format!("profiles_dir {} is not a directory", dir.display()),
            );
        }
    }
}

fn check_api(c: &mut Check<'_, '_>, api: &ApiConfig) {
    let mut names = HashSet::new();
    for (i, t) in api.token.iter().enumerate() {
        let path = KeyPath::from("api").key("token").index(i);
        if !names.insert(t.name.as_str()) {
            c.err(
                path.key("name"),
                format!("duplicate token name `{}`", t.name),
            );
        }
        if !is_sha256_hex(&t.sha256) {
            c.err(
                path.key("sha256"),
                "sha256 must be the 64 hex digits of SHA-256(token) (e.g. `printf %s TOKEN | sha256sum`), never the token itself",
            );
        }
    }
    for (i, origin) in api.cors_origins.iter().enumerate() {
        let path = KeyPath::from("api").key("cors_origins").index(i);
        if let Err(why) = check_origin(origin) {
            c.err(path, why);
        }
    }
    if let Some(tls) = &api.tls {
        for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
            if !file.is_file() {
                c.err(
                    KeyPath::from("api").key("tls").key(key),
                    format!("{} is not a readable file", file.display()),
                );
            }
        }
    }
}

/// A browser sends `Origin: scheme://host[:port]`, nothing more: a path or a wildcard here
/// would never match, or would open the API to every site.
fn check_origin(origin: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{origin}` is not an origin: write scheme://host[:port], e.g. `https://brain.example.com` (no path, no `*`)"
        )
    };
    let url = url::Url::parse(origin).map_err(|_| bad())?;
    let is_origin = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && !origin.ends_with('/')
        && url.query().is_none()
        && url.username().is_empty();
    if is_origin {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `value` (of the key at `path`) must lie in `lo..=hi`; bounds keep durations sane on a box
/// that runs for years (and their arithmetic from overflowing).
fn check_range(c: &mut Check<'_, '_>, path: KeyPath, value: i64, lo: i64, hi: i64) {
    if !(lo..=hi).contains(&value) {
        let key = match path.0.last() {
            Some(Seg::Key(k)) => k.clone(),
            _ => path.to_string(),
        };
        c.err(
            path,
            format!("{key} must be between {lo} and {hi} (got {value})"),
        );
    }
}

fn check_history(c: &mut Check<'_, '_>, h: &HistoryConfig) {
    for (key, days) in [
        ("raw_days", h.raw_days),
        ("rollup_5m_days", h.rollup_5m_days),
        ("hourly_days", h.hourly_days),
        ("daily_days", h.daily_days),
    ] {
        check_range(
            c,
            KeyPath::from("history").key(key),
            i64::from(days),
            1,
            36_500,
        );
    }
    let at = |k: &str| KeyPath::from("history").key(k);
    check_range(c, at("min_free_mb"), clamp_i64(h.min_free_mb), 1, 1 << 20);
    if h.max_db_mb != 0 {
        check_range(c, at("max_db_mb"), clamp_i64(h.max_db_mb), 4, 1 << 24);
    }
}

fn check_mqtt(c: &mut Check<'_, '_>, m: &MqttConfig) {
    let at = |k: &str| KeyPath::from("mqtt").key(k);
    if m.broker == "embedded" {
        let listen = m
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)));
        if !listen.ip().is_loopback() && m.user.is_empty() {
            c.err(
                at("listen"),
                format!("the embedded broker listens on {listen}, beyond this machine: add [[mqtt.user]] accounts (devices must authenticate)"),
            );
        }
    } else {
        match url::Url::parse(&m.broker) {
            Ok(u) if matches!(u.scheme(), "mqtt" | "mqtts") && u.host_str().is_some() => {}
            _ => c.err(
                at("broker"),
                format!("broker `{}` must be \"embedded\" or a mqtt://host:port or mqtts://host:port URL", m.broker),
            ),
        }
        if m.listen.is_some() {
            c.err(
                at("listen"),
                "`listen` is for the embedded broker; this config uses an external one",
            );
        }
    }
    if let Some(n) = m.max_payload_bytes {
        check_range(
            c,
            at("max_payload_bytes"),
            i64::try_from(n).unwrap_or(i64::MAX),
            256,
            1 << 20,
        );
    }
    if let Some(k) = m.keep_alive_s {
        check_range(c, at("keep_alive_s"), clamp_i64(k), 5, 3600);
    }
    if m.password.is_some() && m.username.is_none() {
        c.err(at("password"), "a password needs a `username`");
    }
    let mut names = HashSet::new();
    for (i, u) in m.user.iter().enumerate() {
        let path = at("user").index(i);
        if !names.insert(u.name.as_str()) {
            c.err(
                path.key("name"),
                format!("duplicate MQTT user `{}`", u.name),
            );
        }
        if !is_sha256_hex(&u.password_sha256) {
            c.err(
                path.key("password_sha256"),
                "password_sha256 must be 64 hex digits of SHA-256(password)",
            );
        }
    }
    for (key, file) in [
        ("ca_file", &m.ca_file),
        ("client_cert", &m.client_cert),
        ("client_key", &m.client_key),
    ] {
        if let Some(f) = file {
            if !f.is_file() {
                c.err(at(key), format!("{} does not exist", f.display()));
            }
        }
    }
    if m.client_cert.is_some() != m.client_key.is_some() {
        c.err(at("client_cert"), "client_cert and client_key go together");
    }
}

/// `host:port` with a port; the host may be a name resolved later.
fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "address `{addr}` must be host:port, e.g. 192.168.1.20:502"
        )),
    }
}

fn check_buses(c: &mut Check<'_, '_>, buses: &[(usize, BusConfig)]) {
    check_ids(c, "bus", buses.iter().map(|(i, b)| (*i, b.id.as_str())));
    let mut endpoints: HashMap<String, &str> = HashMap::new();
    for (i, b) in buses {
        let at = |k: &str| KeyPath::from("bus").index(*i).key(k);
        match b.kind {
            BusKind::Tcp | BusKind::RtuOverTcp => {
                match &b.address {
                    None => c.err(
                        at("kind"),
                        format!("a {} bus needs `address = \"host:port\"`", b.kind),
                    ),
                    Some(a) => {
                        if let Err(e) = check_host_port(a) {
                            c.err(at("address"), e);
                        }
                        // Two buses on one endpoint would race on one line: say so.
                        if let Some(other) = endpoints.insert(a.clone(), b.id.as_str()) {
                            c.err(at("address"), format!("bus `{other}` already uses {a}: one line, one bus (put both devices on one bus)"));
                        }
                    }
                }
                if b.serial.is_some() {
                    c.err(
                        at("serial"),
                        format!("`serial` is for rtu buses, not {}", b.kind),
                    );
                }
            }
            BusKind::Rtu => {
                match &b.serial {
                    None => c.err(
                        at("kind"),
                        "an rtu bus needs `serial = \"/dev/ttyUSB0\"` (or similar)",
                    ),
                    Some(p) => {
                        let key = p.display().to_string();
                        if let Some(other) = endpoints.insert(key.clone(), b.id.as_str()) {
                            c.err(at("serial"), format!("bus `{other}` already uses {key}"));
                        }
                    }
                }
                if b.address.is_some() {
                    c.err(
                        at("address"),
                        "`address` is for tcp and rtu-over-tcp buses; an rtu bus uses `serial`",
                    );
                }
            }
            // A meter line on this box's serial port, or behind a serial server (transparent
            // TCP): the frames are the same either way.
            BusKind::Dlt645 | BusKind::Cjt188 => match (&b.address, &b.serial) {
                (None, None) => c.err(
                    at("kind"),
                    format!(
                        "a {} bus needs `serial = \"/dev/ttyUSB0\"` or, behind a serial server, `address = \"host:port\"`",
                        b.kind
                    ),
                ),
                (Some(_), Some(_)) => c.err(
                    at("address"),
                    "`address` (a serial server) and `serial` (a port on this box) are two lines: give one",
                ),
                (Some(a), None) => {
                    if let Err(e) = check_host_port(a) {
                        c.err(at("address"), e);
                    }
                    if let Some(other) = endpoints.insert(a.clone(), b.id.as_str()) {
                        c.err(at("address"), format!("bus `{other}` already uses {a}: one line, one bus"));
                    }
                }
                (None, Some(p)) => {
                    let key = p.display().to_string();
                    if let Some(other) = endpoints.insert(key.clone(), b.id.as_str()) {
                        c.err(at("serial"), format!("bus `{other}` already uses {key}"));
                    }
                }
            },
        }
        if b.kind == BusKind::Tcp {
            for (key, given) in [
                ("baud", b.baud.is_some()),
                ("parity", b.parity.is_some()),
                ("data_bits", b.data_bits.is_some()),
                ("stop_bits", b.stop_bits.is_some()),
            ] {
                if given {
                    c.err(
                        at(key),
                        format!("`{key}` is a serial setting; a tcp bus has none"),
                    );
                }
            }
        }
        check_range(c, at("timeout_ms"), clamp_i64(b.timeout_ms), 1, 60_000);
        if let Some(p) = b.pause_ms {
            check_range(c, at("pause_ms"), clamp_i64(p), 0, 10_000);
        }
        check_range(c, at("offline_after"), i64::from(b.offline_after), 1, 1000);
        check_range(
            c,
            at("max_backoff_s"),
            clamp_i64(b.max_backoff_s),
            1,
            86_400,
        );
    }
}

fn check_devices(
    c: &mut Check<'_, '_>,
    parts: &Parts,
    profiles: &ProfileRegistry,
    resolved: &mut Resolved,
) {
    check_ids(
        c,
        "device",
        parts.devices.iter().map(|(i, d)| (*i, d.id.as_str())),
    );
    let buses: HashMap<&str, &BusConfig> = parts
        .buses
        .iter()
        .map(|(_, b)| (b.id.as_str(), b))
        .collect();
    let mut units: HashMap<(&str, u8), &str> = HashMap::new();
    let mut topics: HashMap<String, &str> = HashMap::new();
    let mut charge_points: HashMap<&str, &str> = HashMap::new();
    let mut meter_addresses: HashMap<(&str, String), &str> = HashMap::new();
    for (i, d) in &parts.devices {
        let at = |k: &str| KeyPath::from("device").index(*i).key(k);
        if let Some(p) = d.poll_interval_s {
            check_range(c, at("poll_interval_s"), p, 1, 86_400);
        }
        if let Some(t) = d.timeout_ms {
            check_range(c, at("timeout_ms"), clamp_i64(t), 1, 60_000);
        }
        let Some(profile) = profiles.get(&d.profile) else {
            let known: Vec<&str> = profiles.ids().collect();
            c.err(
                at("profile"),
                format!(
                    "unknown profile `{}` (see `parkhub profiles list`; known: {})",
                    d.profile,
                    known.join(", ")
                ),
            );
            continue;
        };
        if profile.protocol != Protocol::Gpio {
            let kind = match profile.protocol {
                Protocol::Modbus => "Modbus",
                Protocol::Mqtt => "MQTT",
                Protocol::Ocpp => "OCPP",
                _ => "this",
            };
            gpio::refuse_on_other_devices(c, *i, d, kind);
        }
        match profile.protocol {
            Protocol::Modbus => {
                match d.bus.as_deref() {
                    None => c.err(
                        at("profile"),
                        format!("device `{}` uses a Modbus profile and needs `bus`", d.id),
                    ),
                    Some(bus) => match buses.get(bus) {
                        None => {
                            let known: Vec<&str> = buses.keys().copied().collect();
                            c.err(
                                at("bus"),
                                format!(
                                    "no bus `{bus}` (buses: {})",
                                    if known.is_empty() {
                                        "none".to_string()
                                    } else {
                                        known.join(", ")
                                    }
                                ),
                            );
                        }
                        Some(b) if b.is_meter_protocol() => {
                            c.err(
                                at("bus"),
                                format!(
                                    "bus `{bus}` speaks {}, profile {} speaks Modbus",
                                    b.kind, d.profile
                                ),
                            );
                        }
                        Some(_) => {}
                    },
                }
                let unit = d.unit.unwrap_or(i64::from(profile.serial.unit));
                match u8::try_from(unit) {
                    Ok(u) if (1..=247).contains(&u) => {
                        if let Some(bus) = d.bus.as_deref() {
                            if d.enabled {
                                if let Some(other) = units.insert((bus, u), d.id.as_str()) {
                                    c.err(
                                        at("unit"),
                                        format!(
                                            "unit {u} on bus `{bus}` is already device `{other}`"
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    _ => c.err(at("unit"), format!("unit {unit} is outside 1..247")),
                }
                c.refuse_keys(
                    *i,
                    &d.id,
                    "Modbus",
                    [
                        ("topic", d.topic.is_some()),
                        ("charge_point_id", d.charge_point_id.is_some()),
                        ("address", d.address.is_some()),
                        ("expire_after_s", d.expire_after_s.is_some()),
                        ("availability_topic", d.availability_topic.is_some()),
                    ],
                );
                match crate::profile::apply_overrides(profile, &d.point) {
                    Ok(p) => {
                        resolved.device_profiles.insert(d.id.clone(), p);
                    }
                    Err(errs) => {
                        for (point, field, msg) in errs {
                            c.err(at("point").key(point).key(field), msg);
                        }
                    }
                }
            }
            Protocol::Mqtt => {
                check_mqtt_device(c, parts, *i, d, profile, resolved, &mut topics);
            }
            Protocol::Ocpp => {
                check_ocpp_device(c, *i, d, &mut charge_points);
                resolved
                    .device_profiles
                    .insert(d.id.clone(), profile.clone());
            }
            Protocol::Gpio => gpio::check_device(c, *i, d, profile, resolved),
            Protocol::Dlt645 | Protocol::Cjt188 => {
                check_meter_device(c, *i, d, profile, &buses, &mut meter_addresses);
                resolved
                    .device_profiles
                    .insert(d.id.clone(), profile.clone());
            }
        }
    }
}

/// A DL/T 645 or CJ/T 188 meter: on a bus of its protocol, at its meter address (unique there),
/// and nothing that belongs to other kinds of device.
fn check_meter_device<'p>(
    c: &mut Check<'_, '_>,
    i: usize,
    d: &'p DeviceConfig,
    profile: &Profile,
    buses: &HashMap<&str, &BusConfig>,
    seen: &mut HashMap<(&'p str, String), &'p str>,
) {
    let at = |k: &str| KeyPath::from("device").index(i).key(k);
    let (kind, digits) = match profile.protocol {
        Protocol::Cjt188 => (BusKind::Cjt188, 14),
        _ => (BusKind::Dlt645, 12),
    };
    c.refuse_keys(
        i,
        &d.id,
        if kind == BusKind::Cjt188 {
            "CJ/T 188"
        } else {
            "DL/T 645"
        },
        [
            ("unit", d.unit.is_some()),
            ("topic", d.topic.is_some()),
            ("charge_point_id", d.charge_point_id.is_some()),
            ("password_sha256", d.password_sha256.is_some()),
            ("connectors", d.connectors.is_some()),
            ("expire_after_s", d.expire_after_s.is_some()),
            ("availability_topic", d.availability_topic.is_some()),
            ("point", !d.point.is_empty()),
        ],
    );
    match d.bus.as_deref() {
        None => c.err(
            at("profile"),
            format!(
                "device `{}` uses a {kind} profile and needs `bus` (a {kind} bus)",
                d.id
            ),
        ),
        Some(bus) => match buses.get(bus) {
            None => c.err(at("bus"), format!("no bus `{bus}`")),
            Some(b) if b.kind != kind => c.err(
                at("bus"),
                format!(
                    "bus `{bus}` speaks {}, profile {} speaks {kind}",
                    b.kind, d.profile
                ),
            ),
            Some(_) => {}
        },
    }
    match d.address.as_deref() {
        None => c.err(
            at("profile"),
            format!(
                "device `{}` needs its meter `address`: the {digits} digits on its nameplate (`parkhub scan --protocol {kind}` finds it)",
                d.id
            ),
        ),
        Some(a) if a.len() != digits || !a.bytes().all(|b| b.is_ascii_digit()) => c.err(
            at("address"),
            format!("a {kind} meter address is {digits} digits (got {})", crate::text::clip(a)),
        ),
        Some(a) => {
            if let (Some(bus), true) = (d.bus.as_deref(), d.enabled) {
                if let Some(other) = seen.insert((bus, a.to_string()), d.id.as_str()) {
                    c.err(
                        at("address"),
                        format!("address {a} on bus `{bus}` is already device `{other}`"),
                    );
                }
            }
        }
    }
}

/// The central system's settings.
fn check_ocpp(c: &mut Check<'_, '_>, parts: &Parts) {
    let o = &parts.ocpp;
    let at = |k: &str| KeyPath::from("ocpp").key(k);
    check_range(
        c,
        at("heartbeat_interval_s"),
        clamp_i64(o.heartbeat_interval_s),
        10,
        86_400,
    );
    if let Some(s) = o.offline_after_s {
        if s <= o.heartbeat_interval_s {
            c.err(
                at("offline_after_s"),
                format!(
                    "offline_after_s ({s}) must be longer than heartbeat_interval_s ({}), or every charger is offline between two heartbeats",
                    o.heartbeat_interval_s
                ),
            );
        }
    }
    check_range(
        c,
        at("command_timeout_s"),
        clamp_i64(o.command_timeout_s),
        1,
        300,
    );
    match o.authorize {
        crate::config::Authorize::LocalList if o.id_tags.is_empty() => c.err(
            at("authorize"),
            "authorize = \"local-list\" needs `id_tags`: the id tags (RFID cards) that may charge",
        ),
        crate::config::Authorize::AcceptAll if !o.id_tags.is_empty() => c.err(
            at("id_tags"),
            "`id_tags` are only read with authorize = \"local-list\"",
        ),
        _ => {}
    }
    for (i, tag) in o.id_tags.iter().enumerate() {
        if tag.is_empty() || tag.chars().count() > 20 {
            c.err(
                at("id_tags").index(i),
                format!(
                    "id tag {} must be 1-20 characters (OCPP's IdToken)",
                    crate::text::clip(tag)
                ),
            );
        }
    }
    if let (Some(l), Some(mqtt)) = (o.listen, parts.mqtt.as_ref().and_then(|m| m.listen)) {
        if l == mqtt {
            c.err(
                at("listen"),
                format!("{l} is also the MQTT broker's address"),
            );
        }
    }
    if o.listen.is_some_and(|l| l == parts.api.listen) {
        c.err(
            at("listen"),
            "this is the API's address: leave `listen` out to serve chargers there",
        );
    }
}

/// An OCPP charger: its charge point id (URL-safe, unique), its password hash, its connectors,
/// and nothing that belongs to other kinds of device.
fn check_ocpp_device<'p>(
    c: &mut Check<'_, '_>,
    i: usize,
    d: &'p DeviceConfig,
    seen: &mut HashMap<&'p str, &'p str>,
) {
    let at = |k: &str| KeyPath::from("device").index(i).key(k);
    c.refuse_keys(
        i,
        &d.id,
        "OCPP",
        [
            ("bus", d.bus.is_some()),
            ("unit", d.unit.is_some()),
            ("poll_interval_s", d.poll_interval_s.is_some()),
            ("timeout_ms", d.timeout_ms.is_some()),
            ("topic", d.topic.is_some()),
            ("address", d.address.is_some()),
            ("expire_after_s", d.expire_after_s.is_some()),
            ("availability_topic", d.availability_topic.is_some()),
            ("point", !d.point.is_empty()),
        ],
    );
    let key = if d.charge_point_id.is_some() {
        "charge_point_id"
    } else {
        "id"
    };
    let cp = d.charge_point_id();
    // The OCPP security whitepaper's identity: at most 48 characters, safe in a URL path.
    if cp.is_empty()
        || cp.len() > 48
        || !cp
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '~'))
    {
        c.err(
            at(key),
            format!(
                "charge point id {} must be 1-48 letters, digits, `-`, `_`, `.` or `~`",
                crate::text::clip(cp)
            ),
        );
    } else if d.enabled {
        if let Some(other) = seen.insert(cp, d.id.as_str()) {
            c.err(
                at(key),
                format!("charge point id `{cp}` is already device `{other}`"),
            );
        }
    }
    if let Some(h) = &d.password_sha256 {
        if !is_sha256_hex(h) {
            c.err(
                at("password_sha256"),
                "password_sha256 is 64 hex digits: `printf %s 'the password' | sha256sum`",
            );
        }
    }
    if let Some(n) = d.connectors {
        check_range(c, at("connectors"), i64::from(n), 1, 32);
    }
}

/// An MQTT device: its topics (its own, or its profile's template filled in), unique in the
/// config, and nothing that belongs to other kinds of device.
fn check_mqtt_device<'p>(
    c: &mut Check<'_, '_>,
    parts: &'p Parts,
    i: usize,
    d: &'p DeviceConfig,
    profile: &Arc<Profile>,
    resolved: &mut Resolved,
    topics: &mut HashMap<String, &'p str>,
) {
    let at = |k: &str| KeyPath::from("device").index(i).key(k);
    if parts.mqtt.is_none() {
        c.err(
            at("profile"),
            format!("device `{}` is an MQTT device: add an [mqtt] section (broker = \"embedded\" or the park's broker URL)", d.id),
        );
    }
    c.refuse_keys(
        i,
        &d.id,
        "MQTT",
        [
            ("bus", d.bus.is_some()),
            ("unit", d.unit.is_some()),
            ("poll_interval_s", d.poll_interval_s.is_some()),
            ("timeout_ms", d.timeout_ms.is_some()),
            ("charge_point_id", d.charge_point_id.is_some()),
            ("address", d.address.is_some()),
        ],
    );
    let settings = profile.mqtt.clone();
    let topic = match (&d.topic, settings.as_ref().and_then(|m| m.topic.as_deref())) {
        (Some(t), _) => match crate::profile::check_topic_template(t) {
            Ok(()) if !t.contains('{') => Some(t.clone()),
            Ok(()) => crate::profile::render_topic(t, &d.id, &d.location, None)
                .map_err(|e| c.err(at("topic"), e))
                .ok(),
            Err(e) => {
                c.err(at("topic"), e);
                None
            }
        },
        (None, Some(template)) => crate::profile::render_topic(template, &d.id, &d.location, None)
            .map_err(|e| c.err(at("profile"), e))
            .ok(),
        (None, None) => {
            c.err(
                at("profile"),
                format!(
                    "device `{}` needs a `topic` (its profile gives no template)",
                    d.id
                ),
            );
            None
        }
    };
    let availability = match (
        &d.availability_topic,
        settings
            .as_ref()
            .and_then(|m| m.availability_topic.as_deref()),
    ) {
        (Some(t), _) => match crate::profile::check_topic_template(t) {
            Ok(()) => crate::profile::render_topic(t, &d.id, &d.location, topic.as_deref())
                .map_err(|e| c.err(at("availability_topic"), e))
                .ok(),
            Err(e) => {
                c.err(at("availability_topic"), e);
                None
            }
        },
        (None, Some(template)) => topic
            .as_deref()
            .and_then(|t| crate::profile::render_topic(template, &d.id, &d.location, Some(t)).ok()),
        (None, None) => None,
    };
    if let Some(e) = d.expire_after_s {
        check_range(c, at("expire_after_s"), clamp_i64(e), 1, 7 * 86_400);
    }
    if d.enabled {
        for (key, t) in [("topic", &topic), ("availability_topic", &availability)] {
            if let Some(t) = t {
                if let Some(other) = topics.insert(t.clone(), d.id.as_str()) {
                    c.err(
                        at(key),
                        format!("topic `{t}` is already device `{other}`'s: one device per topic"),
                    );
                }
            }
        }
    }
    match crate::profile::apply_overrides(profile, &d.point) {
        Ok(p) => {
            resolved.device_profiles.insert(d.id.clone(), p);
        }
        Err(errs) => {
            for (point, field, msg) in errs {
                c.err(at("point").key(point).key(field), msg);
            }
        }
    }
    if let Some(topic) = topic {
        resolved.mqtt_topics.insert(
            d.id.clone(),
            MqttTopics {
                data: topic,
                availability,
            },
        );
    }
}

/// Prints one serial setting of a profile, to compare devices on one line.
type Show = fn(&SerialDefaults) -> String;

/// Settles each serial line's settings; the devices on one line must agree with it.
fn check_bus_lines(c: &mut Check<'_, '_>, parts: &Parts, resolved: &mut Resolved) {
    for (i, b) in &parts.buses {
        if b.kind == BusKind::Tcp {
            continue;
        }
        let at = |k: &str| KeyPath::from("bus").index(*i).key(k);
        let defaults: Vec<(&str, SerialDefaults)> = parts
            .devices
            .iter()
            .filter(|(_, d)| d.bus.as_deref() == Some(b.id.as_str()))
            .filter_map(|(_, d)| {
                resolved
                    .device_profiles
                    .get(&d.id)
                    .map(|p| (d.id.as_str(), p.serial))
            })
            .collect();
        let mut line = SerialDefaults::default();
        let settings: [(&str, bool, Show); 4] = [
            ("baud", b.baud.is_some(), |s| s.baud.to_string()),
            ("parity", b.parity.is_some(), |s| s.parity.to_string()),
            ("data_bits", b.data_bits.is_some(), |s| {
                s.data_bits.to_string()
            }),
            ("stop_bits", b.stop_bits.is_some(), |s| {
                s.stop_bits.to_string()
            }),
        ];
        for (key, given, of) in settings {
            if given {
                continue;
            }
            let mut seen: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for (dev, s) in &defaults {
                seen.entry(of(s)).or_default().push(dev);
            }
            if seen.len() > 1 {
                let detail: Vec<String> = seen
                    .iter()
                    .map(|(v, devs)| format!("{v} for {}", devs.join(", ")))
                    .collect();
                c.err(at("kind"), format!("the profiles of the devices on this line disagree on {key} ({}): set `{key}` on the bus", detail.join("; ")));
            }
        }
        if let Some((_, first)) = defaults.first() {
            line = *first;
        }
        line.baud = b.baud.unwrap_or(line.baud);
        line.parity = b.parity.unwrap_or(line.parity);
        line.data_bits = b.data_bits.unwrap_or(line.data_bits);
        line.stop_bits = b.stop_bits.unwrap_or(line.stop_bits);
        for (key, msg) in check_serial_settings(&line) {
            c.err(at(key), msg);
        }
        resolved.bus_lines.insert(b.id.clone(), line);
    }
}

fn check_words(c: &mut Check<'_, '_>, path: KeyPath, v: &Option<OneOrMany>, allowed: &[&str]) {
    if let Some(v) = v {
        for w in v.values() {
            if !allowed.contains(&w) {
                c.err(
                    path.clone(),
                    format!("`{w}` is not one of: {}", allowed.join(", ")),
                );
            }
        }
    }
}

fn check_notify(c: &mut Check<'_, '_>, parts: &Parts) {
    check_ids(
        c,
        "channel",
        parts.channels.iter().map(|(i, ch)| (*i, ch.id.as_str())),
    );
    check_ids(
        c,
        "department",
        parts.departments.iter().map(|(i, d)| (*i, d.id.as_str())),
    );
    let channels: HashSet<&str> = parts
        .channels
        .iter()
        .map(|(_, ch)| ch.id.as_str())
        .collect();
    let departments: HashSet<&str> = parts
        .departments
        .iter()
        .map(|(_, d)| d.id.as_str())
        .collect();

    for (i, ch) in &parts.channels {
        let at = |k: &str| KeyPath::from("channel").index(*i).key(k);
        match ch.kind {
            ChannelKind::Webhook
            | ChannelKind::Dingtalk
            | ChannelKind::Wecom
            | ChannelKind::Feishu => match ch.url.as_deref().map(url::Url::parse) {
                None => c.err(
                    at("kind"),
                    format!("a {:?} channel needs `url`", ch.kind).to_lowercase(),
                ),
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                }
                Some(_) => c.err(at("url"), "url must be an http:// or https:// URL"),
            },
            ChannelKind::Mqtt => {
                if ch.topic.as_deref().is_none_or(str::is_empty) {
                    c.err(at("kind"), "an mqtt channel needs `topic`");
                }
            }
            ChannelKind::Gpio => match ch.pin {
                None => c.err(at("kind"), "a gpio channel needs `pin` (BCM numbering)"),
                Some(p) => gpio::check_pin(c, at("pin"), p),
            },
        }
        if ch.rate_limit_per_min == Some(0) {
            c.err(
                at("rate_limit_per_min"),
                "rate_limit_per_min must be at least 1",
            );
        }
    }
    for (i, d) in &parts.departments {
        for (j, ch) in d.channels.iter().enumerate() {
            if !channels.contains(ch.as_str()) {
                c.err(
                    KeyPath::from("department")
                        .index(*i)
                        .key("channels")
                        .index(j),
                    format!("no channel `{ch}`"),
                );
            }
        }
    }
    for (i, r) in &parts.routes {
        check_route(c, KeyPath::from("route").index(*i), r, &departments, true);
    }
    for (i, ch) in &parts.channels {
        if ch.kind == ChannelKind::Webhook && ch.secret.is_none() {
            c.err(
                KeyPath::from("channel").index(*i).key("kind"),
                "a webhook channel needs `secret`: its pushes are signed (X-Parkhub-Signature)",
            );
        }
    }
}

/// A route and its children; a top-level route needs departments, a child inherits them.
fn check_route(
    c: &mut Check<'_, '_>,
    path: KeyPath,
    r: &RouteConfig,
    departments: &HashSet<&str>,
    top: bool,
) {
    let at = |k: &str| path.clone().key(k);
    if top && r.departments.is_empty() {
        c.err(at("departments"), "a route needs at least one department");
    }
    for (j, d) in r.departments.iter().enumerate() {
        if !departments.contains(d.as_str()) {
            c.err(at("departments").index(j), format!("no department `{d}`"));
        }
    }
    for (j, d) in r.escalate_to.iter().enumerate() {
        if !departments.contains(d.as_str()) {
            c.err(at("escalate_to").index(j), format!("no department `{d}`"));
        }
    }
    if let Some(s) = r.escalate_after_s {
        check_range(c, at("escalate_after_s"), clamp_i64(s), 1, 86_400);
    }
    if let Some(s) = r.repeat_after_s {
        check_range(c, at("repeat_after_s"), clamp_i64(s), 30, 86_400);
    }
    if top && r.escalate_after_s.is_some() && r.escalate_to.is_empty() {
        c.err(
            at("escalate_after_s"),
            "escalate_after_s needs `escalate_to`",
        );
    }
    check_match(c, at("match"), &r.matcher);
    for (j, child) in r.route.iter().enumerate() {
        check_route(c, at("route").index(j), child, departments, false);
    }
}

fn check_match(c: &mut Check<'_, '_>, m: KeyPath, r: &RouteMatch) {
    check_words(c, m.clone().key("category"), &r.category, CATEGORIES);
    check_words(c, m.key("severity"), &r.severity, SEVERITIES);
}

/// `[alarms]`, `[[rule]]` and `[[inhibit]]`; resolves every device's and bus's rules.
fn check_alarms(
    c: &mut Check<'_, '_>,
    parts: &Parts,
    profiles: &ProfileRegistry,
    resolved: &mut Resolved,
) {
    let a = &parts.alarms;
    let at = |k: &str| KeyPath::from("alarms").key(k);
    check_range(
        c,
        at("group_window_s"),
        clamp_i64(a.group_window_s),
        0,
        3600,
    );
    if a.repeat_urgent_s != 0 {
        check_range(
            c,
            at("repeat_urgent_s"),
            clamp_i64(a.repeat_urgent_s),
            30,
            86_400,
        );
    }
    check_range(
        c,
        at("max_shelve_minutes"),
        clamp_i64(a.max_shelve_minutes),
        1,
        10_080,
    );
    check_range(c, at("keep_days"), i64::from(a.keep_days), 1, 3650);

    let devices: HashMap<&str, &DeviceConfig> = parts
        .devices
        .iter()
        .map(|(_, d)| (d.id.as_str(), d))
        .collect();
    let buses: HashSet<&str> = parts.buses.iter().map(|(_, b)| b.id.as_str()).collect();
    let mut usable = Vec::new();
    for (i, r) in &parts.rules {
        let at = |k: &str| KeyPath::from("rule").index(*i).key(k);
        let shape = rules::check_shape(r);
        let ok = shape.is_empty();
        for (k, m) in shape {
            c.err(at(k), m);
        }
        let mut refs_ok = true;
        for d in r.device.as_ref().map(|v| v.values()).unwrap_or_default() {
            if !devices.contains_key(d) {
                c.err(at("device"), format!("no device `{d}`"));
                refs_ok = false;
            }
        }
        for p in r.profile.as_ref().map(|v| v.values()).unwrap_or_default() {
            if profiles.get(p).is_none() {
                c.err(at("profile"), format!("no profile `{p}`"));
                refs_ok = false;
            }
        }
        for b in r.bus.as_ref().map(|v| v.values()).unwrap_or_default() {
            if !buses.contains(b) {
                c.err(at("bus"), format!("no bus `{b}`"));
                refs_ok = false;
            }
        }
        if ok && refs_ok {
            usable.push((*i, r));
        }
    }
    usable.sort_by_key(|(_, r)| rules::specificity(r));

    let mut errors = std::collections::BTreeSet::new();
    let mut fits: HashSet<usize> = HashSet::new();
    // A device's rules follow from its profile and the rules that apply to it: devices alike in
    // both share one list.
    let mut shared: HashMap<(*const Profile, Vec<usize>), rules::RuleList> = HashMap::new();
    for (_, d) in &parts.devices {
        let Some(profile) = resolved.device_profiles.get(&d.id) else {
            continue;
        };
        let mine: Vec<(usize, &RuleConfig)> = usable
            .iter()
            .filter(|(_, r)| rules::applies_to(r, &d.id, &profile.id))
            .copied()
            .collect();
        for (i, r) in &mine {
            if r.point
                .as_deref()
                .is_none_or(|p| profile.alarm_point(p).is_some())
            {
                fits.insert(*i);
            }
        }
        let key = (Arc::as_ptr(profile), mine.iter().map(|(i, _)| *i).collect());
        let list = match shared.get(&key) {
            Some(list) => list.clone(),
            None => {
                let (list, errs) = rules::device_rules(&d.id, profile, &mine);
                let list: rules::RuleList = list.into_iter().map(Arc::new).collect();
                // Errors name the device: a list with errors is not shared, so that every
                // device's are reported.
                if errs.is_empty() {
                    shared.insert(key, list.clone());
                }
                errors.extend(errs);
                list
            }
        };
        resolved.alarm_rules.devices.insert(d.id.clone(), list);
    }
    for (i, r) in &usable {
        // A device named by the rule has already said what is wrong, more precisely.
        let named = errors.iter().any(|(e, (k, _))| e == i && *k == "point");
        if r.bus.is_none() && r.point.is_some() && !fits.contains(i) && !named {
            c.err(
                KeyPath::from("rule").index(*i).key("point"),
                format!(
                    "no device this rule is for has a point `{}`",
                    r.point.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    for (i, (k, m)) in errors {
        c.err(KeyPath::from("rule").index(i).key(k), m);
    }
    for (_, b) in &parts.buses {
        resolved.alarm_rules.buses.insert(
            b.id.clone(),
            rules::bus_rules(&b.id, &usable)
                .into_iter()
                .map(Arc::new)
                .collect(),
        );
    }

    for (i, inh) in &parts.inhibits {
        let at = |k: &str| KeyPath::from("inhibit").index(*i).key(k);
        check_match(c, at("source"), &inh.source);
        check_match(c, at("target"), &inh.target);
        for (j, e) in inh.equal.iter().enumerate() {
            if !LABELS.contains(&e.as_str()) {
                c.err(
                    at("equal").index(j),
                    format!("`{e}` is not one of: {}", LABELS.join(", ")),
                );
            }
        }
        if inh.source.pairs().is_empty() || inh.target.pairs().is_empty() {
            c.err(
                at("source"),
                "an inhibition needs both `source` and `target` matchers",
            );
        }
    }
}

fn check_uplink(
    c: &mut Check<'_, '_>,
    u: &UplinkConfig,
    devices: &[&str],
    profiles: &ProfileRegistry,
) {
    let at = |k: &str| KeyPath::from("uplink").key(k);
    let schemes: &[&str] = match u.kind {
        UplinkKind::Http => &["http", "https"],
        UplinkKind::Mqtt => &["mqtt", "mqtts"],
    };
    match url::Url::parse(&u.url) {
        Ok(p) if schemes.contains(&p.scheme()) && p.host_str().is_some() => {}
        _ => c.err(
            at("url"),
            format!(
                "url must be a {} URL",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ),
    }
    check_range(c, at("interval_s"), clamp_i64(u.interval_s), 1, 86_400);
    check_range(c, at("timeout_s"), clamp_i64(u.timeout_s), 1, 600);
    check_range(c, at("max_retry_s"), clamp_i64(u.max_retry_s), 1, 3600);
    check_range(
        c,
        at("batch_max"),
        i64::try_from(u.batch_max).unwrap_or(i64::MAX),
        1,
        100_000,
    );
    check_range(
        c,
        at("max_backlog_mb"),
        clamp_i64(u.max_backlog_mb),
        1,
        1_000_000,
    );
    if let Some(t) = &u.token {
        if t.expose().is_empty() {
            c.err(at("token"), "token is empty");
        }
    }
    for (i, p) in u.point.iter().enumerate() {
        let at = |k: &str| KeyPath::from("uplink").key("point").index(i).key(k);
        for d in p.device.as_ref().map(OneOrMany::values).unwrap_or_default() {
            if !devices.contains(&d) {
                c.err(at("device"), format!("no device `{d}`"));
            }
        }
        for id in p
            .profile
            .as_ref()
            .map(OneOrMany::values)
            .unwrap_or_default()
        {
            if profiles.get(id).is_none() {
                c.err(at("profile"), format!("no profile `{id}`"));
            }
        }
        check_range(c, at("every_s"), clamp_i64(p.every_s), 0, 86_400);
    }
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn an_origin_is_a_scheme_and_a_host_with_no_path_and_no_wildcard() {
        assert!(check_origin("https://brain.example.com").is_ok());
        assert!(check_origin("http://10.0.0.5:8080").is_ok());
        for bad in [
            "*",
            "https://brain.example.com/",
            "https://a.b/path",
            "brain.example.com",
            "ftp://a.b",
            "https://u:p@a.b",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
