//! Unit tests of the plan core: the state machine, requirements and the scheduler.

use super::*;

/// The plan's tests need no action kinds: a leaf is work or a pause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Step {
    Work,
    Pause,
}

impl Leaf for Step {
    fn is_pause(&self) -> bool {
        *self == Step::Pause
    }
}

fn leaf(id: &str) -> PlanNode<Step> {
    PlanNode {
        id: PhaseId::parse(id),
        description: String::new(),
        parent: None,
        children: vec![],
        parallel: false,
        max_parallel: None,
        requires: vec![],
        action: Some(Step::Work),
        rollback: None,
        locals: BTreeMap::new(),
        capture: BTreeMap::new(),
        secret_capture: Default::default(),
        timeout_secs: None,
        retries: 0,
        retry_delay_secs: 1.0,
        idempotent: true,
        when: None,
        may_fail: false,
        probe: None,
        confirm: false,
    }
}

/// Builds a plan from (id, parallel, requires) rows; groups are inferred from the paths.
fn plan(rows: &[(&str, bool, &[&str])]) -> Plan<Step> {
    let mut nodes = vec![PlanNode {
        action: None,
        ..leaf("/")
    }];
    for (id, parallel, requires) in rows {
        let mut node = leaf(id);
        node.parallel = *parallel;
        node.requires = requires.iter().map(|r| PhaseId::parse(r)).collect();
        let parent_id = {
            let s = node.id.as_str();
            PhaseId::parse(&s[..s.rfind('/').unwrap()])
        };
        let p = nodes.iter().position(|n| n.id == parent_id).unwrap();
        node.parent = Some(p);
        let i = nodes.len();
        nodes[p].children.push(i);
        nodes[p].action = None;
        nodes.push(node);
    }
    Plan::new(nodes)
}

fn ids(plan: &Plan<Step>, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|i| plan.nodes[*i].id.to_string()).collect()
}

#[test]
fn transition_table_matches_the_design() {
    use PhaseState::*;
    use Transition::*;
    // (from, rolling_back (None = either), transition) -> expected; all else is illegal.
    let legal: &[(PhaseState, Option<bool>, Transition, PhaseState)] = &[
        (Unstarted, None, Start, InProgress),
        (Failed, None, Start, InProgress),
        (RolledBack, None, Start, InProgress),
        (InProgress, None, Restart, InProgress),
        (InProgress, Some(false), Complete, Completed),
        (InProgress, Some(false), Skip, Completed),
        (InProgress, Some(false), Fail, Failed),
        (Completed, None, BeginRollback, InProgress),
        (Failed, None, BeginRollback, InProgress),
        (InProgress, None, BeginRollback, InProgress),
        (InProgress, Some(true), FinishRollback, RolledBack),
        (InProgress, Some(true), FailRollback, Failed),
        (Unstarted, None, SetCompleted, Completed),
        (InProgress, None, SetCompleted, Completed),
        (Failed, None, SetCompleted, Completed),
        (RolledBack, None, SetCompleted, Completed),
        (Unstarted, None, SetFailed, Failed),
        (InProgress, None, SetFailed, Failed),
        (Completed, None, SetFailed, Failed),
        (RolledBack, None, SetFailed, Failed),
        (InProgress, None, SetUnstarted, Unstarted),
        (Completed, None, SetUnstarted, Unstarted),
        (Failed, None, SetUnstarted, Unstarted),
        (RolledBack, None, SetUnstarted, Unstarted),
    ];
    for from in PhaseState::ALL {
        for rolling_back in [false, true] {
            for t in Transition::ALL {
                let expected = legal
                    .iter()
                    .find(|(f, rb, tt, _)| {
                        *f == from && rb.is_none_or(|rb| rb == rolling_back) && *tt == t
                    })
                    .map(|row| row.3);
                let got = transition(from, rolling_back, t).ok();
                assert_eq!(got, expected, "{from} rolling_back={rolling_back} {t:?}");
            }
        }
    }
}

#[test]
fn completed_and_unstarted_phases_cannot_be_finished() {
    for t in [
        Transition::Complete,
        Transition::Fail,
        Transition::FinishRollback,
    ] {
        assert!(transition(PhaseState::Completed, false, t).is_err());
        assert!(transition(PhaseState::Unstarted, false, t).is_err());
    }
    assert!(transition(PhaseState::Completed, false, Transition::Start).is_err());
    assert!(transition(PhaseState::Unstarted, false, Transition::BeginRollback).is_err());
}

