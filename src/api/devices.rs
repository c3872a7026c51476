//! Devices as the console and scripts see them: status, statistics and latest values, and the
//! overview page's counts and park layout.

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::view::rfc3339;
use super::{ApiError, Ctx, Viewer};
use crate::alarm::store::Listing;
use crate::alarm::Scope;
use crate::config::Location;
use crate::hub::{DeviceState, DeviceStats, Latest};

#[derive(Debug, Serialize)]
pub struct DeviceView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub profile: &'a str,
    pub category: &'a str,
    /// `null` until the first poll or message has settled it.
    pub online: Option<bool>,
    pub last_seen: Option<String>,
    pub location: &'a Location,
    pub last_error: Option<&'a str>,
    pub stats: &'a DeviceStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<BTreeMap<&'a str, LatestView<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct LatestView<'a> {
    pub value: &'a crate::reading::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'a str>,
    pub ts: String,
}

impl<'a> From<&'a Latest> for LatestView<'a> {
    fn from(l: &'a Latest) -> Self {
        Self {
            value: &l.value,
            unit: l.unit.as_deref(),
            ts: rfc3339(l.ts),
        }
    }
}

fn view(d: &DeviceState, with_points: bool) -> DeviceView<'_> {
    DeviceView {
        id: &d.info.id,
        name: &d.info.name,
        profile: &d.info.profile,
        category: &d.info.category,
        online: d.online,
        last_seen: d.last_seen.map(rfc3339),
        location: &d.info.location,
        last_error: d.last_error.as_deref(),
        stats: &d.stats,
        points: with_points.then(|| points(d)),
    }
}

fn points(d: &DeviceState) -> BTreeMap<&str, LatestView<'_>> {
    d.points
        .iter()
        .map(|(k, v)| (&**k, LatestView::from(v)))
        .collect()
}

fn device(s: &Ctx, id: &str) -> Result<DeviceState, ApiError> {
    s.state
        .hub
        .device(id)
        .ok_or_else(|| ApiError::NotFound(format!("no device `{id}`")))
}

/// Every device with its status and statistics.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    responses((status = 200, description = "The devices", body = Vec<super::openapi::Device>))
)]
pub(super) async fn list(_: Viewer, State(s): State<Ctx>) -> Json<serde_json::Value> {
    let devices = s.state.hub.devices();
    Json(json!(devices
        .iter()
        .map(|d| view(d, false))
        .collect::<Vec<_>>()))
}

/// One device with its latest values.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "The device's id")),
    responses(
        (status = 200, description = "The device", body = super::openapi::Device),
        (status = 404, description = "No such device", body = super::error::ErrorBody),
    )
)]
pub(super) async fn one(
    _: Viewer,
    State(s): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id?;
    let d = device(&s, &id)?;
    Ok(Json(json!(view(&d, true))))
}

/// A device's latest value of each point.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/latest",
    tag = "devices",
    params(("id" = String, Path, description = "The device's id")),
    responses(
        (status = 200, description = "Point name → latest value",
            body = std::collections::BTreeMap<String, super::openapi::Latest>),
        (status = 404, description = "No such device", body = super::error::ErrorBody),
    )
)]
pub(super) async fn latest(
    _: Viewer,
    State(s): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id?;
    let d = device(&s, &id)?;
    Ok(Json(json!(points(&d))))
}

/// Severities from the most to the least urgent: a tile shows the first it has.
const SEVERITIES: [&str; 4] = ["critical", "major", "minor", "warning"];

fn worse(a: &str, b: &str) -> bool {
    let rank = |s: &str| {
        SEVERITIES
            .iter()
            .position(|x| *x == s)
            .unwrap_or(SEVERITIES.len())
    };
    rank(a) < rank(b)
}

/// The overview page: device and alarm counts, today's use, the park's layout.
#[utoipa::path(
    get,
    path = "/api/v1/overview",
    tag = "devices",
    responses(
        (status = 200, description = "The overview", body = super::openapi::Overview),
        (status = 500, description = "A database read failed", body = super::error::ErrorBody),
    )
)]
pub(super) async fn overview(
    _: Viewer,
    State(s): State<Ctx>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let open = super::read(&s, |store| store.list(Listing::Open, usize::MAX)).await?;
    let mut by_category: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_severity: BTreeMap<&str, u64> = BTreeMap::new();
    let mut worst: HashMap<&str, &str> = HashMap::new();
    let mut unacked = 0;
    for a in &open {
        *by_category.entry(&a.category).or_default() += 1;
        *by_severity.entry(&a.severity).or_default() += 1;
        if a.acked_at.is_none() {
            unacked += 1;
        }
        if let Scope::Device(id) = &a.key.scope {
            let w = worst.entry(id).or_insert(&a.severity);
            if worse(&a.severity, w) {
                *w = &a.severity;
            }
        }
    }

    let devices = s.state.hub.devices();
    let (mut online, mut offline, mut unknown) = (0, 0, 0);
    // building → floor → tiles, in configuration order of names (sorted, so stable).
    let mut layout: BTreeMap<&str, BTreeMap<&str, Vec<serde_json::Value>>> = BTreeMap::new();
    for d in &devices {
        match d.online {
            Some(true) => online += 1,
            Some(false) => offline += 1,
            None => unknown += 1,
        }
        let loc = &d.info.location;
        layout
            .entry(loc.building.as_deref().unwrap_or(""))
            .or_default()
            .entry(loc.floor.as_deref().unwrap_or(""))
            .or_default()
            .push(json!({
                "id": &*d.info.id,
                "name": d.info.name,
                "category": d.info.category,
                "online": d.online,
                "alarm": worst.get(&*d.info.id),
            }));
    }
    let layout: Vec<_> = layout
        .into_iter()
        .map(|(building, floors)| {
            json!({
                "building": building,
                "floors": floors
                    .into_iter()
                    .map(|(floor, devices)| json!({ "floor": floor, "devices": devices }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();

    let today = super::history::today(&s, &devices).await?;
    let site = &s.state.site;
    Ok(Json(json!({
        "hub": { "id": site.id, "name": site.name },
        "devices": {
            "total": devices.len(),
            "online": online,
            "offline": offline,
            "unknown": unknown,
        },
        "alarms": {
            "active": open.len(),
            "unacked": unacked,
            "by_category": by_category,
            "by_severity": by_severity,
        },
        "today": today,
        "layout": layout,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_is_worse_than_every_other_severity_and_unknown_ones_rank_last() {
        assert!(worse("critical", "major"));
        assert!(worse("major", "warning"));
        assert!(!worse("warning", "critical"));
        assert!(worse("minor", "bogus"));
        assert!(!worse("bogus", "warning"));
    }
}
