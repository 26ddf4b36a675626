//! The executor's signals: Ctrl-C and SIGTERM ask the engine to stop (a second one exits at
//! once); SIGHUP means the terminal went away, and the run goes on without it.
//!
//! 1. [`install`] turns the signals into [`Request`]s to the engine (`engine/control.rs`),
//!    which records them in history and decides what they do.
//! 2. On SIGHUP the terminal's descriptors are replaced by `/dev/null` ([`leave_terminal`]),
//!    so nothing fails writing to a terminal that is gone (EIO, EPIPE): the phase log in
//!    the store keeps the output, and `medic plan --tail` shows it again.
//! 3. SIGPIPE is ignored while a run executes: a reader of its output that goes away is no
//!    reason to die (children still start with the default disposition).

use std::io::Write as _;

use tokio::signal::unix::{signal, SignalKind};

use crate::engine::{ControlHandle, Request, EXIT_AT_ONCE};

/// Listens for SIGINT, SIGTERM and SIGHUP for the rest of the process and forwards them to
/// the engine through `handle`.
pub(super) fn install(handle: ControlHandle, json: bool) {
    // SAFETY: setting a signal's disposition; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let mut stops = 0;
        loop {
            let reason = tokio::select! {
                _ = int.recv() => "interrupted",
                _ = term.recv() => "interrupted: terminated",
                _ = hup.recv() => {
                    leave_terminal();
                    handle.send(Request::Hangup);
                    continue;
                }
            };
            stops += 1;
            if !json {
                say(if stops == 1 {
                    "stopping: no new phases start; running ones are being stopped. Press Ctrl-C again to exit at once."
                } else {
                    "exiting at once; the running phase stays interrupted (`medic plan resume` continues)"
                });
            }
            let request = Request::Stop {
                reason: reason.to_string(),
                now: false,
                by: None,
                note: None,
            };
            if !handle.send(request) && stops > 1 {
                // The run is over (releasing its lease): nothing is left to stop cleanly.
                std::process::exit(EXIT_AT_ONCE);
            }
        }
    });
}

/// A line on stderr, if there is still somewhere to write it.
fn say(text: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n{} {text}",
        console::style("⚠").yellow()
    );
}

/// Points stdin, stdout and stderr at `/dev/null`: after a hangup (the terminal is gone) and in
/// a detached executor once it runs (its starter stops reading).
pub(super) fn leave_terminal() {
    use std::os::fd::AsRawFd as _;
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let _ = std::io::stdout().flush();
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which stay open (now on /dev/null).
        unsafe {
            libc::dup2(null.as_raw_fd(), fd);
        }
    }
}
