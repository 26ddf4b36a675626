//! The journal: every state change, history entry and log line of a run goes to the store
//! through here (flushed before the next step), and the heartbeat keeps the lease fresh.

use std::time::Duration;

use crate::plan::{FailureKind, PhaseId, PhaseRecord, PhaseState, Transition};
use crate::store::{now_ms, Commit, HistoryEntry, LogLine, Store, StoreError};

use super::capture::Captured;
use super::{Engine, EngineError, Shared};

/// Pending log lines that make the engine write them at once.
pub(super) const LOG_FLUSH_LINES: usize = 8192;

impl Engine {
    /// Background duties while running: every 10 ms, step aside for a waiting reader if the
    /// store is idle (even while the engine is blocked elsewhere, e.g. on a full stdout pipe);
    /// every second, flush logs; every ten, refresh the lease heartbeat.
    pub(super) fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        // A preview (nothing stored: `start --dry-run`, `medic status` with one engine per
        // node) has no store to yield, flush or keep alive: no ticking every 10 ms.
        let stored = self.shared.store.lock().map_or(true, |s| s.is_some());
        if !stored {
            return tokio::spawn(async {});
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks += 1;
                if let Ok(mut guard) = shared.store.try_lock() {
                    if let Some(store) = guard.as_mut() {
                        store.yield_to_waiters();
                    }
                }
                // A reader holding the database a while is no reason to stop; a store that
                // is gone, replaced, full or failing is.
                let background = |r: Result<(), StoreError>| match r {
                    Err(StoreError::Locked { .. } | StoreError::HolderStopped { .. }) | Ok(()) => {}
                    Err(e) => shared.note_store_failure(e),
                };
                if ticks.is_multiple_of(100) {
                    background(shared.flush_logs());
                }
                if ticks.is_multiple_of(1000) {
                    background(shared.heartbeat());
                }
            }
        })
    }

    /// Ends this executor's hold: flushes logs, clears the lease, closes the database.
    pub(crate) fn release(self) -> Result<Store, EngineError> {
        self.shared.flush_logs()?;
        let entry = self
            .shared
            .history("lease_released", None, None, None, None, false, None);
        self.shared.commit(Commit {
            lease: Some(None),
            history: vec![entry],
            ..Default::default()
        })?;
        // Aborted background tasks may still hold the shared state for a moment; take the
        // store out instead of waiting for them.
        let mut store = self
            .shared
            .store
            .lock()
            .expect("store lock")
            .take()
            .expect("a running engine has a store");
        store.release();
        Ok(store)
    }
}

impl Shared {
    /// Remembers the first store failure; the run starts no phase after it.
    pub(super) fn note_store_failure(&self, e: StoreError) {
        self.store_failure
            .lock()
            .expect("store failure lock")
            .get_or_insert(e);
    }

    pub(super) fn store_failed(&self) -> bool {
        self.store_failure
            .lock()
            .expect("store failure lock")
            .is_some()
    }

