//! Snapshots of what operators read, from plans and records built in memory: the plan table,
//! the interrupted hint and the stuck hint. A change of wording or layout fails here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use super::live::outcome_line;
use super::PlanView;
use crate::action::Plan;
use crate::events::{Outcome, Waiting};
use crate::plan::{FailureKind, PhaseId, PhaseRecord, PhaseState};
use crate::store::{Actor, Operation, OperationState};

/// 12:00:00 UTC on some day.
const NOON: u64 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 43_200_000;

fn operation() -> Operation {
    Operation {
        id: "20240101-maint-1".into(),
        procedure: "maint".into(),
        description: "Take a node out of service".into(),
        params: BTreeMap::new(),
        secret_params: vec![],
        created_at: NOON,
        created_by: Actor {
            user: "ops".into(),
            host: "bastion".into(),
            pid: 1,
            command: "medic start maint".into(),
        },
        reason: None,
        state: OperationState::Active,
        finished_at: None,
        fingerprint: "0".into(),
    }
}

/// / ─ /prep, /nodes (/nodes/a, /nodes/b), /wait (a pause), /finish.
fn plan() -> Plan {
    let run = |c: &str| json!({"run": {"command": c}});
    let nodes = json!({"nodes": [
        {"id": "/", "children": [1, 2, 5, 6]},
        {"id": "/prep", "parent": 0, "description": "Cordon the node", "action": run("echo prep")},
        {"id": "/nodes", "parent": 0, "children": [3, 4], "requires": ["/prep"]},
        {"id": "/nodes/a", "parent": 2, "description": "Fan out", "action": run("echo a")},
        {"id": "/nodes/b", "parent": 2, "action": run("echo b")},
        {"id": "/wait", "parent": 0, "requires": ["/nodes"],
         "action": {"pause": {"message": "Replace the disk"}}},
        {"id": "/finish", "parent": 0, "requires": ["/wait"], "action": run("echo done")},
    ]});
    Plan::from_json(nodes.to_string().as_bytes()).expect("a valid plan")
}

fn record(state: PhaseState, started: u64, took_ms: Option<u64>) -> PhaseRecord {
    PhaseRecord {
        state,
        attempts: 1,
        started_at: Some(NOON + started),
        finished_at: took_ms.map(|t| NOON + started + t),
        ..PhaseRecord::default()
    }
}

fn table(
    records: &HashMap<PhaseId, PhaseRecord>,
    interrupted: &BTreeSet<PhaseId>,
    may_have_done: &BTreeMap<PhaseId, Vec<String>>,
) -> String {
    console::set_colors_enabled(false);
    let operation = operation();
    let plan = plan();
    let view = PlanView {
        operation: &operation,
        plan: &plan,
        records,
        lease: None,
        interrupted,
        may_have_done,
    };
    format!(
        "{}\n--- short ---\n{}",
        view.to_text(false),
        view.to_text(true)
    )
}

#[test]
fn plan_table_with_a_failure_on_some_nodes_and_a_skip() {
    let mut records = HashMap::new();
    let mut prep = record(PhaseState::Completed, 0, Some(1_500));
    prep.summary = Some("cordoned".into());
    records.insert(PhaseId::parse("/prep"), prep);
    let mut a = record(PhaseState::Failed, 2_000, Some(65_000));
    a.error = Some("1 of 2 nodes failed: n2 exited with code 7: disk full".into());
    a.failure = Some(FailureKind::NodesFailed {
        failed: 1,
        total: 2,
    });
    records.insert(PhaseId::parse("/nodes/a"), a);
    let mut b = record(PhaseState::Completed, 2_000, Some(0));
    b.skipped = true;
    b.summary = Some("skipped: condition is false: go == 'yes'".into());
    b.skip_reason = Some("condition is false: go == 'yes'".into());
    records.insert(PhaseId::parse("/nodes/b"), b);
    insta::assert_snapshot!(table(&records, &BTreeSet::new(), &BTreeMap::new()));
}

#[test]
fn plan_table_with_an_interrupted_phase() {
    let mut records = HashMap::new();
    records.insert(
        PhaseId::parse("/prep"),
        record(PhaseState::Completed, 0, Some(200)),
    );
    records.insert(
        PhaseId::parse("/nodes/a"),
        record(PhaseState::InProgress, 1_000, None),
    );
    let interrupted = BTreeSet::from([PhaseId::parse("/nodes/a")]);
    // Not idempotent (a `run:` is not, unless it says so): what it may have done, and the
    // ways on.
    let done = BTreeMap::from([(PhaseId::parse("/nodes/a"), vec!["run: echo a".to_string()])]);
    insta::assert_snapshot!(table(&records, &interrupted, &done));
}

#[test]
fn plan_table_with_an_idempotent_phase_and_a_rollback_interrupted() {
    let mut plan = serde_json::to_value(plan()).unwrap();
    plan["nodes"][3]["idempotent"] = json!(true);
    let plan = Plan::from_json(plan.to_string().as_bytes()).unwrap();
    let mut records = HashMap::new();
    let mut prep = record(PhaseState::InProgress, 0, None);
    prep.rolling_back = true;
    records.insert(PhaseId::parse("/prep"), prep);
    records.insert(
        PhaseId::parse("/nodes/a"),
        record(PhaseState::InProgress, 1_000, None),
    );
    let interrupted = BTreeSet::from([PhaseId::parse("/prep"), PhaseId::parse("/nodes/a")]);
    let done = BTreeMap::from([(PhaseId::parse("/prep"), vec!["run: echo undo".to_string()])]);
    console::set_colors_enabled(false);
    let operation = operation();
    let view = PlanView {
        operation: &operation,
        plan: &plan,
        records: &records,
        lease: None,
        interrupted: &interrupted,
        may_have_done: &done,
    };
    insta::assert_snapshot!(view.to_text(false));
}

#[test]
fn run_outcome_hints() {
    console::set_colors_enabled(false);
    let stuck = Outcome::Stuck {
        waiting: vec![
            Waiting {
                phase: PhaseId::parse("/finish"),
                waits_for: vec![PhaseId::parse("/wait"), PhaseId::parse("/nodes/b")],
            },
            Waiting {
                phase: PhaseId::parse("/nodes/a"),
                waits_for: vec![],
            },
        ],
    };
    let one = Outcome::Stuck {
        waiting: vec![Waiting {
            phase: PhaseId::parse("/finish"),
            waits_for: vec![PhaseId::parse("/wait")],
        }],
    };
    let text = [Outcome::Interrupted, stuck, one]
        .iter()
        .map(|o| outcome_line(o, 0))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!(text);
}
