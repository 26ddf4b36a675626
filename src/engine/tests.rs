//! The engine against a temporary store, with in-process actions only (`check`, `pause`, and a
//! `check` whose condition is false as the failing action): retries, stuck detection,
//! interrupted phases and rollback order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::action::check::CheckSpec;
use crate::action::pause::PauseSpec;
use crate::plan::Transition;
use crate::store::{hostname, now_ms, Access, Commit, LEASE_STALE_MS};

/// Collects every event, for assertions on what the engine reported.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Collect {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

fn check(that: &str) -> ActionSpec {
    ActionSpec::Check(CheckSpec {
        that: that.into(),
        message: None,
    })
}

fn pause() -> ActionSpec {
    ActionSpec::Pause(PauseSpec {
        message: "do the manual step".into(),
    })
}

fn node(id: &str, action: Option<ActionSpec>) -> crate::plan::PlanNode<ActionSpec> {
    crate::plan::PlanNode {
        id: PhaseId::parse(id),
        description: String::new(),
        parent: None,
        children: Vec::new(),
        parallel: false,
        max_parallel: None,
        requires: Vec::new(),
        action,
        rollback: None,
        locals: BTreeMap::new(),
        capture: BTreeMap::new(),
        secret_capture: Default::default(),
        timeout_secs: None,
        retries: 0,
        retry_delay_secs: 0.0,
        idempotent: true,
        when: None,
        may_fail: false,
        probe: None,
        confirm: false,
    }
}

/// A root `/` (parallel or ordered) over `leaves`, each `(id, action, requires)`.
fn plan(
    parallel: bool,
    leaves: Vec<(&str, ActionSpec, &[&str])>,
) -> Vec<crate::plan::PlanNode<ActionSpec>> {
    let mut root = node("/", None);
    root.parallel = parallel;
    let mut nodes = vec![root];
    for (id, action, requires) in leaves {
        let mut leaf = node(id, Some(action));
        leaf.parent = Some(0);
        leaf.requires = requires.iter().map(|r| PhaseId::parse(r)).collect();
        let i = nodes.len();
        nodes[0].children.push(i);
        nodes.push(leaf);
    }
    nodes
}

fn actor() -> Actor {
    Actor {
        user: "tester".into(),
        host: hostname(),
        pid: std::process::id(),
        command: "medic plan execute".into(),
    }
}

/// A stored operation over `nodes`, with `records` already written.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    op: Operation,
}

fn fixture(
    nodes: Vec<crate::plan::PlanNode<ActionSpec>>,
    records: Vec<(&str, PhaseRecord)>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(&dir.path().join("state"), Access::Create).unwrap();
    let plan = Plan::new(nodes);
    let op = Operation {
        id: "20260101-000000-0001".into(),
        procedure: "test".into(),
        description: String::new(),
        params: BTreeMap::new(),
        secret_params: Vec::new(),
        created_at: now_ms(),
        created_by: actor(),
        reason: None,
        state: OperationState::Active,
        finished_at: None,
        fingerprint: String::new(),
    };
    store
        .commit(
            &op.id,
            Commit {
                operation: Some(op.clone()),
                plan: Some(serde_json::to_vec(&plan).unwrap()),
                secrets: Some(BTreeMap::new()),
                records: records
                    .into_iter()
                    .map(|(id, r)| (PhaseId::parse(id), r))
                    .collect(),
                ..Default::default()
            },
        )
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        op,
    }
}

fn engine(fx: Fixture, force: bool) -> (Engine, Arc<Collect>, tempfile::TempDir) {
    let Fixture {
        _dir: dir,
        mut store,
        op,
    } = fx;
    acquire_lease(&mut store, &op, &actor(), None).unwrap();
    let sink = Arc::new(Collect::default());
    let (control, _) = crate::engine::Control::new();
    let engine = Engine::new(EngineSetup {
        store,
        inventory: None,
        ssh: Arc::new(SshPool::new()),
        operation: op,
        actor: actor(),
        reason: None,
        sink: sink.clone(),
        control,
        force,
    })
    .unwrap();
    (engine, sink, dir)
}

fn root() -> PhaseId {
    PhaseId::parse("/")
}

fn ids(list: &[&str]) -> Vec<PhaseId> {
    list.iter().map(|i| PhaseId::parse(i)).collect()
}

#[tokio::test]
async fn a_failing_phase_is_retried_its_retries_then_failed() {
    let mut nodes = plan(false, vec![("/flaky", check("1 == 2"), &[])]);
    nodes[1].retries = 2;
    let (engine, sink, _dir) = engine(fixture(nodes, vec![]), false);
    let outcome = engine.execute(&root()).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Failed { phase, error }
            if *phase == PhaseId::parse("/flaky") && error.contains("is false")),
        "{outcome:?}"
    );
    let events = sink.events();
    let retried: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::PhaseRetrying { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retried, [1, 2], "two retries after the first attempt");
    let mut store = engine.release().unwrap();
    let op = "20260101-000000-0001";
    let record = store.records(op).unwrap()[&PhaseId::parse("/flaky")].clone();
    assert_eq!(record.state, PhaseState::Failed);
    assert_eq!(record.failure, Some(FailureKind::Check));
    let retries = store
        .history(op)
        .unwrap()
        .into_iter()
        .filter(|h| h.event == "retry")
        .count();
    assert_eq!(retries, 2, "each retry is in the history");
}

