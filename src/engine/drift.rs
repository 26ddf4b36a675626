//! The drift gate: the facts a dry-run showed, recorded when the operation was started and
//! again when it was approved (`crate::store::Facts`), read again before an operation with a
//! destructive phase (not idempotent, or `confirm: true`) runs its first phase; a difference
//! refuses the run
//! (exit 3) unless `--force`, which history records.
//!
//! 1. [`read_facts`]: the inventory file's sha256; for a plan with etcd actions, each etcd
//!    member with its health; for a plan with kube actions, the state, cordon and kubelet
//!    version of each node it touches and each drain's preview (`action::kube::kube_facts`);
//!    each fact a readable label and a value.
//! 2. [`differences`]: pure, old facts against new, one sentence per difference.
//! 3. `Engine::check_drift` runs once per execute, before the run's first leaf, when no leaf
//!    of the operation has started yet and the plan has a destructive leaf or a drain. Once any leaf has
//!    run, the plan's own steps (stopping a service, an idempotent change) change the facts,
//!    so they no longer describe what was reviewed.
//! 4. When a run stops at a pause, [`Engine::record_pause_facts`] reads the facts again; a
//!    run that continues after a pause longer than the inventory's
//!    `policy.drift_recheck_after` (default 30m) compares them with the cluster before its
//!    first leaf, and refuses on a difference like the gate above.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::action::kube::{drains, kube_facts};
use crate::action::{Plan, RenderScope};
use crate::etcd::Transport;
use crate::inventory::Inventory;
use crate::inventory::DEFAULT_DRIFT_RECHECK_SECS;
use crate::plan::PhaseState;
use crate::procedure::Params;
use crate::ssh::SshPool;
use crate::store::{now_ms, Facts, Operation, Review};
use crate::template::Templates;

use super::context::phase_context;

use super::{Engine, EngineError};

/// How long reading the facts may take in all.
const FACTS_TIMEOUT: Duration = Duration::from_secs(30);

/// Whose facts: the operation, its parameters and the values captured so far, to render
/// the node names and drains of its phases.
pub(crate) struct FactsOf<'a> {
    pub(crate) op: &'a Operation,
    pub(crate) params: &'a Params,
    pub(crate) vars: &'a serde_json::Map<String, serde_json::Value>,
}

