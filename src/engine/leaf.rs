//! Running one leaf: start transition, `when:`, the action with timeout and retries (with
//! exponential backoff), capture, end transition, and the events for each step.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::action::{
    cancelled, ActionCtx, ActionError, ActionOutput, ActionSpec, RenderScope, Stream,
};
use crate::events::Event;
use crate::plan::{Condition, FailureKind, PhaseState, Transition};
use crate::store::{now_ms, Commit, LogLine, OutputCap};

use super::capture::Captured;
use super::dry_run::describe;
use super::journal::LOG_FLUSH_LINES;
use super::{EngineError, Shared, SKIPPED_ROLLBACK};

impl Shared {
    /// Runs (or rolls back) one leaf to its end state. Returns whether it succeeded.
    pub(super) async fn run_leaf(self: Arc<Self>, leaf: usize, rollback: bool) -> bool {
        match self.run_leaf_inner(leaf, rollback).await {
            Ok(ok) => ok,
            Err(e) => {
                // The store failed under us: report it as the phase's failure; it stays
                // in progress on disk and shows as interrupted.
                self.sink.emit(&Event::PhaseFinished {
                    id: self.plan.node(leaf).id.clone(),
                    state: PhaseState::Failed,
                    rollback,
                    elapsed_secs: 0.0,
                    error: Some(e.to_string()),
                    summary: None,
                });
                if let EngineError::Store(e) = e {
                    self.note_store_failure(e);
                }
                false
            }
        }
    }

    async fn run_leaf_inner(&self, leaf: usize, rollback: bool) -> Result<bool, EngineError> {
        let node = self.plan.node(leaf);
        let id = node.id.clone();
        let (current, was_skipped) = self
            .records
            .lock()
            .expect("records lock")
            .get(&id)
            .map(|r| (r.state, r.skipped))
            .unwrap_or((PhaseState::Unstarted, false));
        let start = if rollback {
            Transition::BeginRollback
        } else if current == PhaseState::InProgress {
            Transition::Restart
        } else {
            Transition::Start
        };
        let action = if rollback && was_skipped {
            None
        } else if rollback {
            node.rollback.as_ref()
        } else {
            node.action.as_ref()
        };
        let detail = (start == Transition::Restart)
            .then(|| "the previous executor was interrupted; running again".to_string());
        let record = self.record_transition(leaf, start, None, detail, None)?;
        if let Some(cond) = node.when.as_ref().filter(|_| !rollback) {
            if let Some(ok) = self.end_by_condition(leaf, cond)? {
                return Ok(ok);
            }
        }
        let scope_display = RenderScope {
            inventory: self.inventory.as_deref(),
            templates: &self.templates,
            ctx: self.display_context(leaf),
        };
        self.sink.emit(&Event::PhaseStarted {
            id: id.clone(),
            description: node.description.clone(),
            action: describe(action, &scope_display),
            attempt: record.attempts,
            rollback,
        });
        let started = Instant::now();
        let Some(action) = action else {
            return self.finish_without_rollback_action(leaf, was_skipped);
        };
        if !action.inline() {
            self.release_store();
        }
        let result = self.attempt_with_retries(leaf, action).await;
        let elapsed_secs = started.elapsed().as_secs_f64();
        let outcome = result.and_then(|out| {
            if rollback || node.capture.is_empty() {
                return Ok((out, None));
            }
            let vars = self
                .capture(leaf, &out.result)
                .map_err(|e| (FailureKind::Capture, e))?;
            Ok((out, Some(vars)))
        });
        self.release_held_output(leaf, !rollback && outcome.is_err());
        self.finish_leaf(leaf, rollback, elapsed_secs, outcome)
    }

