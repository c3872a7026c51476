//! `parkhub run`: the hub, until SIGTERM or Ctrl-C; SIGHUP reloads the config.
//!
//! A reload checks the new config first. A config with mistakes is refused (logged, and told to
//! systemd as the service's status) and the running hub carries on unchanged. A good one stops
//! the hub cleanly (history flushed, pushes left in the outbox) and the process executes itself
//! again, keeping its pid, so the same works under systemd (`RELOADING=1`, then `READY=1`) and
//! by hand: history, alarms with their state, the outbox and the uplink's queue live on disk
//! and are picked up by the new image.
//!
//! Starting over rather than changing the running hub piece by piece: every part (the embedded
//! broker above all, which serves until its process ends) starts exactly as at boot, so a
//! reload can leave nothing half-changed. It costs a poll or two.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::app::{shutdown_signal, App};
use crate::config;

/// How long in-flight polls may take to finish at shutdown.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How long READY=1 waits for the hub's MQTT subscriptions.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(5);

/// The exit status asking the service manager to start the hub again with its new config, when
/// it cannot start itself again in place.
pub const EXIT_RELOAD: u8 = 75;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    // Taken over first: until then SIGHUP's default action ends the process, and systemd may
    // send one as soon as it has READY=1.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup = None::<()>;
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(d) => return Ok(super::report_config_errors(&d)),
    };
    let mut app = App::start(&loaded).await?;
    // Ready means sensors are heard: with the embedded broker, devices reconnect the moment it
    // listens, and what they publish before the hub subscribes reaches nobody.
    if !app.subscribed(SUBSCRIBE_WITHIN).await {
        warn!(
            "the MQTT broker has not confirmed the hub's subscriptions within {} s; going on",
            SUBSCRIBE_WITHIN.as_secs()
        );
    }
    crate::service::ready(&format!(
        "{} devices; API on {}",
        loaded.config.devices.iter().filter(|d| d.enabled).count(),
        app.api_addr
    ));
    let mut reload = false;
    let ran = app
        .run_until(async {
            reload = until_stop_or_good_reload(path, hup).await;
        })
        .await;
    info!(reload, "stopping");
    if reload {
        crate::service::reloading();
    } else {
        crate::service::stopping();
    }
    app.stop(STOP_DEADLINE).await?;
    // A source that died is an error: exit non-zero so that systemd restarts the hub.
    ran?;
    if !reload {
        return Ok(ExitCode::SUCCESS);
    }
    info!("starting again with the new config");
    let e = exec_self();
    error!(error = %e, "cannot start again in place: exiting for the service manager to restart the hub");
    Ok(ExitCode::from(EXIT_RELOAD))
}

/// Replaces this process with a fresh run of the same program and arguments; returns only on
/// failure. `/proc/self/exe` is the image running now even if the package replaced the file on
/// disk (an upgrade restarts the service itself).
fn exec_self() -> std::io::Error {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "parkhub".into());
        std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .exec()
    }
    #[cfg(not(unix))]
    {
        std::io::Error::other("not on this platform")
    }
}

/// Waits for SIGTERM or Ctrl-C (false), or a SIGHUP whose config checks (true).
#[cfg(unix)]
async fn until_stop_or_good_reload(path: &Path, hup: Option<tokio::signal::unix::Signal>) -> bool {
    let Some(mut hup) = hup else {
        shutdown_signal().await;
        return false;
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return false,
            _ = hup.recv() => match config::load(path) {
                Ok(_) => return true,
                Err(d) => {
                    let first = d.0.first().map(|e| e.to_string()).unwrap_or_default();
                    error!(
                        errors = d.0.len(),
                        first = %first,
                        "config reload refused: the running config is kept (parkhub check --config {} lists every mistake)",
                        path.display()
                    );
                    crate::service::status(&format!("config reload refused: {first}"));
                }
            },
        }
    }
}

#[cfg(not(unix))]
async fn until_stop_or_good_reload(_: &Path, _: Option<()>) -> bool {
    shutdown_signal().await;
    false
}
