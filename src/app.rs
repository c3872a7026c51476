//! The running hub: history writer, live state, one task per bus, the MQTT source, the alarm
//! engine with its push channels, and the API; started from a checked config and stopped in
//! order (sources first, then the writer, which flushes what it holds, then alarms and API).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alarm::engine::{AlarmFeed, Engine, EngineConfig, EngineHandle};
use crate::alarm::store::{self as alarm_store, AlarmStore};
use crate::config::Loaded;
use crate::hub::{DeviceInfo, Hub};
use crate::modbus::ModbusBus;
use crate::mqtt::MqttSource;
use crate::ocpp::central::{Central, CentralConfig};
use crate::ocpp::sessions::Sessions;
use crate::store::{self, SeriesDef, WriterHandle, WriterOptions};

/// Batches of readings waiting for the writer; beyond this the sources wait (back-pressure).
/// A batch is one poll of a meter or up to 512 MQTT messages (about 200 KB): 32 of them are
/// ample slack for a commit, and bound the memory a slow disk can make the hub hold.
const STORE_QUEUE: usize = 32;

pub struct App {
    pub hub: Arc<Hub>,
    pub writer: WriterHandle,
    pub db_path: std::path::PathBuf,
    /// How many times the broker has confirmed the hub's MQTT subscriptions (with `[mqtt]`).
    pub mqtt_subscribed: Option<tokio::sync::watch::Receiver<u64>>,
    pub alarms: Arc<AlarmStore>,
    pub engine: EngineHandle,
    /// The uplink's queue (with `[uplink]`).
    pub uplink: Option<Arc<crate::uplink::queue::UplinkQueue>>,
    /// Where the HTTP API listens (the configured address, with the port the OS gave for 0).
    pub api_addr: std::net::SocketAddr,
    /// The OCPP central system (with EV chargers in the config).
    pub ocpp: Option<Arc<Central>>,
    /// Where chargers connect: `[ocpp] listen`, else the API's address.
    pub ocpp_addr: Option<std::net::SocketAddr>,
    sources: JoinSet<()>,
    stop_sources: CancellationToken,
    /// The alarm engine, the push lanes and the API.
    services: JoinSet<()>,
    stop_services: CancellationToken,
}

impl App {
    /// Starts everything the config describes.
    pub async fn start(loaded: &Loaded) -> anyhow::Result<Self> {
        Self::start_with(loaded, None).await
    }

