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
    /// Show the status of a running daemon, and every candidate.
    Status(StatusArgs),
    /// Hand leadership over to another candidate, now or at a set time
    /// (or cancel the pending switchover).
    Switchover(SwitchoverArgs),
    /// Make the leader hand over to the best other healthy candidate now.
    StepDown(AdminArgs),
    /// Internal: the guard process `leaderd run` starts for itself.
    #[command(hide = true)]
    Guard(GuardArgs),
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// lease_duration − renew_deadline, in milliseconds.
    #[arg(long)]
    pub window_ms: u64,
    /// The term file's private directory: removed when leaderd dies, since
    /// leaderd cannot remove it then.
    #[arg(long)]
    pub term_dir: Option<std::path::PathBuf>,
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
    /// Only observe: never compete (overrides election.mode).
    #[arg(long)]
    pub observe: bool,
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
                observe: args.observe,
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

/// How to reach a daemon's state-changing endpoints.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of a daemon of the election (any candidate's, or its
    /// http.admin_listen).
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "LEADERD_URL")]
    pub url: String,
    /// A file holding the admin bearer token (http.admin_token_file);
    /// or set LEADERD_ADMIN_TOKEN.
    #[arg(long, env = "LEADERD_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// The candidate to hand over to (default: the best other healthy one).
    #[arg(long, conflicts_with = "cancel")]
    pub to: Option<String>,
    /// When (RFC 3339 with an offset, e.g. 2026-12-03T02:00:00+01:00).
    #[arg(long, conflicts_with = "cancel")]
    pub at: Option<String>,
    /// Cancel the pending switchover instead.
    #[arg(long)]
    pub cancel: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}
