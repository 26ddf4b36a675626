//! The plan: the phase tree, the requires DAG and the phase state machine.
//!
//! Everything here is pure data and functions, with no I/O, so the rules can be tested with small
//! tables. The engine drives this core; it never re-implements it.
//!
//! 1. A [`Plan`] is a tree of [`PlanNode`]s in depth-first order (index 0 is the root `/`).
//! 2. A node *requires* the nodes in its `requires` list plus, in an ordered group, the sibling
//!    before it. A node can start once its requirements are completed and its parent has started.
//! 3. Leaves carry state ([`PhaseRecord`]); a group's state is derived from its leaves.
//! 4. Every state change goes through [`transition`], which refuses illegal changes.
//! 5. [`Scheduler`] (`scheduler.rs`) answers "which leaves may start now" for an execute of one
//!    phase, in O(nodes + edges) over the whole run; dry-runs and rollback order reuse it.
//! 6. What a `requires:` entry means is [`requires`], the one rule procedure validation and
//!    the plan share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

mod probe;
pub(crate) mod requires;
mod scheduler;
#[cfg(test)]
mod tests;

pub(crate) use crate::phase_id::{valid_phase_segment, PhaseId, PhaseIdError};
pub(crate) use probe::{Probe, Remedy, Severity};
pub(crate) use scheduler::{Scheduler, SchedulerMode};

/// The stored state of a leaf phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Unstarted,
    InProgress,
    Completed,
    Failed,
    RolledBack,
}

impl PhaseState {
    #[cfg(test)]
    pub(crate) const ALL: [PhaseState; 5] = [
        PhaseState::Unstarted,
        PhaseState::InProgress,
        PhaseState::Completed,
        PhaseState::Failed,
        PhaseState::RolledBack,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PhaseState::Unstarted => "unstarted",
            PhaseState::InProgress => "in_progress",
            PhaseState::Completed => "completed",
            PhaseState::Failed => "failed",
            PhaseState::RolledBack => "rolled_back",
        }
    }

    /// Started and not undone: what blocks a rollback of something it depends on.
    pub(crate) fn is_started(self) -> bool {
        matches!(
            self,
            PhaseState::InProgress | PhaseState::Completed | PhaseState::Failed
        )
    }
}

