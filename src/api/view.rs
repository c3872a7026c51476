//! The JSON the API answers with. Kept apart from the store's rows so that a column added
//! there never changes the contract of DESIGN.md by accident.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::alarm::store::{AlarmRow, Delivery, EventRow};

/// RFC 3339 in UTC with milliseconds: the store keeps milliseconds, and one fixed form lets
/// clients compare timestamps as strings.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Alarm)]
pub struct AlarmView {
    pub id: i64,
    /// `unacked`, `acked`, `rtn_unacked` (cleared, not yet acknowledged) or `normal` (closed).
    #[schema(value_type = String)]
    pub state: &'static str,
    pub severity: String,
    pub category: String,
    /// The device, or the bus for a bus alarm (`scope` says which).
    pub device_id: String,
    pub point: Option<String>,
    pub message: String,
    pub raised_at: String,
    pub acked_by: Option<String>,
    pub acked_at: Option<String>,
    pub cleared_at: Option<String>,
    pub closed_at: Option<String>,
    /// Whether the condition holds now.
    pub condition: bool,
    pub escalated: bool,
    /// Inhibited by another alarm, in maintenance, or shelved: nobody is told of it now.
    pub suppressed: bool,
    pub rule: String,
    /// `device`, `bus` or `hub`.
    #[schema(value_type = String)]
    pub scope: &'static str,
    /// The value that last decided the condition.
    pub value: Option<serde_json::Value>,
}

impl AlarmView {
    /// Marks a shelved alarm as suppressed (the store keeps shelves apart from alarms).
    pub fn shelved(mut self, on_shelf: bool) -> Self {
        self.suppressed |= on_shelf;
        self
    }
}

impl From<&AlarmRow> for AlarmView {
    fn from(a: &AlarmRow) -> Self {
        Self {
            id: a.id,
            state: a.state.as_str(),
            severity: a.severity.clone(),
            category: a.category.clone(),
            device_id: a.key.scope.id().to_string(),
            point: a.key.point.as_deref().map(str::to_owned),
            message: a.message.clone(),
            raised_at: rfc3339(a.raised_at),
            acked_by: a.acked_by.clone(),
            acked_at: a.acked_at.map(rfc3339),
            cleared_at: a.cleared_at.map(rfc3339),
            closed_at: a.closed_at.map(rfc3339),
            condition: a.condition,
            escalated: a.escalated,
            suppressed: a.suppressed,
            rule: a.key.rule.to_string(),
            scope: a.key.scope.kind(),
            // Stored as JSON text; a value that does not parse is still worth showing.
            value: a.value.as_deref().map(|v| {
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()))
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = AlarmEvent)]
pub struct EventView {
    pub ts: String,
    pub event: String,
    pub who: Option<String>,
    pub comment: Option<String>,
}

impl From<&EventRow> for EventView {
    fn from(e: &EventRow) -> Self {
        Self {
            ts: rfc3339(e.ts),
            event: e.event.clone(),
            who: e.who.clone(),
            comment: e.comment.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    pub id: i64,
    pub channel: String,
    pub department: String,
    pub event: String,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created: String,
    pub delivered_at: Option<String>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id,
            channel: d.channel.clone(),
            department: d.department.clone(),
            event: d.event.clone(),
            state: d.state.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            created: rfc3339(d.created),
            delivered_at: d.delivered_at.map(rfc3339),
        }
    }
}

/// One alarm with its history, for `GET /alarms/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlarmDetail {
    #[serde(flatten)]
    pub alarm: AlarmView,
    pub events: Vec<EventView>,
    pub deliveries: Vec<DeliveryView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{AlarmKey, AlarmState, Scope};
    use std::sync::Arc;

    #[test]
    fn an_alarm_shows_its_device_point_and_times_in_rfc3339_utc() {
        let t = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let row = AlarmRow {
            id: 7,
            key: AlarmKey {
                scope: Scope::Device(Arc::from("smoke-1")),
                rule: Arc::from("smoke"),
                point: Some(Arc::from("smoke")),
            },
            state: AlarmState::Acked,
            condition: true,
            latched: true,
            severity: "critical".into(),
            category: "fire".into(),
            message: "烟雾报警".into(),
            value: Some("true".into()),
            raised_at: t,
            acked_at: Some(t),
            acked_by: Some("duty".into()),
            cleared_at: None,
            closed_at: None,
            suppressed: false,
            escalated: false,
        };
        let json = serde_json::to_value(AlarmView::from(&row)).unwrap();
        assert_eq!(json["device_id"], "smoke-1");
        assert_eq!(json["point"], "smoke");
        assert_eq!(json["state"], "acked");
        assert_eq!(json["raised_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["acked_by"], "duty");
        assert_eq!(json["cleared_at"], serde_json::Value::Null);
        assert_eq!(json["value"], true);
        assert_eq!(json["scope"], "device");
    }
}
