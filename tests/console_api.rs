//! The console's API against a whole running hub: meters polled from the in-process Modbus
//! server, a smoke detector on the embedded MQTT broker, history in SQLite, console users in
//! their own SQLite file, the router on a loopback port, and reqwest as the browser.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use parkhub::app::App;
use parkhub::config::Role;
use parkhub::reading::{Reading, Value};
use parkhub::users::Users;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(20);

const VIEWER: &str = "viewer-token-5b1e";
const OPERATOR: &str = "operator-token-c47d";
const ADMIN: &str = "admin-token-90fa";
const PASSWORD: &str = "correct horse battery";

fn sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn config(dir: &std::path::Path, meters: std::net::SocketAddr, mqtt: u16, extra: &str) -> String {
    format!(
        r#"[hub]
id = "hz-test"
name = "测试园区"
data_dir = "{data}"
timezone = "Asia/Shanghai"
[api]
listen = "127.0.0.1:0"
{extra}
[[api.token]]
name = "guard-room"
role = "viewer"
sha256 = "{viewer}"
[[api.token]]
name = "duty"
role = "operator"
sha256 = "{operator}"
[[api.token]]
name = "root"
role = "admin"
sha256 = "{admin}"
[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt}"
[[bus]]
id = "meters"
kind = "tcp"
address = "{meters}"
timeout_ms = 500
[[device]]
id = "em-b3-main"
name = "3号楼总表"
profile = "chint-dtsu666"
bus = "meters"
unit = 1
poll_interval_s = 1
location = {{ building = "3号楼", floor = "1F" }}
[[device]]
id = "em-b3-t1"
name = "华数科技分表"
profile = "chint-dtsu666"
bus = "meters"
unit = 2
poll_interval_s = 1
location = {{ building = "3号楼", floor = "2F", tenant = "华数科技" }}
[[device]]
id = "wm-b3"
name = "3号楼水表"
profile = "tuf-2000m"
bus = "meters"
unit = 3
poll_interval_s = 1
location = {{ building = "3号楼", floor = "B1" }}
[[device]]
id = "smoke-b3-2f-07"
name = "3号楼2层烟感07"
profile = "mqtt-smoke-detector"
topic = "park/b3/2f/smoke-07"
location = {{ building = "3号楼", floor = "2F" }}
"#,
        data = dir.display(),
        viewer = sha256(VIEWER),
        operator = sha256(OPERATOR),
        admin = sha256(ADMIN),
    )
}

/// A whole hub with console users `guard` (viewer), `duty` (operator) and `chief` (admin).
struct Park {
    app: Option<App>,
    base: String,
    mqtt: u16,
    _sim: SimServer,
    _dir: tempfile::TempDir,
}

impl Park {
    async fn start() -> Self {
        Self::start_with("").await
    }

    async fn start_with(api_extra: &str) -> Self {
        let sim = SimServer::start(
            &[(1, "chint-dtsu666"), (2, "chint-dtsu666"), (3, "tuf-2000m")],
            false,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mqtt = free_port();
        let loaded = load(&config(dir.path(), sim.addr, mqtt, api_extra), dir.path());
        let users = Users::open(&dir.path().join(parkhub::users::DB_FILE)).unwrap();
        users.add("guard", Role::Viewer, PASSWORD).unwrap();
        users.add("duty", Role::Operator, PASSWORD).unwrap();
        users.add("chief", Role::Admin, PASSWORD).unwrap();
        drop(users);
        let app = App::start(&loaded).await.expect("the hub starts");
        let scheme = if api_extra.contains("[api.tls]") {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", app.api_addr);
        Self {
            app: Some(app),
            base,
            mqtt,
            _sim: sim,
            _dir: dir,
        }
    }

    fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        http_client()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str, token: &str) -> Json {
        let res = self.get(path, token).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    /// Waits until every meter has been polled and is online.
    async fn meters_online(&self) {
        let hub = self.app().hub.clone();
        wait_until(LIMIT, "the meters online", || {
            ["em-b3-main", "em-b3-t1", "wm-b3"]
                .iter()
                .all(|d| hub.device(d).is_some_and(|s| s.online == Some(true)))
        })
        .await;
    }

    /// Logs in as `user`; returns a client holding the session cookie, and the response.
    async fn login(&self, user: &str, password: &str) -> (reqwest::Client, reqwest::Response) {
        let c = cookie_client();
        let res = c
            .post(self.url("/api/v1/login"))
            .json(&json!({ "user": user, "password": password }))
            .send()
            .await
            .unwrap();
        (c, res)
    }

    async fn smoke(&self, on: bool) {
        let mut dev = MqttDevice::connect(self.mqtt, "smoke-07", None, None)
            .await
            .expect("the embedded broker takes the detector");
        dev.publish(
            "park/b3/2f/smoke-07",
            json!({ "smoke": on, "temperature": 24.1, "battery": 87, "tamper": false }).to_string(),
        )
        .await;
    }
}

impl Drop for Park {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            // A clean stop in the background: the test's runtime may already be going.
            tokio::spawn(async move {
                let _ = app.stop(Duration::from_secs(5)).await;
            });
        }
    }
}

