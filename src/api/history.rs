//! History and energy use read from the history database: raw readings or summaries of one
//! point, and consumption per meter, building or tenant, as JSON or CSV.
//!
//! Reads run on the blocking pool through a few kept connections: opening SQLite per request
//! would cost more than most queries.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::json;

use super::energy::{self, By, Meter, Period, Utility};
use super::view::rfc3339;
use super::{ApiError, Ctx, Viewer};
use crate::hub::DeviceState;
use crate::store::History;
use crate::timeparse::{format_local, parse_time};

/// Connections to the history database, and so queries at once: SQLite reads are CPU-bound
/// here, and more than the box has cores only queues them up inside the pool instead of here.
const READERS: usize = 4;

/// Raw readings in one answer at most; beyond, the caller is asked to use `step`.
pub const MAX_ROWS: usize = 200_000;

/// A small pool of history connections: requests beyond `READERS` wait their turn, since
/// opening SQLite per request costs more than most queries. Hand-written because it is a
/// `Vec` behind a lock and a semaphore: the pool crates for rusqlite pin other rusqlite
/// versions than the hub's.
pub struct Readers {
    path: PathBuf,
    tz: Tz,
    turns: tokio::sync::Semaphore,
    idle: Mutex<Vec<History>>,
}

impl Readers {
    pub fn new(path: PathBuf, tz: Tz) -> Self {
        Self {
            path,
            tz,
            turns: tokio::sync::Semaphore::new(READERS),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&History) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let h = match kept {
            Some(h) => h,
            None => History::open(&self.path, self.tz)?,
        };
        let out = f(&h);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(h);
        out
    }
}

async fn read<T: Send + 'static>(
    s: &Ctx,
    f: impl FnOnce(&History) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let readers = s
        .history
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this hub keeps no history".into()))?;
    let _turn = readers
        .turns
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the hub is stopping".into()))?;
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let readers = s
            .history
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("this hub keeps no history".into()))?;
        readers
            .with(f)
            .map_err(|e| ApiError::Internal(format!("reading history: {e:#}")))
    })
    .await?
}

fn time(s: Option<&str>, tz: Tz, key: &str) -> Result<Option<i64>, ApiError> {
    s.map(|v| parse_time(v, tz).map_err(|e| ApiError::BadRequest(format!("{key}: {e}"))))
        .transpose()
}

/// `from..to` of a request: the last `span` seconds up to now by default.
fn range(from: Option<&str>, to: Option<&str>, tz: Tz, span: i64) -> Result<(i64, i64), ApiError> {
    let to = time(to, tz, "to")?.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let from = time(from, tz, "from")?.unwrap_or(to.saturating_sub(span));
    if from > to {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    Ok((from, to))
}

fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "format must be `json` or `csv`, not `{other}`"
        ))),
    }
}

