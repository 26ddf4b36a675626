//! The safety guards checked before a run: unmet requirements, started dependents of a
//! rollback target, and interrupted phases that are not idempotent; their messages, and the
//! history entry recorded when `--force` overrides one.

use crate::events::Event;
use crate::plan::{FailureKind, PhaseId, PhaseState};
use crate::store::Commit;

use super::{Engine, EngineError};

pub(super) fn requirements_message(phase: &PhaseId, unmet: &[(PhaseId, PhaseState)]) -> String {
    if let [(id, state)] = unmet {
        return format!(
            "phase {phase} requires {id}, which is {state}; run `medic plan execute --phase={id}` first, or pass --force to override (recorded in history)"
        );
    }
    let mut out = format!("phase {phase} requires phases that are not completed:");
    for (id, state) in unmet {
        out.push_str(&format!("\n  {id} ({state})"));
    }
    out.push_str(&format!(
        "\nexecute them first (`medic plan execute --phase={}`), or pass --force to override (recorded in history)",
        unmet[0].0
    ));
    out
}

pub(super) fn dependents_message(phase: &PhaseId, dependents: &[(PhaseId, PhaseState)]) -> String {
    let mut out = format!(
        "cannot roll back {phase}: phases that depend on it are started and not rolled back:"
    );
    for (id, state) in dependents {
        out.push_str(&format!("\n  {id} ({state})"));
    }
    out.push_str(&format!(
        "\nroll them back first (`medic plan rollback --phase={}`), or pass --force to override (recorded in history)",
        dependents[dependents.len() - 1].0
    ));
    out
}

pub(super) fn interrupted_message(phases: &[PhaseId]) -> String {
    let list: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
    format!(
        "phase{} {} {} interrupted and {} not idempotent, so running again could repeat its effect; check what it did, then rerun with --force (recorded in history) or roll it back",
        if phases.len() == 1 { "" } else { "s" },
        list.join(", "),
        if phases.len() == 1 { "was" } else { "were" },
        if phases.len() == 1 { "is" } else { "are" },
    )
}

impl Engine {
    pub(super) fn with_states(
        &self,
        ids: &[usize],
        states: &[PhaseState],
    ) -> Vec<(PhaseId, PhaseState)> {
        ids.iter()
            .map(|i| (self.shared.plan.node(*i).id.clone(), states[*i]))
            .collect()
    }

    /// Records an override of a safety refusal in the history.
    pub(super) fn record_forced(&self, phase: &PhaseId, detail: String) -> Result<(), EngineError> {
        let entry = self.shared.history(
            "forced",
            Some(phase.clone()),
            None,
            None,
            None,
            true,
            Some(detail.clone()),
        );
        self.shared.commit(Commit {
            history: vec![entry],
            ..Default::default()
        })?;
        self.shared.sink.emit(&Event::Forced { detail });
        Ok(())
    }

    /// Checks that `target` may be executed; with `--force`, records each override instead.
    pub(super) fn check_execute(
        &self,
        target: usize,
        states: &[PhaseState],
        dry_run: bool,
    ) -> Result<(), EngineError> {
        let plan = &self.shared.plan;
        let id = plan.node(target).id.clone();
        let unmet = plan.unmet_requirements(states, target);
        if !unmet.is_empty() {
            let err = EngineError::Requirements {
                phase: id.clone(),
                unmet: self.with_states(&unmet, states),
            };
            if !self.force {
                return Err(err);
            }
            if !dry_run {
                self.record_forced(&id, format!("--force: {err}"))?;
            }
        }
        let mut stuck: Vec<PhaseId> = plan
            .in_progress_leaves(states, target)
            .filter(|i| !plan.node(*i).idempotent)
            .map(|i| plan.node(i).id.clone())
            .collect();
        stuck.extend(self.stopped_not_idempotent(target));
        if !stuck.is_empty() {
            let err = EngineError::InterruptedNotIdempotent { phases: stuck };
            if !self.force {
                return Err(err);
            }
            if !dry_run {
                self.record_forced(&id, format!("--force: {err}"))?;
            }
        }
        Ok(())
    }

    /// Leaves under `target` that a stop (Ctrl-C, SIGTERM, `medic plan stop`) cut short and that
    /// are not idempotent: like an interrupted phase, their command may have done part of its
    /// work, so running them again needs `--force`.
    fn stopped_not_idempotent(&self, target: usize) -> Vec<PhaseId> {
        let plan = &self.shared.plan;
        let records = self.shared.records.lock().expect("records lock");
        plan.subtree(target)
            .map(|i| plan.node(i))
            .filter(|n| n.is_leaf() && !n.idempotent)
            .filter(|n| {
                records.get(&n.id).is_some_and(|r| {
                    r.state == PhaseState::Failed && r.failure == Some(FailureKind::Cancelled)
                })
            })
            .map(|n| n.id.clone())
            .collect()
    }

    pub(super) fn check_rollback(
        &self,
        t: usize,
        states: &[PhaseState],
        dry_run: bool,
    ) -> Result<(), EngineError> {
        let plan = &self.shared.plan;
        let blocking = plan.blocking_dependents(states, t);
        if !blocking.is_empty() {
            let err = EngineError::Dependents {
                phase: plan.node(t).id.clone(),
                dependents: self.with_states(&blocking, states),
            };
            if !self.force {
                return Err(err);
            }
            if !dry_run {
                self.record_forced(&plan.node(t).id, format!("--force: {err}"))?;
            }
        }
        Ok(())
    }
}
