//! `confirm: true`: before a phase so marked runs (or its rollback does), the operator
//! confirms it. The engine never prints: it hands the fully rendered action (secrets shown
//! as placeholders) to a [`Confirmer`] the front end gives it (a terminal prompt, `--yes`,
//! or none), records the answer, and refuses the phase before it starts when there is none.
//!
//! 1. `start_ready_phases` (execute) and the rollback loop call [`Engine::confirm_leaf`]
//!    for a leaf with `confirm: true` before its first transition.
//! 2. Yes: a `confirmed` history entry (who, how), then the leaf runs as usual.
//! 3. No, or nobody to ask: [`EngineError::NotConfirmed`] (exit 3); the leaf stays as it was,
//!    the run starts nothing more and ends when the running leaves end.

use std::sync::Arc;

use crate::action::RenderScope;
use crate::plan::PhaseId;
use crate::store::Commit;

use super::dry_run::describe;
use super::{Engine, EngineError};

/// What the operator is shown before a confirmed phase runs.
#[derive(Clone, Debug)]
pub(crate) struct ConfirmRequest {
    pub(crate) phase: PhaseId,
    pub(crate) description: String,
    /// The rendered action, one line per step (secrets as placeholders).
    pub(crate) action: Vec<String>,
    pub(crate) rollback: bool,
}

/// The operator's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Confirmed; the text says how (`typed yes`, `--yes`) for the history.
    Yes(&'static str),
    /// Asked and refused.
    No,
    /// Nobody to ask: no terminal and no `--yes`.
    NoTerminal,
}

/// Asks the operator to confirm a phase; called off the async runtime (it may block on a
/// terminal).
pub(crate) trait Confirmer: Send + Sync {
    fn confirm(&self, request: &ConfirmRequest) -> Answer;
}

/// The confirmer of an engine nobody attends (the default): every confirmation is refused.
pub(crate) struct Unattended;

impl Confirmer for Unattended {
    fn confirm(&self, _: &ConfirmRequest) -> Answer {
        Answer::NoTerminal
    }
}

pub(super) fn not_confirmed_message(phase: &PhaseId, answer: &Answer, rollback: bool) -> String {
    let what = if rollback { "its rollback" } else { "it" };
    let how = if rollback {
        format!("medic plan rollback --phase={phase}")
    } else {
        format!("medic plan execute --phase={phase}")
    };
    match answer {
        Answer::No => format!(
            "phase {phase} was not confirmed (the answer was not `yes`); nothing of {what} ran and it stays as it was"
        ),
        _ => format!(
            "phase {phase} needs confirmation (`confirm: true`) and there is no terminal to ask on; nothing of {what} ran and it stays as it was. Review it (`{how} --dry-run`), then run it again on a terminal or with --yes"
        ),
    }
}

impl Engine {
    /// Replaces who confirms `confirm: true` phases (by default nobody: they are refused).
    pub(crate) fn set_confirmer(&mut self, confirmer: Arc<dyn Confirmer>) {
        self.confirmer = confirmer;
    }

    /// Asks for confirmation of `leaf` if it needs one (a rollback only if there is an
    /// action to undo it with); records a yes, refuses otherwise.
    pub(super) async fn confirm_leaf(
        &self,
        leaf: usize,
        rollback: bool,
    ) -> Result<(), EngineError> {
        let shared = &self.shared;
        let node = shared.plan.node(leaf);
        let action = if rollback {
            node.rollback.as_ref()
        } else {
            node.action.as_ref()
        };
        if !node.confirm || action.is_none() {
            return Ok(());
        }
        let scope = RenderScope {
            inventory: shared.inventory.as_deref(),
            templates: &shared.templates,
            ctx: shared.display_context(leaf),
        };
        let request = ConfirmRequest {
            phase: node.id.clone(),
            description: node.description.clone(),
            action: describe(action, &scope)
                .iter()
                .map(|l| shared.redactor.redact(l))
                .collect(),
            rollback,
        };
        let confirmer = self.confirmer.clone();
        let asked = request.clone();
        let answer = tokio::task::spawn_blocking(move || confirmer.confirm(&asked))
            .await
            .unwrap_or(Answer::No);
        let Answer::Yes(how) = answer else {
            return Err(EngineError::NotConfirmed {
                phase: request.phase,
                answer,
                rollback,
            });
        };
        let entry = shared.history(
            "confirmed",
            Some(request.phase),
            None,
            None,
            None,
            false,
            Some(format!(
                "{} confirmed ({how})",
                if rollback { "rollback" } else { "action" }
            )),
        );
        shared.commit(Commit {
            history: vec![entry],
            ..Default::default()
        })?;
        Ok(())
    }
}
