//! An MQTT device's payload, decoded by each bundled MQTT profile (JSON pointers, value maps,
//! arrays of ports).
//!
//! Input: a profile selector, then the payload. Properties: over the size limit is refused
//! before parsing; what comes out are only the profile's points (or its ports' points, at most
//! `MAX_PORTS` of them), numbers finite, texts within `MAX_TEXT`; problems are short.

#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use parkhub::mqtt::decode::{decode, PayloadError, MAX_PORTS, MAX_TEXT};
use parkhub::profile::{Profile, ProfileRegistry, Protocol};
use parkhub::reading::Value;

/// The hub's default `mqtt.max_payload_bytes`.
const MAX: usize = 65_536;

static PROFILES: LazyLock<Vec<Arc<Profile>>> = LazyLock::new(|| {
    let registry = ProfileRegistry::bundled().expect("the bundled profiles load");
    registry
        .entries()
        .filter(|e| e.profile.protocol == Protocol::Mqtt)
        .map(|e| e.profile.clone())
        .collect()
});

fn known(profile: &Profile, name: &str) -> bool {
    if profile.points.iter().any(|p| &*p.name == name) {
        return true;
    }
    profile.ports.iter().any(|g| {
        name.strip_prefix(g.prefix.as_str())
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(n, point)| {
                n.parse::<u32>().is_ok_and(|n| (1..=9999).contains(&n))
                    && g.points.iter().any(|p| &*p.name == point)
            })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let profiles = &*PROFILES;
    assert!(!profiles.is_empty());
    let profile = &profiles[usize::from(pick) % profiles.len()];

    if !payload.is_empty() {
        assert!(matches!(
            decode(profile, payload, payload.len() - 1),
            Err(PayloadError::TooLarge { .. })
        ));
    }
    let Ok(d) = decode(profile, payload, MAX) else {
        return;
    };
    let most = profile.points.len()
        + profile
            .ports
            .iter()
            .map(|g| MAX_PORTS * g.points.len())
            .sum::<usize>();
    assert!(d.values.len() <= most, "{} values", d.values.len());
    for (name, value, _) in &d.values {
        assert!(known(profile, name), "{} has no point {name}", profile.id);
        match value {
            Value::Number(x) => assert!(x.is_finite()),
            Value::Text(s) => assert!(s.chars().count() <= MAX_TEXT.max(64)),
            _ => {}
        }
    }
    for p in &d.problems {
        assert!(p.len() <= 4 * 1024, "a problem of {} bytes", p.len());
    }
});
