//! The engine: executes, resumes and rolls back phases of one operation, driving the pure core in
//! [`crate::plan`] and recording every state change durably before the next step. It never
//! prints: it emits [`Event`]s that renderers consume.
//!
//! 1. The caller takes the operation's lease ([`acquire_lease`]); one executor at a time.
//! 2. `execute` checks requirements and interrupted phases (refusing, or recording `--force`),
//!    then asks the [`Scheduler`] for ready leaves and runs them as tokio tasks.
//! 3. Each leaf: transition to in progress (flushed) → release the database if the action is
//!    slow → run with timeout, retries and cancellation → capture → transition (flushed).
//! 4. `rollback` undoes started leaves in reverse execution order, refusing while a started
//!    phase outside depends on them.
//! 5. Dry-runs walk the same scheduler without touching the store and emit `PhaseWouldRun`.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Engine`], [`EngineSetup`], [`EngineError`]; the scheduling loop of `execute` and `rollback` |
//! | `leaf.rs` | running one leaf: `when:`, the action with timeout and retries, the end transition |
//! | `capture.rs` | `capture:` and secret-bearing phases |
//! | `condition.rs` | a leaf's `when:`: evaluation and its dry-run explanation |
//! | `context.rs` | the template context of a phase |
//! | `guards.rs` | requirement, dependent and interrupted checks, and their messages |
//! | `journal.rs` | transitions, history, logs and the heartbeat, into the store |
//! | `lease.rs` | the operation's lease and which phases show as interrupted |
//! | `dry_run.rs` | dry-runs and the target checks before an operation is created |
//! | `redact.rs` | [`Redactor`]: secret values out of every output |

mod capture;
mod condition;
mod confirm;
mod context;
mod control;
mod drift;
mod dry_run;
mod guards;
mod journal;
mod leaf;
mod lease;
mod redact;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use crate::action::{ActionSpec, Cancel, Plan};
use crate::events::{Event, EventSink, Outcome, Waiting};
use crate::inventory::Inventory;
use crate::plan::{
    FailureKind, IllegalTransition, PhaseId, PhaseRecord, PhaseState, Scheduler, SchedulerMode,
};
use crate::procedure::Params;
use crate::ssh::SshPool;
use crate::store::{
    Actor, HistoryEntry, Lease, LogLine, Operation, OperationState, Store, StoreError,
};
use crate::template::Templates;

pub(crate) use confirm::{Answer, ConfirmRequest, Confirmer};
pub(crate) use context::phase_context;
pub(crate) use control::{Control, ControlHandle, Request, EXIT_AT_ONCE};
pub(crate) use drift::{differences, read_facts, FactsOf};
use guards::{dependents_message, interrupted_message, requirements_message};
pub(crate) use lease::{acquire_lease, interrupted_phases};
pub(crate) use redact::Redactor;

