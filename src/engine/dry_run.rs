//! Dry-runs: what `execute` and `rollback` would do, walked through the same scheduler without
//! touching the store, and the target checks done before an operation is created.

use crate::action::{ActionSpec, RenderScope};
use crate::events::{Event, Outcome};
use crate::plan::{PhaseId, PhaseState, Scheduler, SchedulerMode};

use super::{Engine, EngineError, SKIPPED_ROLLBACK};

impl Engine {
    /// What `execute` would do, in order, without changing anything.
    pub(crate) fn dry_run_execute(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
        let (t, states) = self.start_run(target, false, true)?;
        let plan = &self.shared.plan;
        let sink = &self.shared.sink;
        if self.skip_completed(target, states[t]) {
            return Ok(Outcome::DryRun);
        }
        self.check_execute(t, &states, true)?;
        let mut scheduler = Scheduler::new(plan, &states, t, SchedulerMode::Simulate);
        loop {
            let ready = scheduler.next_ready();
            if ready.is_empty() {
                break;
            }
            for leaf in ready {
                let node = plan.node(leaf);
                let ctx = self.shared.display_context(leaf);
                let scope = RenderScope {
                    inventory: self.shared.inventory.as_deref(),
                    templates: &self.shared.templates,
                    ctx,
                };
                let action = dry_run_describe(node.action.as_ref(), &scope);
                let mut notes = Vec::new();
                if node.confirm {
                    notes.push(CONFIRM_NOTE.to_string());
                }
                if node.is_pause() && leaf != t {
                    notes.push(
                        "the run stops here until the operator executes this phase".to_string(),
                    );
                }
                if states[leaf] == PhaseState::InProgress {
                    notes.push("interrupted earlier; runs again".to_string());
                } else if matches!(states[leaf], PhaseState::Failed | PhaseState::RolledBack) {
                    notes.push(format!("{}; runs again", states[leaf]));
                }
                if let Some(cond) = &node.when {
                    notes.push(self.shared.describe_condition(cond, &scope));
                }
                if let Some(rb) = &node.rollback {
                    notes.push(format!(
                        "undo: {}",
                        dry_run_describe(Some(rb), &scope).join("; ")
                    ));
                }
                if node.retries > 0 {
                    notes.push(format!("up to {} retries", node.retries));
                }
                if let Some(timeout) = node.timeout_secs {
                    notes.push(format!(
                        "timeout {}",
                        crate::action::wait::human_secs(timeout)
                    ));
                }
                sink.emit(&Event::PhaseWouldRun {
                    id: node.id.clone(),
                    description: node.description.clone(),
                    action,
                    rollback: false,
                    note: (!notes.is_empty()).then(|| notes.join("; ")),
                });
                scheduler.finished(leaf, true);
            }
        }
        Ok(Outcome::DryRun)
    }

    /// What `rollback` would do, in order, without changing anything.
    pub(crate) fn dry_run_rollback(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
        let (t, states) = self.start_run(target, true, true)?;
        let plan = &self.shared.plan;
        let order = plan.rollback_order(&states, t);
        if order.is_empty() {
            self.shared.sink.emit(&Event::PhaseSkipped {
                id: target.clone(),
                reason: "nothing under it has started (or it is already rolled back)".into(),
            });
            return Ok(Outcome::DryRun);
        }
        self.check_rollback(t, &states, true)?;
        for leaf in order {
            let node = plan.node(leaf);
            let scope = RenderScope {
                inventory: self.shared.inventory.as_deref(),
                templates: &self.shared.templates,
                ctx: self.shared.display_context(leaf),
            };
            let skipped = self
                .shared
                .records
                .lock()
                .expect("records lock")
                .get(&node.id)
                .is_some_and(|r| r.skipped);
            let (action, note) = match &node.rollback {
                _ if skipped => (Vec::new(), Some(SKIPPED_ROLLBACK.to_string())),
                Some(rb) => (dry_run_describe(Some(rb), &scope), None),
                None => (
                    Vec::new(),
                    Some("no rollback action; recorded as rolled back".to_string()),
                ),
            };
            self.shared.sink.emit(&Event::PhaseWouldRun {
                id: node.id.clone(),
                description: node.description.clone(),
                action,
                rollback: true,
                note,
            });
        }
        Ok(Outcome::DryRun)
    }

    /// Problems with what the plan's actions name (nodes not in the inventory, ...), found
    /// before anything runs.
    pub(crate) fn check_targets(&self) -> Vec<String> {
        let plan = &self.shared.plan;
        let mut problems = Vec::new();
        for leaf in plan.leaves() {
            let node = plan.node(leaf);
            let scope = RenderScope {
                inventory: self.shared.inventory.as_deref(),
                templates: &self.shared.templates,
                ctx: self.shared.display_context(leaf),
            };
            for (what, action) in [
                ("", node.action.as_ref()),
                (" rollback", node.rollback.as_ref()),
            ] {
                if let Some(Err(e)) = action.map(|a| a.check_targets(&scope)) {
                    problems.push(format!("phase {}{what}: {e}", node.id));
                }
            }
        }
        problems
    }

    /// Ends a dry-run report.
    pub(crate) fn dry_run_finish(&self, result: &Result<Outcome, EngineError>) {
        if let Ok(outcome) = result {
            self.finish(outcome.clone());
        }
    }
}

/// What a dry-run says of a phase with `confirm: true` (`confirm.rs`).
const CONFIRM_NOTE: &str =
    "CONFIRM: asks for `yes` before it runs (confirm: true; --yes answers it)";

/// A dry-run's lines for an action: `describe`, then its live preview (a drain's pods).
fn dry_run_describe(action: Option<&ActionSpec>, scope: &RenderScope<'_>) -> Vec<String> {
    let mut lines = describe(action, scope);
    lines.extend(
        action
            .map(|a| a.preview_blocking(scope))
            .unwrap_or_default(),
    );
    lines
}

pub(super) fn describe(action: Option<&ActionSpec>, scope: &RenderScope<'_>) -> Vec<String> {
    match action {
        Some(a) => a
            .describe(scope)
            .unwrap_or_else(|e| vec![format!("{}: cannot render yet ({e})", a.kind())]),
        None => Vec::new(),
    }
}
