//! Who is told of an alarm: a tree of routes matched on the alarm's labels (first match wins
//! unless a route says `continue`, children refine their parent and inherit what they do not
//! set), and inhibition (an alarm that explains others — a dead bus — silences them). After
//! Prometheus Alertmanager's model. Pure code.

use std::sync::Arc;
use std::time::Duration;

use super::{Category, Severity};

/// What routes and inhibitions match on. Shared strings: every rule of every point of a device
/// carries the same device, bus and place, and a park has thousands of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub category: Category,
    pub severity: Severity,
    pub rule: Arc<str>,
    /// The device's id (or the bus's, for a bus alarm).
    pub device: Arc<str>,
    /// The bus the device is on (or the bus itself).
    pub bus: Option<Arc<str>>,
    pub building: Option<Arc<str>>,
    pub floor: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
}

impl Labels {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "category" => Some(self.category.as_str()),
            "severity" => Some(self.severity.as_str()),
            "rule" => Some(&self.rule),
            "device" => Some(&self.device),
            "bus" => self.bus.as_deref(),
            "building" => self.building.as_deref(),
            "floor" => self.floor.as_deref(),
            "zone" => self.zone.as_deref(),
            _ => None,
        }
    }
}

/// The labels a matcher or an inhibition's `equal` may name.
pub const LABELS: &[&str] = &[
    "category", "severity", "rule", "device", "bus", "building", "floor", "zone",
];

/// Label name → accepted values; every named label must match one of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher(pub Vec<(String, Vec<String>)>);

impl Matcher {
    pub fn matches(&self, l: &Labels) -> bool {
        self.0
            .iter()
            .all(|(name, values)| l.get(name).is_some_and(|v| values.iter().any(|x| x == v)))
    }
}

/// One node of the route tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    pub matcher: Matcher,
    /// Empty: the parent's.
    pub departments: Vec<String>,
    pub continue_matching: bool,
    pub escalate_after: Option<Duration>,
    pub escalate_to: Vec<String>,
    pub repeat_after: Option<Duration>,
    pub children: Vec<Route>,
}

/// Where an alarm goes and what happens when nobody acknowledges it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub departments: Vec<String>,
    pub escalate_after: Option<Duration>,
    pub escalate_to: Vec<String>,
    pub repeat_after: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct Params {
    departments: Vec<String>,
    escalate_after: Option<Duration>,
    escalate_to: Vec<String>,
    repeat_after: Option<Duration>,
}

impl Params {
    fn under(&self, r: &Route) -> Params {
        Params {
            departments: if r.departments.is_empty() {
                self.departments.clone()
            } else {
                r.departments.clone()
            },
            escalate_after: r.escalate_after.or(self.escalate_after),
            escalate_to: if r.escalate_to.is_empty() {
                self.escalate_to.clone()
            } else {
                r.escalate_to.clone()
            },
            repeat_after: r.repeat_after.or(self.repeat_after),
        }
    }
}

/// Routes `labels` through `routes`.
pub fn route(routes: &[Route], labels: &Labels) -> Routing {
    let mut out = Routing::default();
    walk(routes, labels, &Params::default(), &mut out);
    out
}

fn walk(nodes: &[Route], l: &Labels, inherited: &Params, out: &mut Routing) -> bool {
    let mut matched = false;
    for node in nodes.iter().filter(|n| n.matcher.matches(l)) {
        matched = true;
        let p = inherited.under(node);
        if !walk(&node.children, l, &p, out) {
            for d in &p.departments {
                if !out.departments.contains(d) {
                    out.departments.push(d.clone());
                }
            }
            if out.escalate_after.is_none() && p.escalate_after.is_some() {
                out.escalate_after = p.escalate_after;
                out.escalate_to = p.escalate_to.clone();
            }
            out.repeat_after = out.repeat_after.or(p.repeat_after);
        }
        if !node.continue_matching {
            break;
        }
    }
    matched
}

/// While an alarm matching `source` is active, alarms matching `target` whose `equal` labels
/// have the same values are inhibited: stored, not pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inhibit {
    pub source: Matcher,
    pub target: Matcher,
    pub equal: Vec<String>,
}

