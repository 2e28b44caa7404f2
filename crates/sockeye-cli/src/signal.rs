//! Ctrl-C and SIGTERM: the first asks the command to finish cleanly, the second ends the
//! process at once.

use std::sync::OnceLock;

use tokio::sync::watch;

/// How many stop signals have arrived.
static STOPS: OnceLock<watch::Receiver<u32>> = OnceLock::new();

/// The exit code after a second signal: 128 + SIGINT, as shells report it.
const FORCED_EXIT: i32 = 130;

/// Starts listening for SIGINT and SIGTERM (Ctrl-C on other platforms). Call once, inside the
/// runtime.
pub(crate) fn install() {
    let (tx, rx) = watch::channel(0_u32);
    if STOPS.set(rx).is_err() {
        return;
    }
    tokio::spawn(async move {
        let Ok(mut signals) = Signals::new() else {
            tracing::warn!("cannot listen for Ctrl-C or SIGTERM");
            return;
        };
        let mut count = 0_u32;
        loop {
            signals.next().await;
            count += 1;
            if count >= 2 {
                eprintln!("sockeye: second signal, exiting now");
                std::process::exit(FORCED_EXIT);
            }
            let _ = tx.send(count);
        }
    });
}

/// SIGINT and SIGTERM, registered once for the process's life.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Ctrl-C.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once Ctrl-C or SIGTERM has arrived (at once if one already has); never without
/// [`install`].
pub(crate) async fn terminate() {
    let Some(rx) = STOPS.get() else {
        return std::future::pending().await;
    };
    let mut rx = rx.clone();
    let _ = rx.wait_for(|count| *count > 0).await;
}
