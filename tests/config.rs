//! Config and profile checks, from fixture files: every error at once, each with file, line and key.

use std::path::Path;
use std::sync::Arc;

use parkhub::config::{load, load_str, Diagnostic};
use parkhub::profile::ProfileRegistry;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn errors_of(name: &str) -> Vec<Diagnostic> {
    match load(&fixture(name)) {
        Ok(_) => panic!("{name} should not check"),
        Err(d) => d.0,
    }
}

/// Asserts an error at `line` naming `key` whose message contains `says`.
fn expect(errs: &[Diagnostic], file_suffix: &str, line: usize, key: &str, says: &str) {
    let hit = errs.iter().any(|d| {
        d.file.ends_with(file_suffix) && d.line == line && d.key == key && d.message.contains(says)
    });
    assert!(
        hit,
        "no error at {file_suffix}:{line} {key} saying {says:?}; got:\n{}",
        errs.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_mistake_in_a_config_is_reported_at_once_with_its_line_and_key() {
    let errs = errors_of("config/every-error.toml");
    let f = "every-error.toml";
    expect(&errs, f, 5, "hub.id", "invalid hub id");
    expect(
        &errs,
        f,
        6,
        "hub.timezone",
        "unknown time zone `Asia/Hangzhou`",
    );
    expect(&errs, f, 11, "bus[0].address", "must be host:port");
    expect(
        &errs,
        f,
        12,
        "bus[0].timeout_ms",
        "must be between 1 and 60000 (got 0)",
    );
    expect(&errs, f, 15, "bus[1].id", "duplicate id `meters-1`");
    expect(&errs, f, 16, "bus[1].kind", "needs `serial");
    expect(&errs, f, 21, "device[0].bus", "no bus `meters-9`");
    expect(&errs, f, 22, "device[0].unit", "unit 300 is outside 1..247");
    expect(
        &errs,
        f,
        23,
        "device[0].poll_interval_s",
        "must be between 1 and 86400 (got 0)",
    );
    expect(&errs, f, 26, "device[1].id", "duplicate id `em-1`");
    expect(
        &errs,
        f,
        27,
        "device[1].profile",
        "unknown profile `chint-dtsu999`",
    );
    expect(&errs, f, 35, "device[2].colour", "unknown key `colour`");
    expect(
        &errs,
        f,
        43,
        "device[3].point.energy_import.register",
        "outside 0..=65535",
    );
    expect(
        &errs,
        f,
        44,
        "device[3].point.pf_extra.register",
        "a new point needs a `register`",
    );
    expect(&errs, f, 49, "channel[0].kind", "needs `url`");
    expect(
        &errs,
        f,
        54,
        "department[0].channels[1]",
        "no channel `sms`",
    );
    expect(
        &errs,
        f,
        57,
        "route[0].match.category",
        "`smoke` is not one of",
    );
    expect(
        &errs,
        f,
        58,
        "route[0].departments[0]",
        "no department `security`",
    );
    expect(&errs, f, 62, "uplink.url", "http://");
    expect(
        &errs,
        f,
        63,
        "uplink.interval_s",
        "must be between 1 and 86400",
    );
    // A retention of "forever" is refused, not wrapped into "nothing".
    expect(
        &errs,
        f,
        66,
        "history.raw_days",
        "must be between 1 and 36500",
    );
    // Two bad elements of one list: both are reported.
    expect(&errs, f, 71, "api.token[0].sha256", "invalid type");
    expect(
        &errs,
        f,
        75,
        "api.token[1].role",
        "unknown variant `nobody`",
    );
    // Sorted by line, each shown as file:line:column: key: message.
    let lines: Vec<usize> = errs.iter().map(|d| d.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(
        errs[0]
            .to_string()
            .contains("every-error.toml:5:1: hub.id: "),
        "{}",
        errs[0]
    );
}

#[test]
fn syntax_errors_are_all_reported_and_nothing_else() {
    let errs = errors_of("config/syntax.toml");
    assert!(errs.len() >= 2, "{errs:?}");
    assert!(errs.iter().all(|d| d.message.starts_with("TOML syntax")));
    assert_eq!(errs[0].line, 5);
    assert!(errs.iter().any(|d| d.line == 8));
}

#[test]
fn environment_variables_fill_values_and_missing_ones_are_named() {
    let errs = errors_of("config/env.toml");
    expect(
        &errs,
        "env.toml",
        3,
        "hub.data_dir",
        "PARKHUB_TEST_DATA_DIR is not set",
    );
    expect(
        &errs,
        "env.toml",
        8,
        "uplink.token",
        "PARKHUB_TEST_TOKEN_THAT_IS_NOT_SET is not set",
    );

    let text = std::fs::read_to_string(fixture("config/env.toml")).unwrap();
    let env = |k: &str| match k {
        "PARKHUB_TEST_DATA_DIR" => Some("/srv/parkhub".to_string()),
        "PARKHUB_TEST_TOKEN_THAT_IS_NOT_SET" => Some("tok-123".to_string()),
        _ => None,
    };
    let loaded = load_str("env.toml", &text, Path::new("/"), &env).unwrap();
    assert_eq!(loaded.config.hub.data_dir, Path::new("/srv/parkhub"));
    let token = loaded.config.uplink.unwrap().token.unwrap();
    assert_eq!(token.expose(), "tok-123");
    assert!(
        !format!("{token:?}").contains("tok-123"),
        "secrets never show in Debug"
    );
}

#[test]
fn a_broken_profile_in_profiles_dir_is_reported_in_its_own_file() {
    let errs = errors_of("config/uses-broken-profile.toml");
    expect(
        &errs,
        "profiles-broken/acme-x1.toml",
        10,
        "point[0].type",
        "unknown variant `f33`",
    );
}

#[test]
fn sections_not_yet_acted_on_still_parse_and_validate() {
    let text = r#"
[hub]
id = "hz-1"
[mqtt]
broker = "embedded"
listen = "0.0.0.0:1883"
[[channel]]
id = "robot"
kind = "dingtalk"
url = "https://oapi.dingtalk.com/robot/send?access_token=abc"
secret = "SEC123"
[[department]]
id = "security"
name = "安保"
channels = ["robot"]
people = [{ name = "王师傅", mobile = "13800000000" }]
[[route]]
match = { category = ["security", "fire"], severity = "critical" }
departments = ["security"]
[uplink]
kind = "mqtt"
url = "mqtts://brain.example.cn:8883"
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    // The embedded broker listens beyond loopback without accounts: refused.
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].key.as_str()), (6, "mqtt.listen"));
    let ok = text.replace("listen = \"0.0.0.0:1883\"", "listen = \"127.0.0.1:1883\"");
    let loaded = load_str("t.toml", &ok, Path::new("/"), &|_| None).unwrap();
    assert_eq!(loaded.config.departments[0].people[0].name, "王师傅");
    assert_eq!(
        loaded.config.routes[0]
            .matcher
            .category
            .as_ref()
            .unwrap()
            .values(),
        vec!["security", "fire"]
    );
}

