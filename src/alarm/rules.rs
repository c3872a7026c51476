//! A device's alarm rules: the hub's built-in comm-loss rule, its profile's default alarms, then
//! the config's `[[rule]]` entries (which add rules, change them or switch them off; for one
//! device, for a profile's devices, or for every device with the point). Pure code, run once
//! when the config is checked.

use std::sync::Arc;
use std::time::Duration;

use super::condition::{parse_window, Cond};
use super::{Category, Severity};
use crate::config::RuleConfig;
use crate::profile::{AlarmSpec, Condition, Kind, Point, Profile, ValueKind};

/// The built-in rule of every device: it stopped answering (or reporting).
pub const OFFLINE: &str = "offline";
/// The built-in rule of every bus: nothing on it answers.
pub const BUS_OFFLINE: &str = "bus_offline";

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The device (or bus) itself: its online state.
    Whole,
    Point(Arc<str>),
    /// That point of every port: `port*.temperature` watches `port1.temperature`, ….
    Ports {
        prefix: String,
        inner: String,
    },
}

impl Target {
    fn parse(name: &str) -> Target {
        match name.split_once("*.") {
            Some((prefix, inner)) => Target::Ports {
                prefix: prefix.to_string(),
                inner: inner.to_string(),
            },
            None => Target::Point(Arc::from(name)),
        }
    }

    /// Whether a reading of `point` feeds this rule.
    pub fn watches(&self, point: &str) -> bool {
        match self {
            Target::Whole => false,
            Target::Point(p) => &**p == point,
            Target::Ports { prefix, inner } => point
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(n, name)| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && name == inner
                }),
        }
    }

    pub fn name(&self) -> Option<String> {
        match self {
            Target::Whole => None,
            Target::Point(p) => Some(p.to_string()),
            Target::Ports { prefix, inner } => Some(format!("{prefix}*.{inner}")),
        }
    }
}

/// Every device's and bus's rules, as the config check resolved them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmRules {
    pub devices: std::collections::BTreeMap<String, RuleList>,
    pub buses: std::collections::BTreeMap<String, RuleList>,
}

/// A device's (or bus's) rules, shared by the devices whose profile and rules are the same:
/// 2 000 sensors of one profile hold one list, not 2 000 copies (2.8 MB of the MQTT
/// benchmark's peak, heaptrack).
pub type RuleList = Arc<[Arc<Rule>]>;

/// One rule of one device, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Arc<str>,
    pub target: Target,
    pub cond: Cond,
    pub on_delay: Duration,
    pub off_delay: Duration,
    pub severity: Severity,
    pub category: Category,
    pub latched: bool,
    pub message: String,
    pub message_en: String,
}

/// The built-in comm-loss rule of a device.
pub fn offline_rule() -> Rule {
    Rule {
        id: Arc::from(OFFLINE),
        target: Target::Whole,
        cond: Cond::Offline,
        on_delay: Duration::ZERO,
        off_delay: Duration::ZERO,
        severity: Severity::Major,
        category: Category::Comm,
        latched: false,
        message: "设备离线".into(),
        message_en: "Device offline".into(),
    }
}

/// The built-in rule of a bus.
pub fn bus_offline_rule() -> Rule {
    Rule {
        id: Arc::from(BUS_OFFLINE),
        message: "总线/网关离线，其下设备均无应答".into(),
        message_en: "Bus or gateway offline: no device on it answers".into(),
        ..offline_rule()
    }
}

/// The hub's own rule: its uplink backlog outgrew its disk cap and readings are being shed.
pub const UPLINK_BACKLOG: &str = "uplink_backlog";

pub fn uplink_backlog_rule() -> Rule {
    Rule {
        id: Arc::from(UPLINK_BACKLOG),
        message: "上云积压超过磁盘上限，最旧的读数被丢弃".into(),
        message_en: "Uplink backlog over its disk cap: the oldest readings are being dropped"
            .into(),
        ..offline_rule()
    }
}

/// The hub's own rule: the data directory's disk is short of room and history sheds its oldest
/// readings.
pub const STORAGE_LOW: &str = "storage_low";