#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("no phase {id} in operation {operation}{hint}; run `medic plan` to see the phase IDs")]
    UnknownPhase {
        id: PhaseId,
        operation: String,
        hint: String,
    },
    #[error("{}", requirements_message(.phase, .unmet))]
    Requirements {
        phase: PhaseId,
        unmet: Vec<(PhaseId, PhaseState)>,
    },
    #[error("{}", dependents_message(.phase, .dependents))]
    Dependents {
        phase: PhaseId,
        dependents: Vec<(PhaseId, PhaseState)>,
    },
    #[error("{}", interrupted_message(.phases))]
    InterruptedNotIdempotent { phases: Vec<PhaseId> },
    #[error("operation {operation} is being executed by {}; wait for it to finish (`medic plan --tail`)", .lease.describe())]
    LeaseHeld {
        operation: String,
        lease: Box<Lease>,
    },
    #[error("operation {operation} is {state}; nothing more can run in it")]
    OperationClosed { operation: String, state: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error, please report it: {0}")]
    Illegal(#[from] IllegalTransition),
    #[error("{}", confirm::not_confirmed_message(.phase, .answer, *.rollback))]
    NotConfirmed {
        phase: PhaseId,
        answer: Answer,
        rollback: bool,
    },
    #[error("{}", drift::drift_message(.operation, .differences))]
    Drift {
        operation: String,
        differences: Vec<String>,
    },
    #[error("{}", drift::drift_after_pause_message(.operation, *.paused_secs, .differences))]
    DriftAfterPause {
        operation: String,
        paused_secs: u64,
        differences: Vec<String>,
    },
}

impl EngineError {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            EngineError::UnknownPhase { .. } => 2,
            EngineError::Requirements { .. }
            | EngineError::Dependents { .. }
            | EngineError::InterruptedNotIdempotent { .. }
            | EngineError::LeaseHeld { .. }
            | EngineError::OperationClosed { .. } => 3,
            EngineError::Store(e) => e.exit_code(),
            EngineError::Illegal(_) => 1,
            EngineError::NotConfirmed { .. } | EngineError::Drift { .. } => 3,
            EngineError::DriftAfterPause { .. } => 3,
        }
    }
}

struct Shared {
    force: bool,
    inventory: Option<Arc<Inventory>>,
    ssh: Arc<SshPool>,
    /// `None` for a preview of an operation that is not stored (start --dry-run).
    store: Mutex<Option<Store>>,
    op: Operation,
    plan: Plan,
    records: Mutex<HashMap<PhaseId, PhaseRecord>>,
    vars: Mutex<serde_json::Map<String, serde_json::Value>>,
    /// Parameters, and secrets: secret parameters and values captured from secret-bearing
    /// phases (which grow during the run).
    params: std::sync::RwLock<Params>,
    actor: Actor,
    reason: Option<String>,
    sink: Arc<dyn EventSink>,
    templates: Templates,
    cancel: Cancel,
    pending_logs: Mutex<Vec<LogLine>>,
    /// Output of running leaves that use a secret and capture: held back from the store until
    /// their captures are known (and hidden), see [`Shared::release_held_output`].
    held_logs: Mutex<HashMap<usize, Vec<LogLine>>>,
    /// History entries written with the next transition (e.g. a guard override).
    pending_history: Mutex<Vec<HistoryEntry>>,
    redactor: Redactor,
    /// The first failure of the store under this run (deleted, replaced, disk full, ...):
    /// no phase starts after it, and the run ends with it.
    store_failure: Mutex<Option<StoreError>>,
}

/// Executes one operation. Created after the caller holds the operation's lease.
pub(crate) struct Engine {
    shared: Arc<Shared>,
    force: bool,
    /// Taken by the first run's request listener (`control.rs`).
    control: Mutex<Option<Control>>,
    /// Every failure is recorded and the run goes on (`medic status`); see [`Engine::tolerates`].
    keep_going: bool,
    /// Who confirms `confirm: true` phases (`confirm.rs`).
    confirmer: Arc<dyn Confirmer>,
    /// The drift gate ran in this engine (`drift.rs`): once, before the first destructive leaf.
    drift_checked: std::sync::atomic::AtomicBool,
}

/// Everything the engine needs to run an operation.
pub(crate) struct EngineSetup {
    pub(crate) store: Store,
    pub(crate) inventory: Option<Arc<Inventory>>,
    pub(crate) ssh: Arc<SshPool>,
    pub(crate) operation: Operation,
    pub(crate) actor: Actor,
    pub(crate) reason: Option<String>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) control: Control,
    pub(crate) force: bool,
}