#[test]
fn the_example_and_demo_configs_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/parkhub.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let env = |k: &str| {
        [
            "PARKHUB_WEBHOOK_SECRET",
            "PARKHUB_DING_TOKEN",
            "PARKHUB_DING_SECRET",
        ]
        .contains(&k)
        .then(|| "s".to_string())
    };
    let loaded = load_str(
        "parkhub.example.toml",
        &text,
        Path::new("/etc/parkhub"),
        &env,
    )
    .unwrap();
    assert_eq!(loaded.config.devices.len(), 10);
    assert_eq!(
        loaded.device_profiles["fire-panel-b3"].alarms[0].severity,
        "critical"
    );
    assert_eq!(
        loaded.config.device("cp-b3-01").unwrap().charge_point_id(),
        "CP-B3-01"
    );
    // A sensor without a topic gets its profile's template, filled in with its id.
    let ebike = &loaded.mqtt_topics["ebike-b5"];
    assert_eq!(ebike.data, "parkhub/ebike/ebike-b5");
    assert_eq!(
        ebike.availability.as_deref(),
        Some("parkhub/ebike/ebike-b5/status")
    );
    // The CT override scales the profile's point for this device only.
    let em = &loaded.device_profiles["em-b3-main"];
    assert_eq!(
        em.point("current_a").unwrap().register().unwrap().scale,
        0.04
    );
    assert_eq!(
        loaded
            .profiles
            .get("chint-dtsu666")
            .unwrap()
            .point("current_a")
            .unwrap()
            .register()
            .unwrap()
            .scale,
        0.001
    );
    // Serial settings: the bus's own.
    assert_eq!(loaded.bus_lines["b5-rs485"].baud, 9600);

    let demo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap();
    let demo = demo
        .replace("${PARKHUB_DEMO_DATA}", "/tmp/x")
        .replace("${PARKHUB_DEMO_TCP_PORT}", "1502")
        .replace("${PARKHUB_DEMO_RTU_PORT}", "1503")
        .replace("${PARKHUB_DEMO_DLT645_PORT}", "1504")
        .replace("${PARKHUB_DEMO_MQTT_PORT}", "1883")
        .replace("${PARKHUB_DEMO_WEBHOOK_URL}", "http://127.0.0.1:9000/alarm")
        .replace("${PARKHUB_DEMO_UPLINK_URL}", "http://127.0.0.1:9000/ingest")
        .replace("${PARKHUB_DEMO_WEBHOOK_SECRET}", "s")
        .replace("${PARKHUB_DEMO_TOKEN_SHA256}", &"ab".repeat(32))
        .replace("${PARKHUB_DEMO_CHARGER_PASSWORD_SHA256}", &"cd".repeat(32));
    let demo = load_str("demo.toml", &demo, Path::new("/"), &|_| None).unwrap();
    assert_eq!(demo.mqtt_topics.len(), 7);
    assert_eq!(demo.config.routes.len(), 4);
    assert_eq!(
        parkhub::ocpp::central::CentralConfig::from_loaded(&demo).map(|c| c.chargers.len()),
        Some(3)
    );
    assert!(demo.config.uplink.is_some());
}