impl Inhibit {
    /// The built-in one: a bus that is down explains its devices' comm alarms.
    pub fn bus_explains_its_devices() -> Self {
        Inhibit {
            source: Matcher(vec![(
                "rule".into(),
                vec![super::rules::BUS_OFFLINE.into()],
            )]),
            target: Matcher(vec![("category".into(), vec!["comm".into()])]),
            equal: vec!["bus".into()],
        }
    }

    pub fn inhibits(&self, source: &Labels, target: &Labels) -> bool {
        source != target
            && self.source.matches(source)
            && self.target.matches(target)
            && self.equal.iter().all(
                |name| matches!((source.get(name), target.get(name)), (Some(a), Some(b)) if a == b),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(category: Category, severity: Severity, building: &str) -> Labels {
        Labels {
            category,
            severity,
            rule: "r".into(),
            device: "d1".into(),
            bus: Some("bus-1".into()),
            building: Some(building.into()),
            floor: None,
            zone: None,
        }
    }

    fn m(pairs: &[(&str, &[&str])]) -> Matcher {
        Matcher(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    fn to(departments: &[&str], matcher: Matcher) -> Route {
        Route {
            matcher,
            departments: departments.iter().map(|s| s.to_string()).collect(),
            ..Route::default()
        }
    }

    #[test]
    fn the_first_matching_route_wins_unless_it_continues() {
        let mut fire = to(&["fire-control"], m(&[("category", &["fire"])]));
        let everything = to(&["duty"], Matcher::default());
        let l = labels(Category::Fire, Severity::Critical, "3号楼");
        let r = route(&[fire.clone(), everything.clone()], &l);
        assert_eq!(r.departments, vec!["fire-control"]);

        fire.continue_matching = true;
        let r = route(&[fire, everything.clone()], &l);
        assert_eq!(r.departments, vec!["fire-control", "duty"]);

        let lift = labels(Category::Lift, Severity::Major, "3号楼");
        let r = route(
            &[to(&["x"], m(&[("category", &["fire"])])), everything],
            &lift,
        );
        assert_eq!(r.departments, vec!["duty"]);
    }

    #[test]
    fn a_child_route_refines_its_parent_and_inherits_escalation() {
        let mut parent = to(&["facility"], m(&[("category", &["energy", "comm"])]));
        parent.escalate_after = Some(Duration::from_secs(600));
        parent.escalate_to = vec!["manager".into()];
        parent.children = vec![to(&["b5-team"], m(&[("building", &["5号楼"])]))];

        let b5 = labels(Category::Energy, Severity::Minor, "5号楼");
        let r = route(std::slice::from_ref(&parent), &b5);
        assert_eq!(r.departments, vec!["b5-team"]);
        assert_eq!(r.escalate_after, Some(Duration::from_secs(600)));
        assert_eq!(r.escalate_to, vec!["manager"]);

        let b3 = labels(Category::Energy, Severity::Minor, "3号楼");
        assert_eq!(route(&[parent], &b3).departments, vec!["facility"]);
    }

    #[test]
    fn nothing_matching_routes_nowhere() {
        let l = labels(Category::Energy, Severity::Warning, "1号楼");
        let r = route(&[to(&["x"], m(&[("severity", &["critical"])]))], &l);
        assert!(r.departments.is_empty());
    }

    #[test]
    fn a_dead_bus_inhibits_the_comm_alarms_of_its_devices_only() {
        let rule = Inhibit::bus_explains_its_devices();
        let bus = Labels {
            rule: "bus_offline".into(),
            device: "bus-1".into(),
            ..labels(Category::Comm, Severity::Major, "")
        };
        let behind = Labels {
            rule: "offline".into(),
            ..labels(Category::Comm, Severity::Major, "3号楼")
        };
        assert!(rule.inhibits(&bus, &behind));
        let elsewhere = Labels {
            bus: Some("bus-2".into()),
            ..behind.clone()
        };
        assert!(!rule.inhibits(&bus, &elsewhere));
        let mqtt = Labels {
            bus: None,
            ..behind.clone()
        };
        assert!(!rule.inhibits(&bus, &mqtt));
        let fire = Labels {
            category: Category::Fire,
            ..behind
        };
        assert!(!rule.inhibits(&bus, &fire));
        assert!(!rule.inhibits(&bus, &bus));
    }
}