pub fn storage_low_rule() -> Rule {
    Rule {
        id: Arc::from(STORAGE_LOW),
        message: "存储空间不足，最旧的历史读数被删除以保留告警和待发数据".into(),
        message_en: "Storage low: the oldest history readings are being deleted to keep alarms and the outbox".into(),
        ..offline_rule()
    }
}

/// A profile's default alarm as a rule (the profile loader has checked it).
pub fn from_profile(a: &AlarmSpec) -> Rule {
    let cond = match &a.condition {
        Condition::Equals(v) => Cond::Equals(v.clone()),
        Condition::In(v) => Cond::In(v.clone()),
        Condition::NotIn(v) => Cond::NotIn(v.clone()),
        Condition::Above { limit, deadband } => Cond::Above {
            limit: *limit,
            deadband: *deadband,
        },
        Condition::Below { limit, deadband } => Cond::Below {
            limit: *limit,
            deadband: *deadband,
        },
        Condition::Offline => Cond::Offline,
    };
    Rule {
        id: Arc::from(a.id.as_str()),
        target: a.point.as_deref().map_or(Target::Whole, Target::parse),
        cond,
        on_delay: Duration::from_secs(a.on_delay_s),
        off_delay: Duration::from_secs(a.off_delay_s),
        severity: a.severity.parse().unwrap_or(Severity::Major),
        category: a.category.parse().unwrap_or(Category::Comm),
        latched: a.latched,
        message: a.message.clone(),
        message_en: a.message_en.clone().unwrap_or_else(|| a.message.clone()),
    }
}

/// A problem with a `[[rule]]`: the key it is at and what is wrong.
pub type RuleError = (&'static str, String);

/// What a `[[rule]]` may be wrong about before it meets a device.
pub fn check_shape(c: &RuleConfig) -> Vec<RuleError> {
    let mut errs = Vec::new();
    if c.id.is_empty()
        || !c
            .id
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '.')
    {
        errs.push((
            "id",
            format!(
                "rule id `{}` must be lowercase letters, digits, `_` and `.`",
                c.id
            ),
        ));
    }
    let limits = [c.high_high, c.high, c.low, c.low_low]
        .iter()
        .any(Option::is_some);
    let groups = [
        c.equals.is_some(),
        c.in_set.is_some(),
        c.not_in.is_some(),
        c.above.is_some(),
        c.below.is_some(),
        limits,
        c.offline == Some(true),
        c.consumption_above.is_some(),
        c.night_flow_above.is_some(),
        c.backwards == Some(true),
    ];
    if groups.iter().filter(|g| **g).count() > 1 {
        errs.push((
            "id",
            "a rule has one condition: equals, in, not_in, above, below, the limits (high_high, high, low, low_low), offline, consumption_above, night_flow_above or backwards".into(),
        ));
    }
    if c.in_set.as_ref().is_some_and(Vec::is_empty) {
        errs.push(("in", "`in` needs at least one value".into()));
    }
    if c.not_in.as_ref().is_some_and(Vec::is_empty) {
        errs.push(("not_in", "`not_in` needs at least one value".into()));
    }
    for (key, v) in [
        ("above", c.above),
        ("below", c.below),
        ("high_high", c.high_high),
        ("high", c.high),
        ("low", c.low),
        ("low_low", c.low_low),
        ("consumption_above", c.consumption_above),
        ("night_flow_above", c.night_flow_above),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            errs.push((key, format!("{key} must be a finite number")));
        }
    }
    if let (Some(hh), Some(h)) = (c.high_high, c.high) {
        if hh <= h {
            errs.push((
                "high_high",
                format!("high_high ({hh}) must be above high ({h})"),
            ));
        }
    }
    if let (Some(ll), Some(l)) = (c.low_low, c.low) {
        if ll >= l {
            errs.push(("low_low", format!("low_low ({ll}) must be below low ({l})")));
        }
    }
    if let (Some(h), Some(l)) = (c.high.or(c.high_high), c.low.or(c.low_low)) {
        if h <= l {
            errs.push((
                "high",
                format!("the high limits ({h}) must be above the low ones ({l})"),
            ));
        }
    }
    if c.deadband.is_some_and(|d| !d.is_finite() || d < 0.0) {
        errs.push(("deadband", "deadband must be a number of 0 or more".into()));
    }
    if c.deadband.is_some() && c.above.is_none() && c.below.is_none() && !limits {
        errs.push((
            "deadband",
            "deadband goes with above, below or the limits".into(),
        ));
    }
    match (c.consumption_above.is_some(), c.window_s) {
        (true, None) => errs.push((
            "consumption_above",
            "consumption_above needs `window_s`".into(),
        )),
        (true, Some(w)) if !(60..=31 * 86_400).contains(&w) => errs.push((
            "window_s",
            format!("window_s must be between 60 and 2678400 (got {w})"),
        )),
        (false, Some(_)) => errs.push(("window_s", "window_s goes with consumption_above".into())),
        _ => {}
    }
    match (c.night_flow_above.is_some(), &c.night) {
        (true, None) => errs.push((
            "night_flow_above",
            "night_flow_above needs `night`, e.g. \"01:00-05:00\"".into(),
        )),
        (true, Some(w)) => {
            if let Err(e) = parse_window(w) {
                errs.push(("night", e));
            }
        }
        (false, Some(_)) => errs.push(("night", "night goes with night_flow_above".into())),
        _ => {}
    }
    for (key, v) in [("on_delay_s", c.on_delay_s), ("off_delay_s", c.off_delay_s)] {
        if v.is_some_and(|v| v > 86_400) {
            errs.push((key, format!("{key} must be at most 86400")));
        }
    }
    if let Some(s) = &c.severity {
        if let Err(e) = s.parse::<Severity>() {
            errs.push(("severity", e));
        }
    }
    if let Some(s) = &c.category {
        if let Err(e) = s.parse::<Category>() {
            errs.push(("category", e));
        }
    }
    if c.message.as_deref().is_some_and(|m| m.trim().is_empty()) {
        errs.push(("message", "message is empty".into()));
    }
    if c.bus.is_some() {
        if c.device.is_some() || c.profile.is_some() {
            errs.push(("bus", "a rule is for buses or for devices, not both".into()));
        }
        if c.id != BUS_OFFLINE {
            errs.push((
                "id",
                format!(
                    "a bus has one rule, `{BUS_OFFLINE}`: change or disable it (got `{}`)",
                    c.id
                ),
            ));
        }
        if c.point.is_some() || groups[..5].iter().any(|g| *g) || groups[6..].iter().any(|g| *g) {
            errs.push((
                "bus",
                "a bus rule watches the bus being offline, not a point".into(),
            ));
        }
    }
    if c.offline == Some(true) && c.point.is_some() {
        errs.push((
            "point",
            "an offline rule is about the device, not a point".into(),
        ));
    }
    errs
}

