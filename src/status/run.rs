//! Running the probe procedures through the engine.
//!
//! 1. [`run_probes`]: every unit ([`super::units`]) at once on its own preview engine (no
//!    operation stored) that keeps going after failures, sharing one SSH pool (one connection
//!    per node), each bounded by the timeout: an unreachable node fails its own probes and
//!    never holds up the others.
//! 2. [`run_recorded`] (`--record`): one stored operation of `cluster-health`, executed and
//!    closed like any other, so its history shows the run (and `--skip` in its reason).

use std::sync::Arc;

use tokio::task::JoinSet;

use super::{collect, units, ProbeResult, StatusOptions, Unit};
use crate::engine::{acquire_lease, Engine, EngineError, EngineSetup};
use crate::events::{Event, EventSink};
use crate::inventory::Inventory;
use crate::operation::{self, OperationError};
use crate::plan::PhaseId;
use crate::procedure::{Catalog, ProcedureError};
use crate::ssh::SshPool;
use crate::store::{Actor, Operation, Store, StoreError};
use crate::template::Templates;

/// The procedure `--record` stores a run of.
pub(crate) const RECORDED_PROCEDURE: &str = "cluster-health";

/// Why a status run failed before it could report; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatusError {
    #[error(transparent)]
    LoadProcedure(#[from] ProcedureError),
    #[error("build the plan of {procedure}: {source}")]
    BuildPlan {
        procedure: String,
        source: ProcedureError,
    },
    #[error(transparent)]
    Run(#[from] EngineError),
    #[error(transparent)]
    Record(#[from] OperationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StatusError {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            StatusError::LoadProcedure(_) | StatusError::BuildPlan { .. } => 2,
            StatusError::Run(e) => e.exit_code(),
            StatusError::Record(e) => e.exit_code(),
            StatusError::Store(e) => e.exit_code(),
        }
    }
}

/// Probes report through their records, not through live events.
struct Quiet;

impl EventSink for Quiet {
    fn emit(&self, _: &Event) {}
}

/// What every unit needs to run.
#[derive(Clone)]
struct RunEnv {
    inventory: Option<Arc<Inventory>>,
    ssh: Arc<SshPool>,
    options: StatusOptions,
    max_phases: usize,
    actor: Actor,
}

/// Runs every probe procedure, without storing anything; the results in unit order.
pub(crate) async fn run_probes(
    catalog: &Catalog,
    inventory: Option<Arc<Inventory>>,
    options: &StatusOptions,
    max_phases: usize,
    actor: Actor,
) -> Result<Vec<ProbeResult>, StatusError> {
    let never = std::future::pending::<()>();
    let run = run_probes_until(catalog, inventory, options, max_phases, actor, never);
    Ok(run.await?.expect("never stopped"))
}

