//! Hostile input against every decoder of outside bytes, through the public API: Modbus
//! registers, DL/T 645 and CJ/T 188 lines, OCPP-J frames and payloads, MQTT payloads, config
//! and profile files, and the API's request bodies and query strings (through the real router,
//! served on a loopback port).
//!
//! What is proved: no input panics; what our encoders write reads back as itself; a frame with
//! any one byte changed is never read as that frame (the checksum protocols), except where the
//! byte lies outside the frame; oversized input is refused by its size; a broken config file is
//! refused with a diagnostic naming a line inside it (and, once the TOML parses, a key).
//! The fuzz targets in fuzz/ push the same properties much further; these run in every CI run.

mod common;

use std::sync::{Arc, LazyLock};

use parkhub::alarm::engine::{AlarmFeed, Engine, EngineConfig};
use parkhub::alarm::store::{AlarmStore, DB_FILE};
use parkhub::api::{self, ApiState, BODY_LIMIT};
use parkhub::config::{load_str, Diagnostic, Document, MAX_FILE_BYTES};
use parkhub::modbus::decode::{decode, encode, DecodeError};
use parkhub::modbus::raw::{Reject, Scan};
use parkhub::mqtt::decode::{decode as decode_payload, PayloadError, MAX_PORTS, MAX_TEXT};
use parkhub::notify::Notifier;
use parkhub::ocpp::frame::{
    Frame, FrameError, MAX_DESCRIPTION_CHARS, MAX_FRAME_BYTES, MAX_MESSAGE_ID_CHARS,
};
use parkhub::ocpp::messages::{decode_command_conf, decode_request, Request};
use parkhub::ocpp::meter::{reduce, MAX_PROBLEMS};
use parkhub::profile::{
    parse_profile, DataType, Function, Profile, ProfileRegistry, Protocol, RegisterSpec, WordOrder,
};
use parkhub::reading::Value;
use parkhub::{cjt188, dlt645};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// CI has two cores: enough cases to find the common slips, few enough to stay quick.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- Modbus registers ----