/// Reads the facts the plan depends on now; `at` says which step reads them (`start`,
/// `approve`, `execute`).
pub(crate) async fn read_facts(
    inventory: Option<&Inventory>,
    plan: &Plan,
    of: &FactsOf<'_>,
    ssh: &SshPool,
    at: &str,
) -> Facts {
    let mut items = BTreeMap::new();
    if let Some(inv) = inventory {
        let digest = std::fs::read(&inv.path)
            .map(|bytes| {
                Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
            .unwrap_or_else(|e| format!("unreadable ({e})"));
        items.insert("inventory: sha256".to_string(), digest);
        let uses_etcd = plan.nodes().iter().any(|n| {
            [n.action.as_ref(), n.rollback.as_ref()]
                .into_iter()
                .flatten()
                .any(|a| a.kind() == "etcd")
        });
        if uses_etcd {
            let etcd = tokio::time::timeout(FACTS_TIMEOUT, etcd_facts(inv, ssh)).await;
            items.extend(etcd.unwrap_or_else(|_| {
                BTreeMap::from([("etcd: member list".to_string(), "timed out".to_string())])
            }));
        }
    }
    let templates = Templates::new();
    let scope_of = |leaf: usize| RenderScope {
        templates: &templates,
        ctx: phase_context(of.op, plan, leaf, of.params, of.vars, inventory, false),
        inventory,
    };
    let kube = tokio::time::timeout(FACTS_TIMEOUT, kube_facts(plan, &scope_of)).await;
    items.extend(kube.unwrap_or_else(|_| {
        BTreeMap::from([("kubernetes: API".to_string(), "timed out".to_string())])
    }));
    Facts {
        taken_at: now_ms(),
        at: at.to_string(),
        items,
    }
}

/// Each etcd member and its health (`healthy`, `unhealthy`, with `learner` or `not started`).
async fn etcd_facts(inv: &Inventory, ssh: &SshPool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let transport = match Transport::choose(inv, None, None) {
        Ok(t) => t,
        Err(e) => {
            out.insert("etcd: member list".into(), format!("unavailable ({e})"));
            return out;
        }
    };
    let members = match transport.member_list(ssh).await {
        Ok(m) => m,
        Err(e) => {
            out.insert("etcd: member list".into(), format!("unavailable ({e})"));
            return out;
        }
    };
    for h in transport.health(ssh, &members).await {
        let label = if h.name.is_empty() {
            h.id.clone()
        } else {
            h.name.clone()
        };
        let mut state = if h.healthy { "healthy" } else { "unhealthy" }.to_string();
        if h.is_learner {
            state.push_str(" (learner)");
        }
        if !h.started {
            state.push_str(" (not started)");
        }
        out.insert(format!("etcd: member {label}"), state);
    }
    out
}

/// One sentence per fact that differs between `old` (recorded at `old.at`) and `new`.
pub(crate) fn differences(old: &Facts, new: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    for (key, was) in &old.items {
        match new.items.get(key) {
            Some(now) if now == was => {}
            Some(now) => out.push(format!("{key} was {was} at {}, now {now}", old.at)),
            None => out.push(format!("{key} was {was} at {}, now gone", old.at)),
        }
    }
    for (key, now) in &new.items {
        if !old.items.contains_key(key) {
            out.push(format!("{key} is new since {}: {now}", old.at));
        }
    }
    out
}

pub(super) fn drift_after_pause_message(
    operation: &str,
    paused_secs: u64,
    differences: &[String],
) -> String {
    format!(
        "the cluster changed while operation {operation} was paused ({}):\n  {}\nsee `medic plan drift --operation {operation}`; check the cluster, then pass --force to go on (recorded in history), or roll back",
        humantime::format_duration(std::time::Duration::from_secs(paused_secs)),
        differences.join("\n  ")
    )
}

pub(super) fn drift_message(operation: &str, differences: &[String]) -> String {
    format!(
        "the cluster changed since it was reviewed:\n  {}\nsee `medic plan drift --operation {operation}` for every fact; if the plan is still right, approve it again (`medic plan approve --reason TEXT`), or pass --force (recorded in history)",
        differences.join("\n  ")
    )
}

impl Engine {
    /// Whether any leaf of the operation has started: from then on the plan itself changes
    /// the cluster, so the facts of the review no longer describe it.
    fn work_began(&self) -> bool {
        let records = self.shared.records.lock().expect("records lock");
        records.values().any(|r| r.state != PhaseState::Unstarted)
    }

    /// Whether the plan has a destructive leaf (not idempotent, or `confirm: true`), or a
    /// drain (which moves workloads; its preview is among the facts).
    fn has_destructive_leaf(&self) -> bool {
        let plan = &self.shared.plan;
        plan.nodes()
            .iter()
            .any(|n| n.is_leaf() && (!n.idempotent || n.confirm))
            || drains(plan)
    }

    /// Before the run's first leaf: when nothing of the operation has run yet, the facts
    /// recorded at start/approve against the cluster now; when work has begun, and the run
    /// stopped at a pause longer than `policy.drift_recheck_after` ago, the facts read at the
    /// pause against now. Refuses on a difference; `--force` records it instead.
    pub(super) async fn check_drift(&self, leaf: usize) -> Result<(), EngineError> {
        if self.drift_checked.swap(true, Ordering::SeqCst) || !self.has_destructive_leaf() {
            return Ok(());
        }
        let Some(mut review) = self.stored_review()? else {
            return Ok(());
        };
        let began = self.work_began();
        let recorded = if began {
            review.paused.clone().filter(|p| self.pause_is_long(p))
        } else {
            review.facts.clone()
        };
        // Past this check the run continues from the pause; a later one compares with its own.
        let mut pause_over = || {
            if began && review.paused.is_some() {
                review.paused = None;
                return self.put_review(&review);
            }
            Ok(())
        };
        let Some(recorded) = recorded else {
            return pause_over();
        };
        let now = self.facts_now("execute").await;
        let differences = differences(&recorded, &now);
        if differences.is_empty() {
            return pause_over();
        }
        let operation = self.shared.op.id.clone();
        let err = if began {
            EngineError::DriftAfterPause {
                operation,
                paused_secs: now.taken_at.saturating_sub(recorded.taken_at) / 1000,
                differences,
            }
        } else {
            EngineError::Drift {
                operation,
                differences,
            }
        };
        if !self.force {
            return Err(err);
        }
        let node = self.shared.plan.node(leaf);
        self.record_forced(&node.id.clone(), format!("--force: {err}"))?;
        pause_over()
    }

    /// Whether the pause whose facts are `paused` began longer ago than the inventory's
    /// `policy.drift_recheck_after` (default 30m).
    fn pause_is_long(&self, paused: &Facts) -> bool {
        let window = self
            .shared
            .inventory
            .as_deref()
            .map_or(DEFAULT_DRIFT_RECHECK_SECS, |i| i.drift_recheck_after_secs);
        now_ms().saturating_sub(paused.taken_at) as f64 > window * 1000.0
    }

    async fn facts_now(&self, at: &str) -> Facts {
        let params = self.shared.params.read().expect("params lock").clone();
        let vars = self.shared.vars.lock().expect("vars lock").clone();
        let of = FactsOf {
            op: &self.shared.op,
            params: &params,
            vars: &vars,
        };
        let shared = &self.shared;
        read_facts(
            shared.inventory.as_deref(),
            &shared.plan,
            &of,
            &shared.ssh,
            at,
        )
        .await
    }

    fn stored_review(&self) -> Result<Option<Review>, EngineError> {
        let mut store = self.shared.store.lock().expect("store lock");
        match store.as_mut() {
            Some(s) => Ok(Some(s.review(&self.shared.op.id)?)),
            None => Ok(None),
        }
    }

    fn put_review(&self, review: &Review) -> Result<(), EngineError> {
        let mut store = self.shared.store.lock().expect("store lock");
        if let Some(s) = store.as_mut() {
            s.put_review(&self.shared.op.id, review)?;
        }
        Ok(())
    }

    /// When a run stops at a pause: the facts now, for a late `resume` to compare with.
    pub(super) async fn record_pause_facts(&self) -> Result<(), EngineError> {
        if self.shared.inventory.is_none() {
            return Ok(());
        }
        let Some(mut review) = self.stored_review()? else {
            return Ok(());
        };
        if review.paused.is_some() {
            // Still the same pause (a `resume` that stopped at it again): it began earlier.
            return Ok(());
        }
        let facts = self.facts_now("pause").await;
        review.paused = Some(facts);
        self.put_review(&review)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(at: &str, items: &[(&str, &str)]) -> Facts {
        Facts {
            taken_at: 0,
            at: at.into(),
            items: items
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn differences_name_each_changed_gone_and_new_fact() {
        let old = facts(
            "approve",
            &[
                ("etcd: member cp-2", "healthy"),
                ("etcd: member cp-3", "healthy"),
                ("x", "1"),
            ],
        );
        let new = facts(
            "execute",
            &[("etcd: member cp-2", "unhealthy"), ("x", "1"), ("y", "2")],
        );
        assert_eq!(
            differences(&old, &new),
            [
                "etcd: member cp-2 was healthy at approve, now unhealthy",
                "etcd: member cp-3 was healthy at approve, now gone",
                "y is new since approve: 2",
            ]
        );
        assert!(differences(&old, &old).is_empty());
    }
}
