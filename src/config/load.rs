//! Reading a config file: syntax, `${VAR}`, each section on its own, then the checks of
//! `validate` — and every error of all of them reported together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::validate::{self, MqttTopics, Parts};
use super::{
    AlarmsConfig, ApiConfig, Config, Diagnostic, Diagnostics, Document, HistoryConfig, KeyPath,
    OcppConfig,
};
use crate::alarm::rules::AlarmRules;
use crate::profile::{Profile, ProfileRegistry, SerialDefaults};

/// A checked configuration with what was derived while checking it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
    pub profiles: ProfileRegistry,
    /// Each device's profile with its point overrides applied.
    pub device_profiles: BTreeMap<String, Arc<Profile>>,
    /// Each serial line's settings: the bus's own, else what its devices' profiles agree on.
    pub bus_lines: BTreeMap<String, SerialDefaults>,
    /// Each MQTT device's topics.
    pub mqtt_topics: BTreeMap<String, MqttTopics>,
    /// Each device's and bus's alarm rules.
    pub alarm_rules: AlarmRules,
}

impl Loaded {
    /// The enabled devices whose profile speaks `protocol`.
    pub fn enabled_devices(
        &self,
        protocol: crate::profile::Protocol,
    ) -> impl Iterator<Item = &super::DeviceConfig> {
        self.config.devices.iter().filter(move |d| {
            d.enabled
                && self
                    .device_profiles
                    .get(&d.id)
                    .is_some_and(|p| p.protocol == protocol)
        })
    }
}

const SECTIONS: &[&str] = &[
    "hub",
    "api",
    "history",
    "mqtt",
    "bus",
    "device",
    "department",
    "channel",
    "route",
    "alarms",
    "rule",
    "inhibit",
    "uplink",
    "ocpp",
];
const ARRAYS: &[&str] = &[
    "bus",
    "device",
    "department",
    "channel",
    "route",
    "rule",
    "inhibit",
];

/// Largest config or profile file read. A park's config with a thousand devices is well under
/// 1 MiB; a path that names a log, a disk image or `/dev/zero` by mistake must be refused, not
/// read into memory whole.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// The text of a config or profile file, refused past [`MAX_FILE_BYTES`].
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    String::from_utf8(bytes).map_err(|e| Error::new(ErrorKind::InvalidData, e))
}

/// Loads and checks the config at `path`, reading `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    let text = read_text(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut loaded = load_str(&path.display().to_string(), &text, base, &|k| {
        std::env::var(k).ok()
    })?;
    loaded.path = path.to_path_buf();
    Ok(loaded)
}