fn csv(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// The device's id.
    device: String,
    /// The point's name.
    point: String,
    /// RFC 3339, unix seconds or a local `YYYY-MM-DD`, in 1970..2100; default: a day before
    /// `to`.
    from: Option<String>,
    /// As `from`; default: now.
    to: Option<String>,
    /// Summarise per this many seconds (1 to 31 622 400) instead of raw readings.
    #[param(minimum = 1, maximum = 31_622_400)]
    step: Option<i64>,
    /// `json` (the default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// One point's readings (or, for a text point, its changes), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/history",
    tag = "devices",
    params(HistoryQuery),
    responses(
        (status = 200, description = "The readings",
            content((Vec<super::openapi::HistoryRow> = "application/json"), (String = "text/csv"))),
        (status = 404, description = "No such device, or no history of that point", body = super::error::ErrorBody),
        (status = 500, description = "A history read failed", body = super::error::ErrorBody),
        (status = 503, description = "This hub keeps no history, or is stopping", body = super::error::ErrorBody),
    )
)]
pub(super) async fn history(
    _: Viewer,
    State(s): State<Ctx>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let tz = s.state.site.tz;
    let (from, to) = range(q.from.as_deref(), q.to.as_deref(), tz, 86_400)?;
    let csv_out = wants_csv(q.format.as_deref())?;
    if let Some(step) = q.step {
        if !(1..=366 * 86_400).contains(&step) {
            return Err(ApiError::BadRequest(
                "step must be between 1 and 31622400 seconds".into(),
            ));
        }
    }
    if s.state.hub.device(&q.device).is_none() {
        return Err(ApiError::NotFound(format!("no device `{}`", q.device)));
    }
    let (device, point, step) = (q.device.clone(), q.point.clone(), q.step);
    let rows = read(&s, move |h| {
        let Some(series) = h.series(&device, &point)? else {
            return Ok(None);
        };
        let mut rows = h.values(&series, from, to, step)?;
        if rows.len() > MAX_ROWS {
            rows.truncate(MAX_ROWS + 1);
        }
        // A text point (a state, a fault label) has its changes instead of numbers.
        let mut states = if rows.is_empty() {
            h.states(&series, from, to)?
        } else {
            Vec::new()
        };
        states.truncate(MAX_ROWS + 1);
        Ok(Some((rows, states)))
    })
    .await?
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "device `{}` has no history of `{}`",
            q.device, q.point
        ))
    })?;
    let (rows, states) = rows;
    if rows.len() > MAX_ROWS || states.len() > MAX_ROWS {
        return Err(ApiError::BadRequest(format!(
            "more than {MAX_ROWS} readings in that range: narrow it or ask for a step"
        )));
    }
    let stamp = |ts: i64| rfc3339(chrono::DateTime::from_timestamp(ts, 0).unwrap_or_default());
    if csv_out {
        let mut out = String::from("ts,value\n");
        for (ts, v) in &rows {
            let _ = writeln!(out, "{},{}", format_local(*ts, tz), v);
        }
        for (ts, v) in &states {
            let _ = writeln!(out, "{},{}", format_local(*ts, tz), csv_field(v));
        }
        return Ok(csv(&format!("{}-{}", q.device, q.point), out));
    }
    if !states.is_empty() {
        let rows: Vec<_> = states
            .iter()
            .map(|(ts, v)| json!({ "ts": stamp(*ts), "value": v }))
            .collect();
        return Ok(Json(rows).into_response());
    }
    let rows: Vec<_> = rows
        .iter()
        .map(|(ts, v)| {
            json!({
                "ts": stamp(*ts),
                "value": crate::reading::round_for_display(*v),
            })
        })
        .collect();
    Ok(Json(rows).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct EnergyQuery {
    /// `device`, `building` (the default) or `tenant`.
    #[param(pattern = "^(device|building|tenant)$")]
    by: Option<String>,
    /// `hour`, `day` (the default) or `month`, in the park's time zone.
    #[param(pattern = "^(hour|day|month)$")]
    period: Option<String>,
    /// `electricity` (the default) or `water`.
    #[param(pattern = "^(electricity|water)$")]
    kind: Option<String>,
    /// As in `/history`; default: a day, 30 days or a year before `to`, by period.
    from: Option<String>,
    /// As in `/history`; default: now.
    to: Option<String>,
    /// `json` (the default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

fn meters(devices: &[DeviceState], utility: Utility) -> Vec<Meter> {
    devices
        .iter()
        .filter(|d| d.info.category == utility.category())
        .map(|d| Meter {
            id: d.info.id.to_string(),
            name: d.info.name.clone(),
            location: d.info.location.clone(),
        })
        .collect()
}

/// Each meter's consumption per history step over `from..=to`; a meter history does not know
/// (yet) uses nothing.
async fn usage(
    s: &Ctx,
    meters: &[Meter],
    utility: Utility,
    step: i64,
    from: i64,
    to: i64,
) -> Result<Vec<Vec<(i64, f64)>>, ApiError> {
    let ids: Vec<String> = meters.iter().map(|m| m.id.clone()).collect();
    read(s, move |h| {
        ids.iter()
            .map(|id| match h.series(id, utility.point())? {
                Some(series) => h.consumption(&series, from, to, step),
                None => Ok(Vec::new()),
            })
            .collect()
    })
    .await
}

/// Energy or water use per device, building or tenant, per hour, day or month.
#[utoipa::path(
    get,
    path = "/api/v1/energy",
    tag = "devices",
    params(EnergyQuery),
    responses(
        (status = 200, description = "The use",
            content((super::openapi::Energy = "application/json"), (String = "text/csv"))),
        (status = 500, description = "A history read failed", body = super::error::ErrorBody),
        (status = 503, description = "This hub keeps no history, or is stopping", body = super::error::ErrorBody),
    )
)]
pub(super) async fn energy(
    _: Viewer,
    State(s): State<Ctx>,
    q: Result<Query<EnergyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let by = match q.by.as_deref() {
        None => By::Building,
        Some(v) => By::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!("by must be device, building or tenant, not `{v}`"))
        })?,
    };
    let period = match q.period.as_deref() {
        None => Period::Day,
        Some(v) => Period::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!("period must be hour, day or month, not `{v}`"))
        })?,
    };
    let utility = match q.kind.as_deref() {
        None => Utility::Electricity,
        Some(v) => Utility::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!("kind must be electricity or water, not `{v}`"))
        })?,
    };
    let csv_out = wants_csv(q.format.as_deref())?;
    let tz = s.state.site.tz;
    let (from, to) = range(
        q.from.as_deref(),
        q.to.as_deref(),
        tz,
        period.default_span(),
    )?;
    let buckets = energy::buckets(tz, period, from, to).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "more than {} {}s in that range: narrow it or ask for a longer period",
            period.max_buckets(),
            period.as_str()
        ))
    })?;
    let devices = s.state.hub.devices();
    let meters = meters(&devices, utility);
    let groups = energy::groups(&meters, by);
    // Whole buckets: the first may start before `from`.
    let start = buckets.first().copied().unwrap_or(from);
    let usage = usage(&s, &meters, utility, period.history_step(), start, to).await?;
    let series = energy::assemble(tz, period, &buckets, &groups, &usage);
    let label = |group: &str| -> String {
        match by {
            By::Device => meters
                .iter()
                .find(|m| m.id == group)
                .map_or_else(|| group.to_string(), |m| m.name.clone()),
            _ => group.to_string(),
        }
    };
    if csv_out {
        let mut out = String::from("ts");
        for sr in &series {
            let _ = write!(out, ",{}", csv_field(&label(&sr.group)));
        }
        out.push('\n');
        for (i, b) in buckets.iter().enumerate() {
            out.push_str(&format_local(*b, tz));
            for sr in &series {
                match sr.values[i] {
                    Some(v) => {
                        let _ = write!(out, ",{}", energy::round_use(v));
                    }
                    None => out.push(','),
                }
            }
            out.push('\n');
        }
        return Ok(csv(
            &format!(
                "energy-{}-{}-{}",
                utility.as_str(),
                by.as_str(),
                period.as_str()
            ),
            out,
        ));
    }
    let series: Vec<_> = series
        .iter()
        .map(|sr| {
            json!({
                "group": sr.group,
                "label": label(&sr.group),
                "values": sr.values.iter().map(|v| v.map(energy::round_use)).collect::<Vec<_>>(),
                "total": energy::round_use(sr.total),
            })
        })
        .collect();
    Ok(Json(json!({
        "by": by.as_str(),
        "period": period.as_str(),
        "kind": utility.as_str(),
        "unit": utility.unit(),
        "ts": buckets,
        "series": series,
    }))
    .into_response())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Today's (local) electricity and water use of the park, for the overview: the buildings'