#[tokio::test]
async fn a_phase_that_succeeds_is_not_retried() {
    let mut nodes = plan(false, vec![("/fine", check("1 == 1"), &[])]);
    nodes[1].retries = 3;
    let (engine, sink, _dir) = engine(fixture(nodes, vec![]), false);
    assert_eq!(engine.execute(&root()).await.unwrap(), Outcome::Completed);
    assert!(!sink
        .events()
        .iter()
        .any(|e| matches!(e, Event::PhaseRetrying { .. })));
}

#[tokio::test]
async fn leaves_that_can_never_start_end_the_run_stuck_not_completed() {
    // Each requires the other: nothing is ever ready while both remain.
    let nodes = plan(
        true,
        vec![
            ("/a", check("true"), &["/b"]),
            ("/b", check("true"), &["/a"]),
        ],
    );
    let (engine, sink, _dir) = engine(fixture(nodes, vec![]), false);
    let outcome = engine.execute(&root()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Stuck {
            waiting: vec![
                Waiting {
                    phase: PhaseId::parse("/a"),
                    waits_for: ids(&["/b"]),
                },
                Waiting {
                    phase: PhaseId::parse("/b"),
                    waits_for: ids(&["/a"]),
                },
            ]
        }
    );
    assert_eq!(outcome.exit_code(), 1);
    let finished: Vec<Outcome> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RunFinished { outcome } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [outcome], "reported once, as stuck");
}

#[tokio::test]
async fn a_run_stops_at_a_pause_it_does_not_target() {
    let nodes = plan(
        false,
        vec![
            ("/before", check("true"), &[]),
            ("/manual", pause(), &[]),
            ("/after", check("true"), &[]),
        ],
    );
    let (engine, sink, _dir) = engine(fixture(nodes, vec![]), false);
    let outcome = engine.execute(&root()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Paused {
            phases: ids(&["/manual"])
        }
    );
    assert!(sink.events().iter().any(|e| matches!(e,
        Event::PhasePaused { id, message } if id.as_str() == "/manual" && message == "do the manual step")));
    let mut store = engine.release().unwrap();
    let records = store.records("20260101-000000-0001").unwrap();
    assert_eq!(
        records[&PhaseId::parse("/before")].state,
        PhaseState::Completed
    );
    assert!(
        !records.contains_key(&PhaseId::parse("/after")),
        "{records:?}"
    );
}

/// A record left in progress by an executor that died.
fn in_progress() -> PhaseRecord {
    PhaseRecord::default()
        .apply(Transition::Start, now_ms())
        .unwrap()
}

fn dead_lease() -> Lease {
    Lease {
        // No such process: the lease's holder is gone.
        pid: u32::MAX - 7,
        host: hostname(),
        user: "gone".into(),
        started_at: now_ms() - 2 * LEASE_STALE_MS,
        heartbeat_at: now_ms() - 2 * LEASE_STALE_MS,
        proc_start: Some(1),
        command: "medic plan execute".into(),
        store_alive: None,
    }
}

#[test]
fn a_phase_left_running_by_a_dead_executor_shows_interrupted() {
    let nodes = plan(
        false,
        vec![("/a", check("true"), &[]), ("/b", check("true"), &[])],
    );
    let plan = Plan::new(nodes);
    let records: HashMap<PhaseId, PhaseRecord> = [(PhaseId::parse("/a"), in_progress())]
        .into_iter()
        .collect();
    let shown = interrupted_phases(&plan, &records, Some(&dead_lease()));
    assert_eq!(shown.into_iter().collect::<Vec<_>>(), ids(&["/a"]));
    assert_eq!(interrupted_phases(&plan, &records, None).len(), 1);
    // While its executor lives, a running phase is just running.
    let live = Lease {
        pid: std::process::id(),
        proc_start: crate::store::process_start_ticks(std::process::id()),
        ..dead_lease()
    };
    assert!(interrupted_phases(&plan, &records, Some(&live)).is_empty());
}

#[tokio::test]
async fn an_interrupted_phase_that_is_not_idempotent_refuses_a_resume() {
    let mut nodes = plan(false, vec![("/once", check("true"), &[])]);
    nodes[1].idempotent = false;
    let fx = fixture(nodes, vec![("/once", in_progress())]);
    let (engine, _sink, _dir) = engine(fx, false);
    let err = engine.execute(&root()).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::InterruptedNotIdempotent { phases } if *phases == ids(&["/once"])),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().starts_with(
        "phase /once was interrupted and is not idempotent, so running again could repeat its effect"
    ));
    let mut store = engine.release().unwrap();
    let record = store.records("20260101-000000-0001").unwrap()[&PhaseId::parse("/once")].clone();
    assert_eq!(record.state, PhaseState::InProgress, "nothing ran again");
}

