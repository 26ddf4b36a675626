//! Run control: what reaches a running executor from outside, and what it does about it.
//!
//! 1. Requests come from the front end through a [`ControlHandle`] (Ctrl-C, SIGTERM, SIGHUP)
//!    and from the state store (`medic plan stop`), polled every [`STOP_POLL`] even while a
//!    slow action runs.
//! 2. The first stop cancels the run: no new phase starts, the running action is stopped and
//!    its phase recorded failed with the stop's reason. A second stop, or one asked `--now`,
//!    is recorded and exits at once, leaving the running phase interrupted (its command dies
//!    with the executor: see `action/run.rs`).
//! 3. A hangup (the terminal went away) is recorded in history; the run goes on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::action::Cancel;
use crate::store::{hostname, now_ms, Commit, StopRequest};

use super::{Engine, Shared};

/// How often the executor looks for a `medic plan stop` request in the store.
const STOP_POLL: Duration = Duration::from_millis(250);

/// The exit code of an executor that stops at once (as a shell reports SIGINT).
pub(crate) const EXIT_AT_ONCE: i32 = 130;

/// Something asked of a running executor.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    /// Stop the run; the running phase fails with `reason`. `now`: exit at once instead.
    Stop {
        reason: String,
        now: bool,
        /// The operator's words (`--reason`).
        note: Option<String>,
    },
    /// The terminal went away.
    Hangup,
}

/// The executor's side: requests in, the cancellation its actions watch out.
pub(crate) struct Control {
    requests: mpsc::UnboundedReceiver<Request>,
    stop: watch::Sender<Option<String>>,
}

/// The front end's side: sends requests to the executor.
#[derive(Clone)]
pub(crate) struct ControlHandle(mpsc::UnboundedSender<Request>);

impl ControlHandle {
    /// Sends `request`; false when no executor listens any more.
    pub(crate) fn send(&self, request: Request) -> bool {
        self.0.send(request).is_ok()
    }
}

impl Control {
    pub(crate) fn new() -> (Control, ControlHandle) {
        let (tx, requests) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(None);
        (Control { requests, stop }, ControlHandle(tx))
    }

    pub(super) fn cancel(&self) -> Cancel {
        self.stop.subscribe()
    }
}

impl Engine {
    /// Starts listening for requests (once per engine); the task ends when aborted.
    pub(super) fn spawn_control(&self) -> Option<tokio::task::JoinHandle<()>> {
        let control = self.control.lock().expect("control lock").take()?;
        let shared = self.shared.clone();
        Some(tokio::spawn(listen(shared, control, now_ms())))
    }
}

async fn listen(shared: Arc<Shared>, mut control: Control, started: u64) {
    let mut front_end_open = true;
    let mut honoured: Option<u64> = None;
    let mut poll = tokio::time::interval(STOP_POLL);
    loop {
        let request = tokio::select! {
            r = control.requests.recv(), if front_end_open => match r {
                Some(r) => r,
                None => {
                    front_end_open = false;
                    continue;
                }
            },
            _ = poll.tick() => {
                let s = shared.clone();
                let found = tokio::task::spawn_blocking(move || s.stop_request())
                    .await
                    .ok()
                    .flatten();
                match found {
                    Some(r) if is_for_us(&r, started) && honoured != Some(r.requested_at) => {
                        honoured = Some(r.requested_at);
                        store_request(r)
                    }
                    _ => continue,
                }
            }
        };
        shared.handle(&control.stop, request);
    }
}

/// Whether a stored request was made for this executor after it started.
fn is_for_us(r: &StopRequest, started: u64) -> bool {
    r.pid == std::process::id() && r.host == hostname() && r.requested_at >= started
}

fn store_request(r: StopRequest) -> Request {
    let mut reason = format!("interrupted: stopped by {} with `medic plan stop`", r.by);
    if let Some(note) = &r.reason {
        reason.push_str(&format!(": {note}"));
    }
    Request::Stop {
        reason,
        now: r.now,
        note: r.reason,
    }
}

impl Shared {
    /// The store's stop request for this operation; `None` while another thread uses the
    /// store (the next poll sees it) or when it cannot be read.
    fn stop_request(&self) -> Option<StopRequest> {
        let mut guard = self.store.try_lock().ok()?;
        let store = guard.as_mut()?;
        let was_open = store.is_open();
        let found = store.stop_request(&self.op.id).ok().flatten();
        if !was_open {
            store.release();
        }
        found
    }

    fn handle(&self, stop: &watch::Sender<Option<String>>, request: Request) {
        match request {
            Request::Hangup => self.note(
                "hangup",
                None,
                format!(
                    "the terminal went away; the run continues in pid {} on {} (follow it with `medic plan --tail`)",
                    std::process::id(),
                    hostname()
                ),
            ),
            Request::Stop { reason, now, note } => {
                if now || stop.borrow().is_some() {
                    self.note(
                        "stopped_at_once",
                        note,
                        format!("{reason}; exited at once, the running phase stays interrupted"),
                    );
                    let _ = self.flush_logs();
                    std::process::exit(EXIT_AT_ONCE);
                }
                self.note(
                    "stop_requested",
                    note,
                    format!("{reason}; no new phase starts and the running one is stopped"),
                );
                let _ = stop.send(Some(reason));
            }
        }
    }

    /// Writes a history entry now, leaving the database as closed or open as it was.
    fn note(&self, event: &str, reason: Option<String>, detail: String) {
        let mut entry = self.history(event, None, None, None, None, false, Some(detail));
        if reason.is_some() {
            entry.reason = reason;
        }
        let mut guard = self.store.lock().expect("store lock");
        let Some(store) = guard.as_mut() else {
            return;
        };
        let was_open = store.is_open();
        let written = store.commit(
            &self.op.id,
            Commit {
                history: vec![entry],
                ..Default::default()
            },
        );
        if !was_open {
            store.release();
        }
        drop(guard);
        if let Err(e) = written {
            self.note_store_failure(e);
        }
    }
}