impl fmt::Display for PhaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a phase; the only way a [`PhaseState`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Transition {
    /// Begin executing: from unstarted, failed or rolled back.
    Start,
    /// Execute again a phase whose executor died (in progress, lease dead).
    Restart,
    Complete,
    /// End without running the action: its `when:` condition was false. Completes the phase,
    /// and marks it skipped so that rolling it back does not undo what was never done.
    Skip,
    Fail,
    /// Begin undoing a started phase (completed, failed, or interrupted).
    BeginRollback,
    FinishRollback,
    FailRollback,
    /// The operator records by hand (`medic plan set`) that the phase is completed, failed or
    /// unstarted: from any state but the one it names. The caller refuses while an executor
    /// holds the lease.
    SetCompleted,
    SetFailed,
    SetUnstarted,
}

impl Transition {
    #[cfg(test)]
    pub(crate) const ALL: [Transition; 11] = [
        Transition::Start,
        Transition::Restart,
        Transition::Complete,
        Transition::Skip,
        Transition::Fail,
        Transition::BeginRollback,
        Transition::FinishRollback,
        Transition::FailRollback,
        Transition::SetCompleted,
        Transition::SetFailed,
        Transition::SetUnstarted,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition:?} a phase that is {from}")]
pub struct IllegalTransition {
    pub(crate) from: PhaseState,
    pub(crate) transition: Transition,
}

/// The one state transition function. `rolling_back` tells whether the in-progress phase being
/// finished is undoing (so `Complete` cannot end a rollback and `FinishRollback` cannot end a run).
pub(crate) fn transition(
    from: PhaseState,
    rolling_back: bool,
    t: Transition,
) -> Result<PhaseState, IllegalTransition> {
    use PhaseState::*;
    use Transition::*;
    let to = match (from, t) {
        (Unstarted | Failed | RolledBack, Start) => Some(InProgress),
        (InProgress, Restart) => Some(InProgress),
        (InProgress, Complete | Skip) if !rolling_back => Some(Completed),
        (InProgress, Fail) if !rolling_back => Some(Failed),
        (Completed | Failed | InProgress, BeginRollback) => Some(InProgress),
        (InProgress, FinishRollback) if rolling_back => Some(RolledBack),
        (InProgress, FailRollback) if rolling_back => Some(Failed),
        (from, SetCompleted) if from != Completed => Some(Completed),
        (from, SetFailed) if from != Failed => Some(Failed),
        (from, SetUnstarted) if from != Unstarted => Some(Unstarted),
        _ => None,
    };
    to.ok_or(IllegalTransition {
        from,
        transition: t,
    })
}

/// The stored record of a leaf phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub(crate) state: PhaseState,
    /// True while an in-progress phase is being rolled back (and after a failed rollback).
    #[serde(default)]
    pub(crate) rolling_back: bool,
    #[serde(default)]
    pub(crate) attempts: u32,
    #[serde(default)]
    pub(crate) started_at: Option<u64>,
    #[serde(default)]
    pub(crate) finished_at: Option<u64>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// What the action reported when it finished (e.g. "50 nodes ok").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) summary: Option<String>,
    /// Completed without running its action (`when:` was false); rolls back as a no-op.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) skipped: bool,
    /// Why it failed, as a kind code can match (the message is in `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failure: Option<FailureKind>,
    /// Why it was skipped (the summary says "skipped: " and this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) skip_reason: Option<String>,
}

/// What kind of failure ended a phase; decisions (refused → exit 3) match this, never the
/// message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A safety guard refused (overridable with `--force`).
    Refused,
    TimedOut,
    Cancelled,
    /// A command exited non-zero, was killed, or could not start.
    Command,
    /// A `check:` was false, or an action's own check failed.
    Check,
    /// A template could not be rendered.
    Render,
    /// `capture:` found nothing or could not be evaluated.
    Capture,
    /// `when:` could not be evaluated.
    Condition,
    /// The state store failed under the run.
    Store,
    /// The action failed on some of the nodes it ran on.
    NodesFailed {
        failed: usize,
        total: usize,
    },
    Other,
}

impl Default for PhaseRecord {
    fn default() -> Self {
        PhaseRecord {
            state: PhaseState::Unstarted,
            rolling_back: false,
            attempts: 0,
            started_at: None,
            finished_at: None,
            error: None,
            summary: None,
            skipped: false,
            failure: None,
            skip_reason: None,
        }
    }
}

impl PhaseRecord {
    /// Applies a transition, returning the new record; the caller persists it.
    pub(crate) fn apply(
        &self,
        t: Transition,
        now_ms: u64,
    ) -> Result<PhaseRecord, IllegalTransition> {
        let state = transition(self.state, self.rolling_back, t)?;
        let mut next = self.clone();
        next.state = state;
        match t {
            Transition::Start | Transition::Restart => {
                next.summary = None;
                next.rolling_back = false;
                next.attempts += 1;
                next.started_at = Some(now_ms);
                next.finished_at = None;
                next.error = None;
                next.failure = None;
                next.skipped = false;
                next.skip_reason = None;
            }
            Transition::BeginRollback => {
                next.rolling_back = true;
                next.started_at = Some(now_ms);
                next.finished_at = None;
                next.error = None;
                next.failure = None;
            }
            Transition::Complete | Transition::Skip | Transition::FinishRollback => {
                next.finished_at = Some(now_ms);
                next.error = None;
                next.failure = None;
                next.skipped = t == Transition::Skip;
                next.skip_reason = None;
            }
            Transition::Fail | Transition::FailRollback => {
                next.finished_at = Some(now_ms);
            }
            // Set by hand: nothing of the last run's outcome stays; the caller records why.
            Transition::SetCompleted | Transition::SetFailed => {
                next = PhaseRecord {
                    state,
                    attempts: self.attempts,
                    started_at: self.started_at,
                    finished_at: Some(now_ms),
                    failure: (t == Transition::SetFailed).then_some(FailureKind::Other),
                    ..PhaseRecord::default()
                };
            }
            Transition::SetUnstarted => {
                next = PhaseRecord {
                    attempts: self.attempts,
                    ..PhaseRecord::default()
                };
            }
        }
        Ok(next)
    }
}

