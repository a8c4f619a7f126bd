//! SIGTERM and SIGINT: the first asks for a graceful shutdown (step down,
//! release, exit 0); a second one exits at once, for an operator who does
//! not want to wait — after killing every process group leaderd started,
//! since nothing leader-only may outlive it.

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;

/// Exit code when a second signal cuts the graceful shutdown short.
pub const EXIT_ON_SECOND_SIGNAL: i32 = 130;

/// Starts listening; `shutdown` is cancelled on the first signal.
pub fn spawn(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(signal) = signals.next().await {
            seen += 1;
            if seen == 1 {
                tracing::info!(signal, "shutting down");
                shutdown.cancel();
            } else {
                tracing::warn!(
                    signal,
                    "second signal: killing every process leaderd started and exiting immediately"
                );
                crate::actions::exit_killing_every_group(EXIT_ON_SECOND_SIGNAL);
            }
        }
    });
    Ok(())
}
