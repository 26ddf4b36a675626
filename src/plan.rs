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
//! 5. [`Scheduler`] answers "which leaves may start now" for an execute of one phase, in
//!    O(nodes + edges) over the whole run; dry-runs and rollback order reuse it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::phase_id::{valid_phase_segment, PhaseId, PhaseIdError};

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
    pub const ALL: [PhaseState; 5] = [
        PhaseState::Unstarted,
        PhaseState::InProgress,
        PhaseState::Completed,
        PhaseState::Failed,
        PhaseState::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseState::Unstarted => "unstarted",
            PhaseState::InProgress => "in_progress",
            PhaseState::Completed => "completed",
            PhaseState::Failed => "failed",
            PhaseState::RolledBack => "rolled_back",
        }
    }

    /// Started and not undone: what blocks a rollback of something it depends on.
    pub fn is_started(self) -> bool {
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
pub enum Transition {
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
}

impl Transition {
    pub const ALL: [Transition; 8] = [
        Transition::Start,
        Transition::Restart,
        Transition::Complete,
        Transition::Skip,
        Transition::Fail,
        Transition::BeginRollback,
        Transition::FinishRollback,
        Transition::FailRollback,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition:?} a phase that is {from}")]
pub struct IllegalTransition {
    pub from: PhaseState,
    pub transition: Transition,
}

/// The one state transition function. `rolling_back` tells whether the in-progress phase being
/// finished is undoing (so `Complete` cannot end a rollback and `FinishRollback` cannot end a run).
pub fn transition(
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
    pub state: PhaseState,
    /// True while an in-progress phase is being rolled back (and after a failed rollback).
    #[serde(default)]
    pub rolling_back: bool,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// What the action reported when it finished (e.g. "50 nodes ok").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Completed without running its action (`when:` was false); rolls back as a no-op.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Why it failed, as a kind code can match (the message is in `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// Why it was skipped (the summary says "skipped: " and this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
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
    pub fn apply(&self, t: Transition, now_ms: u64) -> Result<PhaseRecord, IllegalTransition> {
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
        }
        Ok(next)
    }
}

/// The state of a group, derived from its leaves' states (never stored).
pub fn derive_state(children: &[PhaseState]) -> PhaseState {
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
    pub id: PhaseId,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// Explicit `requires:` (the implicit ordered-sibling requirement is not listed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<PhaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<A>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<A>,
    /// Template variables local to this phase (the `foreach` item).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locals: BTreeMap<String, serde_json::Value>,
    /// Operation variables to set from the action's result: name → expression over the result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay_secs: f64,
    #[serde(default)]
    pub idempotent: bool,
    /// Run the action only if this holds at execution time (`when:`); else the phase is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

/// A leaf's `when:`: an expression over the phase's variables, and why it is skipped when false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub that: String,
    /// A text template; by default "condition is false: THAT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn default_retry_delay() -> f64 {
    1.0
}

impl<A> PlanNode<A> {
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty() && self.action.is_some()
    }
}