    /// Starts with the given GPIO pins (tests, the demo) rather than the machine's.
    pub async fn start_with(
        loaded: &Loaded,
        pins: Option<Arc<dyn crate::gpio::Pins>>,
    ) -> anyhow::Result<Self> {
        let cfg = &loaded.config;
        let pins = crate::gpio::for_config(loaded, pins);
        let data_dir = &cfg.hub.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        let db_path = data_dir.join(store::DB_FILE);

        let mut series = Vec::new();
        let mut devices = Vec::new();
        for d in cfg.devices.iter().filter(|d| d.enabled) {
            let Some(profile) = loaded.device_profiles.get(&d.id) else {
                continue;
            };
            for p in profile.visible_points() {
                series.push(SeriesDef {
                    device: d.id.clone(),
                    point: p.name.to_string(),
                    unit: p.unit.as_deref().map(str::to_owned),
                    kind: p.kind,
                });
            }
            devices.push(DeviceInfo {
                id: Arc::from(d.id.as_str()),
                name: d.display_name().to_string(),
                profile: profile.id.clone(),
                category: profile.category.clone(),
                location: d.location.clone(),
            });
        }

        let (tx, rx) = mpsc::channel(STORE_QUEUE);
        let opts = WriterOptions::new(
            db_path.clone(),
            cfg.hub.timezone.0,
            cfg.history.clone(),
            series,
        );
        let writer = store::spawn_writer(opts, rx)?;

        // The MQTT source first: the embedded broker is where MQTT push channels publish.
        let mqtt = MqttSource::start(loaded).await?;
        let alarms_path = data_dir.join(alarm_store::DB_FILE);
        let alarms = Arc::new(
            AlarmStore::open(&alarms_path)
                .with_context(|| format!("opening {}", alarms_path.display()))?,
        );
        let stop_services = CancellationToken::new();
        let mut services = JoinSet::new();
        let notifier = crate::notify::start(
            cfg,
            alarms.clone(),
            mqtt.as_ref().map(MqttSource::options),
            &pins,
            &mut services,
            stop_services.clone(),
        )?;
        let engine_cfg = EngineConfig::from_loaded(loaded);
        let (feed, events) = AlarmFeed::new(&engine_cfg);
        services.spawn(crate::memory::trim_task(stop_services.clone()));
        services.spawn(storage_alarm(
            writer.stats().storage_low.subscribe(),
            feed.clone(),
            stop_services.clone(),
        ));
        let uplink = crate::uplink::start(
            loaded,
            Some(feed.clone()),
            &mut services,
            stop_services.clone(),
        )?;
        let uplink_feed = uplink.as_ref().map(|(f, _)| f.clone());
        let store_queue = tx.downgrade();
        let store_queue_watch = tx.downgrade();
        let hub = Hub::with_feeds(devices, Some(tx), Some(feed), uplink_feed.clone());
        let ocpp = match CentralConfig::from_loaded(loaded) {
            None => None,
            Some(c) => {
                let path = data_dir.join(crate::ocpp::sessions::DB_FILE);
                let sessions = Arc::new(
                    Sessions::open(&path).with_context(|| format!("opening {}", path.display()))?,
                );
                Some(Central::new(c, hub.clone(), sessions)?)
            }
        };
        let (engine, engine_task) = Engine::new(engine_cfg, alarms.clone(), notifier)
            .with_uplink(uplink_feed)
            .with_live(hub.live().clone())
            .start(events, stop_services.clone());
        services.spawn(engine_task);
        let listener = std::net::TcpListener::bind(cfg.api.listen)
            .with_context(|| format!("api.listen: cannot listen on {}", cfg.api.listen))?;
        listener.set_nonblocking(true)?;
        let api_addr = listener.local_addr()?;
        let users_path = data_dir.join(crate::users::DB_FILE);
        let users = Arc::new(
            crate::users::Users::open(&users_path)
                .with_context(|| format!("opening {}", users_path.display()))?,
        );
        let mut api = crate::api::ApiState::new(
            hub.clone(),
            alarms.clone(),
            engine.clone(),
            cfg.api.token.clone(),
        );
        api.site = crate::api::Site {
            id: cfg.hub.id.clone(),
            name: cfg.hub.name.clone().unwrap_or_else(|| cfg.hub.id.clone()),
            language: cfg.hub.language.as_str().to_string(),
            tz: cfg.hub.timezone.0,
        };
        api.history = Some(db_path.clone());
        api.users = Some(users);
        api.gauges = crate::api::Gauges {
            writer: Some(writer.stats().clone()),
            store_queue: Some(store_queue),
            uplink: uplink.as_ref().map(|(_, q)| q.clone()),
        };
        api.cors_origins = cfg.api.cors_origins.clone();
        api.tls = cfg.api.tls.is_some();
        api.stop = stop_services.clone();
        api.ocpp = ocpp.clone();
        let mut router = crate::api::router(api);
        let mut ocpp_addr = None;
        if let Some(central) = &ocpp {
            match cfg.ocpp.listen {
                None => {
                    router = router.merge(central.router());
                    ocpp_addr = Some(api_addr);
                }
                Some(addr) => {
                    let l = std::net::TcpListener::bind(addr)
                        .with_context(|| format!("ocpp.listen: cannot listen on {addr}"))?;
                    l.set_nonblocking(true)?;
                    ocpp_addr = Some(l.local_addr()?);
                    let (r, stop) = (central.router(), stop_services.clone());
                    // With [api.tls], chargers' passwords travel inside TLS here too (wss://).
                    let tls = cfg.api.tls.clone();
                    services.spawn(async move {
                        let served = match tls {
                            None => match tokio::net::TcpListener::from_std(l) {
                                Ok(l) => crate::api::serve(l, r, stop).await.map_err(Into::into),
                                Err(e) => Err(e.into()),
                            },
                            Some(t) => crate::api::serve_tls(l, r, &t.cert, &t.key, stop).await,
                        };
                        if let Err(e) = served {
                            warn!(error = %format!("{e:#}"), "the OCPP listener stopped");
                        }
                    });
                }
            }
        }
        let stop_api = stop_services.clone();
        match cfg.api.tls.clone() {
            None => {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                services.spawn(async move {
                    if let Err(e) = crate::api::serve(listener, router, stop_api).await {
                        warn!(error = %e, "the HTTP API stopped");
                    }
                });
            }
            Some(tls) => {
                // Checked here, so that a bad certificate stops the start with a clear error
                // instead of leaving a hub without its console.
                crate::tls::server_config(&tls.cert, &tls.key)?;
                services.spawn(async move {
                    if let Err(e) =
                        crate::api::serve_tls(listener, router, &tls.cert, &tls.key, stop_api).await
                    {
                        warn!(error = %format!("{e:#}"), "the HTTPS API stopped");
                    }
                });
            }
        }

        let stop_sources = CancellationToken::new();
        let mut sources = JoinSet::new();
        for bus in &cfg.buses {
            let b = ModbusBus::from_config(loaded, bus, pins.as_ref())?;
            if b.device_count() == 0 {
                warn!(bus = %bus.id, "bus has no enabled devices; not polled");
                continue;
            }
            sources.spawn(b.run(hub.clone(), stop_sources.clone()));
        }
        if let Some(central) = &ocpp {
            sources.spawn(central.clone().watch(stop_sources.clone()));
        }
        let contacts = crate::gpio::source::contacts(loaded);
        if !contacts.is_empty() {
            let gpio = crate::gpio::source::GpioSource {
                contacts,
                pins: pins.clone(),
            };
            sources.spawn(gpio.run(hub.clone(), stop_sources.clone()));
        }
        if let Some(interval) = crate::service::watchdog_interval() {
            let health = crate::service::Health {
                engine: engine.clone(),
                writer: writer.stats().clone(),
                store_queue: store_queue_watch,
            };
            info!(?interval, "systemd watchdog on");
            services.spawn(crate::service::watchdog(
                health,
                interval,
                stop_services.clone(),
            ));
        }
        let mut mqtt_subscribed = None;
        if let Some(mqtt) = mqtt {
            mqtt_subscribed = Some(mqtt.subscriptions());
            sources.spawn(mqtt.run(hub.clone(), stop_sources.clone()));
        }
        info!(
            hub = %cfg.hub.id,
            devices = cfg.devices.len(),
            buses = cfg.buses.len(),
            history = %db_path.display(),
            alarms = %alarms_path.display(),
            api = %api_addr,
            "parkhub running"
        );
        Ok(Self {
            hub,
            writer,
            db_path,
            mqtt_subscribed,
            alarms,
            engine,
            api_addr,
            ocpp,
            ocpp_addr,
            uplink: uplink.map(|(_, q)| q),
            sources,
            stop_sources,
            services,
            stop_services,
        })
    }