/// How specific a rule is: every device < a profile's devices < named devices. Later and more
/// specific rules win.
pub fn specificity(c: &RuleConfig) -> u8 {
    match (&c.device, &c.profile) {
        (Some(_), _) => 2,
        (None, Some(_)) => 1,
        (None, None) => 0,
    }
}

/// Whether a `[[rule]]` is for this device.
pub fn applies_to(c: &RuleConfig, device: &str, profile: &str) -> bool {
    if c.bus.is_some() {
        return false;
    }
    let named = |list: &Option<crate::config::OneOrMany>, x: &str| {
        list.as_ref().is_some_and(|l| l.values().contains(&x))
    };
    match (&c.device, &c.profile) {
        (None, None) => c.id != BUS_OFFLINE,
        (d, p) => named(d, device) || named(p, profile),
    }
}

/// The conditions a `[[rule]]` gives, with the id each goes by and its default severity: the
/// limits give one rule per limit (`id.hh`, `id.h`, `id.l`, `id.ll`).
fn conditions(c: &RuleConfig, counter: bool) -> Vec<(String, Cond, Option<Severity>)> {
    let deadband = c.deadband.unwrap_or(0.0);
    let one = |cond| vec![(c.id.clone(), cond, None)];
    if let Some(v) = &c.equals {
        return one(Cond::Equals(v.clone()));
    }
    if let Some(v) = &c.in_set {
        return one(Cond::In(v.clone()));
    }
    if let Some(v) = &c.not_in {
        return one(Cond::NotIn(v.clone()));
    }
    if let Some(limit) = c.above {
        return one(Cond::Above { limit, deadband });
    }
    if let Some(limit) = c.below {
        return one(Cond::Below { limit, deadband });
    }
    if c.offline == Some(true) {
        return one(Cond::Offline);
    }
    if let (Some(above), Some(w)) = (c.consumption_above, c.window_s) {
        return one(Cond::Consumption {
            window: Duration::from_secs(w),
            above,
        });
    }
    if let (Some(above), Some(Ok((from, to)))) =
        (c.night_flow_above, c.night.as_deref().map(parse_window))
    {
        return one(Cond::NightFlow {
            from,
            to,
            above,
            counter,
        });
    }
    if c.backwards == Some(true) {
        return one(Cond::Backwards);
    }
    let mut out = Vec::new();
    let id = |s: &str| format!("{}.{s}", c.id);
    if let Some(limit) = c.high_high {
        out.push((
            id("hh"),
            Cond::Above { limit, deadband },
            Some(Severity::Major),
        ));
    }
    if let Some(limit) = c.high {
        out.push((
            id("h"),
            Cond::Above { limit, deadband },
            Some(Severity::Minor),
        ));
    }
    if let Some(limit) = c.low {
        out.push((
            id("l"),
            Cond::Below { limit, deadband },
            Some(Severity::Minor),
        ));
    }
    if let Some(limit) = c.low_low {
        out.push((
            id("ll"),
            Cond::Below { limit, deadband },
            Some(Severity::Major),
        ));
    }
    out
}

