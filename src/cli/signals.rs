//! The executor's signals: Ctrl-C and SIGTERM ask the engine to stop (a second one exits at
//! once); SIGHUP means the terminal went away, and the run goes on without it.
//!
//! 1. [`listen`] starts as soon as a command that executes phases has parsed its arguments:
//!    from then on no signal of a terminal kills medic by default. Until the engine runs,
//!    requests wait in a channel (a Ctrl-C while the plan is built stops it before its first
//!    phase; a second one exits).
//! 2. [`connect`] hands them to the engine (`engine/control.rs`), which records them in
//!    history and decides what they do.
//! 3. On SIGHUP the terminal's descriptors are replaced by `/dev/null` at once
//!    ([`leave_terminal`]), so nothing fails writing to a terminal that is gone (EIO, EPIPE):
//!    the phase log in the store keeps the output, and `medic plan --tail` shows it again.
//! 4. SIGPIPE is ignored while a run executes: a reader of its output that goes away is no
//!    reason to die (children still start with the default disposition).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::args::{Command, PlanCommand};
use crate::engine::{ControlHandle, Request, EXIT_AT_ONCE};

/// Requests received before the engine connected.
static WAITING: Mutex<Option<mpsc::UnboundedReceiver<Request>>> = Mutex::new(None);
/// Whether an engine listens (see [`connect`]).
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Whether `command` executes phases (and so must outlive its terminal).
fn executes(command: &Command) -> bool {
    match command {
        Command::Start(s) => !s.dry_run && !s.manual,
        Command::Plan(p) => match &p.command {
            Some(PlanCommand::Execute(x)) | Some(PlanCommand::Rollback(x)) => !x.run.dry_run,
            Some(PlanCommand::Resume(r)) => !r.dry_run,
            _ => false,
        },
        _ => false,
    }
}

/// For a command that executes phases: takes over SIGINT, SIGTERM, SIGHUP and SIGPIPE for
/// the rest of the process.
pub(super) fn listen(command: &Command, json: bool) {
    if !executes(command) {
        return;
    }
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
    let (tx, rx) = mpsc::unbounded_channel();
    *WAITING.lock().expect("signals lock") = Some(rx);
    tokio::spawn(async move {
        let mut stops = 0;
        loop {
            let reason = tokio::select! {
                _ = int.recv() => "interrupted",
                _ = term.recv() => "interrupted: terminated",
                _ = hup.recv() => {
                    leave_terminal();
                    let _ = tx.send(Request::Hangup);
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
            if stops > 1 && !CONNECTED.load(Ordering::SeqCst) {
                std::process::exit(EXIT_AT_ONCE);
            }
            let _ = tx.send(Request::Stop {
                reason: reason.to_string(),
                now: false,
                note: None,
            });
        }
    });
}

/// Forwards the signals' requests (those already waiting first) to the engine behind
/// `handle`; once it no longer listens (the run is over), a stop exits at once.
pub(super) fn connect(handle: ControlHandle) {
    let Some(mut rx) = WAITING.lock().expect("signals lock").take() else {
        return;
    };
    CONNECTED.store(true, Ordering::SeqCst);
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            let stop = matches!(request, Request::Stop { .. });
            if !handle.send(request) && stop {
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