    /// Ends the run with the store's failure, if it had one (instead of an outcome that
    /// would claim what could not be recorded).
    pub(super) fn end_if_store_failed(&self) -> Result<(), EngineError> {
        match self
            .store_failure
            .lock()
            .expect("store failure lock")
            .take()
        {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn history(
        &self,
        event: &str,
        phase: Option<PhaseId>,
        from: Option<PhaseState>,
        to: Option<PhaseState>,
        error: Option<String>,
        forced: bool,
        detail: Option<String>,
    ) -> HistoryEntry {
        HistoryEntry {
            command: self.redactor.redact(&self.actor.command),
            phase,
            from,
            to,
            error: error.map(|e| self.redactor.redact(&e)),
            forced,
            detail: detail.map(|d| self.redactor.redact(&d)),
            ..HistoryEntry::new(event, &self.actor, self.reason.clone())
        }
    }

    pub(super) fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        match self.store.lock().expect("store lock").as_mut() {
            Some(store) => store.commit(&self.op.id, commit),
            None => Ok(()),
        }
    }

    /// Closes the database so readers can open it while a slow action runs.
    pub(super) fn release_store(&self) {
        if let Some(store) = self.store.lock().expect("store lock").as_mut() {
            store.release();
        }
    }

    pub(super) fn store_is_open(&self) -> bool {
        self.store
            .lock()
            .expect("store lock")
            .as_ref()
            .is_some_and(|s| s.is_open())
    }

    pub(super) fn flush_logs(&self) -> Result<(), StoreError> {
        let logs = std::mem::take(&mut *self.pending_logs.lock().expect("logs lock"));
        if logs.is_empty() {
            return Ok(());
        }
        let mut guard = self.store.lock().expect("store lock");
        let Some(store) = guard.as_mut() else {
            return Ok(());
        };
        let was_open = store.is_open();
        store.commit(
            &self.op.id,
            Commit {
                logs,
                ..Default::default()
            },
        )?;
        if !was_open {
            store.release();
        }
        Ok(())
    }

    pub(super) fn heartbeat(&self) -> Result<(), StoreError> {
        let mut guard = self.store.lock().expect("store lock");
        let Some(store) = guard.as_mut() else {
            return Ok(());
        };
        let was_open = store.is_open();
        if let Some(mut lease) = store.lease(&self.op.id)? {
            if lease.pid == std::process::id() {
                lease.heartbeat_at = now_ms();
                store.commit(
                    &self.op.id,
                    Commit {
                        lease: Some(Some(lease)),
                        ..Default::default()
                    },
                )?;
            }
        }
        if !was_open {
            store.release();
        }
        Ok(())
    }

    /// Applies `t` to `leaf` and makes it durable (with pending logs and new variables)
    /// before returning.
    pub(super) fn record_transition(
        &self,
        leaf: usize,
        t: Transition,
        error: Option<(FailureKind, String)>,
        mut detail: Option<String>,
        captured: Option<Captured>,
    ) -> Result<PhaseRecord, EngineError> {
        let id = self.plan.node(leaf).id.clone();
        let mut records = self.records.lock().expect("records lock");
        let current = records.get(&id).cloned().unwrap_or_default();
        let mut next = current.apply(t, now_ms())?;
        if t == Transition::Skip {
            // A skip's detail is its reason; summary and history say "skipped: <reason>".
            next.skip_reason = detail.as_ref().map(|d| self.redactor.redact(d));
            detail = next.skip_reason.as_ref().map(|r| format!("skipped: {r}"));
        }
        let error = error.map(|(kind, e)| {
            next.failure = Some(kind);
            e
        });
        if let Some(e) = &error {
            next.error = Some(self.redactor.redact(e));
        }
        if matches!(
            t,
            Transition::Complete | Transition::Skip | Transition::FinishRollback
        ) {
            next.summary = detail.as_ref().map(|d| self.redactor.redact(d));
        }
        if t == Transition::Fail && detail.is_some() {
            // A failed probe's finding (`engine/probe.rs`).
            next.summary = detail.as_ref().map(|d| self.redactor.redact(d));
        }
        let event = match t {
            Transition::Start => "start",
            Transition::Restart => "restart",
            Transition::Complete => "complete",
            Transition::Skip => "skip",
            Transition::Fail => "fail",
            Transition::BeginRollback => "rollback_start",
            Transition::FinishRollback => "rollback_complete",
            Transition::FailRollback => "rollback_fail",
            Transition::SetCompleted | Transition::SetFailed | Transition::SetUnstarted => {
                "manual_set"
            }
        };
        let entry = self.history(
            event,
            Some(id.clone()),
            Some(current.state),
            Some(next.state),
            error,
            false,
            detail,
        );
        let logs = std::mem::take(&mut *self.pending_logs.lock().expect("logs lock"));
        let mut history = std::mem::take(&mut *self.pending_history.lock().expect("history lock"));
        history.push(entry);
        let (vars, secrets) = match captured {
            Some(c) => (Some(c.vars), c.secrets),
            None => (None, None),
        };
        let commit = Commit {
            records: vec![(id.clone(), next.clone())],
            history,
            logs,
            vars: vars.clone(),
            secrets: secrets.clone(),
            ..Default::default()
        };
        // The start of a phase is flushed at once (before its action runs); its end is flushed
        // by the next start, by release, or before any slow action.
        let ends_phase = matches!(
            t,
            Transition::Complete
                | Transition::Skip
                | Transition::Fail
                | Transition::FinishRollback
                | Transition::FailRollback
        );
        self.commit(if ends_phase {
            commit.deferred()
        } else {
            commit
        })?;
        if let Some(v) = vars {
            *self.vars.lock().expect("vars lock") = v;
        }
        if let Some(secrets) = secrets {
            self.params.write().expect("params lock").secrets = secrets;
        }
        records.insert(id, next.clone());
        Ok(next)
    }

    /// Keeps `line` back when `hold`; returns whether it did.
    pub(super) fn hold_log(&self, hold: bool, leaf: usize, line: &LogLine) -> bool {
        if hold {
            let mut held = self.held_logs.lock().expect("held logs lock");
            held.entry(leaf).or_default().push(line.clone());
        }
        hold
    }
}