impl<A: Leaf> PlanNode<A> {
    pub fn is_pause(&self) -> bool {
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
    pub fn new(nodes: Vec<PlanNode<A>>) -> Self {
        let mut plan = Plan {
            nodes,
            index: HashMap::new(),
            position: Vec::new(),
            subtree_end: Vec::new(),
            capture_names: BTreeSet::new(),
        };
        plan.rebuild_index();
        plan
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self>
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
    }

    /// The names the plan's phases capture, each once.
    pub fn capture_names(&self) -> &BTreeSet<String> {
        &self.capture_names
    }

    pub fn find(&self, id: &PhaseId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Every node, in depth-first order (index 0 is the root).
    pub fn nodes(&self) -> &[PlanNode<A>] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &PlanNode<A> {
        &self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Leaves in depth-first order.
    pub fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_leaf())
    }

    /// Whether `a` is `b` or an ancestor of `b`.
    pub fn contains(&self, a: usize, b: usize) -> bool {
        let mut cur = Some(b);
        while let Some(c) = cur {
            if c == a {
                return true;
            }
            cur = self.nodes[c].parent;
        }
        false
    }

    /// `i` and its descendants (a contiguous range in depth-first order).
    pub fn subtree(&self, i: usize) -> std::ops::Range<usize> {
        i..self.subtree_end[i]
    }

    pub fn ancestors(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = self.nodes[i].parent;
        while let Some(c) = cur {
            out.push(c);
            cur = self.nodes[c].parent;
        }
        out
    }

    /// What `i` itself requires: its explicit requires plus, in an ordered group, the sibling
    /// before it.
    pub fn direct_requirements(&self, i: usize) -> Vec<usize> {
        let node = &self.nodes[i];
        let mut out: Vec<usize> = node.requires.iter().filter_map(|r| self.find(r)).collect();
        if let Some(p) = node.parent {
            let parent = &self.nodes[p];
            let pos = self.position[i];
            if !parent.parallel && pos > 0 {
                out.push(parent.children[pos - 1]);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// State of every node: leaves from `records` (missing = unstarted), groups derived.
    pub fn states(&self, records: &HashMap<PhaseId, PhaseRecord>) -> Vec<PhaseState> {
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
    pub fn unmet_requirements(&self, states: &[PhaseState], target: usize) -> Vec<usize> {
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
    pub fn blocking_dependents(&self, states: &[PhaseState], target: usize) -> Vec<usize> {
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
    pub fn topological_leaves(&self) -> Vec<usize> {
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
    pub fn rollback_order(&self, states: &[PhaseState], target: usize) -> Vec<usize> {
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

/// How the scheduler treats pause phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerMode {
    /// A pause that is not the execute target stops its dependents (`resume` stops there).
    Execute,
    /// Pauses are offered like any phase (dry-runs and ordering).
    Simulate,
}

/// Answers "which leaves may start now" while executing one target phase.
///
/// A node is *enabled* once its parent is enabled and each of its requirements is done (all
/// leaves under it completed). An enabled leaf that is not completed is ready. Completing a leaf
/// updates the per-node count of unfinished leaves, and a count reaching zero enables the nodes
/// waiting on it, so the whole run costs O(nodes + edges).
pub struct Scheduler<'a, A> {
    plan: &'a Plan<A>,
    mode: SchedulerMode,
    target: usize,
    /// Leaves not completed, per node, over its subtree.
    remaining: Vec<usize>,
    /// Requirements not yet done, per node in the target's subtree.
    unmet: Vec<usize>,
    enabled: Vec<bool>,
    dependents: HashMap<usize, Vec<usize>>,
    ready: VecDeque<usize>,
    running: HashMap<usize, usize>,
    paused: Vec<usize>,
    stopped: bool,
    /// Leaves offered by `next_ready` and not finished yet.
    in_flight: usize,
}

impl<'a, A: Leaf> Scheduler<'a, A> {
    /// `states` are the current node states; requirements outside the target's subtree are
    /// assumed to have been checked (or overridden with `--force`) by the caller.
    pub fn new(
        plan: &'a Plan<A>,
        states: &[PhaseState],
        target: usize,
        mode: SchedulerMode,
    ) -> Self {
        let n = plan.nodes.len();
        let mut remaining = vec![0usize; n];
        for i in (0..n).rev() {
            let node = &plan.nodes[i];
            remaining[i] = if node.is_leaf() {
                usize::from(states[i] != PhaseState::Completed)
            } else {
                node.children.iter().map(|c| remaining[*c]).sum()
            };
        }
        let range = plan.subtree(target);
        let mut unmet = vec![0usize; n];
        let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
        for i in range.clone() {
            if i == target {
                continue;
            }
            for r in plan.direct_requirements(i) {
                if range.contains(&r) && remaining[r] > 0 {
                    unmet[i] += 1;
                    dependents.entry(r).or_default().push(i);
                }
            }
        }
        let mut scheduler = Scheduler {
            plan,
            mode,
            target,
            remaining,
            unmet,
            enabled: vec![false; n],
            dependents,
            ready: VecDeque::new(),
            running: HashMap::new(),
            paused: Vec::new(),
            stopped: false,
            in_flight: 0,
        };
        scheduler.enable(target);
        scheduler
    }

    fn enable(&mut self, start: usize) {
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if self.enabled[i] {
                continue;
            }
            self.enabled[i] = true;
            let node = &self.plan.nodes[i];
            if node.is_leaf() {
                if self.remaining[i] == 0 {
                    continue;
                }
                if node.is_pause() && i != self.target && self.mode == SchedulerMode::Execute {
                    self.paused.push(i);
                } else {
                    self.ready.push_back(i);
                }
            } else {
                for c in node.children.iter().rev() {
                    if self.unmet[*c] == 0 {
                        stack.push(*c);
                    }
                }
            }
        }
    }

    /// Parallel groups between the target and `leaf` that limit concurrency.
    fn limits(&self, leaf: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut cur = self.plan.nodes[leaf].parent;
        while let Some(g) = cur {
            let node = &self.plan.nodes[g];
            if node.parallel {
                if let Some(max) = node.max_parallel {
                    out.push((g, max.max(1)));
                }
            }
            if g == self.target {
                break;
            }
            cur = node.parent;
        }
        out
    }

    /// Leaves that may start now; each is counted as running until [`Scheduler::finished`].
    pub fn next_ready(&mut self) -> Vec<usize> {
        if self.stopped {
            return Vec::new();
        }
        let mut started = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(leaf) = self.ready.pop_front() {
            let limits = self.limits(leaf);
            let fits = limits
                .iter()
                .all(|(g, max)| self.running.get(g).copied().unwrap_or(0) < *max);
            if fits {
                for (g, _) in limits {
                    *self.running.entry(g).or_default() += 1;
                }
                started.push(leaf);
            } else {
                kept.push_back(leaf);
            }
        }
        self.ready = kept;
        self.in_flight += started.len();
        started
    }

    /// Records the end of a leaf started by [`Scheduler::next_ready`]. A failure stops the
    /// scheduler from offering more leaves.
    pub fn finished(&mut self, leaf: usize, ok: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        for (g, _) in self.limits(leaf) {
            if let Some(c) = self.running.get_mut(&g) {
                *c = c.saturating_sub(1);
            }
        }
        if !ok {
            self.stopped = true;
            return;
        }
        let mut chain = vec![leaf];
        chain.extend(self.plan.ancestors(leaf));
        // Every ancestor counts the leaf; only those whose whole subtree is now done release
        // their dependents.
        for node in chain {
            self.remaining[node] = self.remaining[node].saturating_sub(1);
            if self.remaining[node] != 0 {
                continue;
            }
            let waiting = self.dependents.remove(&node).unwrap_or_default();
            for d in waiting {
                self.unmet[d] -= 1;
                let parent_enabled = self.plan.nodes[d].parent.is_none_or(|p| self.enabled[p]);
                if self.unmet[d] == 0 && parent_enabled {
                    self.enable(d);
                }
            }
        }
    }

    /// Pause phases reached but not run (their dependents wait for the operator).
    pub fn paused(&self) -> &[usize] {
        &self.paused
    }

    /// Whether every leaf under the target is completed.
    pub fn all_done(&self) -> bool {
        self.remaining[self.target] == 0
    }

    /// When nothing is ready, running or paused but leaves remain: each unfinished leaf that
    /// was never offered, with the requirements (its own or its groups') it still waits for.
    /// Empty while the run can go on. A correct plan never gets here; the engine reports it as
    /// *stuck* rather than claiming every phase completed.
    pub fn stuck(&self) -> Vec<(usize, Vec<usize>)> {
        let idle = self.ready.is_empty() && self.in_flight == 0;
        if self.all_done() || !idle || !self.paused.is_empty() || self.stopped {
            return Vec::new();
        }
        let range = self.plan.subtree(self.target);
        range
            .clone()
            .filter(|&i| self.plan.nodes[i].is_leaf() && self.remaining[i] > 0 && !self.enabled[i])
            .map(|leaf| {
                let mut waits_for: Vec<usize> = std::iter::once(leaf)
                    .chain(
                        self.plan
                            .ancestors(leaf)
                            .into_iter()
                            .take_while(|a| range.contains(a)),
                    )
                    .flat_map(|n| self.plan.direct_requirements(n))
                    .filter(|r| range.contains(r) && self.remaining[*r] > 0)
                    .collect();
                waits_for.sort_unstable();
                waits_for.dedup();
                (leaf, waits_for)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
            timeout_secs: None,
            retries: 0,
            retry_delay_secs: 1.0,
            idempotent: true,
            when: None,
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
}
