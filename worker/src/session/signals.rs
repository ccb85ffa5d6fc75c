//! Ctrl-C handling: the first press stops after the current step, the second quits at once.

use anyhow::Result;
use tokio::sync::watch;
use tracing::info;

use crate::control::Control;

/// Watch Ctrl-C (SIGINT): the training thread stops after the step in progress, the partial
/// round is abandoned (nothing half-sent), and the worker leaves with its summary. A second
/// Ctrl-C leaves at once (every file is written atomically, so nothing is left half-written).
/// The receiver turns `true` on the first press.
pub(super) fn spawn_interrupt_handler(control: Control) -> Result<watch::Receiver<bool>> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut interrupts = Interrupts::new()?;
    tokio::spawn(async move {
        if interrupts.next().await {
            info!("interrupted: leaving after the current step (Ctrl-C again to quit now)");
            control.request_stop();
            let _ = stop_tx.send(true);
            if interrupts.next().await {
                eprintln!("hearth-worker: interrupted twice; quitting without finishing the step");
                std::process::exit(130);
            }
        }
    });
    Ok(stop_rx)
}

/// Ctrl-C (SIGINT) deliveries, one stream for the whole session so that each press counts once.
struct Interrupts {
    #[cfg(unix)]
    sigint: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            sigint: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// The next Ctrl-C; `false` if no more can arrive.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.sigint.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}