#[test]
fn the_config_the_package_installs_checks_and_serves_the_network() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/parkhub.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = load_str("parkhub.toml", &text, Path::new("/etc/parkhub"), &|_| None).unwrap();
    let c = &loaded.config;
    assert_eq!(
        c.hub.data_dir,
        Path::new("/var/lib/parkhub"),
        "systemd's StateDirectory"
    );
    assert!(
        c.api.listen.ip().is_unspecified(),
        "reachable from the park's network"
    );
    assert!(
        c.api.token.is_empty(),
        "no credential comes with the package"
    );
}

#[test]
fn serial_settings_come_from_the_profiles_when_they_agree() {
    let text = r#"
[hub]
id = "h"
[[bus]]
id = "line"
kind = "rtu"
serial = "/dev/ttyUSB0"
[[device]]
id = "a"
profile = "eastron-sdm120"
bus = "line"
unit = 1
[[device]]
id = "b"
profile = "eastron-sdm120"
bus = "line"
unit = 2
"#;
    let loaded = load_str("t.toml", text, Path::new("/"), &|_| None).unwrap();
    let line = loaded.bus_lines["line"];
    assert_eq!(
        (line.baud, line.parity.to_string(), line.stop_bits),
        (2400, "N".to_string(), 1)
    );
    // Two devices at one unit on one line cannot both answer.
    let clash = text.replace("unit = 2", "unit = 1");
    let errs = load_str("t.toml", &clash, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    assert!(
        errs.iter()
            .any(|d| d.key == "device[1].unit" && d.message.contains("already device `a`")),
        "{errs:?}"
    );
}

#[test]
fn every_bundled_profile_loads_with_the_points_design_promises() {
    let reg = ProfileRegistry::bundled().expect("bundled profiles load without errors");
    let ids: Vec<&str> = reg.ids().collect();
    assert!(!ids.is_empty());
    for id in [
        "chint-dtsu666",
        "chint-ddsu666",
        "eastron-sdm630",
        "eastron-sdm120",
        "acrel-adw300",
        "tuf-2000m",
        "xintai-water",
    ] {
        assert!(ids.contains(&id), "{id} is bundled");
    }
    let three_phase = [
        "voltage_a",
        "voltage_b",
        "voltage_c",
        "current_a",
        "current_b",
        "current_c",
        "power_total",
        "energy_import",
        "energy_export",
    ];
    let single_phase = [
        "voltage",
        "current",
        "power_total",
        "pf_total",
        "frequency",
        "energy_import",
        "energy_export",
    ];
    let has = |id: &str, points: &[&str]| {
        let p = reg.get(id).unwrap();
        for name in points {
            assert!(
                p.point(name).is_some_and(|pt| !pt.hidden),
                "{id} has {name}"
            );
        }
    };
    for id in ["chint-dtsu666", "eastron-sdm630"] {
        has(id, &three_phase);
        has(id, &["pf_total", "frequency"]);
    }
    has("acrel-adw300", &three_phase);
    has("chint-ddsu666", &single_phase);
    has("eastron-sdm120", &single_phase);
    has("tuf-2000m", &["flow_rate", "volume_total"]);
    has("xintai-water", &["flow_rate", "volume_total"]);
    for e in reg.entries() {
        let p = &e.profile;
        let expect_unit = |point: &str, unit: &str| {
            if let Some(pt) = p.point(point) {
                assert_eq!(pt.unit.as_deref(), Some(unit), "{}.{point}", p.id);
            }
        };
        expect_unit("power_total", "W");
        expect_unit("energy_import", "kWh");
        expect_unit("voltage_a", "V");
        expect_unit("frequency", "Hz");
        expect_unit("flow_rate", "m³/h");
        expect_unit("volume_total", "m³");
        for energy in ["energy_import", "energy_export", "volume_total"] {
            if let Some(pt) = p.point(energy) {
                assert_eq!(
                    pt.kind,
                    parkhub::profile::Kind::Counter,
                    "{}.{energy} is a counter",
                    p.id
                );
            }
        }
    }
}

#[test]
fn the_bundled_profiles_are_exactly_the_files_in_firmware_profiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no profile files found in {}",
        dir.display()
    );
    let reg = ProfileRegistry::bundled().unwrap();
    assert_eq!(reg.ids().map(str::to_string).collect::<Vec<_>>(), files);
}