/// Whether a condition fits the point it watches.
fn check_fit(cond: &Cond, point: Option<&Point>, name: &str) -> Result<(), RuleError> {
    let Some(p) = point else {
        return match cond {
            Cond::Offline => Ok(()),
            _ => Err(("point", "this rule needs the `point` it watches".into())),
        };
    };
    let kind = p.value_kind();
    let counter = p.kind == Kind::Counter;
    match cond {
        Cond::Equals(v) if !kind.accepts(v) => Err((
            "equals",
            format!("`{v}` is not a value point `{name}` takes"),
        )),
        Cond::In(vs) => match vs.iter().find(|v| !kind.accepts(v)) {
            Some(v) => Err(("in", format!("`{v}` is not a value point `{name}` takes"))),
            None => Ok(()),
        },
        Cond::NotIn(vs) => match vs.iter().find(|v| !kind.accepts(v)) {
            Some(v) => Err((
                "not_in",
                format!("`{v}` is not a value point `{name}` takes"),
            )),
            None => Ok(()),
        },
        Cond::Above { .. } | Cond::Below { .. } | Cond::NightFlow { .. }
            if kind != ValueKind::Number =>
        {
            Err((
                "point",
                format!("limits need a number; point `{name}` is not one"),
            ))
        }
        Cond::Consumption { .. } | Cond::Backwards if !counter => Err((
            "point",
            format!("point `{name}` is not a counter (kind = \"counter\")"),
        )),
        _ => Ok(()),
    }
}

/// The message a new rule gets when it gives none: what crossed what.
fn default_message(cond: &Cond, label: &str, unit: &str) -> (String, String) {
    match cond {
        Cond::Equals(v) => (format!("{label} = {v}"), format!("{label} is {v}")),
        Cond::In(_) | Cond::NotIn(_) => (format!("{label} 异常"), format!("{label} abnormal")),
        Cond::Above { limit, .. } => (
            format!("{label} 过高（>{limit}{unit}）"),
            format!("{label} high (>{limit}{unit})"),
        ),
        Cond::Below { limit, .. } => (
            format!("{label} 过低（<{limit}{unit}）"),
            format!("{label} low (<{limit}{unit})"),
        ),
        Cond::Offline => ("设备离线".into(), "Device offline".into()),
        Cond::Consumption { window, above } => {
            let h = window.as_secs_f64() / 3600.0;
            (
                format!("{label} {h} 小时用量超过 {above}{unit}"),
                format!("{label}: more than {above}{unit} used in {h} h"),
            )
        }
        Cond::NightFlow { .. } => (
            format!("{label} 夜间不停流，疑似漏水"),
            format!("{label}: flow all night, possible leak"),
        ),
        Cond::Backwards => (
            format!("{label} 读数倒退（换表或故障）"),
            format!("{label} went backwards (meter replaced or faulty)"),
        ),
    }
}