    /// Evaluates a leaf's `when:` after its start: ends the leaf (skipped, or failed when the
    /// condition cannot be evaluated) and returns whether it succeeded, or `None` to run it.
    fn end_by_condition(&self, leaf: usize, cond: &Condition) -> Result<Option<bool>, EngineError> {
        let (t, error, summary) = match self.skip_because(leaf, cond) {
            Ok(None) => return Ok(None),
            Ok(Some(reason)) => (Transition::Skip, None, Some(self.redactor.redact(&reason))),
            Err(e) => (Transition::Fail, Some(self.redactor.redact(&e)), None),
        };
        let failure = error.clone().map(|e| (FailureKind::Condition, e));
        let record = self.record_transition(leaf, t, failure, summary, None)?;
        self.sink.emit(&Event::PhaseFinished {
            id: self.plan.node(leaf).id.clone(),
            state: record.state,
            rollback: false,
            elapsed_secs: 0.0,
            error: error.clone(),
            summary: record.summary.clone(),
        });
        Ok(Some(error.is_none()))
    }

    /// Rolls back a leaf that has nothing to undo: no rollback action, or it was skipped.
    fn finish_without_rollback_action(
        &self,
        leaf: usize,
        was_skipped: bool,
    ) -> Result<bool, EngineError> {
        let why = if was_skipped {
            SKIPPED_ROLLBACK
        } else {
            "no rollback action; recorded as rolled back"
        };
        self.record_transition(
            leaf,
            Transition::FinishRollback,
            None,
            Some(why.into()),
            None,
        )?;
        self.sink.emit(&Event::PhaseFinished {
            id: self.plan.node(leaf).id.clone(),
            state: PhaseState::RolledBack,
            rollback: true,
            elapsed_secs: 0.0,
            error: None,
            summary: Some(why.into()),
        });
        Ok(true)
    }

    /// Records how a leaf's action ended (with what it captured) and reports it.
    fn finish_leaf(
        &self,
        leaf: usize,
        rollback: bool,
        elapsed_secs: f64,
        outcome: Result<(ActionOutput, Option<Captured>), (FailureKind, String)>,
    ) -> Result<bool, EngineError> {
        let id = self.plan.node(leaf).id.clone();
        match outcome {
            Ok((out, vars)) => {
                let t = if rollback {
                    Transition::FinishRollback
                } else {
                    Transition::Complete
                };
                let record = self.record_transition(leaf, t, None, out.summary.clone(), vars)?;
                self.sink.emit(&Event::PhaseFinished {
                    id,
                    state: record.state,
                    rollback,
                    elapsed_secs,
                    error: None,
                    summary: out.summary.map(|s| self.redactor.redact(&s)),
                });
                Ok(true)
            }
            Err((kind, error)) => {
                let t = if rollback {
                    Transition::FailRollback
                } else {
                    Transition::Fail
                };
                let error = self.redactor.redact(&error);
                let finding = (!rollback)
                    .then(|| self.probe_finding(leaf, &error))
                    .flatten();
                let record =
                    self.record_transition(leaf, t, Some((kind, error.clone())), finding, None)?;
                self.sink.emit(&Event::PhaseFinished {
                    id,
                    state: record.state,
                    rollback,
                    elapsed_secs,
                    error: Some(error),
                    summary: record.summary.clone(),
                });
                Ok(false)
            }
        }
    }