#[test]
fn a_profiles_dir_may_replace_a_bundled_profile() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
id = "eastron-sdm120"
vendor = "Eastron"
model = "SDM120 (site firmware)"
category = "electricity_meter"
protocol = "modbus"
[[point]]
name = "voltage"
register = 0x0100
function = "input"
type = "f32"
unit = "V"
"#;
    std::fs::write(dir.path().join("eastron-sdm120.toml"), text).unwrap();
    let mut reg = ProfileRegistry::bundled().unwrap();
    assert!(reg.load_dir(dir.path()).is_empty());
    let p = reg.get("eastron-sdm120").unwrap();
    assert_eq!(p.model, "SDM120 (site firmware)");
    assert_eq!(
        p.point("voltage").unwrap().register().unwrap().address,
        0x0100
    );
}

#[test]
fn mqtt_devices_take_their_topic_from_the_config_or_the_profile_template() {
    let text = r#"
[hub]
id = "h"
[mqtt]
broker = "embedded"
[[device]]
id = "smoke-b3-2f-07"
profile = "mqtt-smoke-detector"
topic = "park/b3/2f/smoke-07"
[[device]]
id = "lift-1"
profile = "mqtt-lift-monitor"
availability_topic = "park/lift-1/lwt"
"#;
    let loaded = load_str("t.toml", text, Path::new("/"), &|_| None).unwrap();
    let smoke = &loaded.mqtt_topics["smoke-b3-2f-07"];
    assert_eq!(smoke.data, "park/b3/2f/smoke-07");
    assert_eq!(
        smoke.availability.as_deref(),
        Some("park/b3/2f/smoke-07/status")
    );
    let lift = &loaded.mqtt_topics["lift-1"];
    assert_eq!(lift.data, "parkhub/lift/lift-1");
    assert_eq!(lift.availability.as_deref(), Some("park/lift-1/lwt"));
}