/// The state of a group, derived from its leaves' states (never stored).
pub(crate) fn derive_state(children: &[PhaseState]) -> PhaseState {
    use PhaseState::*;
    if children.is_empty() {
        return Completed;
    }
    let count = |s: PhaseState| children.iter().filter(|c| **c == s).count();
    if count(InProgress) > 0 {
        return InProgress;
    }
    if count(Failed) > 0 {
        return Failed;
    }
    if count(Completed) == children.len() {
        return Completed;
    }
    if count(Unstarted) == children.len() {
        return Unstarted;
    }
    if count(RolledBack) > 0 && count(RolledBack) + count(Unstarted) == children.len() {
        return RolledBack;
    }
    InProgress
}

/// What a leaf carries, as far as the plan is concerned: the scheduler only needs to know
/// whether it is a pause (which waits for the operator). Operations use actions
/// (`ActionSpec`, in the action module); the core knows nothing more of them.
pub trait Leaf {
    fn is_pause(&self) -> bool;
}

/// One node of the plan tree. Leaves carry an action (`A`); groups carry children.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: Deserialize<'de>"))]
pub struct PlanNode<A> {
    pub(crate) id: PhaseId,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) children: Vec<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) parallel: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_parallel: Option<usize>,
    /// Explicit `requires:` (the implicit ordered-sibling requirement is not listed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) requires: Vec<PhaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) action: Option<A>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rollback: Option<A>,
    /// Template variables local to this phase (the `foreach` item).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) locals: BTreeMap<String, serde_json::Value>,
    /// Operation variables to set from the action's result: name → expression over the result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) capture: BTreeMap<String, String>,
    /// The names of `capture` that are secrets (`secret: true`): kept with the operation's
    /// secrets, never shown.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(crate) secret_capture: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_secs: Option<f64>,
    #[serde(default)]
    pub(crate) retries: u32,
    #[serde(default = "default_retry_delay")]
    pub(crate) retry_delay_secs: f64,
    #[serde(default)]
    pub(crate) idempotent: bool,
    /// Run the action only if this holds at execution time (`when:`); else the phase is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) when: Option<Condition>,
    /// A failure is recorded but does not stop the run (`may_fail: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) may_fail: bool,
    /// What a failure of this phase means (`probe:`), for `medic status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probe: Option<Probe>,
    /// The operator confirms before the action runs (`confirm: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) confirm: bool,
}

/// A leaf's `when:`: an expression over the phase's variables, and why it is skipped when false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Condition {
    pub(crate) that: String,
    /// A text template; by default "condition is false: THAT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

fn default_retry_delay() -> f64 {
    1.0
}

impl<A> PlanNode<A> {
    pub(crate) fn is_leaf(&self) -> bool {
        self.children.is_empty() && self.action.is_some()
    }
}

impl<A: Leaf> PlanNode<A> {
    pub(crate) fn is_pause(&self) -> bool {
        self.action.as_ref().is_some_and(Leaf::is_pause)
    }
}

/// The phase tree of one operation, in depth-first order.
///
/// Built by [`Plan::new`] and then sealed: deserializing goes through it too (via
/// [`StoredPlan`]), so no plan exists without its indices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    bound(serialize = "A: Serialize", deserialize = "A: Deserialize<'de> + Leaf"),
    from = "StoredPlan<A>"
)]
pub struct Plan<A> {
    nodes: Vec<PlanNode<A>>,
    #[serde(skip)]
    index: HashMap<PhaseId, usize>,
    /// Each node's position among its parent's children.
    #[serde(skip)]
    position: Vec<usize>,
    /// One past the last node of each subtree.
    #[serde(skip)]
    subtree_end: Vec<usize>,
    /// Every name a phase of the plan captures (computed once: templates ask for it per phase).
    #[serde(skip)]
    capture_names: BTreeSet<String>,
    /// The names captured as secrets (`secret: true`), computed once for the same reason.
    #[serde(skip)]
    secret_capture_names: BTreeSet<String>,
}

