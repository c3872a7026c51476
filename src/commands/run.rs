//! `parkhub run`: the hub, until SIGTERM or Ctrl-C; SIGHUP reloads the config.
//!
//! A reload checks the new config first. A config with mistakes is refused (logged, and told to
//! systemd as the service's status) and the running hub carries on unchanged. A good one stops
//! the hub cleanly (history flushed, pushes left in the outbox) and exits with
//! [`EXIT_RELOAD`], which the unit restarts at once (`RestartForceExitStatus=`): history,
//! alarms with their state, the outbox and the uplink's queue live on disk and are picked up by
//! the new process.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tracing::{error, info};

use crate::app::{shutdown_signal, App};
use crate::config;

/// How long in-flight polls may take to finish at shutdown.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The exit status asking the service manager to start the hub again with its new config.
pub const EXIT_RELOAD: u8 = 75;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(d) => return Ok(super::report_config_errors(&d)),
    };
    let mut app = App::start(&loaded).await?;
    crate::service::ready(&format!(
        "{} devices; API on {}",
        loaded.config.devices.iter().filter(|d| d.enabled).count(),
        app.api_addr
    ));
    let mut reload = false;
    let ran = app
        .run_until(async {
            reload = until_stop_or_good_reload(path).await;
        })
        .await;
    info!(reload, "stopping");
    crate::service::stopping();
    app.stop(STOP_DEADLINE).await?;
    // A source that died is an error: exit non-zero so that systemd restarts the hub.
    ran?;
    Ok(if reload {
        info!("restarting with the new config");
        ExitCode::from(EXIT_RELOAD)
    } else {
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM or Ctrl-C (false), or a SIGHUP whose config checks (true).
async fn until_stop_or_good_reload(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
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
    {
        let _ = path;
        shutdown_signal().await;
        false
    }
}