#[test]
fn mqtt_device_mistakes_are_reported_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme-door.toml"),
        "id = \"acme-door\"\nvendor = \"Acme\"\nmodel = \"D1\"\ncategory = \"security\"\nprotocol = \"mqtt\"\n\
         [mqtt]\ntopic = \"park/{building}/{id}\"\n[[point]]\nname = \"open\"\npointer = \"/open\"\ntype = \"bool\"\n",
    )
    .unwrap();
    let text = format!(
        r#"
[hub]
id = "h"
profiles_dir = "{}"
[[device]]
id = "door-1"
profile = "acme-door"
[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/+/smoke"
bus = "meters"
expire_after_s = 0
[[device]]
id = "smoke-2"
profile = "mqtt-smoke-detector"
topic = "park/shared"
[[device]]
id = "smoke-3"
profile = "mqtt-smoke-detector"
topic = "park/shared"
"#,
        dir.path().display()
    );
    let errs = load_str("t.toml", &text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    expect(
        &errs,
        "t.toml",
        7,
        "device[0].profile",
        "add an [mqtt] section",
    );
    expect(
        &errs,
        "t.toml",
        7,
        "device[0].profile",
        "needs `building`, which this device does not have",
    );
    expect(&errs, "t.toml", 11, "device[1].topic", "has a wildcard");
    expect(
        &errs,
        "t.toml",
        12,
        "device[1].bus",
        "does not apply to MQTT device",
    );
    expect(
        &errs,
        "t.toml",
        13,
        "device[1].expire_after_s",
        "between 1 and 604800",
    );
    expect(
        &errs,
        "t.toml",
        21,
        "device[3].topic",
        "already device `smoke-2`'s",
    );
}

#[test]
fn the_mqtt_profiles_carry_the_points_and_default_alarms_of_their_kind() {
    let reg = ProfileRegistry::bundled().unwrap();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "mqtt-smoke-detector",
            &["smoke", "temperature", "battery", "tamper"],
            &["smoke", "offline"],
        ),
        (
            "mqtt-fire-panel",
            &["event", "zone"],
            &["fire", "fault", "offline"],
        ),
        ("mqtt-door-contact", &["open", "forced"], &["forced"]),
        (
            "mqtt-lift-monitor",
            &["status", "floor", "moving", "door_open"],
            &["trapped", "fault"],
        ),
        ("mqtt-water-leak", &["leak"], &["leak"]),
        (
            "mqtt-env-sensor",
            &["temperature", "humidity", "pm25", "noise_db"],
            &["pm25_high"],
        ),
        (
            "mqtt-ebike-station",
            &["smoke"],
            &["smoke", "port_overheat", "port_fault"],
        ),
    ];
    for (id, points, alarms) in cases {
        let p = reg.get(id).unwrap_or_else(|| panic!("{id} is bundled"));
        assert_eq!(p.protocol, parkhub::profile::Protocol::Mqtt);
        for name in *points {
            assert!(
                p.point(name).and_then(|pt| pt.json()).is_some(),
                "{id}.{name}"
            );
        }
        for a in *alarms {
            assert!(p.alarms.iter().any(|x| x.id == *a), "{id} alarm {a}");
        }
        assert!(
            p.mqtt.as_ref().and_then(|m| m.expire_after_s).is_some(),
            "{id} expires"
        );
    }
    let station = reg.get("mqtt-ebike-station").unwrap();
    let ports: Vec<&str> = station.ports[0].points.iter().map(|p| &*p.name).collect();
    assert_eq!(ports, vec!["state", "power_w", "temperature", "fault"]);
    // Fire first: smoke and over-temperature at a charging station are fire alarms, latched.
    for a in ["smoke", "port_overheat"] {
        let alarm = station.alarms.iter().find(|x| x.id == a).unwrap();
        assert_eq!(
            (
                alarm.category.as_str(),
                alarm.severity.as_str(),
                alarm.latched
            ),
            ("fire", "critical", true)
        );
    }
}

#[test]
fn a_broken_mqtt_profile_names_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme-lift.toml"),
        r#"id = "acme-lift"
vendor = "Acme"
model = "L"
category = "lift"
protocol = "mqtt"
[[point]]
name = "status"
pointer = "/status"
values = { ok = "normal", stuck = "trapped" }
[[point]]
name = "floor"
pointer = "floor"
register = 3
[[point]]
name = "speed"
type = "number"
[[alarm]]
id = "trapped"
point = "status"
equals = "stuck-in-lift"
severity = "critical"
category = "lift"
message = "困人"
[[alarm]]
id = "twice"
point = "floor"
above = 10
below = 1
severity = "urgent"
category = "lift"
message = "x"
[[alarm]]
id = "ghost"
point = "ghost_speed"
above = 3
severity = "major"
category = "lift"
message = "超速"
"#,
    )
    .unwrap();
    let mut reg = ProfileRegistry::bundled().unwrap();
    let errs = reg.load_dir(dir.path());
    let f = "acme-lift.toml";
    expect(&errs, f, 12, "point[1].pointer", "not a JSON pointer");
    expect(&errs, f, 13, "point[1].register", "for Modbus points");
    expect(&errs, f, 14, "point[2].pointer", "needs a `pointer`");
    expect(
        &errs,
        f,
        20,
        "alarm[0].equals",
        "not a value point `status` takes",
    );
    expect(&errs, f, 25, "alarm[1].id", "one condition");
    expect(&errs, f, 29, "alarm[1].severity", "`urgent` is not one of");
    expect(&errs, f, 34, "alarm[2].point", "no point `ghost_speed`");
    // An alarm on a point that is broken is not also reported as having no point.
    assert!(
        !errs.iter().any(|d| d.message.contains("no point `floor`")),
        "{errs:?}"
    );
}