    /// Runs until `until` resolves. A source task only ends when told to: one that ends on its
    /// own (a bug, a panic) is an error, so that the hub is restarted rather than run half-blind.
    pub async fn run_until(
        &mut self,
        until: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            _ = until => Ok(()),
            Some(ended) = self.sources.join_next() => match ended {
                Err(e) if e.is_panic() => Err(anyhow::anyhow!("a bus task panicked: {e}")),
                _ => Err(anyhow::anyhow!("a bus task ended by itself")),
            },
            Some(ended) = self.services.join_next() => match ended {
                Err(e) if e.is_panic() => Err(anyhow::anyhow!("an alarm or API task panicked: {e}")),
                _ => Err(anyhow::anyhow!("an alarm or API task ended by itself")),
            },
        }
    }

    /// Stops the sources (waiting up to `deadline` for in-flight polls), then lets the writer
    /// store what it holds and finish.
    /// Waits until the hub's MQTT client has its subscriptions (at once without `[mqtt]`);
    /// false if that took longer than `within`. With the embedded broker, a sensor that
    /// publishes before then is acknowledged by the broker but heard by nobody.
    pub async fn subscribed(&self, within: Duration) -> bool {
        let Some(mut subscribed) = self.mqtt_subscribed.clone() else {
            return true;
        };
        tokio::time::timeout(within, subscribed.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub async fn stop(mut self, deadline: Duration) -> anyhow::Result<()> {
        self.stop_sources.cancel();
        let drained = tokio::time::timeout(deadline, async {
            while self.sources.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("sources did not stop within {deadline:?}; aborting them");
            self.sources.abort_all();
        }
        // Alarms and pushes next: what a lane has not delivered stays in the outbox for the
        // next start.
        self.stop_services.cancel();
        if tokio::time::timeout(deadline, async {
            while self.services.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            warn!("alarm and API tasks did not stop within {deadline:?}; aborting them");
            self.services.abort_all();
        }
        // The writer stops once the last sender (inside the hub) is gone; the central system
        // holds the hub too.
        drop(self.ocpp);
        drop(self.hub);
        self.writer.join().await
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Keeps the hub's storage alarm in step with the history writer's view of the disk (which it
/// has from before the start, so a standing alarm is neither cleared nor raised again).
async fn storage_alarm(
    mut low: tokio::sync::watch::Receiver<bool>,
    feed: AlarmFeed,
    stop: CancellationToken,
) {
    loop {
        let now = *low.borrow_and_update();
        feed.hub(crate::alarm::rules::STORAGE_LOW, now);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = low.changed() => if changed.is_err() {
                // The writer is gone, which happens only while the hub stops.
                stop.cancelled().await;
                return;
            },
        }
    }
}
