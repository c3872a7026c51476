//! Alarms: rules that watch readings and device status, the ISA-18.2 lifecycle of each alarm,
//! routing to departments, and the engine that runs them.
//!
//! The pure parts (rules and conditions, lifecycle, routing) know nothing of time sources,
//! SQLite or the network; `engine` ties them to the hub's events, a clock and the store.

pub mod condition;
pub mod engine;
pub mod lifecycle;
pub mod route;
pub mod rules;
pub mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How bad an alarm is. Ordered: `Critical` is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Severity::Critical => "紧急",
            Severity::Major => "重要",
            Severity::Minor => "次要",
            Severity::Warning => "提示",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "critical" => Severity::Critical,
            "major" => Severity::Major,
            "minor" => Severity::Minor,
            "warning" => Severity::Warning,
            other => {
                return Err(format!(
                    "`{other}` is not one of: critical, major, minor, warning"
                ))
            }
        })
    }
}

/// What an alarm is about; routes match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Fire,
    Security,
    Lift,
    Energy,
    Charger,
    Environment,
    Comm,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Fire => "fire",
            Category::Security => "security",
            Category::Lift => "lift",
            Category::Energy => "energy",
            Category::Charger => "charger",
            Category::Environment => "environment",
            Category::Comm => "comm",
        }
    }

    /// The word a guard reads first: 【火警】, 【电梯】…
    pub fn zh(self) -> &'static str {
        match self {
            Category::Fire => "火警",
            Category::Security => "安防",
            Category::Lift => "电梯",
            Category::Energy => "能耗",
            Category::Charger => "充电",
            Category::Environment => "环境",
            Category::Comm => "通信",
        }
    }

    pub fn en(self) -> &'static str {
        match self {
            Category::Fire => "FIRE",
            Category::Security => "Security",
            Category::Lift => "Lift",
            Category::Energy => "Energy",
            Category::Charger => "Charger",
            Category::Environment => "Environment",
            Category::Comm => "Comm",
        }
    }

    /// The category of alarms on a device of a profile category that names no other.
    pub fn of_profile(category: &str) -> Category {
        match category {
            "fire" => Category::Fire,
            "security" => Category::Security,
            "lift" => Category::Lift,
            "charger" => Category::Charger,
            "environment" => Category::Environment,
            _ => Category::Energy,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fire" => Category::Fire,
            "security" => Category::Security,
            "lift" => Category::Lift,
            "energy" => Category::Energy,
            "charger" => Category::Charger,
            "environment" => Category::Environment,
            "comm" => Category::Comm,
            other => {
                return Err(format!(
                "`{other}` is not one of: fire, security, lift, energy, charger, environment, comm"
            ))
            }
        })
    }
}

/// Alarms that go out at once: never grouped, rate-limited last, first in every queue
/// (GB 26875.1: fire alarms take priority over any other traffic).
pub fn is_urgent(severity: Severity, category: Category) -> bool {
    severity == Severity::Critical || category == Category::Fire
}

/// What an alarm watches: a device, a whole bus (a gateway or RS-485 line), or the hub itself
/// (its uplink).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Device(Arc<str>),
    Bus(Arc<str>),
    Hub(Arc<str>),
}

impl Scope {
    pub fn id(&self) -> &Arc<str> {
        match self {
            Scope::Device(id) | Scope::Bus(id) | Scope::Hub(id) => id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Device(_) => "device",
            Scope::Bus(_) => "bus",
            Scope::Hub(_) => "hub",
        }
    }
}

/// One alarm at a time per key: a device's (or bus's) rule, on one point (a port's point for
/// rules on every port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlarmKey {
    pub scope: Scope,
    pub rule: Arc<str>,
    pub point: Option<Arc<str>>,
}

impl fmt::Display for AlarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scope.id(), self.rule)?;
        if let Some(p) = &self.point {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// The ISA-18.2 states of an alarm that exists (normal alarms are closed records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Active, nobody has acknowledged it.
    Unacked,
    /// Active, acknowledged.
    Acked,
    /// The condition is gone, nobody has acknowledged it.
    RtnUnacked,
    /// Closed: cleared and acknowledged (or taken out of service).
    Normal,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Unacked => "unacked",
            AlarmState::Acked => "acked",
            AlarmState::RtnUnacked => "rtn_unacked",
            AlarmState::Normal => "normal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unacked" => AlarmState::Unacked,
            "acked" => AlarmState::Acked,
            "rtn_unacked" => AlarmState::RtnUnacked,
            "normal" => AlarmState::Normal,
            _ => return None,
        })
    }

    pub fn is_open(self) -> bool {
        self != AlarmState::Normal
    }
}

/// What happened to an alarm; the first five are what pushes carry (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Raised,
    Acknowledged,
    Cleared,
    Escalated,
    Repeated,
    Shelved,
    Unshelved,
    /// Closed because its device was taken out of service.
    OutOfService,
    /// Raised while a bus alarm inhibits it: stored, not pushed.
    Suppressed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Raised => "raised",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Cleared => "cleared",
            EventKind::Escalated => "escalated",
            EventKind::Repeated => "repeated",
            EventKind::Shelved => "shelved",
            EventKind::Unshelved => "unshelved",
            EventKind::OutOfService => "out_of_service",
            EventKind::Suppressed => "suppressed",
        }
    }

    /// Whether staff are told of it.
    pub fn is_pushed(self) -> bool {
        matches!(
            self,
            EventKind::Raised
                | EventKind::Acknowledged
                | EventKind::Cleared
                | EventKind::Escalated
                | EventKind::Repeated
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_from_warning_to_critical() {
        assert!(Severity::Critical > Severity::Major);
        assert!(Severity::Minor > Severity::Warning);
        assert_eq!("major".parse::<Severity>(), Ok(Severity::Major));
        assert!("urgent".parse::<Severity>().is_err());
    }

    #[test]
    fn critical_or_fire_is_urgent_and_nothing_else_is() {
        assert!(is_urgent(Severity::Critical, Category::Lift));
        assert!(is_urgent(Severity::Warning, Category::Fire));
        assert!(!is_urgent(Severity::Major, Category::Comm));
    }
}