    /// Runs a leaf's action until it succeeds, is refused or cancelled, or has failed
    /// `retries + 1` times; between attempts it waits `retry_delay_secs`, doubled after each
    /// failure (at most five minutes).
    async fn attempt_with_retries(
        &self,
        leaf: usize,
        action: &ActionSpec,
    ) -> Result<ActionOutput, (FailureKind, String)> {
        let node = self.plan.node(leaf);
        let id = node.id.clone();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.attempt(leaf, action).await;
            // A phase capturing a secret shows no output before the capture, errors included.
            let text = |e: &ActionError| {
                if self.holds_live_output(leaf) {
                    format!(
                        "{} (its output is withheld: this phase captures a secret)",
                        e.without_output()
                    )
                } else {
                    e.to_string()
                }
            };
            let (kind, error) = match result {
                Ok(out) => return Ok(out),
                Err(e) if e.is_cancelled() || matches!(e, ActionError::Refused { .. }) => {
                    return Err((e.kind(), text(&e)))
                }
                Err(e) => (e.kind(), text(&e)),
            };
            if attempt > node.retries || self.cancel.borrow().is_some() {
                return Err((kind, error));
            }
            let delay = (node.retry_delay_secs * 2f64.powi(attempt as i32 - 1)).min(300.0);
            self.sink.emit(&Event::PhaseRetrying {
                id: id.clone(),
                attempt,
                delay_secs: delay,
                error: self.redactor.redact(&error),
            });
            self.record_retry(leaf, attempt, delay, error)?;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(delay)) => {}
                reason = cancelled(&self.cancel) => return Err((FailureKind::Cancelled, reason)),
            }
        }
    }

    /// One attempt of a leaf's action, within the phase's timeout; its output goes to the
    /// renderers and (capped, redacted, perhaps held back) to the log.
    async fn attempt(&self, leaf: usize, action: &ActionSpec) -> Result<ActionOutput, ActionError> {
        let node = self.plan.node(leaf);
        let id = node.id.clone();
        let ctx = self.context(leaf, true);
        let scope = RenderScope {
            inventory: self.inventory.as_deref(),
            templates: &self.templates,
            ctx,
        };
        // The log keeps the head and the tail of this attempt's output (see OutputCap).
        let cap = Mutex::new(OutputCap::default());
        // Output that may show values about to be captured as secrets is held back.
        let live_held = self.holds_live_output(leaf);
        let hold = !node.capture.is_empty() && (live_held || self.uses_secret(leaf));
        let output = |stream: Stream, line: &str| {
            let text = match line.find(crate::action::output::CUT_MARKER) {
                Some(cut) => self.redactor.redact_cut(line, cut),
                None => self.redactor.redact(line),
            };
            let kept = cap.lock().expect("cap lock").admit(LogLine {
                time: now_ms(),
                phase: id.clone(),
                stream,
                text: text.clone(),
            });
            if let Some(line) = kept.filter(|line| !self.hold_log(hold, leaf, line)) {
                let mut pending = self.pending_logs.lock().expect("logs lock");
                pending.push(line);
                let due = pending.len() >= LOG_FLUSH_LINES;
                drop(pending);
                // Chatty output goes to the store in chunks as it comes, not only with the
                // heartbeat's flush every second.
                if due {
                    let _ = self.flush_logs();
                }
            }
            if !live_held {
                self.sink.emit(&Event::PhaseOutput {
                    id: id.clone(),
                    stream,
                    line: text,
                });
            }
        };
        let record_forced = |guard: &str| {
            let entry = self.history(
                "forced",
                Some(id.clone()),
                None,
                None,
                None,
                true,
                Some(format!("--force overrode a safety guard: {guard}")),
            );
            self.pending_history
                .lock()
                .expect("history lock")
                .push(entry);
            self.sink.emit(&Event::Forced {
                detail: format!("{id}: {guard}"),
            });
        };
        let ctx = ActionCtx {
            scope: &scope,
            output: &output,
            cancel: self.cancel.clone(),
            ssh: self.ssh.clone(),
            force: self.force,
            record_forced: &record_forced,
        };
        let run = action.execute(&ctx);
        let result = match node.timeout_secs {
            Some(secs) => match tokio::time::timeout(Duration::from_secs_f64(secs), run).await {
                Ok(r) => r,
                Err(_) => Err(ActionError::TimedOut {
                    after: crate::action::wait::human_secs(secs),
                }),
            },
            None => run.await,
        };
        let tail = cap.lock().expect("cap lock").finish(&id);
        for line in tail {
            if !self.hold_log(hold, leaf, &line) {
                self.pending_logs.lock().expect("logs lock").push(line);
            }
        }
        result
    }

    /// Records a failed attempt that will be retried in the history.
    fn record_retry(
        &self,
        leaf: usize,
        attempt: u32,
        delay: f64,
        error: String,
    ) -> Result<(), (FailureKind, String)> {
        let node = self.plan.node(leaf);
        let id = node.id.clone();
        let entry = self.history(
            "retry",
            Some(id.clone()),
            None,
            None,
            Some(error),
            false,
            Some(format!(
                "attempt {attempt} of {} failed; retrying in {delay:.1}s",
                node.retries + 1
            )),
        );
        let was_open = self.store_is_open();
        self.commit(Commit {
            history: vec![entry],
            ..Default::default()
        })
        .map_err(|e| (FailureKind::Store, e.to_string()))?;
        if !was_open {
            self.release_store();
        }
        Ok(())
    }
}