/// How a plan is stored: its nodes, from which [`Plan::new`] derives everything else.
#[derive(Deserialize)]
#[serde(bound(deserialize = "A: Deserialize<'de>"))]
struct StoredPlan<A> {
    nodes: Vec<PlanNode<A>>,
}

impl<A: Leaf> From<StoredPlan<A>> for Plan<A> {
    fn from(stored: StoredPlan<A>) -> Self {
        Plan::new(stored.nodes)
    }
}

impl<A: Leaf> Plan<A> {
    /// Builds a plan from nodes in depth-first order (root first, parents before children).
    pub(crate) fn new(nodes: Vec<PlanNode<A>>) -> Self {
        let mut plan = Plan {
            nodes,
            index: HashMap::new(),
            position: Vec::new(),
            subtree_end: Vec::new(),
            capture_names: BTreeSet::new(),
            secret_capture_names: BTreeSet::new(),
        };
        plan.rebuild_index();
        plan
    }

    pub(crate) fn from_json(bytes: &[u8]) -> serde_json::Result<Self>
    where
        A: serde::de::DeserializeOwned,
    {
        serde_json::from_slice(bytes)
    }

    fn rebuild_index(&mut self) {
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        self.position = vec![0; self.nodes.len()];
        for node in &self.nodes {
            for (pos, c) in node.children.iter().enumerate() {
                self.position[*c] = pos;
            }
        }
        self.subtree_end = (1..=self.nodes.len()).collect();
        for i in (0..self.nodes.len()).rev() {
            if let Some(last) = self.nodes[i].children.last() {
                self.subtree_end[i] = self.subtree_end[*last];
            }
        }
        self.capture_names = self
            .nodes
            .iter()
            .flat_map(|n| n.capture.keys().cloned())
            .collect();
        self.secret_capture_names = self
            .nodes
            .iter()
            .flat_map(|n| n.secret_capture.iter().cloned())
            .collect();
    }

    /// The names the plan's phases capture, each once.
    pub(crate) fn capture_names(&self) -> &BTreeSet<String> {
        &self.capture_names
    }

    /// The names the plan's phases capture as secrets, each once.
    pub(crate) fn secret_capture_names(&self) -> &BTreeSet<String> {
        &self.secret_capture_names
    }

    pub(crate) fn find(&self, id: &PhaseId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Every node, in depth-first order (index 0 is the root).
    pub(crate) fn nodes(&self) -> &[PlanNode<A>] {
        &self.nodes
    }

    pub(crate) fn node(&self, i: usize) -> &PlanNode<A> {
        &self.nodes[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Leaves in depth-first order.
    pub(crate) fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_leaf())
    }

    /// `i` and its descendants (a contiguous range in depth-first order).
    pub(crate) fn subtree(&self, i: usize) -> std::ops::Range<usize> {
        i..self.subtree_end[i]
    }

    /// Leaves under `target` that an executor started and did not finish. While no executor
    /// holds a live lease, these are the interrupted phases: the one rule used by `medic plan`
    /// and by the guard before an execute.
    pub(crate) fn in_progress_leaves<'a>(
        &'a self,
        states: &'a [PhaseState],
        target: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        self.subtree(target)
            .filter(|i| self.nodes[*i].is_leaf() && states[*i] == PhaseState::InProgress)
    }

    pub(crate) fn ancestors(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = self.nodes[i].parent;
        while let Some(c) = cur {
            out.push(c);
            cur = self.nodes[c].parent;
        }
        out
    }

