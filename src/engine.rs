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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::action::{
    cancelled, ActionCtx, ActionError, ActionSpec, Cancel, Plan, RenderScope, Stream,
};
use crate::events::{Event, EventSink, Outcome, Waiting};
use crate::inventory::Inventory;
use crate::plan::{
    Condition, FailureKind, IllegalTransition, PhaseId, PhaseRecord, PhaseState, Scheduler,
    SchedulerMode, Transition,
};
use crate::procedure::{pending_capture_placeholder, Params, MIN_SECRET_LEN};
use crate::ssh::SshPool;
use crate::store::{
    now_ms, process_start_ticks, Actor, Commit, HistoryEntry, Lease, LogLine, Operation,
    OperationState, OutputCap, Store, StoreError,
};
use crate::template::Templates;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
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
}

fn requirements_message(phase: &PhaseId, unmet: &[(PhaseId, PhaseState)]) -> String {
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

fn dependents_message(phase: &PhaseId, dependents: &[(PhaseId, PhaseState)]) -> String {
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

fn interrupted_message(phases: &[PhaseId]) -> String {
    let list: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
    format!(
        "phase{} {} {} interrupted and {} not idempotent, so running again could repeat its effect; check what it did, then rerun with --force (recorded in history) or roll it back",
        if phases.len() == 1 { "" } else { "s" },
        list.join(", "),
        if phases.len() == 1 { "was" } else { "were" },
        if phases.len() == 1 { "is" } else { "are" },
    )
}

impl EngineError {
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::UnknownPhase { .. } => 2,
            EngineError::Requirements { .. }
            | EngineError::Dependents { .. }
            | EngineError::InterruptedNotIdempotent { .. }
            | EngineError::LeaseHeld { .. }
            | EngineError::OperationClosed { .. } => 3,
            EngineError::Store(e) => e.exit_code(),
            EngineError::Illegal(_) => 1,
        }
    }
}

/// Replaces secret values in text that came from the outside (command output, errors).
///
/// A multi-line secret is replaced whole, and each of its lines on its own too, since output
/// reaches the redactor line by line. Values and lines shorter than [`MIN_SECRET_LEN`] are not
/// searched for (they would garble every output they happen to occur in); secret parameters
/// that short are refused when the operation starts.
#[derive(Default)]
pub struct Redactor {
    secrets: std::sync::RwLock<Vec<(String, String)>>,
}

impl Redactor {
    pub fn new(secrets: &BTreeMap<String, String>) -> Self {
        let redactor = Redactor::default();
        for (k, v) in secrets {
            redactor.add(k, v);
        }
        redactor
    }

    /// Starts hiding `value` (and each of its lines) as `<secret:NAME>`.
    pub fn add(&self, name: &str, value: &str) {
        let placeholder = crate::procedure::secret_placeholder(name);
        let mut list = self.secrets.write().expect("redactor lock");
        let lines = value.lines().map(|l| l.trim_end_matches('\r'));
        for v in std::iter::once(value).chain(lines) {
            if v.chars().count() < MIN_SECRET_LEN {
                continue;
            }
            // Also the forms in which commands print it back: shell-quoted (medic's own
            // quoting, bash's `set -x`) and inside a JSON string (jq, kubectl -o json).
            let json = serde_json::to_string(v).unwrap_or_default();
            let forms = [
                v.to_string(),
                crate::template::shell_quote(v),
                format!("'{}'", v.replace('\'', "'\\''")),
                json.strip_prefix('"')
                    .and_then(|j| j.strip_suffix('"'))
                    .unwrap_or(v)
                    .to_string(),
            ];
            for form in forms {
                if !list.iter().any(|(x, _)| *x == form) {
                    list.push((form, placeholder.clone()));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        list.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, placeholder) in self.secrets.read().expect("redactor lock").iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), placeholder);
            }
        }
        out
    }

    /// Like [`Redactor::redact`], for a line that output reading cut at `cut` (a byte offset
    /// of the marker it appended): the kept text may end in the first part of a secret whose
    /// rest was dropped, so such a partial secret is removed too.
    pub fn redact_cut(&self, text: &str, cut: usize) -> String {
        let (kept, marker) = text.split_at(cut.min(text.len()));
        let mut kept = self.redact(kept);
        for (value, placeholder) in self.secrets.read().expect("redactor lock").iter() {
            let partial = (1..value.len())
                .rev()
                .filter(|k| value.is_char_boundary(*k))
                .find(|k| kept.ends_with(&value[..*k]));
            if let Some(k) = partial {
                kept.truncate(kept.len() - k);
                kept.push_str(placeholder);
                break;
            }
        }
        kept + &self.redact(marker)
    }

    /// Whether `text` holds a secret value (or a line of one).
    pub fn reveals(&self, text: &str) -> bool {
        self.secrets
            .read()
            .expect("redactor lock")
            .iter()
            .any(|(value, _)| text.contains(value.as_str()))
    }
}