// ---- access ----

/// Every route of the API with the least role it needs.
const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/api/v1/me", Role::Viewer),
    ("GET", "/api/v1/overview", Role::Viewer),
    ("GET", "/api/v1/devices", Role::Viewer),
    ("GET", "/api/v1/devices/em-b3-main", Role::Viewer),
    ("GET", "/api/v1/devices/em-b3-main/latest", Role::Viewer),
    (
        "GET",
        "/api/v1/history?device=em-b3-main&point=voltage_a",
        Role::Viewer,
    ),
    ("GET", "/api/v1/energy", Role::Viewer),
    ("GET", "/api/v1/alarms", Role::Viewer),
    ("GET", "/api/v1/alarms/1", Role::Viewer),
    ("GET", "/metrics", Role::Viewer),
    ("POST", "/api/v1/alarms/1/ack", Role::Operator),
    ("POST", "/api/v1/alarms/1/shelve", Role::Operator),
    (
        "POST",
        "/api/v1/devices/em-b3-main/maintenance",
        Role::Operator,
    ),
    ("GET", "/api/v1/users", Role::Admin),
    ("POST", "/api/v1/users", Role::Admin),
    ("DELETE", "/api/v1/users/nobody", Role::Admin),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_401_without_a_credential_and_403_to_a_role_below_its_own() {
    let park = Park::start().await;
    let (guard, res) = park.login("guard", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (duty, res) = park.login("duty", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens = [
        (Role::Viewer, VIEWER),
        (Role::Operator, OPERATOR),
        (Role::Admin, ADMIN),
    ];
    for &(method, path, need) in ROUTES {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let req = || http_client().request(m.clone(), park.url(path));
        let what = format!("{method} {path}");

        let res = req().send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{what} without a credential"
        );
        let res = req().bearer_auth("not-a-token").send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{what} with a bad token"
        );
        let res = req()
            .header("cookie", "parkhub_session=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{what} with a forged cookie"
        );

        for (role, token) in tokens {
            let res = req().bearer_auth(token).send().await.unwrap();
            let s = res.status();
            if role < need {
                assert_eq!(s, StatusCode::FORBIDDEN, "{what} as {role:?}");
            } else {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{what} as {role:?}: {s}"
                );
            }
        }
        // The same through console sessions.
        for (role, c) in [(Role::Viewer, &guard), (Role::Operator, &duty)] {
            let s = c
                .request(m.clone(), park.url(path))
                .send()
                .await
                .unwrap()
                .status();
            if role < need {
                assert_eq!(s, StatusCode::FORBIDDEN, "{what} as session {role:?}");
            } else {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{what} as session {role:?}: {s}"
                );
            }
        }
    }
    // Health and the console page are open.
    assert_eq!(
        http_client()
            .get(park.url("/api/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http_client()
            .get(park.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_an_http_only_same_site_strict_cookie_and_logout_ends_the_session() {
    let park = Park::start().await;
    let (c, res) = park.login("duty", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("parkhub_session="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains("Secure"),
        "plain HTTP cannot carry a Secure cookie: {set}"
    );
    let body: Json = res.json().await.unwrap();
    assert_eq!(body, json!({ "user": "duty", "role": "operator" }));

    let me: Json = c
        .get(park.url("/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "duty");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["hub"]["name"], "测试园区");
    assert_eq!(me["hub"]["language"], "zh-CN");
    assert_eq!(me["hub"]["timezone"], "Asia/Shanghai");

    let res = c.post(park.url("/api/v1/logout")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The cookie the browser held is dead on the hub too, not just forgotten by the browser.
    let value = set.split(';').next().unwrap().to_string();
    let res = http_client()
        .get(park.url("/api/v1/me"))
        .header("cookie", value)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_refused_with_429_and_retry_after() {
    let park = Park::start().await;
    let (_, res) = park.login("duty", "wrong password").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let msg: Json = res.json().await.unwrap();
    assert_eq!(msg["error"], "wrong user name or password");
    // An unknown user is told exactly the same.
    let (_, res) = park.login("nobody", "wrong password").await;
    let msg2: Json = res.json().await.unwrap();
    assert_eq!(msg, msg2);

    let mut limited = None;
    for _ in 0..10 {
        let (_, res) = park.login("duty", "wrong password").await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = limited.expect("the hub stops answering wrong passwords");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    let body: Json = res.json().await.unwrap();
    assert_eq!(body["retry_after_s"], retry);
    // Even the right password waits out the lock: guessing on is pointless.
    let (_, res) = park.login("duty", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_and_removes_console_users_and_weak_passwords_are_refused() {
    let park = Park::start().await;
    let c = http_client();
    let res = c
        .post(park.url("/api/v1/users"))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "night-guard", "role": "viewer", "password": "short" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = c
        .post(park.url("/api/v1/users"))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "night-guard", "role": "viewer", "password": "a long night shift" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let list = park.get_json("/api/v1/users", ADMIN).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"night-guard"), "{list}");
    assert!(
        list.to_string().find("hash").is_none(),
        "no hash leaves the hub: {list}"
    );

    let (guard, res) = park.login("night-guard", "a long night shift").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = c
        .delete(park.url("/api/v1/users/night-guard"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A removed user's open session ends with them.
    let res = guard.get(park.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

// ---- devices, history, energy ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_their_latest_values_follow_the_contract() {
    let park = Park::start().await;
    park.meters_online().await;
    let list = park.get_json("/api/v1/devices", VIEWER).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    let em = list.iter().find(|d| d["id"] == "em-b3-main").unwrap();
    for key in [
        "id",
        "name",
        "profile",
        "category",
        "online",
        "last_seen",
        "location",
        "stats",
    ] {
        assert!(em.get(key).is_some(), "devices lack {key}: {em}");
    }
    assert_eq!(em["name"], "3号楼总表");
    assert_eq!(em["category"], "electricity_meter");
    assert_eq!(em["online"], true);
    assert_eq!(em["location"]["building"], "3号楼");
    assert!(em["stats"]["polls"].as_u64().unwrap() >= 1);
    assert!(em.get("points").is_none(), "the list stays small: {em}");
    let smoke = list.iter().find(|d| d["id"] == "smoke-b3-2f-07").unwrap();
    assert_eq!(smoke["online"], Json::Null, "not heard from yet");

    let latest = park
        .get_json("/api/v1/devices/em-b3-main/latest", VIEWER)
        .await;
    let v = &latest["voltage_a"];
    assert!(v["value"].as_f64().unwrap() > 100.0, "{latest}");
    assert_eq!(v["unit"], "V");
    assert!(chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).is_ok());
    let one = park.get_json("/api/v1/devices/em-b3-main", VIEWER).await;
    assert_eq!(one["points"]["voltage_a"]["unit"], "V");

    let res = park.get("/api/v1/devices/nope/latest", VIEWER).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// Readings of a meter's counter at local times of the park, through the hub into history.
async fn feed(app: &App, device: &str, point: &str, unit: &str, at: &[(&str, f64)]) {
    let tz = chrono_tz::Asia::Shanghai;
    let batch: Vec<Reading> = at
        .iter()
        .map(|(t, v)| {
            let naive = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M").unwrap();
            Reading {
                device: device.into(),
                point: point.into(),
                value: Value::Number(*v),
                unit: Some(unit.into()),
                ts: tz.from_local_datetime(&naive).unwrap().with_timezone(&Utc),
            }
        })
        .collect();
    app.hub.ingest(batch).await;
    app.writer.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_raw_readings_steps_and_csv() {
    let park = Park::start().await;
    let app = park.app();
    // Yesterday, park time: raw readings are kept a week.
    let tz = chrono_tz::Asia::Shanghai;
    let day = (Utc::now() - chrono::Duration::days(1))
        .with_timezone(&tz)
        .date_naive();
    let at = |hm: &str| format!("{day} {hm}");
    let (t0, t1, t2) = (at("10:00"), at("10:01"), at("10:30"));
    feed(
        app,
        "em-b3-main",
        "power_total",
        "W",
        &[
            (t0.as_str(), 1000.0),
            (t1.as_str(), 3000.0),
            (t2.as_str(), 2000.0),
        ],
    )
    .await;
    let q = format!("/api/v1/history?device=em-b3-main&point=power_total&from={day}T10:00:00%2B08:00&to={day}T11:00:00%2B08:00");
    let raw = park.get_json(&q, VIEWER).await;
    let values: Vec<f64> = raw
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, vec![1000.0, 3000.0, 2000.0], "{raw}");
    assert_eq!(raw[0]["ts"], format!("{day}T02:00:00.000Z"));

    // Unix seconds work as well as RFC 3339; a step of an hour averages the gauge.
    let from = tz
        .from_local_datetime(&day.and_hms_opt(10, 0, 0).unwrap())
        .unwrap()
        .timestamp();
    let stepped = park
        .get_json(
            &format!(
                "/api/v1/history?device=em-b3-main&point=power_total&from={from}&to={}&step=3600",
                from + 3599
            ),
            VIEWER,
        )
        .await;
    assert_eq!(
        stepped,
        json!([{ "ts": format!("{day}T02:00:00.000Z"), "value": 2000.0 }])
    );

    let res = park.get(&format!("{q}&format=csv"), VIEWER).await;
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().next(), Some("ts,value"));
    assert_eq!(
        csv.lines().nth(2),
        Some(format!("{day}T10:01:00+08:00,3000").as_str()),
        "{csv}"
    );

    for (bad, status) in [
        (
            "/api/v1/history?device=em-b3-main&point=power_total&from=yesterday",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=em-b3-main&point=power_total&step=0",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/history?device=em-b3-main", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=ghost&point=x",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/history?device=em-b3-main&point=nope",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let res = park.get(bad, VIEWER).await;
        assert_eq!(res.status(), status, "{bad}");
        let body: Json = res.json().await.unwrap();
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_sums_buildings_from_main_meters_and_tenants_from_their_own_in_json_and_csv() {
    let park = Park::start().await;
    let app = park.app();
    // Two local days of a building's main meter and a tenant's sub-meter, which the main
    // meter also measures.
    feed(
        app,
        "em-b3-main",
        "energy_import",
        "kWh",
        &[
            ("2026-02-01 00:00", 100.0),
            ("2026-02-01 23:59", 150.0),
            ("2026-02-02 23:59", 180.0),
        ],
    )
    .await;
    feed(
        app,
        "em-b3-t1",
        "energy_import",
        "kWh",
        &[
            ("2026-02-01 00:00", 10.0),
            ("2026-02-01 23:59", 30.0),
            ("2026-02-02 23:59", 35.0),
        ],
    )
    .await;
    let range = "from=2026-02-01T00:00:00%2B08:00&to=2026-02-02T23:59:59%2B08:00";
    let by_building = park
        .get_json(
            &format!("/api/v1/energy?by=building&period=day&{range}"),
            VIEWER,
        )
        .await;
    assert_eq!(by_building["unit"], "kWh");
    assert_eq!(by_building["ts"].as_array().unwrap().len(), 2);
    let b3 = &by_building["series"][0];
    assert_eq!(b3["group"], "3号楼");
    assert_eq!(b3["values"], json!([50.0, 30.0]), "{by_building}");
    assert_eq!(b3["total"], 80.0);

    let by_tenant = park
        .get_json(
            &format!("/api/v1/energy?by=tenant&period=day&{range}"),
            VIEWER,
        )
        .await;
    assert_eq!(
        by_tenant["series"],
        json!([{ "group": "华数科技", "label": "华数科技", "values": [20.0, 5.0], "total": 25.0 }])
    );

    let by_month = park
        .get_json(
            &format!("/api/v1/energy?by=device&period=month&{range}"),
            VIEWER,
        )
        .await;
    let main = by_month["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["group"] == "em-b3-main")
        .unwrap()
        .clone();
    assert_eq!(main["label"], "3号楼总表");
    assert_eq!(main["values"], json!([80.0]));

    let res = park
        .get(
            &format!("/api/v1/energy?by=tenant&period=day&{range}&format=csv"),
            VIEWER,
        )
        .await;
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let csv = res.text().await.unwrap();
    assert_eq!(
        csv,
        "ts,华数科技\n2026-02-01T00:00:00+08:00,20\n2026-02-02T00:00:00+08:00,5\n"
    );

    let res = park.get("/api/v1/energy?period=week", VIEWER).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = park
        .get("/api/v1/energy?period=hour&from=0&to=99999999", VIEWER)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "a range of too many buckets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_devices_alarms_and_lays_out_the_park() {
    let park = Park::start().await;
    park.meters_online().await;
    park.smoke(true).await;
    let hub = park.app().hub.clone();
    wait_until(LIMIT, "the detector online", || {
        hub.device("smoke-b3-2f-07")
            .is_some_and(|d| d.online == Some(true))
    })
    .await;
    let mut ov = Json::Null;
    for _ in 0..100 {
        ov = park.get_json("/api/v1/overview", VIEWER).await;
        if ov["alarms"]["active"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ov["hub"]["name"], "测试园区");
    assert_eq!(ov["devices"]["total"], 4);
    assert_eq!(ov["devices"]["online"], 4, "{ov}");
    assert_eq!(ov["alarms"]["by_category"]["fire"], 1, "{ov}");
    assert_eq!(ov["alarms"]["by_severity"]["critical"], 1, "{ov}");
    // Today's use is the main meter's consumption: 1 100 kWh more than its live reading a
    // second from now (the tenant's sub-meter, inside the building's, does not add).
    let now = park
        .app()
        .hub
        .latest("em-b3-main", "energy_import")
        .unwrap();
    let Value::Number(kwh) = now.value else {
        panic!("energy_import is a number")
    };
    let at = |s: i64| now.ts.max(Utc::now()) + chrono::Duration::seconds(s);
    for (s, v) in [(1, kwh + 1000.0), (2, kwh + 1100.0)] {
        park.app()
            .hub
            .ingest(vec![Reading {
                device: "em-b3-main".into(),
                point: "energy_import".into(),
                value: Value::Number(v),
                unit: Some("kWh".into()),
                ts: at(s),
            }])
            .await;
    }
    park.app().writer.flush().await.unwrap();
    let ov = park.get_json("/api/v1/overview", VIEWER).await;
    let today = ov["today"]["electricity_kwh"].as_f64().unwrap();
    assert!((1100.0..1200.0).contains(&today), "{ov}");
    assert!(ov["today"]["water_m3"].is_number(), "{ov}");
    let b3 = &ov["layout"][0];
    assert_eq!(b3["building"], "3号楼");
    let floors: Vec<&str> = b3["floors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["floor"].as_str().unwrap())
        .collect();
    assert_eq!(floors, ["1F", "2F", "B1"]);
    let second = &b3["floors"][1]["devices"];
    let smoke = second
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "smoke-b3-2f-07")
        .unwrap();
    assert_eq!(smoke["alarm"], "critical");
}

// ---- live ----

/// Reads server-sent events until `want` matches one (`event` name and its JSON data).
async fn next_event(
    res: &mut reqwest::Response,
    buf: &mut String,
    mut want: impl FnMut(&str, &Json) -> bool,
) -> (String, Json) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let json: Json = serde_json::from_str(&data).unwrap();
            if want(&name, &json) {
                return (name, json);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("the awaited event in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_readings_device_status_and_alarm_transitions_as_they_happen() {
    let park = Park::start().await;
    let (c, _) = park.login("duty", PASSWORD).await;
    let mut res = c.get(park.url("/api/v1/stream")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut buf = String::new();

    let (_, r) = next_event(&mut res, &mut buf, |n, d| {
        n == "reading" && d["device_id"] == "em-b3-main"
    })
    .await;
    assert!(r["point"].is_string() && r["ts"].is_string(), "{r}");

    park.smoke(true).await;
    let (_, d) = next_event(&mut res, &mut buf, |n, d| {
        n == "device" && d["device_id"] == "smoke-b3-2f-07"
    })
    .await;
    assert_eq!(d["online"], true);
    let (_, a) = next_event(&mut res, &mut buf, |n, d| {
        n == "alarm" && d["device_id"] == "smoke-b3-2f-07"
    })
    .await;
    assert_eq!(a["event"], "raised");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["category"], "fire");
    assert_eq!(a["state"], "unacked");

    let id = a["id"].as_i64().unwrap();
    let ack = c
        .post(park.url(&format!("/api/v1/alarms/{id}/ack")))
        .json(&json!({ "comment": "已派人查看" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), StatusCode::OK);
    let (_, a) = next_event(&mut res, &mut buf, |n, d| {
        n == "alarm" && d["id"] == id && d["event"] == "acknowledged"
    })
    .await;
    assert_eq!(a["state"], "acked");
    assert_eq!(
        a["acked_by"], "duty",
        "a session acts under its user's name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_polls_queues_alarms_and_write_latency() {
    let park = Park::start().await;
    park.meters_online().await;
    park.smoke(true).await;
    let app = park.app();
    let store = app.alarms.clone();
    wait_until(LIMIT, "the fire alarm", || {
        !store
            .list(parkhub::alarm::store::Listing::Open, 10)
            .unwrap()
            .is_empty()
    })
    .await;
    app.writer.flush().await.unwrap();
    let res = park.get("/metrics", VIEWER).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = res.text().await.unwrap();
    for needle in [
        "parkhub_device_polls_total{device=\"em-b3-main\"}",
        "parkhub_device_errors_total{device=\"em-b3-main\"} 0",
        "parkhub_device_rtt_seconds{device=\"em-b3-main\"}",
        "parkhub_device_online{device=\"wm-b3\"} 1",
        "parkhub_device_mqtt_messages_total{device=\"smoke-b3-2f-07\"} 1",
        "parkhub_mqtt_messages_total 1",
        "parkhub_store_queue_batches ",
        "parkhub_store_write_seconds_count ",
        "parkhub_alarms_active{severity=\"critical\",category=\"fire\"} 1",
        "# EOF",
    ] {
        assert!(text.contains(needle), "no `{needle}` in\n{text}");
    }
    let polls: f64 = text
        .lines()
        .find(|l| l.starts_with("parkhub_device_polls_total{device=\"em-b3-main\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(polls >= 1.0);
}

// ---- the console, CORS, TLS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_compressed_from_the_binary_with_a_strict_content_policy() {
    let park = Park::start().await;
    let res = http_client()
        .get(park.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["content-encoding"], "gzip");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = http_client()
        .get(park.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/assets/"),
        "the page loads its assets from the hub"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );
    let res = http_client()
        .get(park.url("/assets/vendor/uPlot.iife.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let res = http_client()
        .get(park.url("/assets/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_closed_unless_an_origin_is_configured_and_then_open_to_that_origin_only() {
    let preflight = |park: &Park, origin: &str| {
        http_client()
            .request(Method::OPTIONS, park.url("/api/v1/devices"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let closed = Park::start().await;
    let res = preflight(&closed, "https://brain.example.com")
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = http_client()
        .get(closed.url("/api/v1/devices"))
        .bearer_auth(VIEWER)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    drop(closed);

    let open = Park::start_with(r#"cors_origins = ["https://brain.example.com"]"#).await;
    let res = preflight(&open, "https://brain.example.com").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://brain.example.com"
    );
    let res = preflight(&open, "https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_configured_the_api_speaks_https_and_the_session_cookie_is_secure() {
    let certs = tempfile::tempdir().unwrap();
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = certs.path().join("hub.pem");
    let key_path = certs.path().join("hub.key");
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let park = Park::start_with(&format!(
        "[api.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert_path.display(),
        key_path.display()
    ))
    .await;
    assert!(park.base.starts_with("https://"));

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).unwrap();
    let c = http_client_trusting(roots, false);
    let health: Json = c
        .get(park.url("/api/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let res = c
        .post(park.url("/api/v1/login"))
        .json(&json!({ "user": "guard", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
    // Plain HTTP on the same port gets nothing.
    let plain = http_client()
        .get(park.url("/api/v1/health").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}
