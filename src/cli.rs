//! The command line of DESIGN.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Parity, Role};

pub const DEFAULT_CONFIG: &str = "/etc/parkhub/parkhub.toml";

#[derive(Debug, Parser)]
#[command(
    name = "parkhub",
    version,
    about = "Edge monitoring hub for digital small/micro-enterprise parks (数字化小微企业园)",
    propagate_version = true
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `parkhub=debug` (default: $RUST_LOG, else info).
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub.
    Run {
        /// The hub's config.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// A simulated park (meters on an in-process Modbus server) and the hub polling it.
    Demo(DemoArgs),
    /// Check a config and every profile it uses; print every error with file, line and key.
    Check {
        /// The config to check.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Read every point of one device once.
    Probe(ProbeArgs),
    /// List the unit ids that answer on a line.
    Scan(ScanArgs),
    /// The firmware profiles (bundled, plus a directory of your own).
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
        /// Also load the profiles in this directory.
        #[arg(long, global = true)]
        profiles_dir: Option<PathBuf>,
    },
    /// Export the history of one point.
    History(HistoryArgs),
    /// Send one test batch to the cloud and say whether its URL, token and signature work.
    UplinkTest {
        /// The hub's config.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The console's users: add, change a password, remove, list.
    User(UserArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    /// The hub's config (the users live in `<hub.data_dir>/console.sqlite`).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// The password is asked for (twice) on a terminal, else read as the first line of stdin;
/// never from the command line, where `ps` and the shell history would show it.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; asks for their password.
    Add {
        name: String,
        /// viewer, operator or admin: the roles of `[[api.token]]`.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Set a user's password (ends their sessions); asks for the new one.
    Passwd { name: String },
    /// Remove a user and end their sessions.
    Remove { name: String },
    /// One line per user: name, role, when added.
    List,
}

fn parse_role(s: &str) -> Result<Role, String> {
    crate::users::parse_role(s)
        .ok_or_else(|| format!("`{s}` is not a role: viewer, operator or admin"))
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// One line per profile.
    List,
    /// A profile's serial defaults and points.
    Show { id: String },
}

/// Where to reach a line, for `probe` and `scan`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "line")]
pub struct LineArgs {
    /// Modbus TCP device or gateway, host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// RTU through a serial server / DTU, host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub rtu_over_tcp: Option<String>,
    /// Local serial port (RS-485 adapter), e.g. /dev/ttyUSB0.
    #[arg(long, value_name = "DEV")]
    pub serial: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SerialArgs {
    /// Baud rate (default: the profile's, else 9600).
    #[arg(long)]
    pub baud: Option<u32>,
    /// N, E or O (default: the profile's, else N).
    #[arg(long)]
    pub parity: Option<Parity>,
    /// 7 or 8 (default: the profile's, else 8).
    #[arg(long, value_parser = clap::value_parser!(u8).range(7..=8))]
    pub data_bits: Option<u8>,
    /// 1 or 2 (default: the profile's, else 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: Option<u8>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Firmware profile id (see `parkhub profiles list`).
    #[arg(long)]
    pub profile: String,
    #[command(flatten)]
    pub line: LineArgs,
    #[command(flatten)]
    pub serial: SerialArgs,
    /// Modbus unit id, 1..247 (default: the profile's factory unit).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub unit: Option<u8>,
    /// DL/T 645 (12 digits) or CJ/T 188 (14 digits) meter address (`parkhub scan --protocol …`
    /// finds it).
    #[arg(long, value_name = "DIGITS")]
    pub address: Option<String>,
    /// Answer timeout per request.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// One JSON object per point and line: {"point":…,"value":…,"unit":…}.
    #[arg(long)]
    pub json: bool,
    /// Also load profiles from this directory.
    #[arg(long)]
    pub profiles_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// What the meters on the line speak. Modbus units are tried one by one; DL/T 645 and
    /// CJ/T 188 meters are asked for their address with one broadcast, which only one meter per
    /// line can answer cleanly (scan one at a time).
    #[arg(long, value_enum, default_value_t = ScanProtocol::Modbus)]
    pub protocol: ScanProtocol,
    #[command(flatten)]
    pub line: LineArgs,
    #[command(flatten)]
    pub serial: SerialArgs,
    /// Unit ids to try, e.g. `1-247` or `1-10,20`.
    #[arg(long, default_value = "1-247")]
    pub units: String,
    /// How long to wait for each unit.
    #[arg(long, default_value_t = 200)]
    pub timeout_ms: u64,
    /// Register to read from each unit (any answer, even an exception, means "there").
    #[arg(long, default_value_t = 0)]
    pub register: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanProtocol {
    Modbus,
    Dlt645,
    Cjt188,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The hub's config (for its data_dir and time zone).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Device id, as in the config.
    #[arg(long)]
    pub device: String,
    /// Point name, as in the device's profile.
    #[arg(long)]
    pub point: String,
    /// Start: RFC 3339, unix seconds or a local date YYYY-MM-DD (default: 24 hours ago).
    #[arg(long)]
    pub from: Option<String>,
    /// End: as --from (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Summarise per this many seconds (average; a counter's reading at the bucket's end).
    #[arg(long)]
    pub step: Option<i64>,
    /// A counter's consumption per --step (default 3600; 86400 gives local days).
    #[arg(long)]
    pub consumption: bool,
    /// CSV with a `ts,value` header instead of a table.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's history here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Seconds between the printed tables.
    #[arg(long, default_value_t = 5)]
    pub every: u64,
    /// Run N copies of the simulated park (meter lines, sensors, chargers, scripted faults),
    /// each with its own ids and ports: N times the load, for soak tests.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub scale: u16,
    /// Serve the console and API here instead of 127.0.0.1:8080 (or a free port when taken).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Parses `1-247`, `5`, `1-10,20,30-32` into unit ids.
pub fn parse_units(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| -> Result<u8, String> {
            s.parse::<u8>()
                .ok()
                .filter(|u| (1..=247).contains(u))
                .ok_or_else(|| format!("`{s}` is not a unit id in 1..247"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("range `{part}` runs backwards"));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err("no unit ids given".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unit_lists_accept_ranges_and_reject_nonsense() {
        assert_eq!(parse_units("1-3,7,2").unwrap(), vec![1, 2, 3, 7]);
        assert_eq!(parse_units("1-247").unwrap().len(), 247);
        assert!(parse_units("0-3").is_err());
        assert!(parse_units("5-2").is_err());
        assert!(parse_units("248").is_err());
        assert!(parse_units("").is_err());
    }

    #[test]
    fn probe_needs_exactly_one_line() {
        assert!(
            Cli::try_parse_from(["parkhub", "probe", "--profile", "x", "--unit", "1"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "parkhub",
            "probe",
            "--profile",
            "x",
            "--tcp",
            "a:1",
            "--serial",
            "/dev/x"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "parkhub",
            "probe",
            "--profile",
            "x",
            "--tcp",
            "a:1",
            "--unit",
            "1",
            "--json"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "parkhub",
            "probe",
            "--profile",
            "x",
            "--tcp",
            "a:1",
            "--unit",
            "300"
        ])
        .is_err());
    }
}