/// Loads config text; relative paths in it are taken from `base_dir`.
pub fn load_str(
    file: &str,
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Diagnostics> {
    let (mut doc, mut diags) = Document::parse(file, text);
    if !diags.is_empty() {
        // What follows a syntax error is guesswork: report the syntax alone.
        return Err(Diagnostics(diags).sorted());
    }
    diags.extend(doc.expand_env(env));

    for (key, _) in doc.top_keys() {
        if !SECTIONS.contains(&key.as_str()) {
            diags.push(doc.diag(
                &KeyPath::from(key.as_str()),
                format!("unknown section `{key}` (known: {})", SECTIONS.join(", ")),
            ));
        }
    }
    for &key in ARRAYS {
        if let Some(v) = doc.get(&KeyPath::from(key)) {
            if !matches!(v.get_ref(), toml::de::DeValue::Array(_)) {
                diags.push(doc.diag(
                    &KeyPath::from(key),
                    format!("`{key}` is a list: write each one as [[{key}]]"),
                ));
            }
        }
    }

    let hub = table(&doc, "hub", &mut diags);
    if hub.is_none() && doc.get(&KeyPath::from("hub")).is_none() {
        diags.push(Diagnostic {
            file: file.to_string(),
            line: 1,
            column: 1,
            key: "hub".into(),
            message: "missing [hub] section (it needs at least `id`)".into(),
        });
    }
    let mut parts = Parts {
        hub,
        api: table::<ApiConfig>(&doc, "api", &mut diags).unwrap_or_default(),
        history: table::<HistoryConfig>(&doc, "history", &mut diags).unwrap_or_default(),
        mqtt: table(&doc, "mqtt", &mut diags),
        buses: array(&doc, "bus", &mut diags),
        devices: array(&doc, "device", &mut diags),
        departments: array(&doc, "department", &mut diags),
        channels: array(&doc, "channel", &mut diags),
        routes: array(&doc, "route", &mut diags),
        alarms: table::<AlarmsConfig>(&doc, "alarms", &mut diags).unwrap_or_default(),
        rules: array(&doc, "rule", &mut diags),
        inhibits: array(&doc, "inhibit", &mut diags),
        uplink: table(&doc, "uplink", &mut diags),
        ocpp: table::<OcppConfig>(&doc, "ocpp", &mut diags).unwrap_or_default(),
    };

    if let Some(hub) = parts.hub.as_mut() {
        hub.data_dir = resolve(base_dir, &hub.data_dir);
        hub.profiles_dir = hub.profiles_dir.as_ref().map(|p| resolve(base_dir, p));
    }

    let mut profiles = match ProfileRegistry::bundled() {
        Ok(r) => r,
        Err(d) => {
            diags.extend(d);
            ProfileRegistry::default()
        }
    };
    if let Some(dir) = parts.hub.as_ref().and_then(|h| h.profiles_dir.clone()) {
        diags.extend(profiles.load_dir(&dir));
    }

    let resolved = validate::validate(&doc, &parts, &profiles, &mut diags);

    if !diags.is_empty() {
        return Err(Diagnostics(diags).sorted());
    }
    let Some(hub) = parts.hub else {
        return Err(Diagnostics(diags));
    };
    Ok(Loaded {
        path: PathBuf::from(file),
        config: Config {
            hub,
            api: parts.api,
            history: parts.history,
            mqtt: parts.mqtt,
            buses: strip(parts.buses),
            devices: strip(parts.devices),
            departments: strip(parts.departments),
            channels: strip(parts.channels),
            routes: strip(parts.routes),
            alarms: parts.alarms,
            rules: strip(parts.rules),
            inhibits: strip(parts.inhibits),
            uplink: parts.uplink,
            ocpp: parts.ocpp,
        },
        profiles,
        device_profiles: resolved.device_profiles,
        bus_lines: resolved.bus_lines,
        mqtt_topics: resolved.mqtt_topics,
        alarm_rules: resolved.alarm_rules,
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn table<T: DeserializeOwned>(
    doc: &Document<'_>,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let (v, d) = doc.deserialize(&KeyPath::from(key));
    diags.extend(d);
    v
}

/// Each element of `[[key]]` on its own, with its index so later errors name the right one.
fn array<T: DeserializeOwned>(
    doc: &Document<'_>,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(usize, T)> {
    (0..doc.array_len(key))
        .filter_map(|i| {
            let (v, d) = doc.deserialize(&KeyPath::from(key).index(i));
            diags.extend(d);
            v.map(|v| (i, v))
        })
        .collect()
}

fn strip<T>(v: Vec<(usize, T)>) -> Vec<T> {
    v.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_over_the_size_cap_is_refused_with_its_name_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        // Valid TOML all the way: only its size is wrong.
        let line = "# padding padding padding padding padding padding padding padding\n";
        let text = format!(
            "[hub]\nid = \"h\"\n{}",
            line.repeat(MAX_FILE_BYTES / line.len())
        );
        assert!(text.len() > MAX_FILE_BYTES);
        std::fs::write(&path, &text).unwrap();
        let d = load(&path).unwrap_err();
        assert_eq!(d.0.len(), 1, "{d}");
        assert_eq!(d.0[0].file, path.display().to_string());
        assert!(d.0[0].message.contains("larger than 4 MiB"), "{d}");
    }

    #[test]
    fn a_config_file_just_under_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let mut text = String::from("[hub]\nid = \"h\"\n");
        text.push_str(&"#".repeat(MAX_FILE_BYTES - text.len() - 1));
        text.push('\n');
        assert_eq!(text.len(), MAX_FILE_BYTES);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_text(&path).unwrap(), text);
    }

    #[test]
    fn a_config_file_that_is_not_utf8_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.toml");
        std::fs::write(&path, b"[hub]\nid = \"caf\xe9\"\n").unwrap();
        let d = load(&path).unwrap_err();
        assert!(d.0[0].message.starts_with("cannot read config file"), "{d}");
    }
}