#[test]
fn record_apply_counts_attempts_and_clears_errors() {
    let r = PhaseRecord::default();
    let r = r.apply(Transition::Start, 1).unwrap();
    let mut r = r.apply(Transition::Fail, 2).unwrap();
    r.error = Some("boom".into());
    let r = r.apply(Transition::Start, 3).unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(r.error, None);
    let r = r.apply(Transition::Complete, 4).unwrap();
    let r = r.apply(Transition::BeginRollback, 5).unwrap();
    assert!(r.rolling_back);
    assert!(r.apply(Transition::Complete, 6).is_err());
    let r = r.apply(Transition::FinishRollback, 6).unwrap();
    assert_eq!(r.state, PhaseState::RolledBack);
}

#[test]
fn a_phase_set_by_hand_keeps_its_attempts_and_forgets_its_last_outcome() {
    let r = PhaseRecord::default().apply(Transition::Start, 1).unwrap();
    let r = r.apply(Transition::BeginRollback, 2).unwrap();
    let done = r.apply(Transition::SetCompleted, 3).unwrap();
    assert_eq!(done.state, PhaseState::Completed);
    assert!(!done.rolling_back);
    assert_eq!((done.attempts, done.finished_at), (1, Some(3)));
    let failed = done.apply(Transition::SetFailed, 4).unwrap();
    assert_eq!(failed.failure, Some(FailureKind::Other));
    let again = failed.apply(Transition::SetUnstarted, 5).unwrap();
    assert_eq!(again.state, PhaseState::Unstarted);
    assert_eq!((again.attempts, again.started_at), (1, None));
    assert!(again.apply(Transition::SetUnstarted, 6).is_err());
}

