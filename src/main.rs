//! Entry point: parse the command line, load the configuration, run, and map
//! every failure to an exit code (0 ok, 1 runtime failure, 2 usage/config).

use std::process::ExitCode;
use std::time::Duration;

use leaderd::cli::{AdminArgs, Cli, Command};
use leaderd::config;
use leaderd::switchover_client::Ask;

fn main() -> ExitCode {
    let cli = Cli::parse_args(); // usage errors exit 2 here
    let filter = match leaderd::logging::filter() {
        Ok(filter) => filter,
        Err(message) => {
            eprintln!("leaderd: {message}");
            return ExitCode::from(2);
        }
    };
    if let Command::Guard(args) = &cli.command {
        let _flush = leaderd::logging::install(cli.log_format, filter);
        // Synchronous and single-threaded on purpose: no runtime to freeze.
        let code = leaderd::actions::guard::watchdog::run(
            Duration::from_millis(args.window_ms),
            args.term_dir.as_deref(),
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if matches!(cli.command, Command::Run(_)) {
        // The guard process (actions::guard) logs in the same format.
        let format = match cli.log_format {
            leaderd::cli::LogFormat::Text => "text",
            leaderd::cli::LogFormat::Json => "json",
        };
        // SAFETY: no other thread exists yet that could read the environment.
        unsafe { std::env::set_var("LEADERD_LOG_FORMAT", format) };
    }
    if matches!(cli.command, Command::Run(_)) && std::process::id() == 1 {
        // As PID 1 (a container), stay PID 1 as a minimal init that reaps
        // orphans and forwards signals; the daemon runs in a child.
        leaderd::pid1::become_init();
    }
    // After the fork: the log writer is a thread, and fork keeps only the
    // calling thread.
    let _flush = leaderd::logging::install(cli.log_format, filter);
    // rediss:// needs a process-wide rustls crypto provider; an Err only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Two workers are plenty for a lease and an HTTP server; on a
        // single core, one avoids the workers taking turns.
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |cores| cores.get())
                .min(2),
        )
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("leaderd: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(dispatch(cli.command));
    drop(runtime);
    code
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run(args) => {
            let settings = match config::load(&args.config, &args.overrides) {
                Ok(settings) => settings,
                Err(err) => return config_error(&err),
            };
            match leaderd::daemon::run(settings).await {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(err) => {
                    eprintln!("leaderd: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check(args) => {
            let checked = match config::check_file(&args.config) {
                Ok(checked) => checked,
                Err(err) => return config_error(&err),
            };
            if leaderd::check::check(&checked, args.offline).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Guard(_) => ExitCode::from(2),
        Command::Switchover(args) => {
            let ask = if args.cancel {
                Ask::Cancel
            } else {
                Ask::Switchover {
                    to: args.to,
                    at: args.at,
                }
            };
            switchover(ask, &args.admin).await
        }
        Command::StepDown(admin) => {
            switchover(Ask::Switchover { to: None, at: None }, &admin).await
        }
        Command::Status(args) => {
            match leaderd::status_client::fetch(&args.url, Duration::from_secs(5)).await {
                Ok((raw, status)) => {
                    if args.json {
                        println!("{raw}");
                    } else {
                        print!("{}", leaderd::status_client::render(&status));
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("leaderd status: {err}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// How long the CLI waits for a switchover: the daemon answers within
/// `lease_duration` (15 s by default).
const SWITCHOVER_PATIENCE: Duration = Duration::from_secs(120);

async fn switchover(ask: Ask, admin: &AdminArgs) -> ExitCode {
    let code = leaderd::switchover_client::run(
        ask,
        &admin.url,
        admin.token_file.as_deref(),
        SWITCHOVER_PATIENCE,
    )
    .await;
    ExitCode::from(code)
}

fn config_error(err: &config::ConfigError) -> ExitCode {
    eprintln!("leaderd: invalid configuration: {err}");
    ExitCode::from(2)
}