impl Engine {
    pub(crate) fn new(setup: EngineSetup) -> Result<Engine, EngineError> {
        let EngineSetup {
            mut store,
            inventory,
            ssh,
            operation,
            actor,
            reason,
            sink,
            control,
            force,
        } = setup;
        let cancel = control.cancel();
        let plan = store.plan(&operation.id)?;
        let records = store.records(&operation.id)?;
        let vars = store.vars(&operation.id)?;
        let secrets = store.secrets(&operation.id)?;
        let params = Params {
            values: operation.params.clone(),
            secrets,
        };
        let redactor = Redactor::new(&params.secrets);
        Ok(Engine::around(
            Arc::new(Shared {
                force,
                inventory,
                ssh,
                store: Mutex::new(Some(store)),
                op: operation,
                plan,
                records: Mutex::new(records),
                vars: Mutex::new(vars),
                params: std::sync::RwLock::new(params),
                actor,
                reason,
                sink,
                templates: Templates::new(),
                cancel,
                pending_logs: Mutex::new(Vec::new()),
                held_logs: Mutex::new(HashMap::new()),
                pending_history: Mutex::new(Vec::new()),
                redactor,
                store_failure: Mutex::new(None),
            }),
            force,
            control,
        ))
    }

    /// An engine over an operation that is not stored, for `start --dry-run`.
    pub(crate) fn preview(
        operation: Operation,
        plan: Plan,
        params: Params,
        inventory: Option<Arc<Inventory>>,
        sink: Arc<dyn EventSink>,
    ) -> Engine {
        let (control, _) = Control::new();
        let cancel = control.cancel();
        let redactor = Redactor::new(&params.secrets);
        Engine::around(
            Arc::new(Shared {
                force: false,
                inventory,
                ssh: Arc::new(SshPool::new()),
                store: Mutex::new(None),
                actor: operation.created_by.clone(),
                op: operation,
                plan,
                records: Mutex::new(HashMap::new()),
                vars: Mutex::new(serde_json::Map::new()),
                params: std::sync::RwLock::new(params),
                reason: None,
                sink,
                templates: Templates::new(),
                cancel,
                pending_logs: Mutex::new(Vec::new()),
                held_logs: Mutex::new(HashMap::new()),
                pending_history: Mutex::new(Vec::new()),
                redactor,
                store_failure: Mutex::new(None),
            }),
            false,
            control,
        )
    }

    /// The engine around its shared state: nobody to confirm with yet, failures stop the run.
    fn around(shared: Arc<Shared>, force: bool, control: Control) -> Engine {
        Engine {
            shared,
            force,
            control: Mutex::new(Some(control)),
            keep_going: false,
            confirmer: Arc::new(confirm::Unattended),
            drift_checked: Default::default(),
        }
    }

    pub(crate) fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    fn find(&self, id: &PhaseId) -> Result<usize, EngineError> {
        self.shared.plan.find(id).ok_or_else(|| {
            let hint = crate::source::closest(
                id.as_str(),
                self.shared.plan.nodes().iter().map(|n| n.id.as_str()),
            )
            .map(|c| format!("; did you mean {c}?"))
            .unwrap_or_default();
            EngineError::UnknownPhase {
                id: id.clone(),
                operation: self.shared.op.id.clone(),
                hint,
            }
        })
    }

    fn states(&self) -> Vec<PhaseState> {
        let records = self.shared.records.lock().expect("records lock");
        self.shared.plan.states(&records)
    }

    fn ensure_open(&self) -> Result<(), EngineError> {
        if self.shared.op.state != OperationState::Active {
            return Err(EngineError::OperationClosed {
                operation: self.shared.op.id.clone(),
                state: self.shared.op.state.as_str().to_string(),
            });
        }
        Ok(())
    }

    /// Announces a run and returns the target's index and the current states.
    fn start_run(
        &self,
        target: &PhaseId,
        rollback: bool,
        dry_run: bool,
    ) -> Result<(usize, Vec<PhaseState>), EngineError> {
        let t = self.find(target)?;
        self.shared.sink.emit(&Event::RunStarted {
            operation: self.shared.op.id.clone(),
            target: target.clone(),
            rollback,
            dry_run,
        });
        Ok((t, self.states()))
    }

