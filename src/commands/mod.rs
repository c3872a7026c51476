//! One module per subcommand.

pub mod check;
pub mod demo;
pub mod history;
pub mod probe;
pub mod profiles;
pub mod run;
pub mod uplink_test;
pub mod user;

use std::process::ExitCode;

use crate::config::Diagnostics;

/// Exit code of a config that does not check.
pub const EXIT_CONFIG: u8 = 2;

/// Prints every config error and says how many there were.
pub fn report_config_errors(d: &Diagnostics) -> ExitCode {
    for e in &d.0 {
        eprintln!("{e}");
    }
    let n = d.0.len();
    eprintln!(
        "{n} error{} in the configuration",
        if n == 1 { "" } else { "s" }
    );
    ExitCode::from(EXIT_CONFIG)
}