/// Applies the fields a `[[rule]]` gives to a rule it changes.
fn patch(r: &mut Rule, c: &RuleConfig) {
    if let Some(s) = c.severity.as_deref().and_then(|s| s.parse().ok()) {
        r.severity = s;
    }
    if let Some(s) = c.category.as_deref().and_then(|s| s.parse().ok()) {
        r.category = s;
    }
    if let Some(p) = &c.point {
        r.target = Target::parse(p);
    }
    if let Some(s) = c.on_delay_s {
        r.on_delay = Duration::from_secs(s);
    }
    if let Some(s) = c.off_delay_s {
        r.off_delay = Duration::from_secs(s);
    }
    if let Some(l) = c.latched {
        r.latched = l;
    }
    if let Some(m) = &c.message {
        r.message = m.clone();
        if c.message_en.is_none() {
            r.message_en = m.clone();
        }
    }
    if let Some(m) = &c.message_en {
        r.message_en = m.clone();
    }
}

/// A device's rules. `configs` are the `[[rule]]`s for it (see [`applies_to`]) with their
/// index, in the order they are applied (by [`specificity`], then as written). Errors name the
/// rule's index and key; a rule for every device (or a profile's) that does not fit this one is
/// skipped, not an error.
pub fn device_rules(
    device: &str,
    profile: &Profile,
    configs: &[(usize, &RuleConfig)],
) -> (Vec<Rule>, Vec<(usize, RuleError)>) {
    let mut rules: Vec<Rule> = Vec::new();
    if !profile
        .alarms
        .iter()
        .any(|a| a.condition == Condition::Offline)
    {
        rules.push(offline_rule());
    }
    rules.extend(profile.alarms.iter().map(from_profile));
    let mut errs = Vec::new();
    for &(i, c) in configs {
        let named = c.device.is_some();
        let point = match c.point.as_deref() {
            Some(name) => match profile.alarm_point(name) {
                Some(p) => Some(p),
                None if named => {
                    errs.push((
                        i,
                        (
                            "point",
                            format!(
                                "device `{device}` has no point `{name}` (profile {})",
                                profile.id
                            ),
                        ),
                    ));
                    continue;
                }
                // A rule for many devices fits those that have the point.
                None => continue,
            },
            None => None,
        };
        let conds = conditions(c, point.is_some_and(|p| p.kind == Kind::Counter));
        if conds.is_empty() {
            // Changes (or disables) a rule the device already has.
            match rules.iter().position(|r| *r.id == *c.id) {
                Some(k) if c.enabled == Some(false) => {
                    rules.remove(k);
                }
                Some(k) => {
                    patch(&mut rules[k], c);
                    let r = &rules[k];
                    let target_point = r.target.name().and_then(|n| profile.alarm_point(&n));
                    if let Err(e) =
                        check_fit(&r.cond, target_point, &r.target.name().unwrap_or_default())
                    {
                        errs.push((i, e));
                    }
                }
                None if named => {
                    let known: Vec<&str> = rules.iter().map(|r| &*r.id).collect();
                    errs.push((
                        i,
                        (
                            "id",
                            format!(
                                "device `{device}` has no rule `{}` to change (its rules: {}); a new rule needs a condition",
                                c.id,
                                known.join(", ")
                            ),
                        ),
                    ));
                }
                None => {}
            }
            continue;
        }
        for (id, cond, default_severity) in conds {
            let existing = rules.iter().position(|r| *r.id == *id);
            if c.enabled == Some(false) {
                if let Some(k) = existing {
                    rules.remove(k);
                }
                continue;
            }
            let name = c.point.clone().unwrap_or_default();
            if let Err(e) = check_fit(&cond, point, &name) {
                errs.push((i, e));
                continue;
            }
            match existing {
                Some(k) => {
                    rules[k].cond = cond;
                    patch(&mut rules[k], c);
                }
                None => {
                    let label = point
                        .and_then(|p| p.label.clone())
                        .unwrap_or_else(|| name.clone());
                    let unit = point.and_then(|p| p.unit.as_deref()).unwrap_or("");
                    let (message, message_en) = default_message(&cond, &label, unit);
                    let mut r = Rule {
                        id: Arc::from(id.as_str()),
                        target: c.point.as_deref().map_or(Target::Whole, Target::parse),
                        cond,
                        on_delay: Duration::ZERO,
                        off_delay: Duration::ZERO,
                        severity: default_severity.unwrap_or(Severity::Major),
                        category: Category::of_profile(&profile.category),
                        latched: false,
                        message,
                        message_en,
                    };
                    if matches!(r.cond, Cond::Offline) {
                        r.category = Category::Comm;
                    }
                    if matches!(r.cond, Cond::Backwards) {
                        // A meter that went backwards stays news until someone has looked.
                        r.latched = true;
                    }
                    patch(&mut r, c);
                    rules.push(r);
                }
            }
        }
    }
    (rules, errs)
}