    /// What `i` itself requires ([`requires::direct`]), in depth-first order.
    pub(crate) fn direct_requirements(&self, i: usize) -> Vec<usize> {
        let node = &self.nodes[i];
        let pos = self.position[i];
        let group = node.parent.map(|p| &self.nodes[p]);
        let previous_sibling = group.filter(|_| pos > 0).map(|g| g.children[pos - 1]);
        let mut out = requires::direct(
            node.requires.iter().filter_map(|r| self.find(r)),
            group.is_some_and(|g| g.parallel),
            previous_sibling,
        );
        out.sort_unstable();
        out
    }

    /// State of every node: leaves from `records` (missing = unstarted), groups derived.
    pub(crate) fn states(&self, records: &HashMap<PhaseId, PhaseRecord>) -> Vec<PhaseState> {
        let mut states = vec![PhaseState::Unstarted; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            let node = &self.nodes[i];
            states[i] = if node.is_leaf() {
                records
                    .get(&node.id)
                    .map(|r| r.state)
                    .unwrap_or(PhaseState::Unstarted)
            } else {
                let child_states: Vec<PhaseState> =
                    node.children.iter().map(|c| states[*c]).collect();
                derive_state(&child_states)
            };
        }
        states
    }

    /// Nodes that `target` (or an ancestor of it, or a descendant of it pointing outside its
    /// subtree) requires and that are not completed: what blocks an execute of `target`.
    pub(crate) fn unmet_requirements(&self, states: &[PhaseState], target: usize) -> Vec<usize> {
        let range = self.subtree(target);
        let mut wanted = Vec::new();
        let mut consider = |from: usize, outside_only: bool| {
            for r in self.direct_requirements(from) {
                if outside_only && range.contains(&r) {
                    continue;
                }
                if states[r] != PhaseState::Completed {
                    wanted.push(r);
                }
            }
        };
        consider(target, false);
        for a in self.ancestors(target) {
            consider(a, false);
        }
        for d in range.clone().skip(1) {
            consider(d, true);
        }
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Leaves outside `target`'s subtree that depend, directly or transitively, on something in
    /// it and that are started and not rolled back: what blocks a rollback of `target`.
    pub(crate) fn blocking_dependents(&self, states: &[PhaseState], target: usize) -> Vec<usize> {
        let range = self.subtree(target);
        let mut touched = vec![false; self.nodes.len()];
        let mark = |touched: &mut Vec<bool>, leaf: usize| {
            touched[leaf] = true;
            for a in self.ancestors(leaf) {
                touched[a] = true;
            }
        };
        for i in range.clone() {
            if self.nodes[i].is_leaf() {
                mark(&mut touched, i);
            }
        }
        let mut blocking = Vec::new();
        for leaf in self.topological_leaves() {
            if range.contains(&leaf) {
                continue;
            }
            let mut chain = vec![leaf];
            chain.extend(self.ancestors(leaf));
            let depends = chain
                .iter()
                .any(|n| self.direct_requirements(*n).iter().any(|r| touched[*r]));
            if depends {
                mark(&mut touched, leaf);
                if states[leaf].is_started() {
                    blocking.push(leaf);
                }
            }
        }
        blocking
    }

    /// Every leaf in an order that respects all requirements (depth-first order breaks ties).
    pub(crate) fn topological_leaves(&self) -> Vec<usize> {
        let states = vec![PhaseState::Unstarted; self.nodes.len()];
        let mut scheduler = Scheduler::new(self, &states, 0, SchedulerMode::Simulate);
        let mut order = Vec::new();
        loop {
            let ready = scheduler.next_ready();
            if ready.is_empty() {
                break;
            }
            for leaf in ready {
                order.push(leaf);
                scheduler.finished(leaf, true);
            }
        }
        order
    }

    /// The started leaves of `target`, in the order a rollback undoes them (reverse execution).
    pub(crate) fn rollback_order(&self, states: &[PhaseState], target: usize) -> Vec<usize> {
        let range = self.subtree(target);
        let mut order: Vec<usize> = self
            .topological_leaves()
            .into_iter()
            .filter(|l| range.contains(l) && states[*l].is_started())
            .collect();
        order.reverse();
        order
    }
}
