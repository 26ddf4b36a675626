//! `medic status --watch`: the signals that end it and the redraw in place.
//!
//! The signal streams are made once, before the first run, and live as long as the watch: a
//! Ctrl-C pressed while the probes run is not lost (a listener made later would miss it, and
//! once tokio handles SIGINT it no longer kills the process by default).

use std::io::Write as _;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::CliError;

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal went away).
pub(super) struct WatchSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl WatchSignals {
    pub(super) fn listen() -> Result<WatchSignals, CliError> {
        let listen = |kind| {
            signal(kind).map_err(|e| CliError {
                code: 1,
                message: format!("status --watch: listen for signals: {e}"),
            })
        };
        Ok(WatchSignals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    /// The next of them.
    pub(super) async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Clears the terminal and shows `text` from its top. A terminal that went away is no error
/// here: the hangup that follows ends the watch.
pub(super) fn redraw(text: &str) {
    let term = console::Term::stdout();
    let _ = term.clear_screen();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
