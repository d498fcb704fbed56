#![doc = include_str!("../README.md")]

mod backends;
mod bench;
mod check;
#[cfg(feature = "nats")]
mod check_jetstream;
mod demo;
mod error;
mod frame;
mod output;
mod publish;
mod settings;
mod signals;
mod stats;
mod subscribe;
#[cfg(feature = "redis")]
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;
use crate::settings::Common;

/// One publish/subscribe tool for every backend of the library (memory,
/// NATS, Redis, MQTT), configured like the library: `--backend`,
/// `--config FILE` (or `MSIGHT_PUBSUB_CONFIG`), `--group`, and otherwise the
/// `MSIGHT_*` environment variables.
///
/// Exit codes: 0 success, 1 runtime failure (connect, auth, timeout, lost
/// frames or messages), 2 usage or configuration error, 130 / 143 stopped
/// by SIGINT / SIGTERM (after a clean stop and a summary on stderr).
#[derive(Debug, Parser)]
#[command(name = "pubsub", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish MESSAGE, each line of standard input, or a file's bytes.
    Pub(publish::PubArgs),
    /// Print the messages that arrive on one or more topics.
    Sub(subscribe::SubArgs),
    /// Measure publish/subscribe throughput and latency of the chosen backend.
    Bench(bench::BenchArgs),
    /// Show the effective configuration, connect, and make a round trip.
    Check(check::CheckArgs),
    /// Run the roadside-sensor pipeline: source, a group of workers, a sink.
    Demo(demo::DemoArgs),
    /// List, show or register topics in the msight topic registry (Redis).
    #[cfg(feature = "redis")]
    Topics(topics::TopicsArgs),
}

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0.
    let cli = Cli::parse();
    // bench and demo count and report dropped messages themselves; the
    // buffer's own warnings would bury their output.
    let reports_drops = matches!(cli.command, Command::Bench(_) | Command::Demo(_));
    init_tracing(cli.common.verbose, reports_drops);
    let name = cli.command.name();
    signals::install(name);
    backends::register_backends();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CliError::Interrupted { .. }) => {
            eprintln!("pubsub {name}: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

impl Command {
    /// The command's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Pub(_) => "pub",
            Command::Sub(_) => "sub",
            Command::Bench(_) => "bench",
            Command::Check(_) => "check",
            Command::Demo(_) => "demo",
            #[cfg(feature = "redis")]
            Command::Topics(_) => "topics",
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let config = cli.common.load_config()?;
    match cli.command {
        Command::Pub(args) => publish::run(&args, &config),
        Command::Sub(args) => subscribe::run(&args, &config),
        Command::Bench(args) => bench::run(&args, config),
        Command::Check(args) => check::run(&args, &config),
        Command::Demo(args) => demo::run(&args, config),
        #[cfg(feature = "redis")]
        Command::Topics(args) => topics::run(&args, &config),
    }
}

/// `tracing` output on stderr: warnings by default (or `RUST_LOG`), `-v`
/// info, `-vv` debug, `-vvv` trace.
fn init_tracing(verbose: u8, reports_drops: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new(if reports_drops {
                "warn,pubsub_core::inbox=error"
            } else {
                "warn"
            })
        }),
        1 => EnvFilter::new("info"),
        2 => EnvFilter::new("debug"),
        _ => EnvFilter::new("trace"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