/// use as the energy page counts it.
pub(super) async fn today(s: &Ctx, devices: &[DeviceState]) -> Result<serde_json::Value, ApiError> {
    let tz = s.state.site.tz;
    let now = chrono::Utc::now().timestamp();
    let midnight = crate::store::rollup::day_start(tz, now);
    // The whole local day: a meter whose clock runs a little ahead still counts today.
    let end_of_day = crate::store::rollup::next_day_start(tz, now) - 1;
    let since = rfc3339(chrono::DateTime::from_timestamp(midnight, 0).unwrap_or_default());
    if s.history.is_none() {
        return Ok(json!({ "electricity_kwh": null, "water_m3": null, "since": since }));
    }
    let mut totals = Vec::new();
    for utility in [Utility::Electricity, Utility::Water] {
        let meters = meters(devices, utility);
        if meters.is_empty() {
            // A park without water meters has no water use to show, not a use of zero.
            totals.push(None);
            continue;
        }
        let groups = energy::groups(&meters, By::Building);
        let usage = usage(s, &meters, utility, 86_400, midnight, end_of_day).await?;
        let total: f64 = groups
            .iter()
            .flat_map(|(_, idx)| idx.iter())
            .flat_map(|&i| usage[i].iter().map(|(_, v)| v))
            .sum();
        totals.push(Some(energy::round_use(total)));
    }
    Ok(json!({ "electricity_kwh": totals[0], "water_m3": totals[1], "since": since }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("3号楼"), "3号楼");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