/// Template context for a phase: parameters (real secrets only for execution), captured
/// variables (pending ones shown as such for display), loop locals, and the operation.
pub fn phase_context(
    op: &Operation,
    plan: &Plan,
    node: usize,
    params: &Params,
    vars: &serde_json::Map<String, serde_json::Value>,
    inventory: Option<&Inventory>,
    reveal: bool,
) -> minijinja::Value {
    let mut ctx: BTreeMap<String, serde_json::Value> = params.template_values(reveal);
    if !reveal {
        for name in plan.capture_names() {
            if !vars.contains_key(name) && !params.secrets.contains_key(name) {
                ctx.insert(
                    name.clone(),
                    serde_json::Value::String(pending_capture_placeholder(name)),
                );
            }
        }
    }
    for (k, v) in vars {
        ctx.insert(k.clone(), v.clone());
    }
    for (k, v) in &plan.node(node).locals {
        ctx.insert(k.clone(), v.clone());
    }
    ctx.insert(
        "operation".into(),
        serde_json::json!({ "id": op.id, "procedure": op.procedure }),
    );
    if let Some(inv) = inventory {
        ctx.insert("inventory".into(), inv.template_value());
    }
    minijinja::Value::from_serialize(&ctx)
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
    /// their captures are known (and hidden), see [`Shared::release_held_logs`].
    held_logs: Mutex<HashMap<usize, Vec<LogLine>>>,
    /// History entries written with the next transition (e.g. a guard override).
    pending_history: Mutex<Vec<HistoryEntry>>,
    redactor: Redactor,
    /// The first failure of the store under this run (deleted, replaced, disk full, ...):
    /// no phase starts after it, and the run ends with it.
    store_failure: Mutex<Option<StoreError>>,
}

/// Executes one operation. Created after the caller holds the operation's lease.
pub struct Engine {
    shared: Arc<Shared>,
    force: bool,
}

/// Everything the engine needs to run an operation.
pub struct EngineSetup {
    pub store: Store,
    pub inventory: Option<Arc<Inventory>>,
    pub ssh: Arc<SshPool>,
    pub operation: Operation,
    pub actor: Actor,
    pub reason: Option<String>,
    pub sink: Arc<dyn EventSink>,
    pub cancel: Cancel,
    pub force: bool,
}

