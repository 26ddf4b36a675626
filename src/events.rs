//! The interface between the engine and the renderers: what a run reports ([`Event`]), how it
//! ended ([`Outcome`]), and where events go ([`EventSink`]).
//!
//! 1. The engine emits events as phases start, print, retry and finish; it never prints.
//! 2. Renderers (text, JSON lines, the dry-run report) implement [`EventSink`]; a live run, a
//!    dry-run and a replay share them.
//! 3. The outcome decides the exit code ([`Outcome::exit_code`]).

use serde::Serialize;

use crate::action::Stream;
use crate::plan::{PhaseId, PhaseState};

/// What the engine reports; renderers turn these into text or JSON.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    RunStarted {
        operation: String,
        target: PhaseId,
        rollback: bool,
        dry_run: bool,
    },
    PhaseSkipped {
        id: PhaseId,
        reason: String,
    },
    PhaseStarted {
        id: PhaseId,
        description: String,
        action: Vec<String>,
        attempt: u32,
        rollback: bool,
    },
    PhaseOutput {
        id: PhaseId,
        stream: Stream,
        line: String,
    },
    PhaseRetrying {
        id: PhaseId,
        attempt: u32,
        delay_secs: f64,
        error: String,
    },
    PhaseFinished {
        id: PhaseId,
        state: PhaseState,
        rollback: bool,
        elapsed_secs: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    PhasePaused {
        id: PhaseId,
        message: String,
    },
    PhaseWouldRun {
        id: PhaseId,
        description: String,
        action: Vec<String>,
        rollback: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Forced {
        detail: String,
    },
    RunFinished {
        outcome: Outcome,
    },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Completed,
    AlreadyCompleted,
    Paused {
        phases: Vec<PhaseId>,
    },
    Failed {
        phase: PhaseId,
        error: String,
    },
    /// A safety guard refused a phase (exit 3); `--force` overrides.
    Refused {
        phase: PhaseId,
        error: String,
    },
    Interrupted,
    /// Nothing could run any more while phases remained (a bug guard: a valid plan never gets
    /// here); each waiting phase with what it waits for.
    Stuck {
        waiting: Vec<Waiting>,
    },
    RolledBack,
    NothingToRollBack,
    DryRun,
}

impl Outcome {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Outcome::Failed { .. } | Outcome::Interrupted | Outcome::Stuck { .. } => 1,
            Outcome::Refused { .. } => 3,
            _ => 0,
        }
    }
}

/// A phase that could not start, and the unfinished phases it waits for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Waiting {
    pub(crate) phase: PhaseId,
    pub(crate) waits_for: Vec<PhaseId>,
}

pub(crate) trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}