fn any_register_spec() -> impl Strategy<Value = RegisterSpec> {
    let dtype = proptest::sample::select(vec![
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
        DataType::Bcd,
        DataType::Bool,
        DataType::String,
    ]);
    let order = proptest::sample::select(vec![
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ]);
    // Within what the profile loader lets through.
    (dtype, order, 1u16..=125, proptest::option::of(0u8..16)).prop_map(
        |(dtype, order, len, bit)| RegisterSpec {
            function: Function::Holding,
            address: 0,
            dtype,
            order,
            length: match dtype {
                DataType::Bcd => 1 + len % 4,
                DataType::String => len,
                other => other.default_registers(),
            },
            bit: bit.filter(|_| dtype == DataType::Bool),
            scale: 1.0,
            offset: 0.0,
            values: None,
        },
    )
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn any_registers_a_meter_sends_decode_to_a_finite_value_or_an_error(
        spec in any_register_spec(),
        words in vec(any::<u16>(), 0..130),
        exact in any::<bool>(),
    ) {
        let words = if exact {
            let mut w = words;
            w.resize(usize::from(spec.length), 0x5A5A);
            w
        } else {
            words
        };
        match decode(&spec, &words) {
            Ok(Value::Number(x)) => prop_assert!(x.is_finite()),
            Ok(Value::Text(s)) => prop_assert!(s.len() <= 3 * words.len() * 2),
            Ok(_) => {}
            Err(DecodeError::Length { expected, got }) => {
                prop_assert_eq!((expected, got), (usize::from(spec.length), words.len()));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn integer_and_bcd_registers_encode_back_to_the_same_registers(
        spec in any_register_spec().prop_filter("integers", |s| matches!(
            s.dtype,
            DataType::U16 | DataType::I16 | DataType::U32 | DataType::I32 | DataType::Bcd
        )),
        seed in vec(any::<u16>(), 4),
    ) {
        let words: Vec<u16> = seed.iter().copied().cycle().take(usize::from(spec.length)).collect();
        if let Ok(value) = decode(&spec, &words) {
            prop_assert_eq!(encode(&spec, &value), words);
        }
    }
}

// ---- DL/T 645 and CJ/T 188 lines ----

/// Scans `buf` as the line does; every step drops at least one byte.
fn scan_all<F>(mut buf: &[u8], scan: impl Fn(&[u8]) -> Scan<F>) -> Vec<Scan<F>> {
    let mut out = Vec::new();
    loop {
        let s = scan(buf);
        let used = match &s {
            Scan::Frame { consumed, .. } => *consumed,
            Scan::Skip { len, .. } => *len,
            Scan::NeedMore => return out,
        };
        assert!(used >= 1 && used <= buf.len(), "{used} of {}", buf.len());
        buf = &buf[used..];
        out.push(s);
    }
}

fn frames<F>(scans: Vec<Scan<F>>) -> Vec<F> {
    scans
        .into_iter()
        .filter_map(|s| match s {
            Scan::Frame { frame, .. } => Some(frame),
            _ => None,
        })
        .collect()
}

/// Feeds `stream` in pieces of `piece` bytes, scanning after each as the line does; returns the
/// frames found and the most bytes ever left waiting for more.
fn read_in_pieces<F>(
    stream: &[u8],
    piece: usize,
    scan: impl Fn(&[u8]) -> Scan<F>,
) -> (Vec<F>, usize) {
    let (mut buf, mut found, mut most) = (Vec::new(), Vec::new(), 0);
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match scan(&buf) {
                Scan::Frame { frame, consumed } => {
                    found.push(frame);
                    buf.drain(..consumed);
                }
                Scan::Skip { len, .. } => {
                    buf.drain(..len);
                }
                Scan::NeedMore => break,
            }
        }
        most = most.max(buf.iter().skip_while(|b| **b == 0xFE).count());
    }
    (found, most)
}

fn any_dlt645_frame() -> impl Strategy<Value = dlt645::frame::Frame> {
    (
        any::<[u8; 6]>(),
        any::<u8>(),
        vec(any::<u8>(), 0..=dlt645::frame::MAX_DATA),
    )
        .prop_map(|(a, c, data)| dlt645::frame::Frame {
            address: dlt645::frame::Address::from_wire(a),
            control: dlt645::frame::Control(c),
            data,
        })
}

fn any_cjt188_frame() -> impl Strategy<Value = cjt188::frame::Frame> {
    (
        any::<u8>(),
        any::<[u8; 7]>(),
        any::<u8>(),
        vec(any::<u8>(), 0..=cjt188::frame::MAX_DATA),
    )
        .prop_map(|(t, a, c, data)| {
            cjt188::frame::Frame::new(
                t,
                cjt188::frame::Address::from_wire(a),
                cjt188::frame::Control(c),
                data,
            )
            .unwrap()
        })
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn a_dlt645_frame_with_any_one_byte_changed_never_reads_back_as_that_frame(
        frame in any_dlt645_frame(), at in any::<prop::sample::Index>(), flip in 1u8..,
    ) {
        let wire = frame.to_wire().unwrap();
        prop_assert_eq!(frames(scan_all(&wire, dlt645::frame::scan)), vec![frame.clone()]);
        let at = at.index(wire.len());
        let mut spoiled = wire.clone();
        spoiled[at] ^= flip;
        let found = frames(scan_all(&spoiled, dlt645::frame::scan));
        if at < dlt645::frame::WAKE_UP.len() {
            // A wake-up byte is no part of the frame: noise before it, and the frame reads.
            prop_assert_eq!(found, vec![frame]);
        } else {
            prop_assert!(!found.contains(&frame), "byte {} ^ {:02X}", at, flip);
        }
    }

    #[test]
    fn a_cjt188_frame_with_any_one_byte_changed_never_reads_back_as_that_frame(
        frame in any_cjt188_frame(), at in any::<prop::sample::Index>(), flip in 1u8..,
    ) {
        let wire = frame.to_wire();
        prop_assert_eq!(frames(scan_all(&wire, cjt188::frame::scan)), vec![frame.clone()]);
        let at = at.index(wire.len());
        let mut spoiled = wire.clone();
        spoiled[at] ^= flip;
        let found = frames(scan_all(&spoiled, cjt188::frame::scan));
        if at < cjt188::frame::WAKE_UP.len() {
            prop_assert_eq!(found, vec![frame]);
        } else {
            prop_assert!(!found.contains(&frame), "byte {} ^ {:02X}", at, flip);
        }
    }

    #[test]
    fn a_line_read_in_pieces_of_any_size_finds_the_answer_after_any_noise_and_holds_little(
        noise in vec(prop_oneof![Just(0x68u8), Just(0xFE), Just(0x16), any::<u8>()], 0..400),
        piece in 1usize..64,
        frame in any_dlt645_frame(),
        water in any_cjt188_frame(),
    ) {
        // DL/T 645: what waits for more is at most one unfinished frame (12 + 200 bytes).
        let mut stream = noise.clone();
        stream.extend(frame.to_wire().unwrap());
        let (found, most) = read_in_pieces(&stream, piece, dlt645::frame::scan);
        prop_assert!(most <= 12 + dlt645::frame::MAX_DATA, "{} bytes waited", most);
        // The answer is found unless a frame in the noise that passed its own checksum took
        // the answer's bytes in.
        let whole = frames(scan_all(&noise, dlt645::frame::scan)).len();
        prop_assert!(found.last() == Some(&frame) || found.len() > whole, "{:?}", found);

        let mut stream = noise.clone();
        stream.extend(water.to_wire());
        let (found, most) = read_in_pieces(&stream, piece, cjt188::frame::scan);
        prop_assert!(most <= cjt188::frame::MIN_FRAME + cjt188::frame::MAX_DATA);
        let whole = frames(scan_all(&noise, cjt188::frame::scan)).len();
        prop_assert!(found.last() == Some(&water) || found.len() > whole, "{:?}", found);
    }

    #[test]
    fn a_length_byte_over_the_cap_is_refused_at_once_not_waited_for(
        address in any::<[u8; 6]>(), control in any::<u8>(), over in 1u8..=55,
        water_address in any::<[u8; 7]>(), water_over in 1u8..=155,
    ) {
        let mut buf = vec![0x68];
        buf.extend(address);
        buf.extend([0x68, control, dlt645::frame::MAX_DATA as u8 + over]);
        // Dropped up to the next place a frame could start (the second 68 may be one).
        let first = scan_all(&buf, dlt645::frame::scan).into_iter().next();
        prop_assert!(
            matches!(first, Some(Scan::Skip { len: 1.., reason: Reject::TooLong })),
            "{:?}", first
        );

        let mut buf = vec![0x68, 0x10];
        buf.extend(water_address);
        buf.extend([0x81, cjt188::frame::MAX_DATA as u8 + water_over]);
        let first = scan_all(&buf, cjt188::frame::scan).into_iter().next();
        prop_assert_eq!(first, Some(Scan::Skip { len: 1, reason: Reject::TooLong }));
    }

    #[test]
    fn any_water_meter_answer_is_read_or_refused_and_a_reading_encodes_back(
        payload in vec(any::<u8>(), 0..40),
        bcd in vec(0u8..100, 19),
    ) {
        let _ = cjt188::frame::decode_reading(&payload);
        // A well-formed answer: BCD digits, unit m³ (0x2C), a real clock.
        let b = |n: u8| ((n / 10) << 4) | (n % 10);
        let mut good: Vec<u8> = bcd[..4].iter().map(|n| b(*n)).collect();
        good.push(0x2C);
        good.extend(bcd[4..8].iter().map(|n| b(*n)));
        good.push(0x2C);
        good.extend([b(bcd[8] % 60), b(bcd[9] % 60), b(bcd[10] % 24), b(1 + bcd[11] % 28),
            b(1 + bcd[12] % 12), b(bcd[13]), 0x20, bcd[14], bcd[15]]);
        let r = cjt188::frame::decode_reading(&good).unwrap();
        prop_assert_eq!(cjt188::frame::decode_reading(&cjt188::frame::encode_reading(&r)), Ok(r));
    }
}

// ---- OCPP-J ----

const OCPP_FIELDS: &[&str] = &[
    "idTag",
    "chargePointVendor",
    "chargePointModel",
    "connectorId",
    "transactionId",
    "meterValue",
    "sampledValue",
    "value",
    "measurand",
    "unit",
    "phase",
    "context",
    "format",
    "location",
    "timestamp",
    "meterStart",
    "meterStop",
    "reason",
    "status",
    "errorCode",
    "info",
    "vendorId",
    "messageId",
    "data",
    "transactionData",
    "vendorErrorCode",
    "type",
];

const OCPP_ACTIONS: &[&str] = &[
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "Reset",
    "FirmwareStatusNotification",
    "",
    "NoSuchAction",
];

fn json_leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Json::from),
        proptest::sample::select(vec![
            "Energy.Active.Import.Register",
            "Power.Active.Import",
            "Wh",
            "kW",
            "Celcius",
            "Accepted",
            "Charging",
            "NoError",
            "SignedData",
            "2024-05-01T08:00:00Z",
            "2024-05-01T16:00:00+0800",
            "+275760-09-13T00:00:00Z",
            "1e400",
            "-0",
            "NaN",
        ])
        .prop_map(Json::from),
        ".{0,40}".prop_map(Json::from),
    ]
}