impl Engine {
    pub fn new(setup: EngineSetup) -> Result<Engine, EngineError> {
        let EngineSetup {
            mut store,
            inventory,
            ssh,
            operation,
            actor,
            reason,
            sink,
            cancel,
            force,
        } = setup;
        let plan = store.plan(&operation.id)?;
        let records = store.records(&operation.id)?;
        let vars = store.vars(&operation.id)?;
        let secrets = store.secrets(&operation.id)?;
        let params = Params {
            values: operation.params.clone(),
            secrets,
        };
        let redactor = Redactor::new(&params.secrets);
        Ok(Engine {
            shared: Arc::new(Shared {
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
        })
    }

    /// An engine over an operation that is not stored, for `start --dry-run`.
    pub fn preview(
        operation: Operation,
        plan: Plan,
        params: Params,
        inventory: Option<Arc<Inventory>>,
        sink: Arc<dyn EventSink>,
    ) -> Engine {
        let (_tx, cancel) = tokio::sync::watch::channel(None);
        let redactor = Redactor::new(&params.secrets);
        Engine {
            shared: Arc::new(Shared {
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
            force: false,
        }
    }

    pub fn plan(&self) -> &Plan {
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

    fn with_states(&self, ids: &[usize], states: &[PhaseState]) -> Vec<(PhaseId, PhaseState)> {
        ids.iter()
            .map(|i| (self.shared.plan.node(*i).id.clone(), states[*i]))
            .collect()
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

    /// Records an override of a safety refusal in the history.
    fn record_forced(&self, phase: &PhaseId, detail: String) -> Result<(), EngineError> {
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
    fn check_execute(
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
        let stuck: Vec<PhaseId> = plan
            .subtree(target)
            .filter(|i| {
                plan.node(*i).is_leaf()
                    && states[*i] == PhaseState::InProgress
                    && !plan.node(*i).idempotent
            })
            .map(|i| plan.node(i).id.clone())
            .collect();
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
    pub async fn execute(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
        self.ensure_open()?;
        let (t, states) = self.start_run(target, false, false)?;
        let plan = &self.shared.plan;
        let sink = &self.shared.sink;
        if self.skip_completed(target, states[t]) {
            return Ok(self.finish(Outcome::AlreadyCompleted));
        }
        self.check_execute(t, &states, false)?;
        let mut scheduler = Scheduler::new(plan, &states, t, SchedulerMode::Execute);
        let mut tasks: JoinSet<(usize, bool)> = JoinSet::new();
        let mut first_failure: Option<usize> = None;
        let heartbeat = self.spawn_heartbeat();
        loop {
            if self.shared.cancel.borrow().is_none() && !self.shared.store_failed() {
                for leaf in scheduler.next_ready() {
                    let shared = self.shared.clone();
                    tasks.spawn(async move {
                        let ok = shared.run_leaf(leaf, false).await;
                        (leaf, ok)
                    });
                }
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (leaf, ok) = match joined {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            scheduler.finished(leaf, ok);
            if !ok && first_failure.is_none() {
                first_failure = Some(leaf);
            }
        }
        heartbeat.abort();
        self.shared.end_if_store_failed()?;
        self.shared.flush_logs()?;
        let outcome = if let Some(leaf) = first_failure.filter(|l| self.refused(*l)) {
            let id = plan.node(leaf).id.clone();
            let error = self.error_of(&id);
            Outcome::Refused { phase: id, error }
        } else if let Some(leaf) = first_failure {
            let id = plan.node(leaf).id.clone();
            let error = self
                .shared
                .records
                .lock()
                .expect("records lock")
                .get(&id)
                .and_then(|r| r.error.clone())
                .unwrap_or_default();
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
            for p in scheduler.paused() {
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
                sink.emit(&Event::PhasePaused {
                    id: node.id.clone(),
                    message,
                });
            }
            Outcome::Paused {
                phases: scheduler
                    .paused()
                    .iter()
                    .map(|p| plan.node(*p).id.clone())
                    .collect(),
            }
        } else {
            Outcome::Completed
        };
        Ok(self.finish(outcome))
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
    pub async fn rollback(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
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
        let mut outcome = Outcome::RolledBack;
        for leaf in order {
            if self.shared.cancel.borrow().is_some() {
                outcome = Outcome::Interrupted;
                break;
            }
            if self.shared.store_failed() {
                break;
            }
            if !self.shared.clone().run_leaf(leaf, true).await {
                let id = plan.node(leaf).id.clone();
                let error = self
                    .shared
                    .records
                    .lock()
                    .expect("records lock")
                    .get(&id)
                    .and_then(|r| r.error.clone())
                    .unwrap_or_default();
                outcome = Outcome::Failed { phase: id, error };
                break;
            }
        }
        heartbeat.abort();
        self.shared.end_if_store_failed()?;
        self.shared.flush_logs()?;
        Ok(self.finish(outcome))
    }

    fn check_rollback(
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

    /// What `execute` would do, in order, without changing anything.
    pub fn dry_run_execute(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
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
    pub fn dry_run_rollback(&self, target: &PhaseId) -> Result<Outcome, EngineError> {
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
    pub fn check_targets(&self) -> Vec<String> {
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
    pub fn dry_run_finish(&self, result: &Result<Outcome, EngineError>) {
        if let Ok(outcome) = result {
            self.finish(outcome.clone());
        }
    }

    /// The store back, after a dry-run (which holds no lease).
    pub fn into_store(self) -> Store {
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

    /// Background duties while running: every 10 ms, step aside for a waiting reader if the
    /// store is idle (even while the engine is blocked elsewhere, e.g. on a full stdout pipe);
    /// every second, flush logs; every ten, refresh the lease heartbeat.
    fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
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
    pub fn release(self) -> Result<Store, EngineError> {
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

/// Pending log lines that make the engine write them at once.
const LOG_FLUSH_LINES: usize = 8192;

/// Why rolling back a phase that was skipped does nothing.
const SKIPPED_ROLLBACK: &str =
    "it was skipped (its `when:` was false), so there is nothing to undo; recorded as rolled back";

fn describe(action: Option<&ActionSpec>, scope: &RenderScope<'_>) -> Vec<String> {
    match action {
        Some(a) => a
            .describe(scope)
            .unwrap_or_else(|e| vec![format!("{}: cannot render yet ({e})", a.kind())]),
        None => Vec::new(),
    }
}

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

impl Shared {
    /// Remembers the first store failure; the run starts no phase after it.
    fn note_store_failure(&self, e: StoreError) {
        self.store_failure
            .lock()
            .expect("store failure lock")
            .get_or_insert(e);
    }

    fn store_failed(&self) -> bool {
        self.store_failure
            .lock()
            .expect("store failure lock")
            .is_some()
    }

    /// Ends the run with the store's failure, if it had one (instead of an outcome that
    /// would claim what could not be recorded).
    fn end_if_store_failed(&self) -> Result<(), EngineError> {
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
    fn history(
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
            seq: 0,
            time: now_ms(),
            user: self.actor.user.clone(),
            host: self.actor.host.clone(),
            pid: self.actor.pid,
            command: self.redactor.redact(&self.actor.command),
            reason: self.reason.clone(),
            event: event.to_string(),
            phase,
            from,
            to,
            error: error.map(|e| self.redactor.redact(&e)),
            forced,
            detail: detail.map(|d| self.redactor.redact(&d)),
        }
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        match self.store.lock().expect("store lock").as_mut() {
            Some(store) => store.commit(&self.op.id, commit),
            None => Ok(()),
        }
    }

    /// Closes the database so readers can open it while a slow action runs.
    fn release_store(&self) {
        if let Some(store) = self.store.lock().expect("store lock").as_mut() {
            store.release();
        }
    }

    fn store_is_open(&self) -> bool {
        self.store
            .lock()
            .expect("store lock")
            .as_ref()
            .is_some_and(|s| s.is_open())
    }

    fn flush_logs(&self) -> Result<(), StoreError> {
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

    fn heartbeat(&self) -> Result<(), StoreError> {
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

    /// The dry-run note for a `when:`: the condition as written, and what it gives now when
    /// it uses neither a value captured later nor a secret.
    fn describe_condition(&self, cond: &Condition, scope: &RenderScope<'_>) -> String {
        let expr = crate::template::strip_braces(&cond.that);
        let names = self
            .templates
            .expression_names(&cond.that)
            .unwrap_or_default();
        let decided_later = names.iter().any(|n| {
            self.params
                .read()
                .expect("params lock")
                .secrets
                .contains_key(n)
                || scope
                    .ctx
                    .get_attr(n)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.ends_with(": captured at run time>")))
                    .unwrap_or(false)
        });
        if decided_later {
            return format!("only when {expr}; decided at run time");
        }
        match self.templates.eval(&cond.that, &scope.ctx) {
            Ok(v) if v.is_true() => format!("only when {expr}; true now"),
            Ok(_) => {
                let reason = self
                    .skip_reason(cond, &scope.ctx)
                    .unwrap_or_else(|e| e.to_string());
                format!("only when {expr}; false now, so it would be skipped: {reason}")
            }
            Err(e) => format!("only when {expr}; cannot evaluate yet ({e})"),
        }
    }

    fn skip_reason(
        &self,
        cond: &Condition,
        ctx: &minijinja::Value,
    ) -> Result<String, crate::template::TemplateError> {
        match &cond.reason {
            Some(r) => self.templates.render(r, false, ctx),
            None => Ok(format!(
                "condition is false: {}",
                crate::template::strip_braces(&cond.that)
            )),
        }
    }

    /// Evaluates a leaf's `when:` with the real values: `None` when the action should run,
    /// else why it is skipped.
    fn skip_because(&self, leaf: usize, cond: &Condition) -> Result<Option<String>, String> {
        let ctx = self.context(leaf, true);
        let expr = crate::template::strip_braces(&cond.that);
        let value = self
            .templates
            .eval(&cond.that, &ctx)
            .map_err(|e| format!("when `{expr}`: {e}"))?;
        if value.is_true() {
            return Ok(None);
        }
        self.skip_reason(cond, &ctx)
            .map(Some)
            .map_err(|e| format!("when reason: {e}"))
    }

    fn display_context(&self, node: usize) -> minijinja::Value {
        self.context(node, false)
    }

    /// The template context of `node` with the variables captured so far; real secret values
    /// only when `reveal` (execution).
    fn context(&self, node: usize, reveal: bool) -> minijinja::Value {
        let vars = self.vars.lock().expect("vars lock").clone();
        let params = self.params.read().expect("params lock");
        phase_context(
            &self.op,
            &self.plan,
            node,
            &params,
            &vars,
            self.inventory.as_deref(),
            reveal,
        )
    }

    /// Applies `t` to `leaf` and makes it durable (with pending logs and new variables)
    /// before returning.
    fn record_transition(
        &self,
        leaf: usize,
        t: Transition,
        error: Option<(FailureKind, String)>,
        detail: Option<String>,
        captured: Option<Captured>,
    ) -> Result<PhaseRecord, EngineError> {
        let id = self.plan.node(leaf).id.clone();
        let mut records = self.records.lock().expect("records lock");
        let current = records.get(&id).cloned().unwrap_or_default();
        let mut next = current.apply(t, now_ms())?;
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
        let event = match t {
            Transition::Start => "start",
            Transition::Restart => "restart",
            Transition::Complete => "complete",
            Transition::Skip => "skip",
            Transition::Fail => "fail",
            Transition::BeginRollback => "rollback_start",
            Transition::FinishRollback => "rollback_complete",
            Transition::FailRollback => "rollback_fail",
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

    /// Runs (or rolls back) one leaf to its end state. Returns whether it succeeded.
    async fn run_leaf(self: Arc<Self>, leaf: usize, rollback: bool) -> bool {
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
            let (t, error, summary) = match self.skip_because(leaf, cond) {
                Ok(None) => (None, None, None),
                Ok(Some(reason)) => (
                    Some(Transition::Skip),
                    None,
                    Some(self.redactor.redact(&format!("skipped: {reason}"))),
                ),
                Err(e) => (Some(Transition::Fail), Some(self.redactor.redact(&e)), None),
            };
            if let Some(t) = t {
                let failure = error.clone().map(|e| (FailureKind::Condition, e));
                let record = self.record_transition(leaf, t, failure, summary.clone(), None)?;
                self.sink.emit(&Event::PhaseFinished {
                    id,
                    state: record.state,
                    rollback,
                    elapsed_secs: 0.0,
                    error: error.clone(),
                    summary,
                });
                return Ok(error.is_none());
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
                id,
                state: PhaseState::RolledBack,
                rollback,
                elapsed_secs: 0.0,
                error: None,
                summary: Some(why.into()),
            });
            return Ok(true);
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
        self.release_held_logs(leaf);
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
                let record =
                    self.record_transition(leaf, t, Some((kind, error.clone())), None, None)?;
                self.sink.emit(&Event::PhaseFinished {
                    id,
                    state: record.state,
                    rollback,
                    elapsed_secs,
                    error: Some(error),
                    summary: None,
                });
                Ok(false)
            }
        }
    }

    async fn attempt_with_retries(
        &self,
        leaf: usize,
        action: &ActionSpec,
    ) -> Result<crate::action::ActionOutput, (FailureKind, String)> {
        let node = self.plan.node(leaf);
        let id = node.id.clone();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let ctx = self.context(leaf, true);
            let scope = RenderScope {
                inventory: self.inventory.as_deref(),
                templates: &self.templates,
                ctx,
            };
            // The log keeps the head and the tail of this attempt's output (see OutputCap).
            let cap = Mutex::new(OutputCap::default());
            // Output that may show values about to be captured as secrets is held back.
            let hold = !node.capture.is_empty() && self.uses_secret(leaf);
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
                self.sink.emit(&Event::PhaseOutput {
                    id: id.clone(),
                    stream,
                    line: text,
                });
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
                Some(secs) => {
                    match tokio::time::timeout(Duration::from_secs_f64(secs), run).await {
                        Ok(r) => r,
                        Err(_) => Err(ActionError::TimedOut {
                            after: crate::action::wait::human_secs(secs),
                        }),
                    }
                }
                None => run.await,
            };
            let tail = cap.lock().expect("cap lock").finish(&id);
            for line in tail {
                if !self.hold_log(hold, leaf, &line) {
                    self.pending_logs.lock().expect("logs lock").push(line);
                }
            }
            let (kind, error) = match result {
                Ok(out) => return Ok(out),
                Err(e) if e.is_cancelled() || matches!(e, ActionError::Refused { .. }) => {
                    return Err((e.kind(), e.to_string()))
                }
                Err(e) => (e.kind(), e.to_string()),
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
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(delay)) => {}
                reason = cancelled(&self.cancel) => return Err((FailureKind::Cancelled, reason)),
            }
        }
    }

    /// Evaluates the phase's `capture:` expressions over the action's result.
    ///
    /// When the phase used a secret (in any template of its action or condition) or its result
    /// holds one, every value it captures is a secret too: kept with the operation's secrets,
    /// never in its variables, shown as `<secret:NAME>` and hidden in all later output.
    fn capture(&self, leaf: usize, result: &serde_json::Value) -> Result<Captured, String> {
        let node = self.plan.node(leaf);
        // Parameters and earlier captures are visible too; the result's fields win.
        let phase_ctx = self.context(leaf, true);
        let mut ctx: serde_json::Map<String, serde_json::Value> =
            match serde_json::to_value(&phase_ctx) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
        if let serde_json::Value::Object(map) = result {
            ctx.extend(map.clone());
        }
        ctx.insert("result".into(), result.clone());
        let ctx = minijinja::Value::from_serialize(&ctx);
        let secret =
            self.uses_secret(leaf) || json_strings(result).any(|s| self.redactor.reveals(s));
        let mut vars = self.vars.lock().expect("vars lock").clone();
        let mut secrets = secret.then(|| self.params.read().expect("params lock").secrets.clone());
        for (name, expr) in &node.capture {
            let value = self.templates.eval(expr, &ctx).map_err(|e| {
                self.redactor
                    .redact(&format!("capture `{name}` from `{expr}`: {e}"))
            })?;
            if value.is_undefined() || value.is_none() {
                return Err(format!(
                    "capture `{name}`: `{expr}` found nothing in the result"
                ));
            }
            let json =
                serde_json::to_value(&value).map_err(|e| format!("capture `{name}`: {e}"))?;
            match &mut secrets {
                Some(secrets) => {
                    let text = match json {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.redactor.add(name, &text);
                    vars.remove(name);
                    secrets.insert(name.clone(), text);
                }
                None => {
                    vars.insert(name.clone(), json);
                }
            }
        }
        Ok(Captured { vars, secrets })
    }

    /// Keeps `line` back when `hold`; returns whether it did.
    fn hold_log(&self, hold: bool, leaf: usize, line: &LogLine) -> bool {
        if hold {
            let mut held = self.held_logs.lock().expect("held logs lock");
            held.entry(leaf).or_default().push(line.clone());
        }
        hold
    }

    /// Moves a leaf's held output to the logs written with its next transition, hiding the
    /// values it captured (its own output showed them before they were known to be secret).
    fn release_held_logs(&self, leaf: usize) {
        let held = self.held_logs.lock().expect("held logs lock").remove(&leaf);
        let mut pending = self.pending_logs.lock().expect("logs lock");
        for mut line in held.into_iter().flatten() {
            line.text = self.redactor.redact(&line.text);
            pending.push(line);
        }
    }

    /// Whether a leaf's action, rollback or condition uses a secret (a secret parameter or a
    /// secret captured earlier).
    fn uses_secret(&self, leaf: usize) -> bool {
        let node = self.plan.node(leaf);
        let params = self.params.read().expect("params lock");
        let is_secret = |names: Result<BTreeSet<String>, _>| {
            names.map_or(true, |names: BTreeSet<String>| {
                names.iter().any(|n| params.secrets.contains_key(n))
            })
        };
        let action = serde_json::to_value(&node.action).unwrap_or_default();
        let in_action = json_strings(&action).any(|source| {
            (source.contains("{{") || source.contains("{%"))
                && is_secret(self.templates.template_names(source, false))
        });
        let expressions = node
            .when
            .iter()
            .map(|c| c.that.as_str())
            .chain(node.capture.values().map(|e| e.as_str()));
        in_action
            || expressions
                .into_iter()
                .any(|e| is_secret(self.templates.expression_names(e)))
            || node
                .locals
                .values()
                .any(|v| json_strings(v).any(|s| self.redactor.reveals(s)))
    }
}

/// What a phase captured: the operation's variables, and its secrets when they changed.
struct Captured {
    vars: serde_json::Map<String, serde_json::Value>,
    secrets: Option<BTreeMap<String, String>>,
}

/// Every string inside a JSON value.
fn json_strings(value: &serde_json::Value) -> Box<dyn Iterator<Item = &str> + '_> {
    match value {
        serde_json::Value::String(s) => Box::new(std::iter::once(s.as_str())),
        serde_json::Value::Array(a) => Box::new(a.iter().flat_map(json_strings)),
        serde_json::Value::Object(m) => Box::new(m.values().flat_map(json_strings)),
        _ => Box::new(std::iter::empty()),
    }
}

/// Takes the operation's lease for this process, or reports the live holder.
pub fn acquire_lease(
    store: &mut Store,
    op: &Operation,
    actor: &Actor,
    reason: Option<String>,
) -> Result<Lease, EngineError> {
    let previous = store.lease(&op.id)?;
    let mut detail = None;
    if let Some(lease) = previous {
        if lease.is_alive() && lease.pid != std::process::id() {
            return Err(EngineError::LeaseHeld {
                operation: op.id.clone(),
                lease: Box::new(lease),
            });
        }
        detail = Some(format!(
            "took over from a dead executor: {}",
            lease.describe()
        ));
    }
    let now = now_ms();
    let lease = Lease {
        pid: std::process::id(),
        host: actor.host.clone(),
        user: actor.user.clone(),
        started_at: now,
        heartbeat_at: now,
        proc_start: process_start_ticks(std::process::id()),
        command: actor.command.clone(),
    };
    let entry = HistoryEntry {
        seq: 0,
        time: now,
        user: actor.user.clone(),
        host: actor.host.clone(),
        pid: actor.pid,
        command: actor.command.clone(),
        reason,
        event: "lease_acquired".into(),
        phase: None,
        from: None,
        to: None,
        error: None,
        forced: false,
        detail,
    };
    store.commit(
        &op.id,
        Commit {
            lease: Some(Some(lease.clone())),
            history: vec![entry],
            ..Default::default()
        },
    )?;
    Ok(lease)
}

/// Leaves whose executor is gone: in progress while nobody holds a live lease.
pub fn interrupted_phases(
    plan: &Plan,
    records: &HashMap<PhaseId, PhaseRecord>,
    lease: Option<&Lease>,
) -> BTreeSet<PhaseId> {
    if lease.is_some_and(|l| l.is_alive()) {
        return BTreeSet::new();
    }
    plan.leaves()
        .map(|l| &plan.node(l).id)
        .filter(|id| {
            records
                .get(*id)
                .is_some_and(|r| r.state == PhaseState::InProgress)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod redactor_tests {
    use super::Redactor;

    #[test]
    fn quoted_and_json_escaped_forms_of_a_secret_are_hidden() {
        let secret = "Ab'cd\"ef\\gh-SECRETTAIL";
        let r = Redactor::new(&[("token".to_string(), secret.to_string())].into());
        for shown in [
            secret.to_string(),
            // bash `set -x`
            "+ true 'Ab'\\''cd\"ef\\gh-SECRETTAIL'".to_string(),
            // medic's own quoting, as in an error naming the rendered command
            crate::template::shell_quote(secret),
            // jq / kubectl -o json
            serde_json::json!({ "k": secret }).to_string(),
        ] {
            let out = r.redact(&shown);
            assert!(!out.contains("SECRETTAIL"), "{shown} -> {out}");
            assert!(out.contains("<secret:token>"), "{out}");
        }
    }
}
