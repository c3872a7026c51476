use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use parkhub::cli::{Cli, Command, ProfilesCommand};
use parkhub::commands;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    parkhub::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    // The demo talks to its user on stdout; only warnings interrupt it. rumqttd logs every
    // client that comes and goes, at error level when one leaves abruptly: that is noise a
    // broken device would turn into a flood. The hub reports its broker's state itself
    // (`--log rumqttd=info` shows rumqttd's own lines).
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn,rumqttd=off"
    } else {
        "info,rumqttd=off"
    };
    let filter = cli
        .log
        .clone()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let result = match cli.command {
        Command::Check { config } => commands::check::run(&config),
        Command::Profiles {
            command,
            profiles_dir,
        } => match command {
            ProfilesCommand::List => commands::profiles::list(profiles_dir.as_deref()),
            ProfilesCommand::Show { id } => commands::profiles::show(&id, profiles_dir.as_deref()),
        },
        Command::History(args) => commands::history::run(&args),
        Command::User(args) => commands::user::run(&args),
        Command::Run { config } => {
            runtime().and_then(|rt| rt.block_on(commands::run::run(&config)))
        }
        Command::UplinkTest { config } => {
            runtime().and_then(|rt| rt.block_on(commands::uplink_test::run(&config)))
        }
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(commands::demo::run(args))),
        Command::Probe(args) => runtime().and_then(|rt| rt.block_on(commands::probe::probe(args))),
        Command::Scan(args) => runtime().and_then(|rt| rt.block_on(commands::probe::scan(args))),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`parkhub profiles list | head`): nothing left to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