/// A bus's rules: its `bus_offline`, as the config changes it.
pub fn bus_rules(bus: &str, configs: &[(usize, &RuleConfig)]) -> Vec<Rule> {
    let mut rule = Some(bus_offline_rule());
    for (_, c) in configs {
        let for_it = match &c.bus {
            Some(list) => list.values().contains(&bus),
            None => c.device.is_none() && c.profile.is_none() && c.id == BUS_OFFLINE,
        };
        if !for_it {
            continue;
        }
        if c.enabled == Some(false) {
            rule = None;
        } else if let Some(r) = rule.as_mut() {
            patch(r, c);
        } else {
            let mut r = bus_offline_rule();
            patch(&mut r, c);
            rule = Some(r);
        }
    }
    rule.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OneOrMany;
    use crate::profile::ProfileRegistry;

    fn profile(id: &str) -> Arc<Profile> {
        ProfileRegistry::bundled().unwrap().get(id).unwrap().clone()
    }

    fn rule(id: &str) -> RuleConfig {
        RuleConfig {
            id: id.into(),
            ..RuleConfig::default()
        }
    }

    fn ids(rules: &[Rule]) -> Vec<&str> {
        rules.iter().map(|r| &*r.id).collect()
    }

    #[test]
    fn a_device_has_its_profiles_alarms_and_the_built_in_offline_rule() {
        let (rules, errs) = device_rules("m1", &profile("chint-dtsu666"), &[]);
        assert!(errs.is_empty());
        assert_eq!(ids(&rules), vec!["offline"]);
        // A profile with its own offline alarm keeps it instead.
        let (rules, _) = device_rules("s1", &profile("mqtt-smoke-detector"), &[]);
        assert_eq!(rules.iter().filter(|r| r.cond == Cond::Offline).count(), 1);
        assert!(ids(&rules).contains(&"smoke"));
    }

    #[test]
    fn limits_expand_into_one_rule_per_limit_with_their_severities() {
        let c = RuleConfig {
            point: Some("voltage_a".into()),
            high_high: Some(264.0),
            high: Some(253.0),
            low: Some(198.0),
            deadband: Some(2.0),
            ..rule("voltage")
        };
        let (rules, errs) = device_rules("m1", &profile("chint-dtsu666"), &[(0, &c)]);
        assert!(errs.is_empty(), "{errs:?}");
        let v: Vec<_> = rules
            .iter()
            .filter(|r| r.id.starts_with("voltage"))
            .collect();
        assert_eq!(
            v.iter().map(|r| (&*r.id, r.severity)).collect::<Vec<_>>(),
            vec![
                ("voltage.hh", Severity::Major),
                ("voltage.h", Severity::Minor),
                ("voltage.l", Severity::Minor)
            ]
        );
        assert_eq!(
            v[1].cond,
            Cond::Above {
                limit: 253.0,
                deadband: 2.0
            }
        );
        assert_eq!(v[0].category, Category::Energy);
        assert!(v[0].message.contains("A相电压"), "{}", v[0].message);
    }

    #[test]
    fn a_config_rule_changes_or_disables_a_profile_alarm() {
        let slower = RuleConfig {
            on_delay_s: Some(5),
            severity: Some("major".into()),
            ..rule("temperature_high")
        };
        let off = RuleConfig {
            enabled: Some(false),
            device: Some(OneOrMany::One("env-1".into())),
            ..rule("noise_high")
        };
        let p = profile("mqtt-env-sensor");
        let (rules, errs) = device_rules("env-1", &p, &[(0, &slower), (1, &off)]);
        assert!(errs.is_empty(), "{errs:?}");
        let t = rules.iter().find(|r| &*r.id == "temperature_high").unwrap();
        assert_eq!(
            (t.on_delay, t.severity),
            (Duration::from_secs(5), Severity::Major)
        );
        assert!(!ids(&rules).contains(&"noise_high"));
    }

    #[test]
    fn a_rule_for_every_device_skips_those_without_the_point() {
        let c = RuleConfig {
            point: Some("energy_import".into()),
            consumption_above: Some(500.0),
            window_s: Some(3600),
            ..rule("peak_use")
        };
        let (rules, errs) = device_rules("w1", &profile("tuf-2000m"), &[(0, &c)]);
        assert!(errs.is_empty());
        assert!(!ids(&rules).contains(&"peak_use"));
        let (rules, errs) = device_rules("m1", &profile("chint-dtsu666"), &[(0, &c)]);
        assert!(errs.is_empty(), "{errs:?}");
        assert!(ids(&rules).contains(&"peak_use"));
    }

    #[test]
    fn rules_that_do_not_fit_their_point_are_errors_for_named_devices() {
        let named = |c: RuleConfig| RuleConfig {
            device: Some(OneOrMany::One("m1".into())),
            ..c
        };
        let p = profile("chint-dtsu666");
        let cases = [
            (
                named(RuleConfig {
                    point: Some("nope".into()),
                    above: Some(1.0),
                    ..rule("x")
                }),
                "has no point `nope`",
            ),
            (
                named(RuleConfig {
                    point: Some("voltage_a".into()),
                    backwards: Some(true),
                    ..rule("x")
                }),
                "not a counter",
            ),
            (
                named(RuleConfig {
                    point: Some("voltage_a".into()),
                    equals: Some(serde_json::json!("high")),
                    ..rule("x")
                }),
                "not a value point",
            ),
            (named(rule("ghost")), "has no rule `ghost`"),
        ];
        for (c, want) in cases {
            let (_, errs) = device_rules("m1", &p, &[(0, &c)]);
            assert!(
                errs.iter().any(|(_, (_, m))| m.contains(want)),
                "{want}: {errs:?}"
            );
        }
    }

    #[test]
    fn the_shape_of_a_rule_is_checked_on_its_own() {
        let bad = RuleConfig {
            above: Some(1.0),
            below: Some(0.0),
            consumption_above: Some(3.0),
            night: Some("late".into()),
            severity: Some("urgent".into()),
            ..rule("Bad Id")
        };
        let keys: Vec<&str> = check_shape(&bad).iter().map(|(k, _)| *k).collect();
        for k in ["id", "consumption_above", "night", "severity"] {
            assert!(keys.contains(&k), "{k}: {keys:?}");
        }
        assert!(check_shape(&RuleConfig {
            high: Some(10.0),
            high_high: Some(5.0),
            ..rule("x")
        })
        .iter()
        .any(|(k, _)| *k == "high_high"));
    }

    #[test]
    fn port_rules_watch_every_port() {
        let t = Target::parse("port*.temperature");
        assert!(t.watches("port2.temperature"));
        assert!(t.watches("port12.temperature"));
        assert!(!t.watches("port.temperature"));
        assert!(!t.watches("port2.power_w"));
        assert!(!t.watches("portx.temperature"));
    }

    #[test]
    fn a_bus_rule_can_be_made_critical_or_switched_off() {
        assert_eq!(bus_rules("b1", &[]).len(), 1);
        let crit = RuleConfig {
            severity: Some("critical".into()),
            ..rule(BUS_OFFLINE)
        };
        let r = bus_rules("b1", &[(0, &crit)]);
        assert_eq!(r[0].severity, Severity::Critical);
        let off = RuleConfig {
            bus: Some(OneOrMany::One("b1".into())),
            enabled: Some(false),
            ..rule(BUS_OFFLINE)
        };
        assert!(bus_rules("b1", &[(0, &off)]).is_empty());
        assert_eq!(bus_rules("b2", &[(0, &off)]).len(), 1);
    }
}