#[test]
fn alarm_mistakes_are_all_reported_with_their_lines_and_keys() {
    let errs = errors_of("bad-alarms.toml");
    let f = "bad-alarms.toml";
    expect(&errs, f, 16, "alarms.group_window_s", "between 0 and 3600");
    expect(
        &errs,
        f,
        17,
        "alarms.max_shelve_minutes",
        "between 1 and 10080",
    );
    expect(&errs, f, 21, "rule[0].device", "no device `ghost`");
    expect(&errs, f, 26, "rule[1].id", "a rule has one condition");
    expect(&errs, f, 36, "rule[2].severity", "`urgent` is not one of");
    expect(&errs, f, 41, "rule[3].point", "has no point `humidity`");
    expect(
        &errs,
        f,
        47,
        "inhibit[0].equal[0]",
        "`colour` is not one of",
    );
    expect(&errs, f, 51, "channel[0].kind", "needs `secret`");
    expect(
        &errs,
        f,
        57,
        "department[0].channels[1]",
        "no channel `pager`",
    );
    expect(
        &errs,
        f,
        60,
        "route[0].match.category",
        "`fyre` is not one of",
    );
    expect(
        &errs,
        f,
        61,
        "route[0].departments[1]",
        "no department `nobody`",
    );
    expect(
        &errs,
        f,
        63,
        "route[0].escalate_to[0]",
        "no department `bosses`",
    );
    assert_eq!(errs.len(), 12, "one error per mistake: {errs:#?}");
}

#[test]
fn api_mistakes_name_the_origin_or_the_certificate_file_with_its_line() {
    let text = r#"
[hub]
id = "h"
[api]
cors_origins = ["https://brain.example.com", "*", "https://brain.example.com/ingest"]
[api.tls]
cert = "/nonexistent/hub.pem"
key = "/nonexistent/hub.key"
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    expect(
        &errs,
        "t.toml",
        5,
        "api.cors_origins[1]",
        "is not an origin",
    );
    expect(&errs, "t.toml", 5, "api.cors_origins[2]", "no path");
    assert!(
        !errs.iter().any(|d| d.key == "api.cors_origins[0]"),
        "a bare origin is fine"
    );
    expect(&errs, "t.toml", 7, "api.tls.cert", "/nonexistent/hub.pem");
    expect(&errs, "t.toml", 8, "api.tls.key", "/nonexistent/hub.key");
}

#[test]
fn ocpp_charger_mistakes_are_reported_with_their_keys() {
    let text = r#"
[hub]
id = "h"
[ocpp]
heartbeat_interval_s = 60
offline_after_s = 30
authorize = "local-list"
[[device]]
id = "cp-1"
profile = "ocpp16-charger"
charge_point_id = "CP 1/a"
bus = "meters"
[[device]]
id = "cp-2"
profile = "ocpp16-charger"
charge_point_id = "CP2"
password_sha256 = "secret"
connectors = 0
[[device]]
id = "cp-3"
profile = "ocpp16-charger"
charge_point_id = "CP2"
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    expect(
        &errs,
        "t.toml",
        6,
        "ocpp.offline_after_s",
        "must be longer than heartbeat_interval_s",
    );
    expect(&errs, "t.toml", 7, "ocpp.authorize", "needs `id_tags`");
    expect(
        &errs,
        "t.toml",
        11,
        "device[0].charge_point_id",
        "must be 1-48 letters",
    );
    expect(
        &errs,
        "t.toml",
        12,
        "device[0].bus",
        "does not apply to OCPP device",
    );
    expect(
        &errs,
        "t.toml",
        17,
        "device[1].password_sha256",
        "64 hex digits",
    );
    expect(
        &errs,
        "t.toml",
        18,
        "device[1].connectors",
        "between 1 and 32",
    );
    expect(
        &errs,
        "t.toml",
        22,
        "device[2].charge_point_id",
        "already device `cp-2`",
    );
}

#[test]
fn an_ocpp_charger_needs_nothing_but_its_profile() {
    let text = "[hub]\nid = \"h\"\n[[device]]\nid = \"CP001\"\nprofile = \"ocpp16-charger\"\n";
    let loaded = load_str("t.toml", text, Path::new("/"), &|_| None).unwrap();
    assert_eq!(loaded.config.devices[0].charge_point_id(), "CP001");
    assert_eq!(loaded.config.ocpp.heartbeat_interval_s, 60);
    assert_eq!(loaded.config.ocpp.offline_after_s(), 150);
    let rules = &loaded.alarm_rules.devices["CP001"];
    for id in ["offline", "faulted", "hazard", "error", "charger_hazard"] {
        assert!(rules.iter().any(|r| &*r.id == id), "rule {id} in {rules:?}");
    }
}

