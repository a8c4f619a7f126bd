//! Command-line interface: subcommands, flags and their environment
//! variables. Flags win over the environment (clap), the environment over
//! the file (see `config::Overrides`).

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::{Override, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "leaderd",
    version,
    about = "Leader-election daemon: one leader at a time, with fencing tokens, HTTP status and metrics"
)]
pub struct Cli {
    /// Log format on stderr (the level is set with LEADERD_LOG, e.g. "debug").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LEADERD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: take part in the election until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Validate the configuration and check that the backend is usable.
    Check(CheckArgs),
    /// Show the status of a running daemon.
    Status(StatusArgs),
    /// Internal: the guard process `leaderd run` starts for itself.
    #[command(hide = true)]
    Guard(GuardArgs),
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// lease_duration − renew_deadline, in milliseconds.
    #[arg(long)]
    pub window_ms: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (YAML).
    #[arg(long, env = "LEADERD_CONFIG")]
    pub config: PathBuf,
    /// This candidate's identity (overrides election.identity).
    #[arg(long, env = "LEADERD_IDENTITY")]
    pub identity: Option<String>,
    /// HTTP listen address (overrides http.listen).
    #[arg(long, env = "LEADERD_LISTEN")]
    pub listen: Option<String>,
    /// Which flag or variable gave `identity` and `listen` (for messages).
    #[arg(skip)]
    pub overrides: Overrides,
}

impl Cli {
    /// Parses the command line (a usage error exits 2 here) and notes, for
    /// each value that overrides the file, whether the flag or the
    /// environment gave it, so that a bad value is blamed on the right one.
    pub fn parse_args() -> Cli {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        if let Command::Run(args) = &mut cli.command
            && let Some(run) = matches.subcommand_matches("run")
        {
            args.overrides = Overrides {
                identity: given(
                    run,
                    "identity",
                    &args.identity,
                    "--identity",
                    "LEADERD_IDENTITY",
                ),
                listen: given(run, "listen", &args.listen, "--listen", "LEADERD_LISTEN"),
            };
        }
        cli
    }
}

fn given(
    matches: &ArgMatches,
    id: &str,
    value: &Option<String>,
    flag: &'static str,
    env: &'static str,
) -> Option<Override> {
    let from = match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => env,
        _ => flag,
    };
    value.clone().map(|value| Override { value, from })
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration file (YAML).
    #[arg(long, env = "LEADERD_CONFIG")]
    pub config: PathBuf,
    /// Only validate the file; do not contact the backend.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of the daemon's HTTP server.
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "LEADERD_URL")]
    pub url: String,
    /// Print the raw /status JSON.
    #[arg(long)]
    pub json: bool,
}