/// [`run_probes`], stopped early when `stop` completes (`--watch` on Ctrl-C or a hangup):
/// the probes still running are dropped (their processes killed) and this run's SSH masters
/// closed before it returns `None`.
pub(crate) async fn run_probes_until(
    catalog: &Catalog,
    inventory: Option<Arc<Inventory>>,
    options: &StatusOptions,
    max_phases: usize,
    actor: Actor,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Vec<ProbeResult>>, StatusError> {
    let nodes: Vec<String> = inventory
        .as_ref()
        .map(|i| i.nodes.iter().map(|n| n.name.clone()).collect())
        .unwrap_or_default();
    let env = RunEnv {
        inventory,
        ssh: Arc::new(SshPool::new()),
        options: options.clone(),
        max_phases,
        actor,
    };
    let mut tasks = JoinSet::new();
    for (i, unit) in units(catalog, &nodes, options)?.into_iter().enumerate() {
        let env = env.clone();
        tasks.spawn(async move { (i, run_unit(unit, env).await) });
    }
    let mut done = Vec::new();
    let mut stop = std::pin::pin!(stop);
    let mut stopped = false;
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = &mut stop, if !stopped => {
                stopped = true;
                tasks.abort_all();
                continue;
            }
        };
        match joined {
            None => break,
            Some(Ok(r)) => done.push(r),
            Some(Err(e)) if e.is_cancelled() => {}
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    env.ssh.close_all().await;
    if stopped {
        return Ok(None);
    }
    done.sort_by_key(|(i, _)| *i);
    let mut out = Vec::new();
    for (_, r) in done {
        out.extend(r?);
    }
    Ok(Some(out))
}

async fn run_unit(unit: Unit, env: RunEnv) -> Result<Vec<ProbeResult>, StatusError> {
    let procedure = &unit.procedure;
    let sets: Vec<String> = unit.node.iter().map(|n| format!("node={n}")).collect();
    let params = procedure.resolve_params(&sets)?;
    let plan = procedure
        .build_plan(
            &params,
            &Templates::new(),
            env.inventory.as_ref().map(|i| i.template_value()),
            env.max_phases,
        )
        .map_err(|source| StatusError::BuildPlan {
            procedure: procedure.name.clone(),
            source,
        })?;
    let new = operation::draft(procedure, &params, &plan, env.actor.clone(), None);
    let operation = Operation {
        id: "(status: not recorded)".into(),
        ..new.operation
    };
    let engine = Engine::preview(
        operation,
        plan.clone(),
        params,
        env.inventory,
        Arc::new(Quiet),
    )
    .keep_going()
    .with_ssh(env.ssh);
    let run = tokio::time::timeout(env.options.timeout, engine.execute(&PhaseId::root())).await;
    let timed_out = match run {
        Ok(outcome) => {
            outcome?;
            false
        }
        Err(_) => true,
    };
    Ok(collect(
        &engine,
        &plan,
        &procedure.name,
        timed_out,
        &env.options,
    ))
}

/// `--record`: stores an operation of [`RECORDED_PROCEDURE`], runs it keeping going after
/// failures, closes it (completed when every probe passed, else failed) and returns it with
/// the results.
pub(crate) async fn run_recorded(
    mut store: Store,
    catalog: &Catalog,
    inventory: Option<Arc<Inventory>>,
    options: &StatusOptions,
    max_phases: usize,
    actor: Actor,
) -> Result<(Operation, Vec<ProbeResult>), StatusError> {
    let procedure = catalog.get(RECORDED_PROCEDURE)?;
    let params = procedure.resolve_params(&[])?;
    let plan = procedure
        .build_plan(
            &params,
            &Templates::new(),
            inventory.as_ref().map(|i| i.template_value()),
            max_phases,
        )
        .map_err(|source| StatusError::BuildPlan {
            procedure: procedure.name.clone(),
            source,
        })?;
    let mut reason = "medic status --record".to_string();
    if !options.skip.is_empty() {
        reason.push_str(&format!("; waived: {}", options.skip.join(", ")));
    }
    let reason = Some(reason);
    let new = operation::draft(&procedure, &params, &plan, actor.clone(), reason.clone());
    let op = operation::create(&mut store, new)?;
    acquire_lease(&mut store, &op, &actor, reason.clone())?;
    let (control, _handle) = crate::engine::Control::new();
    let ssh = Arc::new(SshPool::new());
    let engine = Engine::new(EngineSetup {
        store,
        inventory,
        ssh: ssh.clone(),
        operation: op.clone(),
        actor: actor.clone(),
        reason: reason.clone(),
        sink: Arc::new(Quiet),
        control,
        force: false,
    })?
    .keep_going();
    let run = tokio::time::timeout(options.timeout, engine.execute(&PhaseId::root())).await;
    let timed_out = run.is_err();
    let results = collect(&engine, &plan, &procedure.name, timed_out, options);
    let mut store = engine.release()?;
    ssh.close_all().await;
    if let Ok(outcome) = run {
        outcome?;
    }
    let op = match operation::complete(&mut store, op, &actor, reason)? {
        operation::Completion::AlreadyClosed(op) => op,
        operation::Completion::Closed { operation, .. } => operation,
    };
    store.release();
    Ok((op, results))
}