#[test]
fn gpio_mistakes_are_reported_with_their_lines_and_keys() {
    let text = r#"
[hub]
id = "h"
[[bus]]
id = "pi-uart"
kind = "rtu"
serial = "/dev/ttyAMA0"
de_pin = 17
[[bus]]
id = "dtu"
kind = "rtu-over-tcp"
address = "10.0.0.9:502"
de_pin = 22
[[device]]
id = "fire-relay"
profile = "gpio-dry-contact"
category = "fire"
pin = 17
[[device]]
id = "door-1"
profile = "gpio-dry-contact"
pin = 14
bus = "pi-uart"
debounce_ms = 70000
[[device]]
id = "door-2"
profile = "gpio-dry-contact"
category = "comm"
[[device]]
id = "em-1"
profile = "chint-dtsu666"
bus = "pi-uart"
pin = 5
category = "fire"
[[channel]]
id = "siren"
kind = "gpio"
pin = 40
pulses = 3
[[channel]]
id = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/x"
secret = "s"
max_on_s = 10
[[bus]]
id = "spare"
kind = "rtu"
serial = "/dev/ttyUSB0"
de_active = "low"
[[device]]
id = "door-3"
profile = "gpio-dry-contact"
category = "security"
pin = 2
pull = "down"
[[channel]]
id = "strobe"
kind = "gpio"
pin = 1
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    let f = "t.toml";
    expect(
        &errs,
        f,
        8,
        "bus[0].de_pin",
        "pin 17 is already device `fire-relay`",
    );
    expect(
        &errs,
        f,
        13,
        "bus[1].de_pin",
        "serial port of this box only, not one behind a serial server",
    );
    expect(
        &errs,
        f,
        21,
        "device[1].profile",
        "needs `category`: what it is (fire, security",
    );
    expect(
        &errs,
        f,
        22,
        "device[1].pin",
        "pin 14 is already the UART of bus `pi-uart`",
    );
    expect(
        &errs,
        f,
        23,
        "device[1].bus",
        "does not apply to GPIO device `door-1`",
    );
    expect(&errs, f, 24, "device[1].debounce_ms", "between 0 and 60000");
    expect(
        &errs,
        f,
        27,
        "device[2].profile",
        "needs `pin` (BCM numbering)",
    );
    expect(
        &errs,
        f,
        28,
        "device[2].category",
        "unknown category `comm`",
    );
    expect(
        &errs,
        f,
        33,
        "device[3].pin",
        "does not apply to Modbus device `em-1`",
    );
    expect(
        &errs,
        f,
        34,
        "device[3].category",
        "takes its category from its profile",
    );
    expect(
        &errs,
        f,
        38,
        "channel[0].pin",
        "pin 40 is not a Raspberry Pi BCM GPIO",
    );
    expect(&errs, f, 39, "channel[0].pulses", "needs mode = \"pulse\"");
    expect(&errs, f, 45, "channel[1].max_on_s", "is for gpio channels");
    expect(&errs, f, 50, "bus[2].de_active", "needs `de_pin`");
    expect(
        &errs,
        f,
        56,
        "device[4].pull",
        "pin 2 has a fixed 1.8 kΩ pull-up",
    );
    expect(
        &errs,
        f,
        60,
        "channel[2].pin",
        "pin 1 is reserved for a HAT's ID EEPROM",
    );
}

#[test]
fn two_gpio_users_cannot_share_a_pin_and_a_disabled_device_gives_its_pin_up() {
    let text = r#"
[hub]
id = "h"
[[device]]
id = "door-1"
profile = "gpio-dry-contact"
category = "security"
pin = 5
[[device]]
id = "door-old"
profile = "gpio-dry-contact"
category = "security"
pin = 6
enabled = false
[[channel]]
id = "siren"
kind = "gpio"
pin = 5
[[channel]]
id = "strobe"
kind = "gpio"
pin = 6
mode = "pulse"
pulse_on_ms = 5
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    expect(
        &errs,
        "t.toml",
        18,
        "channel[0].pin",
        "pin 5 is already device `door-1`",
    );
    expect(
        &errs,
        "t.toml",
        24,
        "channel[1].pulse_on_ms",
        "between 10 and 60000",
    );
    assert_eq!(
        errs.len(),
        2,
        "pin 6 is free: door-old is disabled; {errs:?}"
    );
}

