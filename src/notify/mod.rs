//! Notifications: the inventory's `notify:` webhooks told when a run starts, pauses, fails
//! or completes, without ever blocking or failing the run.
//!
//! 1. `config.rs` reads `notify:` with the inventory (URLs http:// or https:// only).
//! 2. [`NotifySink`] sits in front of the run's renderer: it passes every event on and turns
//!    `RunStarted`/`RunFinished` into a [`Notice`] (operation, procedure, phase, state, who,
//!    a one-line `text`), with every secret value redacted.
//! 3. `deliver.rs` POSTs the notices from a background task; the caller records the failures
//!    it returns in history ([`history_entries`]).

pub mod config;
mod deliver;

use std::sync::Arc;

use serde_json::json;

pub use config::{NotifyEvent, NotifyTarget};
pub(crate) use deliver::{Failure, Notice, Notifier};

use crate::engine::Redactor;
use crate::events::{Event, EventSink, Outcome};
use crate::store::{Actor, HistoryEntry, Operation};

/// The longest error text a notice carries (its first line, cut here).
const ERROR_CHARS: usize = 200;

/// Passes events to `inner` and notices of the run's start and end to the notifier.
pub(crate) struct NotifySink {
    inner: Arc<dyn EventSink>,
    notifier: Arc<Notifier>,
    operation: String,
    procedure: String,
    cluster: String,
    who: String,
    redactor: Redactor,
}

impl NotifySink {
    pub(crate) fn new(
        inner: Arc<dyn EventSink>,
        notifier: Arc<Notifier>,
        op: &Operation,
        cluster: &str,
        actor: &Actor,
        redactor: Redactor,
    ) -> NotifySink {
        NotifySink {
            inner,
            notifier,
            operation: op.id.clone(),
            procedure: op.procedure.clone(),
            cluster: cluster.to_string(),
            who: format!("{}@{}", actor.user, actor.host),
            redactor,
        }
    }

    /// A notice of a run refused before it got under way (drift, a confirmation, a guard).
    pub(crate) fn refused(&self, error: &str) {
        self.send(NotifyEvent::Failed, "/", "refused", Some(error));
    }

    fn send(&self, event: NotifyEvent, phase: &str, state: &str, error: Option<&str>) {
        let error = error.map(|e| {
            let line = e.lines().next().unwrap_or_default();
            // Redacted whole, then cut: a cut first could leave part of a secret.
            self.redactor
                .redact(line)
                .chars()
                .take(ERROR_CHARS)
                .collect::<String>()
        });
        let mut text = format!(
            "medic: operation {} ({}) on {}: {} at {} by {}",
            self.operation, self.procedure, self.cluster, state, phase, self.who
        );
        if let Some(e) = &error {
            text.push_str(": ");
            text.push_str(e);
        }
        // Whatever slipped into the text (a value captured during the run), once more.
        let text = self.redactor.redact(&text);
        self.notifier.send(Notice {
            event,
            body: json!({
                "event": event.as_str(),
                "operation": self.operation,
                "procedure": self.procedure,
                "cluster": self.cluster,
                "phase": phase,
                "state": state,
                "who": self.who,
                "error": error,
                "text": text,
            }),
        });
    }

    fn notice_of(&self, event: &Event) {
        match event {
            Event::RunStarted {
                target,
                rollback,
                dry_run: false,
                ..
            } => {
                let state = if *rollback { "rolling back" } else { "started" };
                self.send(NotifyEvent::Started, target.as_str(), state, None);
            }
            Event::RunFinished { outcome } => self.finished(outcome),
            _ => {}
        }
    }

    fn finished(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Completed | Outcome::AlreadyCompleted => {
                self.send(NotifyEvent::Completed, "/", "completed", None)
            }
            Outcome::RolledBack | Outcome::NothingToRollBack => {
                self.send(NotifyEvent::Completed, "/", "rolled back", None)
            }
            Outcome::Paused { phases } => {
                let phase = phases.first().map(|p| p.as_str()).unwrap_or("/");
                self.send(NotifyEvent::Paused, phase, "paused", None)
            }
            Outcome::Failed { phase, error } => {
                self.send(NotifyEvent::Failed, phase.as_str(), "failed", Some(error))
            }
            Outcome::Refused { phase, error } => {
                self.send(NotifyEvent::Failed, phase.as_str(), "refused", Some(error))
            }
            Outcome::Interrupted => self.send(NotifyEvent::Failed, "/", "interrupted", None),
            Outcome::Stuck { .. } => self.send(NotifyEvent::Failed, "/", "stuck", None),
            Outcome::DryRun => {}
        }
    }
}

impl EventSink for NotifySink {
    fn emit(&self, event: &Event) {
        self.inner.emit(event);
        self.notice_of(event);
    }
}

/// One history entry per failed delivery (`notify_failed`), the webhook named by its origin.
pub(crate) fn history_entries(failures: &[Failure], actor: &Actor) -> Vec<HistoryEntry> {
    failures
        .iter()
        .map(|f| HistoryEntry {
            detail: Some(format!(
                "notice `{}` to {} not delivered: {}",
                f.event.as_str(),
                f.target,
                f.error
            )),
            ..HistoryEntry::new("notify_failed", actor, None)
        })
        .collect()
}
