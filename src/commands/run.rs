//! `parkhub run`: the hub, until SIGTERM or Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tracing::info;

use crate::app::{shutdown_signal, App};
use crate::config;

/// How long in-flight polls may take to finish at shutdown.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(d) => return Ok(super::report_config_errors(&d)),
    };
    let mut app = App::start(&loaded).await?;
    let ran = app.run_until(shutdown_signal()).await;
    info!("stopping");
    app.stop(STOP_DEADLINE).await?;
    // A source that died is an error: exit non-zero so that systemd restarts the hub.
    ran?;
    Ok(ExitCode::SUCCESS)
}