#[test]
fn a_dry_contacts_category_becomes_its_alarms_and_fire_is_critical_and_latched() {
    let text = r#"
[hub]
id = "h"
[[device]]
id = "fire-relay"
profile = "gpio-dry-contact"
category = "fire"
pin = 17
active = "high"
[[device]]
id = "door-1"
profile = "gpio-dry-contact"
category = "security"
pin = 27
pull = "none"
debounce_ms = 0
"#;
    let loaded = load_str("t.toml", text, Path::new("/"), &|_| None).unwrap();
    let fire = &loaded.device_profiles["fire-relay"];
    assert_eq!(fire.category, "fire");
    let a = &fire.alarms[0];
    assert_eq!(
        (a.category.as_str(), a.severity.as_str(), a.latched),
        ("fire", "critical", true)
    );
    let door = &loaded.device_profiles["door-1"];
    let a = &door.alarms[0];
    assert_eq!(
        (a.category.as_str(), a.severity.as_str(), a.latched),
        ("security", "major", false)
    );
    // The bundled profile itself is untouched.
    assert_eq!(
        loaded.profiles.get("gpio-dry-contact").unwrap().category,
        "security"
    );
    let contacts = parkhub::gpio::source::contacts(&loaded);
    assert_eq!(contacts.len(), 2);
    assert_eq!(
        (
            contacts[0].pin,
            contacts[0].pull,
            contacts[0].active,
            contacts[0].debounce.as_millis()
        ),
        (17, parkhub::gpio::Pull::Up, parkhub::gpio::Active::High, 50)
    );
    assert_eq!(
        (
            contacts[1].pull,
            contacts[1].active,
            contacts[1].debounce.as_millis()
        ),
        (parkhub::gpio::Pull::None, parkhub::gpio::Active::Low, 0)
    );
}

#[test]
fn a_gpio_profile_has_one_bool_point_and_nothing_about_registers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme-contact.toml"),
        "id = \"acme-contact\"\nvendor = \"Acme\"\nmodel = \"C\"\ncategory = \"security\"\nprotocol = \"gpio\"\n\
         [[point]]\nname = \"closed\"\ntype = \"bool\"\nregister = 3\n",
    )
    .unwrap();
    let mut reg = ProfileRegistry::bundled().unwrap();
    let errs = reg.load_dir(dir.path());
    expect(
        &errs,
        "acme-contact.toml",
        6,
        "point",
        "exactly one point, `active`",
    );
    expect(
        &errs,
        "acme-contact.toml",
        9,
        "point[0].register",
        "no meaning for a GPIO point",
    );
}

#[test]
fn devices_alike_share_one_profile_and_one_rule_list_and_overrides_get_their_own() {
    let mut text = String::from("[hub]\nid = \"h\"\n[mqtt]\nbroker = \"embedded\"\n");
    for id in ["env-a", "env-b", "env-c", "env-d"] {
        text += &format!("[[device]]\nid = \"{id}\"\nprofile = \"mqtt-env-sensor\"\n");
        if id == "env-c" {
            text += "[device.point.temperature]\nlabel = \"机房温度\"\n";
        }
    }
    text += "[[rule]]\nid = \"dusty\"\ndevice = \"env-b\"\npoint = \"pm25\"\nhigh = 150.0\n";
    let loaded = load_str("t.toml", &text, Path::new("/"), &|_| None).unwrap();

    let shipped = loaded.profiles.get("mqtt-env-sensor").unwrap();
    let profile = |id: &str| &loaded.device_profiles[id];
    for id in ["env-a", "env-b", "env-d"] {
        assert!(Arc::ptr_eq(profile(id), shipped), "{id} shares the profile");
    }
    assert!(!Arc::ptr_eq(profile("env-c"), shipped), "env-c has its own");
    let label =
        |p: &parkhub::profile::Profile| p.point("temperature").and_then(|t| t.label.clone());
    assert_eq!(label(profile("env-c")).as_deref(), Some("机房温度"));
    assert_ne!(
        label(shipped).as_deref(),
        Some("机房温度"),
        "the shared profile is untouched"
    );

    let rules = |id: &str| &loaded.alarm_rules.devices[id];
    assert!(Arc::ptr_eq(rules("env-a"), rules("env-d")));
    assert!(
        !Arc::ptr_eq(rules("env-a"), rules("env-b")),
        "env-b has a rule more"
    );
    assert!(rules("env-b").iter().any(|r| r.id.starts_with("dusty")));
    assert!(!rules("env-a").iter().any(|r| r.id.starts_with("dusty")));
}