    /// Says so when there is nothing to execute.
    fn skip_completed(&self, target: &PhaseId, state: PhaseState) -> bool {
        if state != PhaseState::Completed {
            return false;
        }
        self.shared.sink.emit(&Event::PhaseSkipped {
            id: target.clone(),
            reason: "already completed; nothing to do".into(),
        });
        true
    }

    /// Executes `target` (`/` for resume): its unfinished leaves in dependency order.
    pub(crate) async fn execute(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
        self.ensure_open()?;
        let (t, states) = self.start_run(target, false, false)?;
        let plan = &self.shared.plan;
        if self.skip_completed(target, states[t]) {
            return Ok(self.finish(Outcome::AlreadyCompleted));
        }
        self.check_execute(t, &states, false)?;
        let mut scheduler = Scheduler::new(plan, &states, t, SchedulerMode::Execute);
        let mut tasks: JoinSet<(usize, bool)> = JoinSet::new();
        let mut first_failure: Option<usize> = None;
        let heartbeat = self.spawn_heartbeat();
        let control = self.spawn_control();
        let mut refused: Option<EngineError> = None;
        loop {
            if refused.is_none() {
                refused = self.start_ready_phases(&mut scheduler, &mut tasks).await;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (leaf, ok) = match joined {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let tolerated = !ok && self.tolerates(leaf);
            scheduler.finished(leaf, ok || tolerated);
            if !ok && !tolerated && first_failure.is_none() {
                first_failure = Some(leaf);
            }
        }
        heartbeat.abort();
        control.inspect(|c| c.abort());
        self.shared.end_if_store_failed()?;
        self.shared.flush_logs()?;
        if let Some(e) = refused {
            return Err(e);
        }
        let outcome = self.execute_outcome(&scheduler, first_failure);
        if matches!(outcome, Outcome::Paused { .. }) {
            self.record_pause_facts().await?;
        }
        Ok(self.finish(outcome))
    }

    /// Starts every leaf the scheduler offers as a task, unless the run is being cancelled or
    /// the store has failed; a leaf that is not confirmed stops it (returned, nothing more starts).
    async fn start_ready_phases(
        &self,
        scheduler: &mut Scheduler<'_, ActionSpec>,
        tasks: &mut JoinSet<(usize, bool)>,
    ) -> Option<EngineError> {
        if self.shared.cancel.borrow().is_some() || self.shared.store_failed() {
            return None;
        }
        for leaf in scheduler.next_ready() {
            if let Err(e) = self.check_drift(leaf).await {
                return Some(e);
            }
            if let Err(e) = self.confirm_leaf(leaf, false).await {
                return Some(e);
            }
            let shared = self.shared.clone();
            tasks.spawn(async move {
                let ok = shared.run_leaf(leaf, false).await;
                (leaf, ok)
            });
        }
        None
    }

    /// How an execute ended, once no leaf runs any more: at its first failure (a refusal or
    /// another failure), interrupted, stuck (leaves remain and none can start), at a pause, or
    /// completed.
    fn execute_outcome(
        &self,
        scheduler: &Scheduler<'_, ActionSpec>,
        first_failure: Option<usize>,
    ) -> Outcome {
        let plan = &self.shared.plan;
        if let Some(leaf) = first_failure.filter(|l| self.refused(*l)) {
            let id = plan.node(leaf).id.clone();
            let error = self.error_of(&id);
            Outcome::Refused { phase: id, error }
        } else if let Some(leaf) = first_failure {
            let id = plan.node(leaf).id.clone();
            let error = self.error_of(&id);
            Outcome::Failed { phase: id, error }
        } else if self.shared.cancel.borrow().is_some() && !scheduler.all_done() {
            Outcome::Interrupted
        } else if !scheduler.stuck().is_empty() {
            let id = |i: usize| plan.node(i).id.clone();
            Outcome::Stuck {
                waiting: scheduler
                    .stuck()
                    .into_iter()
                    .map(|(leaf, on)| Waiting {
                        phase: id(leaf),
                        waits_for: on.into_iter().map(id).collect(),
                    })
                    .collect(),
            }
        } else if !scheduler.paused().is_empty() && !scheduler.all_done() {
            self.report_paused(scheduler.paused());
            Outcome::Paused {
                phases: scheduler
                    .paused()
                    .iter()
                    .map(|p| plan.node(*p).id.clone())
                    .collect(),
            }
        } else {
            Outcome::Completed
        }
    }

    /// Reports each pause phase the run stopped at, with its message.
    fn report_paused(&self, paused: &[usize]) {
        let plan = &self.shared.plan;
        for p in paused {
            let node = plan.node(*p);
            let message = match &node.action {
                Some(ActionSpec::Pause(pause)) => {
                    let ctx = self.shared.display_context(*p);
                    self.shared
                        .templates
                        .render(&pause.message, false, &ctx)
                        .unwrap_or_else(|_| pause.message.clone())
                }
                _ => String::new(),
            };
            self.shared.sink.emit(&Event::PhasePaused {
                id: node.id.clone(),
                message,
            });
        }
    }

    fn error_of(&self, id: &PhaseId) -> String {
        self.shared
            .records
            .lock()
            .expect("records lock")
            .get(id)
            .and_then(|r| r.error.clone())
            .unwrap_or_default()
    }

    /// Whether a leaf's last failure was a safety guard's refusal.
    fn refused(&self, leaf: usize) -> bool {
        let id = &self.shared.plan.node(leaf).id;
        self.shared
            .records
            .lock()
            .expect("records lock")
            .get(id)
            .is_some_and(|r| r.failure == Some(FailureKind::Refused))
    }

    /// Rolls back `target`: its started leaves, in reverse execution order.
    pub(crate) async fn rollback(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
        self.ensure_open()?;
        let (t, states) = self.start_run(target, true, false)?;
        let plan = &self.shared.plan;
        let order = plan.rollback_order(&states, t);
        if order.is_empty() {
            self.shared.sink.emit(&Event::PhaseSkipped {
                id: target.clone(),
                reason: "nothing under it has started (or it is already rolled back)".into(),
            });
            return Ok(self.finish(Outcome::NothingToRollBack));
        }
        self.check_rollback(t, &states, false)?;
        let heartbeat = self.spawn_heartbeat();
        let control = self.spawn_control();
        let mut outcome = Outcome::RolledBack;
        let mut refused = None;
        for leaf in order {
            if self.shared.cancel.borrow().is_some() {
                outcome = Outcome::Interrupted;
                break;
            }
            if self.shared.store_failed() {
                break;
            }
            if let Err(e) = self.confirm_leaf(leaf, true).await {
                refused = Some(e);
                break;
            }
            if !self.shared.clone().run_leaf(leaf, true).await {
                let id = plan.node(leaf).id.clone();
                let error = self.error_of(&id);
                outcome = Outcome::Failed { phase: id, error };
                break;
            }
        }
        heartbeat.abort();
        control.inspect(|c| c.abort());
        self.shared.end_if_store_failed()?;
        self.shared.flush_logs()?;
        if let Some(e) = refused {
            return Err(e);
        }
        Ok(self.finish(outcome))
    }

    /// The store back, after a dry-run (which holds no lease).
    pub(crate) fn into_store(self) -> Store {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .take()
            .expect("engine has a store")
    }

    fn finish(&self, outcome: Outcome) -> Outcome {
        self.shared.sink.emit(&Event::RunFinished {
            outcome: outcome.clone(),
        });
        outcome
    }
}

/// Why rolling back a phase that was skipped does nothing.
const SKIPPED_ROLLBACK: &str =
    "it was skipped (its `when:` was false), so there is nothing to undo; recorded as rolled back";

mod probe;
