//! The scheduler: "which leaves may start now" while executing one target phase, in
//! O(nodes + edges) over the whole run; dry-runs and rollback order reuse it.

use std::collections::{HashMap, VecDeque};

use super::{Leaf, PhaseState, Plan};

/// How the scheduler treats pause phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SchedulerMode {
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
pub(crate) struct Scheduler<'a, A> {
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
    pub(crate) fn new(
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
    pub(crate) fn next_ready(&mut self) -> Vec<usize> {
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
    pub(crate) fn finished(&mut self, leaf: usize, ok: bool) {
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
    pub(crate) fn paused(&self) -> &[usize] {
        &self.paused
    }

    /// Whether every leaf under the target is completed.
    pub(crate) fn all_done(&self) -> bool {
        self.remaining[self.target] == 0
    }

    /// When nothing is ready, running or paused but leaves remain: each unfinished leaf that
    /// was never offered, with the requirements (its own or its groups') it still waits for.
    /// Empty while the run can go on. A correct plan never gets here; the engine reports it as
    /// *stuck* rather than claiming every phase completed.
    pub(crate) fn stuck(&self) -> Vec<(usize, Vec<usize>)> {
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
