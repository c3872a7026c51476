//! Reading a profile file into a checked [`Profile`], and applying a device's point overrides.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;

use super::{
    find_point, AlarmSpec, Condition, DataType, Function, JsonSpec, JsonType, Kind, ModbusLimits,
    MqttSettings, Point, PointSource, PortGroup, Profile, Protocol, RegisterSpec, ReportedSpec,
    SerialDefaults, ValueKind, WordOrder, PROFILE_CATEGORIES,
};
use crate::config::{Diagnostic, Document, KeyPath, Parity, PointOverride, CATEGORIES, SEVERITIES};

#[derive(Debug, Deserialize)]
struct ProfileFile {
    id: String,
    vendor: String,
    model: String,
    category: String,
    protocol: Protocol,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    serial: SerialFile,
    #[serde(default)]
    modbus: ModbusFile,
    #[serde(default)]
    defaults: PointDefaults,
    #[serde(default)]
    point: Vec<PointSpec>,
    #[serde(default)]
    mqtt: Option<MqttFile>,
    #[serde(default)]
    ports: Vec<PortsFile>,
    #[serde(default)]
    alarm: Vec<AlarmFile>,
}

#[derive(Debug, Default, Deserialize)]
struct MqttFile {
    topic: Option<String>,
    expire_after_s: Option<u64>,
    availability_topic: Option<String>,
    payload_online: Option<String>,
    payload_offline: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PortsFile {
    /// MQTT: the array of ports in the payload.
    #[serde(default)]
    pointer: Option<String>,
    #[serde(default)]
    number: Option<String>,
    /// Modbus: how many ports, and how many registers apart one port's block is from the next.
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    stride: Option<u32>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    point: Vec<PointSpec>,
}

#[derive(Debug, Deserialize)]
struct AlarmFile {
    id: String,
    #[serde(default)]
    point: Option<String>,
    #[serde(default)]
    equals: Option<serde_json::Value>,
    #[serde(default, rename = "in")]
    in_set: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    not_in: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    above: Option<f64>,
    #[serde(default)]
    below: Option<f64>,
    #[serde(default)]
    deadband: Option<f64>,
    #[serde(default)]
    offline: Option<bool>,
    #[serde(default)]
    on_delay_s: u64,
    #[serde(default)]
    off_delay_s: u64,
    severity: String,
    category: String,
    #[serde(default)]
    latched: bool,
    message: String,
    #[serde(default)]
    message_en: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct SerialFile {
    baud: Option<u32>,
    parity: Option<Parity>,
    data_bits: Option<u8>,
    stop_bits: Option<u8>,
    unit: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
struct ModbusFile {
    max_registers: Option<u16>,
    max_gap: Option<u16>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct PointDefaults {
    function: Option<Function>,
    #[serde(rename = "type")]
    dtype: Option<DataType>,
    order: Option<WordOrder>,
    kind: Option<Kind>,
}

/// A point as written in a profile file: everything optional that a default can supply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PointSpec {
    pub name: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub register: Option<i64>,
    #[serde(default)]
    pub function: Option<Function>,
    #[serde(default, rename = "type")]
    pub dtype: Option<DataType>,
    #[serde(default)]
    pub order: Option<WordOrder>,
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub bit: Option<u8>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub sum_of: Vec<String>,
    /// Enumeration labels keyed by raw value: decimal or `0x` hex for registers, the payload's
    /// text for MQTT.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// MQTT: RFC 6901 pointer into the JSON payload.
    #[serde(default)]
    pub pointer: Option<String>,
}

impl From<&Point> for PointSpec {
    fn from(p: &Point) -> Self {
        let mut spec = PointSpec {
            name: p.name.to_string(),
            label: p.label.clone(),
            kind: Some(p.kind),
            unit: p.unit.as_deref().map(str::to_owned),
            hidden: p.hidden,
            ..PointSpec::default()
        };
        match &p.source {
            PointSource::Register(r) => {
                spec.register = Some(i64::from(r.address));
                spec.function = Some(r.function);
                spec.dtype = Some(r.dtype);
                spec.order = Some(r.order);
                spec.scale = Some(r.scale);
                spec.offset = Some(r.offset);
                spec.length = Some(r.length);
                spec.bit = r.bit;
                spec.values = r
                    .values
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
            }
            PointSource::Json(j) => {
                spec.pointer = Some(j.pointer.clone());
                spec.dtype = Some(j.json.data_type());
                spec.scale = Some(j.scale);
                spec.offset = Some(j.offset);
                spec.values = j.values.clone().unwrap_or_default();
            }
            PointSource::Reported(r) => {
                spec.dtype = Some(r.json.data_type());
                spec.values = r.values.clone().unwrap_or_default();
            }
            PointSource::Sum(parts) => spec.sum_of = parts.iter().map(|s| s.to_string()).collect(),
        }
        spec
    }
}

/// A problem with one field of one point, before it is located in a file.
type FieldError = (&'static str, String);

/// Parses and checks a profile document; every problem comes back located.
pub fn parse_profile(doc: &Document<'_>) -> Result<Profile, Vec<Diagnostic>> {
    let (file, mut diags) = doc.deserialize::<ProfileFile>(&KeyPath::root());
    let Some(file) = file else {
        return Err(diags);
    };
    let at = |key: &str| KeyPath::from(key);

    if !valid_id(&file.id) {
        diags.push(doc.diag(
            &at("id"),
            format!(
                "profile id `{}` must be lowercase letters, digits and `-`",
                file.id
            ),
        ));
    }
    if let Some(stem) = std::path::Path::new(doc.file())
        .file_stem()
        .and_then(|s| s.to_str())
    {
        if doc.file().ends_with(".toml") && stem != file.id {
            diags.push(doc.diag(
                &at("id"),
                format!(
                    "profile id `{}` differs from its file name `{stem}.toml`",
                    file.id
                ),
            ));
        }
    }
    if !PROFILE_CATEGORIES.contains(&file.category.as_str()) {
        diags.push(doc.diag(
            &at("category"),
            format!(
                "unknown category `{}` (one of: {})",
                file.category,
                PROFILE_CATEGORIES.join(", ")
            ),
        ));
    }
    if !matches!(
        file.protocol,
        Protocol::Modbus
            | Protocol::Mqtt
            | Protocol::Ocpp
            | Protocol::Gpio
            | Protocol::Dlt645
            | Protocol::Cjt188
    ) {
        diags.push(doc.diag(
            &at("protocol"),
            format!(
                "`{}` profiles are not supported by parkhub {} (modbus, dlt645, cjt188, mqtt, ocpp and gpio only)",
                file.protocol,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    let mqtt = file.protocol == Protocol::Mqtt;
    if !mqtt && file.mqtt.is_some() {
        diags.push(doc.diag(&at("mqtt"), "[mqtt] is for mqtt profiles"));
    }

    let d = SerialDefaults::default();
    let serial = SerialDefaults {
        baud: file.serial.baud.unwrap_or(d.baud),
        parity: file.serial.parity.unwrap_or(d.parity),
        data_bits: file.serial.data_bits.unwrap_or(d.data_bits),
        stop_bits: file.serial.stop_bits.unwrap_or(d.stop_bits),
        unit: file.serial.unit.unwrap_or(d.unit),
    };
    for (key, msg) in check_serial_settings(&serial) {
        diags.push(doc.diag(&at("serial").key(key), msg));
    }

    let limits = ModbusLimits {
        max_registers: file
            .modbus
            .max_registers
            .unwrap_or(ModbusLimits::default().max_registers),
        max_gap: file
            .modbus
            .max_gap
            .unwrap_or(ModbusLimits::default().max_gap),
    };
    if !(1..=125).contains(&limits.max_registers) {
        diags.push(doc.diag(
            &at("modbus").key("max_registers"),
            "max_registers must be 1..=125 (the Modbus limit for one read)",
        ));
    }

    let mut points = Vec::with_capacity(file.point.len());
    let mut seen = HashSet::new();
    for (i, spec) in file.point.iter().enumerate() {
        let path = at("point").index(i);
        if !seen.insert(spec.name.clone()) {
            diags.push(doc.diag(
                &path.key("name"),
                format!("point `{}` is defined twice", spec.name),
            ));
        }
        match build_point(spec, &file.defaults, limits, file.protocol) {
            Ok(p) => points.push(p),
            Err(errs) => {
                for (field, msg) in errs {
                    diags.push(doc.diag(&path.key(field), msg));
                }
            }
        }
    }
    if file.protocol == Protocol::Dlt645 {
        for (i, p) in file.point.iter().enumerate() {
            if !crate::dlt645::poller::point_names().any(|n| n == p.name) {
                let known: Vec<&str> = crate::dlt645::poller::point_names().collect();
                diags.push(doc.diag(
                    &at("point").index(i).key("name"),
                    format!(
                        "a dlt645 point is one of the quantities the driver reads: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    if file.protocol == Protocol::Cjt188 {
        for (i, p) in file.point.iter().enumerate() {
            if !crate::cjt188::poller::POINTS.contains(&p.name.as_str()) {
                diags.push(doc.diag(
                    &at("point").index(i).key("name"),
                    format!(
                        "a cjt188 point is one of what the meter reports: {}",
                        crate::cjt188::poller::POINTS.join(", ")
                    ),
                ));
            }
        }
    }
    if file.protocol == Protocol::Gpio {
        let point = crate::gpio::source::POINT;
        let ok = file.point.len() == 1
            && file.point[0].name == point
            && file.point[0].dtype == Some(DataType::Bool);
        if !ok || !file.ports.is_empty() {
            diags.push(doc.diag(
                &at("point"),
                format!("a gpio profile has exactly one point, `{point}` of type \"bool\": whether the contact is active"),
            ));
        }
    }
    let mut ports = Vec::new();
    for (g, group) in file.ports.iter().enumerate() {
        let gpath = at("ports").index(g);
        let prefix = group.prefix.clone().unwrap_or_else(|| "port".into());
        if !valid_point_name(&prefix) || prefix.contains('.') {
            diags.push(doc.diag(
                &gpath.key("prefix"),
                format!("prefix `{prefix}` must be lowercase letters, digits and `_`"),
            ));
        }
        for (key, msg) in port_keys(file.protocol, group) {
            diags.push(doc.diag(&gpath.key(key), msg));
        }
        let mut group_points = Vec::new();
        for (i, spec) in group.point.iter().enumerate() {
            match build_point(spec, &file.defaults, limits, file.protocol) {
                Ok(p) => group_points.push(p),
                Err(errs) => {
                    for (field, msg) in errs {
                        diags.push(doc.diag(&gpath.key("point").index(i).key(field), msg));
                    }
                }
            }
        }
        if file.protocol == Protocol::Modbus {
            match expand_ports(&prefix, group, &group_points) {
                Ok(mut expanded) => points.append(&mut expanded),
                Err(msg) => diags.push(doc.diag(&gpath.key("stride"), msg)),
            }
        }
        ports.push(PortGroup {
            pointer: group.pointer.clone().unwrap_or_default(),
            number: group.number.clone(),
            prefix,
            points: group_points,
        });
    }
    let mqtt_settings = if mqtt {
        let m = file.mqtt.as_ref();
        let settings = MqttSettings {
            topic: m.and_then(|m| m.topic.clone()),
            expire_after_s: m.and_then(|m| m.expire_after_s),
            availability_topic: m.and_then(|m| m.availability_topic.clone()),
            payload_online: m
                .and_then(|m| m.payload_online.clone())
                .unwrap_or_else(|| "online".into()),
            payload_offline: m
                .and_then(|m| m.payload_offline.clone())
                .unwrap_or_else(|| "offline".into()),
        };
        if let Some(t) = &settings.topic {
            if let Err(e) = check_topic_template(t) {
                diags.push(doc.diag(&at("mqtt").key("topic"), e));
            }
        }
        if let Some(t) = &settings.availability_topic {
            if let Err(e) = check_topic_template(t) {
                diags.push(doc.diag(&at("mqtt").key("availability_topic"), e));
            }
        }
        if settings.expire_after_s == Some(0) {
            diags.push(doc.diag(
                &at("mqtt").key("expire_after_s"),
                "expire_after_s must be at least 1",
            ));
        }
        Some(settings)
    } else {
        None
    };
    // Points written down, built or not: an alarm on a broken point is not also "no point".
    let declared: HashSet<String> = file
        .point
        .iter()
        .map(|p| p.name.clone())
        .chain(file.ports.iter().flat_map(|g| {
            let prefix = g.prefix.clone().unwrap_or_else(|| "port".into());
            g.point.iter().map(move |p| format!("{prefix}*.{}", p.name))
        }))
        .collect();
    let mut alarms = Vec::new();
    let mut alarm_ids = HashSet::new();
    for (i, a) in file.alarm.iter().enumerate() {
        let apath = at("alarm").index(i);
        if !alarm_ids.insert(a.id.clone()) {
            diags.push(doc.diag(
                &apath.key("id"),
                format!("alarm `{}` is defined twice", a.id),
            ));
        }
        match build_alarm(a, &points, &ports, &declared) {
            Ok(spec) => alarms.push(spec),
            Err(errs) => {
                for (field, msg) in errs {
                    diags.push(doc.diag(&apath.key(field), msg));
                }
            }
        }
    }
    for (field_point, msg) in check_sums(&points) {
        let idx = file.point.iter().position(|p| p.name == field_point);
        let path = match idx {
            Some(i) => at("point").index(i).key("sum_of"),
            None => at("point"),
        };
        diags.push(doc.diag(&path, msg));
    }
    if points.is_empty() && ports.is_empty() && diags.is_empty() {
        diags.push(doc.diag(&at("id"), "a profile needs at least one [[point]]"));
    }

    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Profile {
        id: file.id,
        vendor: file.vendor,
        model: file.model,
        category: file.category,
        protocol: file.protocol,
        description: file.description,
        serial,
        limits,
        points,
        ports,
        mqtt: mqtt_settings,
        alarms,
    })
}

fn valid_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

fn pointer_rule(p: &str) -> String {
    format!("`{p}` is not a JSON pointer: write `/field` or `/outer/inner`")
}

/// What a `[[ports]]` block of a profile of `protocol` must and must not say.
fn port_keys(protocol: Protocol, g: &PortsFile) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    let mut refuse = |key: &'static str, given: bool, whose: &str| {
        if given {
            errs.push((key, format!("`{key}` is for {whose} port blocks")));
        }
    };
    match protocol {
        Protocol::Mqtt => {
            refuse("count", g.count.is_some(), "Modbus");
            refuse("stride", g.stride.is_some(), "Modbus");
            match &g.pointer {
                None => errs.push((
                    "pointer",
                    "MQTT ports need the `pointer` of their array in the payload".into(),
                )),
                Some(p) if !valid_pointer(p) => errs.push(("pointer", pointer_rule(p))),
                Some(_) => {}
            }
            if let Some(n) = g.number.as_deref().filter(|n| !valid_pointer(n)) {
                errs.push(("number", pointer_rule(n)));
            }
        }
        Protocol::Modbus => {
            refuse("pointer", g.pointer.is_some(), "MQTT");
            refuse("number", g.number.is_some(), "MQTT");
            if !g.count.is_some_and(|c| (1..=MAX_PORTS).contains(&c)) {
                errs.push((
                    "count",
                    format!("Modbus ports need a `count` of 1..={MAX_PORTS}"),
                ));
            }
            if g.stride.is_none_or(|s| s == 0) {
                errs.push((
                    "stride",
                    "Modbus ports need a `stride`: registers from one port's block to the next"
                        .into(),
                ));
            }
        }
        _ => {
            refuse("pointer", g.pointer.is_some(), "MQTT");
            refuse("number", g.number.is_some(), "MQTT");
            refuse("count", g.count.is_some(), "Modbus");
            refuse("stride", g.stride.is_some(), "Modbus");
        }
    }
    errs
}

/// Most ports one block of a Modbus profile may have.
const MAX_PORTS: u32 = 64;

/// A Modbus port block as plain points: port N's `name` is `{prefix}{N}.name`, read `stride`
/// × (N − 1) registers after port 1's. The poll plan then needs nothing of ports.
fn expand_ports(prefix: &str, g: &PortsFile, points: &[Point]) -> Result<Vec<Point>, String> {
    let (Some(count), Some(stride)) = (g.count, g.stride) else {
        return Ok(Vec::new()); // reported by `port_keys`
    };
    // Port 1's registers, per function: a stride shorter than their span would read port 2's
    // first registers as port 1's last.
    let mut spans: BTreeMap<Function, (u32, u32)> = BTreeMap::new();
    for r in points.iter().filter_map(Point::register) {
        let s = spans.entry(r.function).or_insert((r.end(), 0));
        *s = (s.0.min(u32::from(r.address)), s.1.max(r.end()));
    }
    if count > 1 {
        if let Some((f, (lo, hi))) = spans.iter().find(|(_, (lo, hi))| hi - lo > stride) {
            return Err(format!(
                "stride {stride} is shorter than a port's {f} registers ({lo:#06x}..{hi:#06x}, {} long): the ports would overlap",
                hi - lo
            ));
        }
    }
    let mut out = Vec::with_capacity(points.len() * count as usize);
    for n in 1..=count {
        for p in points {
            let mut p = p.clone();
            p.name = Arc::from(format!("{prefix}{n}.{}", p.name));
            // Ten ports' "温度" would be ten points no one can tell apart in a list.
            p.label = p.label.map(|l| format!("{prefix}{n} {l}"));
            match &mut p.source {
                PointSource::Register(r) => {
                    let shifted = u32::from(r.address) + stride * (n - 1);
                    if shifted + u32::from(r.length) > 65_536 {
                        return Err(format!(
                            "port {n} of {count} would reach past register 65535 (stride {stride})"
                        ));
                    }
                    // Bounded just above.
                    r.address = shifted as u16;
                }
                PointSource::Sum(parts) => {
                    for part in parts.iter_mut() {
                        *part = Arc::from(format!("{prefix}{n}.{part}"));
                    }
                }
                _ => {}
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// A topic template: no MQTT wildcards, known placeholders only.
pub(crate) fn check_topic_template(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("a topic cannot be empty".into());
    }
    if t.contains(['+', '#']) {
        return Err(format!(
            "topic `{t}` has a wildcard (+ or #): give the exact topic"
        ));
    }
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("topic `{t}` has an unclosed `{{`"));
        };
        let name = &rest[open + 1..open + close];
        if !["id", "building", "floor", "zone", "topic"].contains(&name) {
            return Err(format!(
                "topic `{t}`: unknown placeholder `{{{name}}}` (id, building, floor, zone, topic)"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// A topic template filled in for one device; `Err` names a placeholder the device cannot fill.
pub fn render_topic(
    template: &str,
    id: &str,
    location: &crate::config::Location,
    topic: Option<&str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("`{template}` has an unclosed `{{`"));
        };
        let name = &rest[open + 1..open + close];
        let value = match name {
            "id" => Some(id),
            "building" => location.building.as_deref(),
            "floor" => location.floor.as_deref(),
            "zone" => location.zone.as_deref(),
            "topic" => topic,
            _ => None,
        };
        match value {
            Some(v) if !v.is_empty() => out.push_str(v),
            _ => {
                return Err(format!(
                    "topic template `{template}` needs `{name}`, which this device does not have"
                ))
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A default alarm of a profile, checked against the profile's points.
fn build_alarm(
    a: &AlarmFile,
    points: &[Point],
    ports: &[PortGroup],
    declared: &HashSet<String>,
) -> Result<AlarmSpec, Vec<FieldError>> {
    let mut errs: Vec<FieldError> = Vec::new();
    if !valid_point_name(&a.id) {
        errs.push((
            "id",
            format!(
                "alarm id `{}` must be lowercase letters, digits and `_`",
                a.id
            ),
        ));
    }
    let given = [
        a.equals.is_some(),
        a.in_set.is_some(),
        a.not_in.is_some(),
        a.above.is_some(),
        a.below.is_some(),
        a.offline == Some(true),
    ];
    let condition = match given.iter().filter(|g| **g).count() {
        1 => {
            if let Some(v) = &a.equals {
                Some(Condition::Equals(v.clone()))
            } else if let Some(v) = &a.in_set {
                if v.is_empty() {
                    errs.push(("in", "`in` needs at least one value".into()));
                }
                Some(Condition::In(v.clone()))
            } else if let Some(v) = &a.not_in {
                if v.is_empty() {
                    errs.push(("not_in", "`not_in` needs at least one value".into()));
                }
                Some(Condition::NotIn(v.clone()))
            } else if let Some(limit) = a.above {
                Some(Condition::Above {
                    limit,
                    deadband: a.deadband.unwrap_or(0.0),
                })
            } else if let Some(limit) = a.below {
                Some(Condition::Below {
                    limit,
                    deadband: a.deadband.unwrap_or(0.0),
                })
            } else {
                Some(Condition::Offline)
            }
        }
        0 => {
            errs.push((
                "id",
                "an alarm needs a condition: equals, in, not_in, above, below or offline = true"
                    .into(),
            ));
            None
        }
        _ => {
            errs.push((
                "id",
                "an alarm has one condition: equals, in, not_in, above, below or offline = true"
                    .into(),
            ));
            None
        }
    };
    if a.deadband.is_some_and(|d| !d.is_finite() || d < 0.0) {
        errs.push(("deadband", "deadband must be a number of 0 or more".into()));
    }
    if a.deadband.is_some() && a.above.is_none() && a.below.is_none() {
        errs.push(("deadband", "deadband goes with above or below".into()));
    }
    // The point the condition looks at, and its kind of value.
    let target: Option<&Point> = match (&a.point, &condition) {
        (None, Some(Condition::Offline)) | (None, None) => None,
        (Some(_), Some(Condition::Offline)) => {
            errs.push((
                "point",
                "an offline alarm is about the device, not a point".into(),
            ));
            None
        }
        (None, Some(_)) => {
            errs.push(("point", "this alarm needs the `point` it watches".into()));
            None
        }
        (Some(name), _) => {
            let found = find_point(points, ports, name);
            if found.is_none() && !declared.contains(name) {
                errs.push(("point", format!("no point `{name}` in this profile")));
            }
            found
        }
    };
    if let (Some(p), Some(c)) = (target, &condition) {
        let expect = p.value_kind();
        let ok = |v: &serde_json::Value| expect.accepts(v);
        match c {
            Condition::Equals(v) if !ok(v) => errs.push((
                "equals",
                format!("`{v}` is not a value point `{}` takes", p.name),
            )),
            Condition::In(vs) | Condition::NotIn(vs) => {
                let key = if matches!(c, Condition::In(_)) {
                    "in"
                } else {
                    "not_in"
                };
                for v in vs.iter().filter(|v| !ok(v)) {
                    errs.push((
                        key,
                        format!("`{v}` is not a value point `{}` takes", p.name),
                    ));
                }
            }
            Condition::Above { .. } | Condition::Below { .. } if expect != ValueKind::Number => {
                errs.push((
                    "point",
                    format!("limits need a number; point `{}` is not one", p.name),
                ));
            }
            _ => {}
        }
    }
    if !SEVERITIES.contains(&a.severity.as_str()) {
        errs.push((
            "severity",
            format!("`{}` is not one of: {}", a.severity, SEVERITIES.join(", ")),
        ));
    }
    if !CATEGORIES.contains(&a.category.as_str()) {
        errs.push((
            "category",
            format!("`{}` is not one of: {}", a.category, CATEGORIES.join(", ")),
        ));
    }
    if a.message.trim().is_empty() {
        errs.push(("message", "an alarm needs a message".into()));
    }
    match condition {
        Some(condition) if errs.is_empty() => Ok(AlarmSpec {
            id: a.id.clone(),
            point: a.point.clone(),
            condition,
            on_delay_s: a.on_delay_s,
            off_delay_s: a.off_delay_s,
            severity: a.severity.clone(),
            category: a.category.clone(),
            latched: a.latched,
            message: a.message.clone(),
            message_en: a.message_en.clone(),
        }),
        _ => Err(errs),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_point_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

pub(crate) fn check_serial_settings(s: &SerialDefaults) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    if s.baud == 0 {
        errs.push(("baud", "baud must be positive".to_string()));
    }
    if !(7..=8).contains(&s.data_bits) {
        errs.push(("data_bits", "data_bits must be 7 or 8".to_string()));
    }
    if !(1..=2).contains(&s.stop_bits) {
        errs.push(("stop_bits", "stop_bits must be 1 or 2".to_string()));
    }
    if !(1..=247).contains(&s.unit) {
        errs.push(("unit", format!("unit {} is outside 1..247", s.unit)));
    }
    errs
}

/// Turns a written point into a checked one, filling what it leaves out from the defaults.
fn build_point(
    spec: &PointSpec,
    defaults: &PointDefaults,
    limits: ModbusLimits,
    protocol: Protocol,
) -> Result<Point, Vec<FieldError>> {
    let mut errs: Vec<FieldError> = Vec::new();
    if !valid_point_name(&spec.name) {
        errs.push((
            "name",
            format!(
                "point name `{}` must be lowercase letters, digits, `_` and `.`",
                spec.name
            ),
        ));
    }
    let kind = spec
        .kind
        .or(if spec.values.is_empty() {
            None
        } else {
            Some(Kind::State)
        })
        .or(defaults.kind)
        .unwrap_or_default();

    let source = if !spec.sum_of.is_empty() {
        for (field, given) in [
            ("register", spec.register.is_some()),
            ("type", spec.dtype.is_some()),
            ("function", spec.function.is_some()),
        ] {
            if given {
                errs.push((field, format!("a `sum_of` point has no {field} of its own")));
            }
        }
        PointSource::Sum(spec.sum_of.iter().map(|s| Arc::from(s.as_str())).collect())
    } else if matches!(
        protocol,
        Protocol::Ocpp | Protocol::Gpio | Protocol::Dlt645 | Protocol::Cjt188
    ) {
        match build_reported(spec, protocol) {
            Ok(r) => PointSource::Reported(r),
            Err(mut e) => {
                errs.append(&mut e);
                PointSource::Sum(Vec::new())
            }
        }
    } else if protocol == Protocol::Mqtt {
        match build_json(spec) {
            Ok(j) => PointSource::Json(j),
            Err(mut e) => {
                errs.append(&mut e);
                PointSource::Sum(Vec::new())
            }
        }
    } else {
        if spec.pointer.is_some() {
            errs.push((
                "pointer",
                "`pointer` is for MQTT points; Modbus points have a `register`".into(),
            ));
        }
        match build_register(spec, defaults, limits) {
            Ok(r) => PointSource::Register(r),
            Err(mut e) => {
                errs.append(&mut e);
                PointSource::Sum(Vec::new())
            }
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Point {
        name: Arc::from(spec.name.as_str()),
        label: spec.label.clone(),
        unit: spec.unit.as_deref().map(Arc::from),
        kind,
        hidden: spec.hidden,
        source,
    })
}

fn build_json(spec: &PointSpec) -> Result<JsonSpec, Vec<FieldError>> {
    let mut errs: Vec<FieldError> = Vec::new();
    for (field, given) in [
        ("register", spec.register.is_some()),
        ("function", spec.function.is_some()),
        ("order", spec.order.is_some()),
        ("length", spec.length.is_some()),
        ("bit", spec.bit.is_some()),
    ] {
        if given {
            errs.push((
                field,
                format!("`{field}` is for Modbus points; MQTT points have a `pointer`"),
            ));
        }
    }
    let pointer = match &spec.pointer {
        None => {
            errs.push((
                "pointer",
                "an MQTT point needs a `pointer` into the payload, e.g. \"/smoke\"".into(),
            ));
            String::new()
        }
        Some(p) if !valid_pointer(p) => {
            errs.push(("pointer", pointer_rule(p)));
            String::new()
        }
        Some(p) => p.clone(),
    };
    let json = json_type(spec, "an MQTT point").unwrap_or_else(|e| {
        errs.push(e);
        JsonType::Number
    });
    let scale = spec.scale.unwrap_or(1.0);
    let offset = spec.offset.unwrap_or(0.0);
    if (spec.scale.is_some() || spec.offset.is_some()) && json != JsonType::Number {
        errs.push(("scale", "scale and offset apply to numbers".into()));
    }
    if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
        errs.push((
            "scale",
            "scale must be a non-zero number and offset a number".into(),
        ));
    }
    let values = (!spec.values.is_empty()).then(|| spec.values.clone());
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(JsonSpec {
        pointer,
        json,
        scale,
        offset,
        values,
    })
}

/// The type of a point whose value comes as JSON or from a protocol: a number unless its
/// `values` make it an enumeration.
fn json_type(spec: &PointSpec, what: &str) -> Result<JsonType, FieldError> {
    Ok(match spec.dtype {
        Some(DataType::Number) | None if spec.values.is_empty() => JsonType::Number,
        Some(DataType::String) | None => JsonType::String,
        Some(DataType::Number) => JsonType::Number,
        Some(DataType::Bool) => JsonType::Bool,
        Some(other) => {
            return Err((
                "type",
                format!("{what} is number, bool or string, not {other}"),
            ))
        }
    })
}

/// An OCPP point (or a dry contact's): the protocol names its values, so the profile says only
/// their type and, for an enumeration, the states (as the protocol spells them) alarms may name.
fn build_reported(spec: &PointSpec, protocol: Protocol) -> Result<ReportedSpec, Vec<FieldError>> {
    let what = if protocol == Protocol::Gpio {
        "a GPIO point: the contact gives its value"
    } else if protocol == Protocol::Dlt645 {
        "a DL/T 645 point: its name says which data identifier is read"
    } else if protocol == Protocol::Cjt188 {
        "a CJ/T 188 point: the meter's answer gives its value"
    } else {
        "an OCPP point: the protocol gives its value"
    };
    let mut errs: Vec<FieldError> = Vec::new();
    for (field, given) in [
        ("register", spec.register.is_some()),
        ("function", spec.function.is_some()),
        ("order", spec.order.is_some()),
        ("length", spec.length.is_some()),
        ("bit", spec.bit.is_some()),
        ("pointer", spec.pointer.is_some()),
        ("scale", spec.scale.is_some()),
        ("offset", spec.offset.is_some()),
    ] {
        if given {
            errs.push((field, format!("`{field}` has no meaning for {what}")));
        }
    }
    let json = json_type(spec, &what[..what.find(':').unwrap_or(what.len())]).unwrap_or_else(|e| {
        errs.push(e);
        JsonType::Number
    });
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ReportedSpec {
        json,
        values: (!spec.values.is_empty()).then(|| spec.values.clone()),
    })
}

fn build_register(
    spec: &PointSpec,
    defaults: &PointDefaults,
    limits: ModbusLimits,
) -> Result<RegisterSpec, Vec<FieldError>> {
    let mut errs: Vec<FieldError> = Vec::new();
    let function = spec
        .function
        .or(defaults.function)
        .unwrap_or(Function::Holding);
    let dtype = spec.dtype.or(if function.is_bits() {
        Some(DataType::Bool)
    } else {
        defaults.dtype.or(Some(DataType::U16))
    });
    let dtype = dtype.unwrap_or(DataType::U16);
    let order = spec.order.or(defaults.order).unwrap_or(WordOrder::ABCD);

    let address = match spec.register {
        None => {
            errs.push((
                "register",
                "a point needs a `register` (or `sum_of`)".into(),
            ));
            0
        }
        Some(r) => match u16::try_from(r) {
            Ok(a) => a,
            Err(_) => {
                errs.push(("register", format!("register {r} is outside 0..=65535")));
                0
            }
        },
    };
    if dtype == DataType::Number {
        errs.push((
            "type",
            "`number` is for MQTT points; a register needs a sized type (u16, i32, f32, …)".into(),
        ));
    }
    if function.is_bits() && dtype != DataType::Bool {
        errs.push((
            "type",
            format!("{function} points are single bits: type must be bool, not {dtype}"),
        ));
    }
    let length = match (dtype, spec.length) {
        (_, _) if function.is_bits() => {
            if spec.length.is_some_and(|l| l != 1) {
                errs.push(("length", "a coil or discrete input is one bit".into()));
            }
            1
        }
        (DataType::String, None) => {
            errs.push(("length", "a string point needs `length` (registers)".into()));
            1
        }
        (DataType::String, Some(l)) => l,
        (DataType::Bcd, l) => {
            let l = l.unwrap_or(1);
            if !(1..=4).contains(&l) {
                errs.push(("length", "a bcd point spans 1 to 4 registers".into()));
            }
            l
        }
        (t, Some(l)) if l != t.default_registers() => {
            errs.push((
                "length",
                format!(
                    "{t} spans {} register(s); `length` is for string and bcd",
                    t.default_registers()
                ),
            ));
            l
        }
        (t, _) => t.default_registers(),
    };
    if length == 0 {
        errs.push(("length", "length must be at least 1".into()));
    }
    let max = if function.is_bits() {
        function.max_quantity()
    } else {
        limits.max_registers
    };
    if length > max {
        errs.push((
            "length",
            format!("{length} registers do not fit in one read (at most {max})"),
        ));
    }
    if u32::from(address) + u32::from(length) > 65536 {
        errs.push(("register", "the value runs past register 65535".into()));
    }
    match (spec.bit, dtype) {
        (Some(b), DataType::Bool) if !function.is_bits() && b > 15 => {
            errs.push(("bit", format!("bit {b} is outside 0..=15")));
        }
        (Some(_), DataType::Bool) if function.is_bits() => {
            errs.push((
                "bit",
                "`bit` is for bool values read from a register".into(),
            ));
        }
        (Some(_), t) if t != DataType::Bool => {
            errs.push(("bit", "`bit` applies only to type bool".into()));
        }
        _ => {}
    }
    let scale = spec.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        errs.push(("scale", "scale must be a non-zero number".into()));
    }
    let offset = spec.offset.unwrap_or(0.0);
    if !offset.is_finite() {
        errs.push(("offset", "offset must be a number".into()));
    }
    let values = if spec.values.is_empty() {
        None
    } else {
        if matches!(
            dtype,
            DataType::F32 | DataType::F64 | DataType::String | DataType::Bool
        ) {
            errs.push((
                "values",
                format!("enumeration values need an integer type, not {dtype}"),
            ));
        }
        let mut map = BTreeMap::new();
        for (k, v) in &spec.values {
            match parse_int_key(k) {
                Some(n) => {
                    map.insert(n, v.clone());
                }
                None => errs.push((
                    "values",
                    format!("`{k}` is not an integer (decimal or 0x hex)"),
                )),
            }
        }
        Some(map)
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(RegisterSpec {
        function,
        address,
        dtype,
        order,
        length,
        bit: spec.bit,
        scale,
        offset,
        values,
    })
}

fn parse_int_key(k: &str) -> Option<i64> {
    let k = k.trim();
    if let Some(hex) = k.strip_prefix("0x").or_else(|| k.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else {
        k.parse().ok()
    }
}

/// `sum_of` must name existing register points (sums of sums are not supported).
fn check_sums(points: &[Point]) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for p in points {
        if let PointSource::Sum(parts) = &p.source {
            for part in parts {
                match points.iter().find(|q| q.name == *part) {
                    None => errs.push((
                        p.name.to_string(),
                        format!("`sum_of` names unknown point `{part}`"),
                    )),
                    Some(q) if q.register().is_none() => errs.push((
                        p.name.to_string(),
                        format!("`sum_of` names `{part}`, which is itself a sum"),
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    errs
}

/// A device's view of a profile: its point overrides applied and checked. Errors come back as
/// (point name, field, message) for the caller to locate in the config file.
pub(crate) fn apply_overrides(
    profile: &Arc<Profile>,
    overrides: &BTreeMap<String, PointOverride>,
) -> Result<Arc<Profile>, Vec<(String, &'static str, String)>> {
    // Most devices override nothing and share their profile: a private copy each was 1.7 KB a
    // device, 3.5 MB of the MQTT benchmark's 2 000 sensors (heaptrack).
    if overrides.is_empty() {
        return Ok(profile.clone());
    }
    let mut errs = Vec::new();
    let mut specs: Vec<PointSpec> = profile.points.iter().map(PointSpec::from).collect();
    let mut removed = Vec::new();
    for (name, o) in overrides {
        let existing = specs.iter().position(|s| &s.name == name);
        let spec = match existing {
            Some(i) => &mut specs[i],
            None => {
                if o.register.is_none() {
                    errs.push((
                        name.clone(),
                        "register",
                        format!(
                            "profile {} has no point `{name}`; a new point needs a `register`",
                            profile.id
                        ),
                    ));
                    continue;
                }
                specs.push(PointSpec {
                    name: name.clone(),
                    ..PointSpec::default()
                });
                let last = specs.len() - 1;
                &mut specs[last]
            }
        };
        if o.enabled == Some(false) {
            removed.push(name.clone());
            continue;
        }
        let changes_type = o.dtype.is_some();
        if o.register.is_some() {
            spec.register = o.register;
        }
        if o.function.is_some() {
            spec.function = o.function;
        }
        if changes_type {
            spec.dtype = o.dtype;
            // The old width belongs to the old type.
            spec.length = None;
        }
        if o.length.is_some() {
            spec.length = o.length;
        }
        if o.order.is_some() {
            spec.order = o.order;
        }
        if o.scale.is_some() {
            spec.scale = o.scale;
        }
        if o.offset.is_some() {
            spec.offset = o.offset;
        }
        if o.unit.is_some() {
            spec.unit = o.unit.clone();
        }
        if o.kind.is_some() {
            spec.kind = o.kind;
        }
        if o.label.is_some() {
            spec.label = o.label.clone();
        }
        if o.bit.is_some() {
            spec.bit = o.bit;
        }
        if o.pointer.is_some() {
            spec.pointer = o.pointer.clone();
        }
    }
    specs.retain(|s| !removed.contains(&s.name));
    let defaults = PointDefaults::default();
    let mut points = Vec::with_capacity(specs.len());
    for spec in &specs {
        match build_point(spec, &defaults, profile.limits, profile.protocol) {
            Ok(p) => points.push(p),
            Err(e) => errs.extend(e.into_iter().map(|(f, m)| (spec.name.clone(), f, m))),
        }
    }
    for (point, msg) in check_sums(&points) {
        errs.push((point, "sum_of", msg));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Arc::new(Profile {
        points,
        ..Profile::clone(profile)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: &str, text: &str) -> Result<Profile, Vec<Diagnostic>> {
        let (doc, errs) = Document::parse(file, text);
        assert!(errs.is_empty(), "{errs:?}");
        parse_profile(&doc)
    }

    const STATION: &str = r#"
id = "acme-station"
vendor = "Acme"
model = "S4"
category = "charger"
protocol = "modbus"

[[point]]
name = "smoke"
register = 0
type = "bool"

[[ports]]
prefix = "port"
count = 4
stride = 16

[[ports.point]]
name = "state"
register = 0x100
values = { 0 = "idle", 1 = "charging" }

[[ports.point]]
name = "power_w"
register = 0x101
type = "u32"

[[alarm]]
id = "busy"
point = "port*.state"
not_in = ["idle"]
severity = "warning"
category = "charger"
message = "busy"
"#;

    #[test]
    fn a_profile_without_a_required_top_level_key_names_that_key() {
        // Found by the config_toml fuzz target: the diagnostic named no key at all.
        let errs = parse(
            "acme-station.toml",
            &STATION.replace("id = \"acme-station\"", ""),
        )
        .unwrap_err();
        assert!(
            errs.iter()
                .any(|d| d.key == "id" && d.message == "missing field `id`"),
            "{errs:?}"
        );
        assert!(errs.iter().all(|d| !d.key.is_empty()), "{errs:?}");
    }

    #[test]
    fn a_modbus_port_block_becomes_plain_points_stride_registers_apart() {
        let p = parse("acme-station.toml", STATION).unwrap();
        let names: Vec<&str> = p.points.iter().map(|p| &*p.name).collect();
        assert_eq!(names.len(), 1 + 4 * 2);
        assert_eq!(names[1..3], ["port1.state", "port1.power_w"]);
        let at = |name: &str| p.point(name).and_then(Point::register).map(|r| r.address);
        assert_eq!(at("port1.state"), Some(0x100));
        assert_eq!(at("port4.state"), Some(0x100 + 3 * 16));
        assert_eq!(at("port4.power_w"), Some(0x101 + 3 * 16));
        assert_eq!(p.alarms[0].condition, Condition::NotIn(vec!["idle".into()]));
        assert!(p.alarm_point("port*.state").is_some());
    }

    #[test]
    fn a_modbus_port_block_needs_a_count_and_a_stride_that_fit() {
        let errs = parse(
            "acme-station.toml",
            &STATION
                .replace("count = 4", "count = 0")
                .replace("stride = 16", "stride = 0"),
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|d| d.key.as_str()).collect();
        assert!(keys.contains(&"ports[0].count"), "{errs:?}");
        assert!(keys.contains(&"ports[0].stride"), "{errs:?}");
        let errs = parse(
            "acme-station.toml",
            &STATION.replace("stride = 16", "stride = 30000"),
        )
        .unwrap_err();
        assert!(errs[0].message.contains("past register 65535"), "{errs:?}");
        let errs = parse(
            "acme-station.toml",
            &STATION.replace(
                "prefix = \"port\"",
                "prefix = \"port\"\npointer = \"/ports\"",
            ),
        )
        .unwrap_err();
        assert!(
            errs[0].message.contains("`pointer` is for MQTT"),
            "{errs:?}"
        );
    }

    #[test]
    fn an_ocpp_point_has_no_register_and_alarms_name_its_states() {
        let text = r#"
id = "acme-cp"
vendor = "Acme"
model = "CP"
category = "charger"
protocol = "ocpp"
[[ports]]
prefix = "connector"
[[ports.point]]
name = "status"
type = "string"
values = { Available = "空闲", Faulted = "故障" }
[[alarm]]
id = "faulted"
point = "connector*.status"
equals = "Faulted"
severity = "major"
category = "charger"
message = "故障"
"#;
        let p = parse("acme-cp.toml", text).unwrap();
        assert!(matches!(
            p.alarm_point("connector*.status").map(|p| &p.source),
            Some(PointSource::Reported(_))
        ));
        let errs = parse(
            "acme-cp.toml",
            &text.replace("equals = \"Faulted\"", "equals = \"Broken\""),
        )
        .unwrap_err();
        assert!(errs[0].message.contains("not a value point"), "{errs:?}");
        let errs = parse(
            "acme-cp.toml",
            &text.replace("type = \"string\"", "type = \"string\"\nregister = 3"),
        )
        .unwrap_err();
        assert!(
            errs[0].message.contains("no meaning for an OCPP point"),
            "{errs:?}"
        );
    }

    const GOOD: &str = r#"
id = "acme-m1"
vendor = "Acme"
model = "M1"
category = "electricity_meter"
protocol = "modbus"

[defaults]
function = "input"
type = "f32"

[[point]]
name = "voltage"
register = 0x0000
unit = "V"

[[point]]
name = "status"
register = 10
type = "u16"
values = { 0x55 = "empty", 170 = "full" }
"#;

    #[test]
    fn defaults_fill_what_points_leave_out() {
        let p = parse("acme-m1.toml", GOOD).unwrap();
        let v = p.point("voltage").unwrap().register().unwrap();
        assert_eq!(
            (v.function, v.dtype, v.order, v.length),
            (Function::Input, DataType::F32, WordOrder::ABCD, 2)
        );
        let s = p.point("status").unwrap();
        assert_eq!(s.kind, Kind::State);
        let values = s.register().unwrap().values.clone().unwrap();
        assert_eq!(values.get(&0x55).map(String::as_str), Some("empty"));
        assert_eq!(values.get(&170).map(String::as_str), Some("full"));
    }

    #[test]
    fn every_point_error_is_reported_with_its_key() {
        let text = GOOD.replace("register = 10", "register = 70000\nbit = 3")
            + "\n[[point]]\nname = \"voltage\"\nregister = 1\ncolour = \"red\"\n";
        let errs = parse("acme-m1.toml", &text).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|d| d.key.as_str()).collect();
        assert!(keys.contains(&"point[2].colour"), "{errs:?}");
        assert!(keys.contains(&"point[1].register"), "{errs:?}");
        assert!(keys.contains(&"point[1].bit"), "{errs:?}");
        assert!(keys.contains(&"point[2].name"), "{errs:?}");
    }

    #[test]
    fn a_file_name_that_differs_from_the_id_is_an_error() {
        let errs = parse("other.toml", GOOD).unwrap_err();
        assert!(
            errs[0].message.contains("differs from its file name"),
            "{errs:?}"
        );
    }

    #[test]
    fn overrides_change_address_scale_and_order_without_copying_the_profile() {
        let p = parse("acme-m1.toml", GOOD).unwrap();
        let mut o = BTreeMap::new();
        o.insert(
            "voltage".to_string(),
            PointOverride {
                register: Some(0x100),
                scale: Some(0.1),
                order: Some(WordOrder::CDAB),
                ..Default::default()
            },
        );
        o.insert(
            "frequency".to_string(),
            PointOverride {
                register: Some(0x46),
                dtype: Some(DataType::F32),
                unit: Some("Hz".into()),
                ..Default::default()
            },
        );
        o.insert(
            "status".to_string(),
            PointOverride {
                enabled: Some(false),
                ..Default::default()
            },
        );
        let p = Arc::new(p);
        let d = apply_overrides(&p, &o).unwrap();
        let v = d.point("voltage").unwrap().register().unwrap();
        assert_eq!(
            (v.address, v.scale, v.order, v.function),
            (0x100, 0.1, WordOrder::CDAB, Function::Input)
        );
        let f = d.point("frequency").unwrap().register().unwrap();
        assert_eq!((f.address, f.dtype, f.length), (0x46, DataType::F32, 2));
        assert!(d.point("status").is_none());
        // the profile itself is untouched
        assert_eq!(p.point("voltage").unwrap().register().unwrap().address, 0);
    }

    #[test]
    fn a_new_point_without_a_register_is_refused() {
        let p = parse("acme-m1.toml", GOOD).unwrap();
        let mut o = BTreeMap::new();
        o.insert(
            "pf".to_string(),
            PointOverride {
                scale: Some(0.001),
                ..Default::default()
            },
        );
        let errs = apply_overrides(&Arc::new(p), &o).unwrap_err();
        assert_eq!(errs[0].0, "pf");
        assert_eq!(errs[0].1, "register");
    }
}