/// JSON shaped like OCPP payloads: objects keyed mostly by the protocol's own field names.
fn ocpp_json() -> impl Strategy<Value = Json> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(OCPP_FIELDS).prop_map(str::to_string),
            1 => ".{0,10}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Json::Array),
            btree_map(key, inner, 0..8).prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// A CALLERROR the hub owes is well-formed and reads back as itself. (An empty id, or one over
/// 36 characters, goes back as the charger sent it, so that the charger can match the answer;
/// only then is the answer itself out of the standard.)
fn check_ocpp_answer(answer: &Frame) {
    let Frame::CallError {
        id, description, ..
    } = answer
    else {
        panic!("an answer that is no CALLERROR: {answer:?}");
    };
    assert!(description.chars().count() <= MAX_DESCRIPTION_CHARS);
    if (1..=MAX_MESSAGE_ID_CHARS).contains(&id.chars().count()) {
        assert_eq!(Frame::parse(&answer.to_text()).as_ref(), Ok(answer));
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn any_ocpp_payload_is_read_or_refused_with_an_answerable_error_and_reads_back(
        action in proptest::sample::select(OCPP_ACTIONS),
        payload in ocpp_json(),
        id in "[ -~]{1,36}",
    ) {
        let text = json!([2, id, action, payload]).to_string();
        prop_assume!(text.len() <= MAX_FRAME_BYTES);
        let frame = Frame::parse(&text);
        let Ok(Frame::Call { id, action, payload }) = &frame else {
            let answer = frame.as_ref().err().and_then(FrameError::answer);
            prop_assert!(answer.is_some(), "{:?}", frame);
            check_ocpp_answer(&answer.unwrap());
            return Ok(());
        };
        let printed = frame.as_ref().unwrap().to_text();
        let reparsed = Frame::parse(&printed);
        prop_assert_eq!(reparsed.as_ref(), frame.as_ref());
        match decode_request(action, payload) {
            Ok(request) => {
                prop_assert_eq!(request.action(), action.as_str());
                let written = request.to_payload();
                let again = decode_request(action, &written);
                prop_assert!(again.is_ok(), "{} {} is refused: {:?}", action, written, again);
                prop_assert_eq!(again.unwrap().to_payload(), written);
                if let Request::MeterValues(mv) = &request {
                    for m in &mv.meter_value {
                        let r = reduce(mv.connector_id, &m.sampled_value);
                        prop_assert!(r.problems.len() <= MAX_PROBLEMS);
                        prop_assert!(r.readings.iter().all(|(_, v, _)| v.is_finite()));
                    }
                }
            }
            Err((code, why)) => {
                prop_assert!(!why.is_empty());
                check_ocpp_answer(&Frame::call_error(id.clone(), code, &why));
            }
        }
        for command in ["RemoteStopTransaction", "Reset", "UnlockConnector", "ChangeAvailability"] {
            let _ = decode_command_conf(command, payload);
        }
    }

    #[test]
    fn any_text_a_charger_sends_is_a_frame_that_prints_back_or_a_refusal(
        text in prop_oneof![
            ".{0,200}",
            (0u8..6, "[ -~]{0,40}", ocpp_json(), ocpp_json()).prop_map(|(k, id, a, b)| {
                json!([k, id, a, b, a]).to_string()
            }),
            (3u8..5, "[ -~]{1,36}", ocpp_json()).prop_map(|(k, id, p)| json!([k, id, p]).to_string()),
        ],
    ) {
        match Frame::parse(&text) {
            Ok(frame) => {
                let again = frame.to_text();
                prop_assert_eq!(Frame::parse(&again), Ok(frame));
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                if let Some(answer) = e.answer() {
                    check_ocpp_answer(&answer);
                }
            }
        }
    }
}

#[test]
fn an_ocpp_text_over_the_frame_limit_is_refused_by_its_size_before_it_is_parsed() {
    let padding = "x".repeat(MAX_FRAME_BYTES);
    let text = format!(r#"[2,"1","DataTransfer",{{"vendorId":"v","data":"{padding}"}}]"#);
    assert_eq!(
        Frame::parse(&text),
        Err(FrameError::TooLarge {
            size: text.len(),
            max: MAX_FRAME_BYTES
        })
    );
    let fits = format!(
        r#"[2,"1","DataTransfer",{{"vendorId":"v","data":"{}"}}]"#,
        &padding[..MAX_FRAME_BYTES - 50]
    );
    assert!(Frame::parse(&fits).is_ok());
}

#[test]
fn deeply_nested_json_is_refused_not_a_stack_overflow() {
    // Within the size limits, but nested far past what serde_json recurses into.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    assert!(matches!(Frame::parse(&deep), Err(FrameError::NotJson(_))));
    let call = format!(
        r#"[2,"1","DataTransfer",{{"vendorId":{}1{}}}]"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(Frame::parse(&call), Err(FrameError::NotJson(_))));
    let payload = format!(
        r#"{{"smoke":{}true{}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    for p in mqtt_profiles() {
        assert!(matches!(
            decode_payload(&p, payload.as_bytes(), 1 << 20),
            Err(PayloadError::NotJson(_))
        ));
    }
}

// ---- MQTT payloads ----

fn mqtt_profiles() -> Vec<Arc<Profile>> {
    static ALL: LazyLock<Vec<Arc<Profile>>> = LazyLock::new(|| {
        ProfileRegistry::bundled()
            .unwrap()
            .entries()
            .filter(|e| e.profile.protocol == Protocol::Mqtt)
            .map(|e| e.profile.clone())
            .collect()
    });
    assert!(ALL.len() >= 5);
    ALL.clone()
}

const MQTT_FIELDS: &[&str] = &[
    "smoke",
    "temperature",
    "battery",
    "tamper",
    "ports",
    "port",
    "state",
    "power_w",
    "fault",
    "status",
    "floor",
    "moving",
    "door_open",
    "event",
    "zone",
    "loop",
    "address",
    "leak",
    "open",
    "humidity",
];

fn mqtt_json() -> impl Strategy<Value = Json> {
    json_leaf().prop_recursive(3, 64, 8, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(MQTT_FIELDS).prop_map(str::to_string),
            1 => ".{0,8}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Json::Array),
            btree_map(key, inner, 0..10).prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn any_mqtt_payload_gives_only_the_profiles_points_finite_and_short(
        pick in any::<prop::sample::Index>(),
        payload in prop_oneof![
            mqtt_json().prop_map(|j| j.to_string().into_bytes()),
            vec(any::<u8>(), 0..64),
        ],
    ) {
        let profiles = mqtt_profiles();
        let profile = &profiles[pick.index(profiles.len())];
        if !payload.is_empty() {
            prop_assert!(
                matches!(
                    decode_payload(profile, &payload, payload.len() - 1),
                    Err(PayloadError::TooLarge { .. })
                ),
                "a payload over the limit was not refused by its size"
            );
        }
        let Ok(d) = decode_payload(profile, &payload, 65_536) else {
            return Ok(());
        };
        let most = profile.points.len()
            + profile.ports.iter().map(|g| MAX_PORTS * g.points.len()).sum::<usize>();
        prop_assert!(d.values.len() <= most);
        for (name, value, _) in &d.values {
            let known = profile.points.iter().any(|p| *p.name == **name)
                || profile.ports.iter().any(|g| {
                    name.strip_prefix(g.prefix.as_str())
                        .and_then(|r| r.split_once('.'))
                        .is_some_and(|(_, point)| g.points.iter().any(|p| &*p.name == point))
                });
            prop_assert!(known, "{} has no point {}", profile.id, name);
            match value {
                Value::Number(x) => prop_assert!(x.is_finite()),
                Value::Text(s) => prop_assert!(s.chars().count() <= MAX_TEXT),
                _ => {}
            }
        }
    }
}

#[test]
fn a_station_payload_with_more_ports_than_the_cap_is_refused_for_its_ports() {
    let ports: Vec<Json> = (1..=MAX_PORTS as u64 + 1)
        .map(|n| json!({"port": n, "state": "idle", "power_w": 0}))
        .collect();
    let payload = json!({"smoke": false, "ports": ports}).to_string();
    let profiles = mqtt_profiles();
    let station = profiles
        .iter()
        .find(|p| p.id == "mqtt-ebike-station")
        .unwrap();
    let d = decode_payload(station, payload.as_bytes(), 1 << 20).unwrap();
    assert_eq!(d.values.len(), 1, "{:?}", d.values);
    assert!(d.problems[0].contains("at most 256"), "{:?}", d.problems);
}

// ---- config and profile files ----

/// What a config or profile file may suffer from a careless edit.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    ReplaceValue(prop::sample::Index, String),
    Insert(prop::sample::Index, prop::sample::Index, String),
}

fn any_edit() -> impl Strategy<Value = Edit> {
    let junk = prop_oneof![
        proptest::sample::select(vec![
            "\"\"",
            "-1",
            "0",
            "99999999999999999999",
            "1.5e308",
            "-inf",
            "nan",
            "true",
            "[1, 2]",
            "{ a = 1 }",
            "\"${NOPE}\"",
            "\"$${\"",
            "'''",
            "\"\\u0000\"",
            "0x10",
            "1979-05-27T07:32:00Z",
            "\"../../../etc/passwd\"",
            "\"/dev/zero\"",
            "\"127.0.0.1:0\"",
            "\"mqtt://[::1\"",
            "\"Asia/Nowhere\"",
            "[[]]",
            "=",
            "\"\u{1F525}\"",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
    ];
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Edit::DeleteLine),
        index().prop_map(Edit::DuplicateLine),
        (index(), index()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (index(), junk.clone()).prop_map(|(i, j)| Edit::ReplaceValue(i, j)),
        (
            index(),
            index(),
            prop_oneof![junk, "[\\[\\]\"'=#\n .a-z0-9]{1,8}"]
        )
            .prop_map(|(i, at, s)| Edit::Insert(i, at, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::DeleteLine(i) => {
                lines.remove(i.index(n));
            }
            Edit::DuplicateLine(i) => {
                let l = lines[i.index(n)].clone();
                lines.insert(i.index(n), l);
            }
            Edit::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
            Edit::ReplaceValue(i, junk) => {
                let l = &mut lines[i.index(n)];
                if let Some(eq) = l.find(" = ") {
                    l.truncate(eq + 3);
                    l.push_str(junk);
                }
            }
            Edit::Insert(i, at, s) => {
                let l = &mut lines[i.index(n)];
                let chars: Vec<char> = l.chars().collect();
                let at = at.index(chars.len() + 1);
                *l = chars[..at]
                    .iter()
                    .chain(s.chars().collect::<Vec<_>>().iter())
                    .chain(chars[at..].iter())
                    .collect();
            }
        }
    }
    lines.join("\n")
}

/// A refusal names this file, a line inside it and a column; once the TOML parses, the key.
fn check_diagnostics(file: &str, text: &str, diags: &[Diagnostic]) -> Result<(), TestCaseError> {
    prop_assert!(!diags.is_empty(), "refused without a diagnostic");
    let syntax_ok = Document::parse(file, text).1.is_empty();
    let lines = text.lines().count().max(1) + 1;
    for d in diags {
        prop_assert!(!d.message.is_empty());
        prop_assert!(d.line >= 1 && d.column >= 1, "{}", d);
        if d.file == file {
            prop_assert!(d.line <= lines, "line {} of {}: {}", d.line, lines, d);
            prop_assert!(!syntax_ok || !d.key.is_empty(), "no key: {}", d);
        }
    }
    Ok(())
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn config_env(k: &str) -> Option<String> {
    Some(if k.ends_with("PORT") { "5020" } else { "x" }.to_string())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_config_with_careless_edits_loads_or_names_a_line_and_key(
        base in proptest::sample::select(vec!["config/parkhub.example.toml", "config/demo.toml"]),
        edits in vec(any_edit(), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = apply(&repo_file(base), &edits);
        if let Err(d) = load_str("edited.toml", &text, dir.path(), &config_env) {
            check_diagnostics("edited.toml", &text, &d.0)?;
        }
    }

    #[test]
    fn a_profile_with_careless_edits_loads_or_names_a_line_and_key(
        base in proptest::sample::select(vec![
            "firmware-profiles/chint-dtsu666.toml",
            "firmware-profiles/mqtt-ebike-station.toml",
            "firmware-profiles/cjt188-water.toml",
            "firmware-profiles/ocpp16-charger.toml",
            "firmware-profiles/modbus-ebike-station.toml",
        ]),
        edits in vec(any_edit(), 1..6),
    ) {
        let text = apply(&repo_file(base), &edits);
        let (doc, syntax) = Document::parse("edited.toml", &text);
        if !syntax.is_empty() {
            check_diagnostics("edited.toml", &text, &syntax)?;
        } else if let Err(d) = parse_profile(&doc) {
            check_diagnostics("edited.toml", &text, &d)?;
        }
    }

    #[test]
    fn any_text_as_a_config_file_loads_or_is_refused_with_a_line_inside_it(
        text in prop_oneof![".{0,300}", "(\\[[a-z]{1,6}\\]\n|[a-z_]{1,8} = [\"0-9a-z\\[\\]{}]{0,8}\n){0,12}"],
    ) {
        let dir = tempfile::tempdir().unwrap();
        if let Err(d) = load_str("any.toml", &text, dir.path(), &|_| None) {
            check_diagnostics("any.toml", &text, &d.0)?;
        }
    }
}

#[test]
fn the_untouched_example_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    // The demo's config needs the values the demo fills in; the example stands alone.
    let base = "config/parkhub.example.toml";
    if let Err(d) = load_str("c.toml", &repo_file(base), dir.path(), &config_env) {
        panic!("{base}:\n{d}");
    }
}

#[test]
fn a_config_file_over_the_size_cap_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parkhub.toml");
    let mut text = repo_file("config/parkhub.example.toml");
    let pad = "# ".to_string() + &"x".repeat(76) + "\n";
    while text.len() <= MAX_FILE_BYTES {
        text.push_str(&pad);
    }
    std::fs::write(&path, &text).unwrap();
    let d = parkhub::config::load(&path).unwrap_err();
    assert_eq!(d.0.len(), 1, "{d}");
    assert_eq!(
        (d.0[0].line, d.0[0].file.as_str()),
        (1, path.to_str().unwrap())
    );
    assert!(d.0[0].message.contains("larger than"), "{d}");
}

// ---- API request bodies and query strings, through the real router ----

const TOKEN: &str = "hostile-input-admin-5d1c";

/// The API of a hub with one device, served on a loopback port until the process ends.
struct Api {
    rt: tokio::runtime::Runtime,
    base: String,
    http: reqwest::Client,
    _feed: AlarmFeed,
}

static API: LazyLock<Api> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap().keep();
    let text = format!(
        "[hub]\nid = \"h\"\n[mqtt]\nbroker = \"embedded\"\n[alarms]\nmax_shelve_minutes = 120\n\
         [[api.token]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
         [[device]]\nid = \"smoke-1\"\nprofile = \"mqtt-smoke-detector\"\ntopic = \"park/smoke-1\"\n",
        hex::encode(Sha256::digest(TOKEN.as_bytes()))
    );
    let loaded = common::load(&text, &dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(AlarmStore::open(&dir.join(DB_FILE)).unwrap());
    let cfg = EngineConfig::from_loaded(&loaded);
    let (feed, events) = AlarmFeed::new(&cfg);
    let base = rt.block_on(async {
        let stop = CancellationToken::new();
        let (engine, task) =
            Engine::new(cfg, store.clone(), Notifier::default()).start(events, stop.clone());
        tokio::spawn(task);
        let state = ApiState::new(
            common::hub_for(&loaded),
            store,
            engine,
            loaded.config.api.token.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, api::router(state), stop));
        base
    });
    Api {
        rt,
        base,
        http: common::http_client(),
        _feed: feed,
    }
});

/// (path, the hub lacks the part it needs and may answer 503)
const POSTS: &[(&str, bool)] = &[
    ("/alarms/1/ack", false),
    ("/alarms/1/shelve", false),
    ("/devices/smoke-1/maintenance", false),
    ("/chargers/cp-1/commands", true),
    ("/login", true),
    ("/users", true),
];

const GETS: &[(&str, bool)] = &[
    ("/history", true),
    ("/energy", true),
    ("/sessions", false),
    ("/alarms", false),
    ("/devices", false),
];

const API_FIELDS: &[&str] = &[
    "comment",
    "minutes",
    "reason",
    "on",
    "action",
    "type",
    "connector",
    "transaction_id",
    "user",
    "password",
    "name",
    "role",
];

fn api_json() -> impl Strategy<Value = Json> {
    json_leaf().prop_recursive(2, 16, 5, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(API_FIELDS).prop_map(str::to_string),
            1 => ".{0,8}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Json::Array),
            btree_map(key, inner, 0..5).prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Sends a request; the status and the body as JSON (Null when it is none).
fn send(req: reqwest::RequestBuilder) -> (reqwest::StatusCode, Json) {
    API.rt.block_on(async {
        let res = req
            .bearer_auth(TOKEN)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
    })
}

fn check_api_answer(
    what: &str,
    may_be_unavailable: bool,
    status: reqwest::StatusCode,
    body: &Json,
) -> Result<(), TestCaseError> {
    let unavailable = status == reqwest::StatusCode::SERVICE_UNAVAILABLE && may_be_unavailable;
    prop_assert!(
        !status.is_server_error() || unavailable,
        "{}: {} {}",
        what,
        status,
        body
    );
    if !status.is_success() {
        prop_assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: {} without an error text: {}",
            what,
            status,
            body
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn any_json_body_to_any_command_route_is_taken_or_refused_never_a_server_error(
        route in proptest::sample::select(POSTS),
        body in prop_oneof![
            4 => api_json().prop_map(|j| j.to_string().into_bytes()),
            1 => vec(any::<u8>(), 0..40),
        ],
        json_type in any::<bool>(),
    ) {
        let (path, may_be_unavailable) = route;
        let mut req = API.http.post(format!("{}{path}", API.base)).body(body.clone());
        if json_type {
            req = req.header("content-type", "application/json");
        }
        let (status, answer) = send(req);
        check_api_answer(path, may_be_unavailable, status, &answer)?;
        if !json_type && !body.trim_ascii().is_empty() {
            prop_assert_eq!(status, reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    #[test]
    fn any_query_string_is_answered_or_refused_never_a_server_error(
        route in proptest::sample::select(GETS),
        pairs in vec(
            (
                prop_oneof![
                    proptest::sample::select(vec![
                        "device", "point", "from", "to", "step", "format", "period", "by",
                        "limit", "state",
                    ]).prop_map(str::to_string),
                    ".{0,6}",
                ],
                prop_oneof![
                    json_leaf().prop_map(|j| j.as_str().map_or(j.to_string(), str::to_string)),
                    Just("smoke-1".to_string()),
                ],
            ),
            0..5,
        ),
    ) {
        let (path, may_be_unavailable) = route;
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let req = API.http.get(format!("{}{path}?{query}", API.base));
        let (status, answer) = send(req);
        check_api_answer(path, may_be_unavailable, status, &answer)?;
    }
}

#[test]
fn a_request_body_over_the_limit_is_refused_by_its_size() {
    for (path, _) in POSTS {
        let body = format!(r#"{{"comment":"{}"}}"#, "x".repeat(BODY_LIMIT));
        let req = API
            .http
            .post(format!("{}{path}", API.base))
            .header("content-type", "application/json")
            .body(body);
        let (status, answer) = send(req);
        assert_eq!(
            status,
            reqwest::StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {answer}"
        );
        assert!(
            answer["error"].as_str().unwrap().contains("64 KiB"),
            "{answer}"
        );
    }
}