#[tokio::test]
async fn an_interrupted_idempotent_phase_runs_again_and_force_overrides_the_refusal() {
    for (idempotent, force) in [(true, false), (false, true)] {
        let mut nodes = plan(false, vec![("/again", check("true"), &[])]);
        nodes[1].idempotent = idempotent;
        let mut fx = fixture(nodes, vec![("/again", in_progress())]);
        fx.store
            .commit(
                &fx.op.id.clone(),
                Commit {
                    lease: Some(Some(dead_lease())),
                    ..Default::default()
                },
            )
            .unwrap();
        let (engine, _sink, _dir) = engine(fx, force);
        assert_eq!(engine.execute(&root()).await.unwrap(), Outcome::Completed);
        let mut store = engine.release().unwrap();
        let history = store.history("20260101-000000-0001").unwrap();
        let events: Vec<&str> = history.iter().map(|h| h.event.as_str()).collect();
        assert!(events.contains(&"restart"), "{events:?}");
        assert_eq!(events.contains(&"forced"), force, "{events:?}");
        let took_over = history
            .iter()
            .find(|h| h.event == "lease_acquired")
            .and_then(|h| h.detail.clone())
            .unwrap_or_default();
        assert!(
            took_over.starts_with("took over from a dead executor"),
            "{took_over}"
        );
    }
}

#[tokio::test]
async fn rollback_undoes_started_leaves_in_reverse_execution_order() {
    // Depth-first order is /a /b /c; the requirements make the execution order /c /b /a.
    let mut nodes = plan(
        true,
        vec![
            ("/a", check("true"), &["/b"]),
            ("/b", check("true"), &["/c"]),
            ("/c", check("true"), &[]),
        ],
    );
    for n in &mut nodes[1..] {
        n.rollback = Some(check("true"));
    }
    let (engine, sink, _dir) = engine(fixture(nodes, vec![]), false);
    assert_eq!(engine.execute(&root()).await.unwrap(), Outcome::Completed);
    assert_eq!(engine.rollback(&root()).await.unwrap(), Outcome::RolledBack);
    let started = |rollback: bool| -> Vec<String> {
        sink.events()
            .iter()
            .filter_map(|e| match e {
                Event::PhaseStarted {
                    id, rollback: r, ..
                } if *r == rollback => Some(id.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(started(false), ["/c", "/b", "/a"]);
    assert_eq!(started(true), ["/a", "/b", "/c"]);
    let mut store = engine.release().unwrap();
    let records = store.records("20260101-000000-0001").unwrap();
    assert!(records.values().all(|r| r.state == PhaseState::RolledBack));
}

#[tokio::test]
async fn rolling_back_a_phase_a_started_one_depends_on_is_refused() {
    let nodes = plan(
        true,
        vec![("/a", check("true"), &["/b"]), ("/b", check("true"), &[])],
    );
    let (engine, _sink, _dir) = engine(fixture(nodes, vec![]), false);
    engine.execute(&root()).await.unwrap();
    let err = engine.rollback(&PhaseId::parse("/b")).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Dependents { dependents, .. }
            if dependents == &[(PhaseId::parse("/a"), PhaseState::Completed)]),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_phase_that_may_fail_is_recorded_failed_with_its_finding_and_the_run_goes_on() {
    let mut nodes = plan(
        false,
        vec![
            ("/probe", check("1 == 2"), &[]),
            ("/next", check("1 == 1"), &[]),
        ],
    );
    nodes[1].may_fail = true;
    nodes[1].probe = Some(crate::plan::Probe {
        name: "x/y".into(),
        severity: crate::plan::Severity::Warning,
        finding: "found {{ 1 + 1 }} ({{ error }})".into(),
        remedy: None,
    });
    let (tolerant, _sink, _dir) = engine(fixture(nodes.clone(), vec![]), false);
    assert_eq!(tolerant.execute(&root()).await.unwrap(), Outcome::Completed);
    let (records, _) = tolerant.results();
    let probe = &records[&PhaseId::parse("/probe")];
    assert_eq!(probe.state, PhaseState::Failed);
    assert!(
        probe
            .summary
            .as_deref()
            .unwrap()
            .starts_with("found 2 (check `1 == 2` is false)"),
        "{probe:?}"
    );
    assert_eq!(
        records[&PhaseId::parse("/next")].state,
        PhaseState::Completed
    );

    // Without may_fail the run stops at the failure, unless the engine keeps going.
    nodes[1].may_fail = false;
    let (strict, _sink, _dir) = engine(fixture(nodes.clone(), vec![]), false);
    assert!(matches!(
        strict.execute(&root()).await.unwrap(),
        Outcome::Failed { .. }
    ));
    let (going, _sink, _dir) = engine(fixture(nodes, vec![]), false);
    let going = going.keep_going();
    assert_eq!(going.execute(&root()).await.unwrap(), Outcome::Completed);
}