#[test]
fn a_skip_completes_and_is_remembered_until_the_phase_runs_again() {
    let r = PhaseRecord::default().apply(Transition::Start, 1).unwrap();
    let r = r.apply(Transition::Skip, 2).unwrap();
    assert_eq!(r.state, PhaseState::Completed);
    assert!(r.skipped);
    let rb = r.apply(Transition::BeginRollback, 3).unwrap();
    assert!(
        rb.skipped,
        "a rollback must still see that nothing was done"
    );
    let rb = rb.apply(Transition::FinishRollback, 4).unwrap();
    assert!(!rb.skipped);
    let again = r.apply(Transition::BeginRollback, 3).unwrap();
    let again = again.apply(Transition::FinishRollback, 4).unwrap();
    let again = again.apply(Transition::Start, 5).unwrap();
    assert!(!again.skipped);
    // Old databases have no `skipped` field.
    let old: PhaseRecord = serde_json::from_str(r#"{"state":"completed"}"#).unwrap();
    assert!(!old.skipped);
}

#[test]
fn derived_parent_state_table() {
    use PhaseState::*;
    let table: &[(&[PhaseState], PhaseState)] = &[
        (&[Unstarted, Unstarted], Unstarted),
        (&[Completed, Completed], Completed),
        (&[Completed, Unstarted], InProgress),
        (&[Completed, InProgress], InProgress),
        (&[Completed, Failed], Failed),
        (&[Failed, InProgress], InProgress),
        (&[RolledBack, RolledBack], RolledBack),
        (&[RolledBack, Unstarted], RolledBack),
        (&[RolledBack, Completed], InProgress),
        (&[Failed, RolledBack], Failed),
        (&[], Completed),
    ];
    for (children, expected) in table {
        assert_eq!(derive_state(children), *expected, "{children:?}");
    }
}

#[test]
fn a_failure_kind_lasts_until_the_phase_runs_again() {
    let started = PhaseRecord::default().apply(Transition::Start, 1).unwrap();
    let mut failed = started.apply(Transition::Fail, 2).unwrap();
    failed.failure = Some(FailureKind::Refused);
    assert_eq!(failed.failure, Some(FailureKind::Refused));
    let again = failed.apply(Transition::Start, 3).unwrap();
    assert_eq!(again.failure, None);
    let rolled = failed.apply(Transition::BeginRollback, 3).unwrap();
    assert_eq!(rolled.failure, None);
}

#[test]
fn a_plan_that_cannot_go_on_is_stuck_with_what_each_leaf_waits_for() {
    // A requires cycle (refused at load; built by hand here) leaves nothing ready.
    let p = plan(&[
        ("/a", true, &["/b"]),
        ("/b", true, &["/a"]),
        ("/c", true, &[]),
    ]);
    let mut root = p.nodes.clone();
    root[0].parallel = true;
    let p = Plan::new(root);
    let states = vec![PhaseState::Unstarted; p.len()];
    let mut s = Scheduler::new(&p, &states, 0, SchedulerMode::Execute);
    assert_eq!(ids(&p, &s.next_ready()), ["/c"]);
    assert!(s.stuck().is_empty(), "not stuck while /c runs");
    s.finished(p.find(&PhaseId::parse("/c")).unwrap(), true);
    assert!(s.next_ready().is_empty());
    let stuck: Vec<(String, Vec<String>)> = s
        .stuck()
        .into_iter()
        .map(|(leaf, on)| (p.nodes[leaf].id.to_string(), ids(&p, &on)))
        .collect();
    assert_eq!(
        stuck,
        [
            ("/a".to_string(), vec!["/b".to_string()]),
            ("/b".to_string(), vec!["/a".to_string()])
        ]
    );
    // A finished run is not stuck.
    let p = plan(&[("/a", false, &[])]);
    let mut s = Scheduler::new(&p, &states[..p.len()], 0, SchedulerMode::Execute);
    for l in s.next_ready() {
        s.finished(l, true);
    }
    assert!(s.all_done() && s.stuck().is_empty());
}

#[test]
fn ordered_siblings_run_one_after_another() {
    let p = plan(&[("/a", false, &[]), ("/b", false, &[]), ("/c", false, &[])]);
    let states = vec![PhaseState::Unstarted; p.len()];
    let mut s = Scheduler::new(&p, &states, 0, SchedulerMode::Execute);
    let mut order = Vec::new();
    loop {
        let ready = s.next_ready();
        assert!(ready.len() <= 1, "ordered group offered {ready:?}");
        let Some(l) = ready.first() else { break };
        order.push(*l);
        s.finished(*l, true);
    }
    assert_eq!(ids(&p, &order), ["/a", "/b", "/c"]);
    assert!(s.all_done());
}

#[test]
fn a_sibling_after_nested_groups_runs_once_every_leaf_of_them_is_done() {
    // /g holds two groups of two leaves; /after requires /g (the ordered sibling before).
    let p = plan(&[
        ("/g", false, &[]),
        ("/g/x", false, &[]),
        ("/g/x/1", false, &[]),
        ("/g/x/2", false, &[]),
        ("/g/y", false, &[]),
        ("/g/y/1", false, &[]),
        ("/g/y/2", false, &[]),
        ("/after", false, &[]),
    ]);
    let states = vec![PhaseState::Unstarted; p.len()];
    let mut s = Scheduler::new(&p, &states, 0, SchedulerMode::Execute);
    let mut order = Vec::new();
    while let Some(l) = s.next_ready().first().copied() {
        order.push(l);
        s.finished(l, true);
    }
    assert_eq!(
        ids(&p, &order),
        ["/g/x/1", "/g/x/2", "/g/y/1", "/g/y/2", "/after"]
    );
    assert!(s.all_done());
}

#[test]
fn parallel_group_respects_max_parallel_and_requires() {
    let mut p = plan(&[
        ("/g", true, &[]),
        ("/g/a", false, &[]),
        ("/g/b", false, &[]),
        ("/g/c", false, &["/g/a"]),
        ("/after", false, &[]),
    ]);
    p.nodes[1].max_parallel = Some(2);
    let states = vec![PhaseState::Unstarted; p.len()];
    let mut s = Scheduler::new(&p, &states, 0, SchedulerMode::Execute);
    assert_eq!(ids(&p, &s.next_ready()), ["/g/a", "/g/b"]);
    assert!(s.next_ready().is_empty());
    s.finished(p.find(&PhaseId::parse("/g/b")).unwrap(), true);
    assert!(s.next_ready().is_empty(), "/g/c must wait for /g/a");
    s.finished(p.find(&PhaseId::parse("/g/a")).unwrap(), true);
    assert_eq!(ids(&p, &s.next_ready()), ["/g/c"]);
    s.finished(p.find(&PhaseId::parse("/g/c")).unwrap(), true);
    assert_eq!(ids(&p, &s.next_ready()), ["/after"]);
}

#[test]
fn failure_stops_new_starts() {
    let p = plan(&[
        ("/g", true, &[]),
        ("/g/a", false, &[]),
        ("/g/b", false, &[]),
    ]);
    let states = vec![PhaseState::Unstarted; p.len()];
    let mut s = Scheduler::new(&p, &states, 0, SchedulerMode::Execute);
    let ready = s.next_ready();
    assert_eq!(ready.len(), 2);
    s.finished(ready[0], false);
    s.finished(ready[1], true);
    assert!(s.next_ready().is_empty());
    assert!(!s.all_done());
}

#[test]
fn completed_leaves_are_skipped_and_pauses_stop_dependents() {
    let mut p = plan(&[("/a", false, &[]), ("/p", false, &[]), ("/b", false, &[])]);
    p.nodes[2].action = Some(Step::Pause);
    let mut states = vec![PhaseState::Unstarted; p.len()];
    states[1] = PhaseState::Completed;
    let mut s = Scheduler::new(&p, &states, 0, SchedulerMode::Execute);
    assert!(s.next_ready().is_empty());
    assert_eq!(ids(&p, s.paused()), ["/p"]);
    // Executing the pause itself runs it.
    let mut s = Scheduler::new(&p, &states, 2, SchedulerMode::Execute);
    assert_eq!(ids(&p, &s.next_ready()), ["/p"]);
}

#[test]
fn unmet_requirements_cover_ancestors_and_outside_edges() {
    let p = plan(&[
        ("/a", false, &[]),
        ("/g", false, &[]),
        ("/g/x", false, &[]),
        ("/g/y", false, &[]),
        ("/z", true, &[]),
        ("/z/q", false, &["/a"]),
    ]);
    let mut states = vec![PhaseState::Unstarted; p.len()];
    let y = p.find(&PhaseId::parse("/g/y")).unwrap();
    // /g/y needs /g/x (sibling) and, through its parent /g, /a.
    assert_eq!(ids(&p, &p.unmet_requirements(&states, y)), ["/a", "/g/x"]);
    // /z is parallel to nothing but requires /g by order; /z/q requires /a from inside.
    let z = p.find(&PhaseId::parse("/z")).unwrap();
    assert_eq!(ids(&p, &p.unmet_requirements(&states, z)), ["/a", "/g"]);
    states[1] = PhaseState::Completed;
    assert_eq!(ids(&p, &p.unmet_requirements(&states, y)), ["/g/x"]);
}

#[test]
fn rollback_is_blocked_by_started_dependents_transitively() {
    let p = plan(&[("/a", false, &[]), ("/b", false, &[]), ("/c", false, &[])]);
    let mut states = vec![PhaseState::Unstarted; p.len()];
    states[1] = PhaseState::Completed;
    states[2] = PhaseState::RolledBack;
    states[3] = PhaseState::Completed;
    // /c depends on /a through /b even though /b is rolled back.
    assert_eq!(ids(&p, &p.blocking_dependents(&states, 1)), ["/c"]);
    states[3] = PhaseState::RolledBack;
    assert!(p.blocking_dependents(&states, 1).is_empty());
}

#[test]
fn group_rollback_goes_in_reverse_execution_order() {
    let p = plan(&[
        ("/g", false, &[]),
        ("/g/a", false, &[]),
        ("/g/b", false, &[]),
        ("/g/c", false, &[]),
    ]);
    let mut states = vec![PhaseState::Completed; p.len()];
    states[4] = PhaseState::Unstarted;
    states[3] = PhaseState::Failed;
    let g = p.find(&PhaseId::parse("/g")).unwrap();
    assert_eq!(ids(&p, &p.rollback_order(&states, g)), ["/g/b", "/g/a"]);
}

#[test]
fn topological_order_honours_forward_requires() {
    let p = plan(&[
        ("/g", true, &[]),
        ("/g/a", false, &["/g/b"]),
        ("/g/b", false, &[]),
    ]);
    assert_eq!(ids(&p, &p.topological_leaves()), ["/g/b", "/g/a"]);
}

#[test]
fn requires_entries_resolve_against_the_group_and_ordered_groups_add_the_sibling_before() {
    let group = PhaseId::parse("/etcd");
    for (entry, expected) in [
        ("find", "/etcd/find"),
        ("/other/x", "/other/x"),
        ("sub/x", "/etcd/sub/x"),
    ] {
        assert_eq!(requires::resolve(&group, entry), PhaseId::parse(expected));
    }
    assert_eq!(
        requires::resolve(&PhaseId::root(), "a"),
        PhaseId::parse("/a")
    );
    // (explicit, parallel group, sibling before) → direct requirements.
    type Row = (&'static [usize], bool, Option<usize>, &'static [usize]);
    let table: &[Row] = &[
        (&[5, 2], false, Some(3), &[5, 2, 3]),
        (&[5, 2], true, Some(3), &[5, 2]),
        (&[3], false, Some(3), &[3]),
        (&[], false, None, &[]),
    ];
    for (explicit, parallel, before, expected) in table {
        let got = requires::direct(explicit.iter().copied(), *parallel, *before);
        assert_eq!(got, *expected, "{explicit:?} {parallel} {before:?}");
    }
}

#[test]
fn the_plan_takes_direct_requirements_from_the_requires_rule() {
    let p = plan(&[("/a", true, &[]), ("/b", true, &[]), ("/c", true, &["/a"])]);
    let c = p.find(&PhaseId::parse("/c")).unwrap();
    let a = p.find(&PhaseId::parse("/a")).unwrap();
    let mut expected = requires::direct([a], false, Some(c - 1));
    expected.sort_unstable();
    assert_eq!(p.direct_requirements(c), expected);
    assert_eq!(ids(&p, &p.direct_requirements(c)), ["/a", "/b"]);
}
