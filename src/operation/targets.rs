//! What an operation acts on, derived from its rendered plan (never declared by hand): the
//! nodes its `ssh` and `kube` phases name, and whether it changes the etcd membership. Two
//! active operations that share any of these collide.
//!
//! 1. Each leaf's action and rollback are rendered in the leaf's display context (parameters,
//!    captured values so far, the inventory; secrets as placeholders).
//! 2. Each action says what it touches (`Action::touches`); values captured later are left out.

use std::collections::{BTreeMap, BTreeSet};

use crate::action::{Plan, RenderScope, Touch};
use crate::engine::phase_context;
use crate::inventory::Inventory;
use crate::procedure::Params;
use crate::store::{Operation, Store};
use crate::template::{TemplateContext, Templates};

use super::OperationError;

/// The most nodes a message names (a plan over a large inventory shares them all).
const SHOWN_NODES: usize = 8;

/// The nodes an operation acts on and whether it changes the etcd membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    pub(crate) nodes: BTreeSet<String>,
    pub(crate) etcd_membership: bool,
}

impl Targets {
    /// What both act on, or `None` when nothing is shared.
    pub(crate) fn overlap(&self, other: &Targets) -> Option<Targets> {
        let shared = Targets {
            nodes: self.nodes.intersection(&other.nodes).cloned().collect(),
            etcd_membership: self.etcd_membership && other.etcd_membership,
        };
        (!shared.nodes.is_empty() || shared.etcd_membership).then_some(shared)
    }

    /// `node cp-1, node cp-2, the etcd membership`; past [`SHOWN_NODES`] nodes, how many more.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .nodes
            .iter()
            .take(SHOWN_NODES)
            .map(|n| format!("node {n}"))
            .collect();
        if self.nodes.len() > SHOWN_NODES {
            parts.push(format!("{} more nodes", self.nodes.len() - SHOWN_NODES));
        }
        if self.etcd_membership {
            parts.push("the etcd membership".into());
        }
        parts.join(", ")
    }
}

/// What `plan` of `op` acts on, rendered with `params` and the values captured so far.
pub(crate) fn plan_targets(
    op: &Operation,
    plan: &Plan,
    params: &Params,
    vars: &serde_json::Map<String, serde_json::Value>,
    inventory: Option<&Inventory>,
) -> Targets {
    let templates = Templates::new();
    let contexts = Contexts::new(op, plan, params, vars, inventory);
    let mut targets = Targets::default();
    for leaf in plan.leaves() {
        let node = plan.node(leaf);
        let scope = RenderScope {
            templates: &templates,
            ctx: contexts.of(plan, leaf),
            inventory,
        };
        for action in [node.action.as_ref(), node.rollback.as_ref()]
            .into_iter()
            .flatten()
        {
            for touch in action.touches(&scope) {
                match touch {
                    Touch::Node(n) => {
                        targets.nodes.insert(n);
                    }
                    Touch::EtcdMembership => targets.etcd_membership = true,
                }
            }
        }
    }
    targets
}

/// Display contexts of many phases of one plan: what `phase_context` gives, with the parts
/// every phase shares (parameters, captured values, the operation, the inventory) converted
/// once rather than per phase — a large inventory times thousands of phases adds up.
pub(crate) struct Contexts {
    shared: TemplateContext,
    entries: BTreeMap<String, minijinja::Value>,
}

impl Contexts {
    pub(crate) fn new(
        op: &Operation,
        plan: &Plan,
        params: &Params,
        vars: &serde_json::Map<String, serde_json::Value>,
        inventory: Option<&Inventory>,
    ) -> Contexts {
        // The root has no loop locals: its context is the shared part.
        let shared = phase_context(op, plan, 0, params, vars, inventory, false);
        let entries = shared
            .try_iter()
            .into_iter()
            .flatten()
            .filter_map(|k| Some((k.as_str()?.to_string(), shared.get_item(&k).ok()?)))
            .collect();
        Contexts { shared, entries }
    }

    /// The display context of node `i`: the shared part and its loop locals, which bind a
    /// pending name but never `operation` or `inventory` (as in `phase_context`).
    pub(crate) fn of(&self, plan: &Plan, i: usize) -> TemplateContext {
        let locals = &plan.node(i).locals;
        if locals.is_empty() {
            return self.shared.clone();
        }
        let mut entries = self.entries.clone();
        let mut pending = self.shared.pending().clone();
        for (k, v) in locals {
            if k == "operation" || (k == "inventory" && entries.contains_key("inventory")) {
                continue;
            }
            pending.remove(k);
            entries.insert(k.clone(), minijinja::Value::from_serialize(v));
        }
        TemplateContext::new(minijinja::Value::from(entries), pending)
    }
}

/// A stored operation's parameters and captured values as a display shows them: secret
/// values are never read, only their names (placeholders stand in for them).
pub(crate) fn shown_values(
    store: &mut Store,
    op: &Operation,
) -> Result<(Params, serde_json::Map<String, serde_json::Value>), OperationError> {
    let vars = store.vars(&op.id).map_err(OperationError::ReadState)?;
    let secret_names = store
        .secrets(&op.id)
        .map_err(OperationError::ReadState)?
        .into_keys();
    let params = Params::shown(
        op.params.clone(),
        op.secret_params.iter().cloned().chain(secret_names),
    );
    Ok((params, vars))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Actor, OperationState};

    #[test]
    fn shared_contexts_are_what_phase_context_gives_each_phase() {
        let run = |c: &str| serde_json::json!({"run": {"command": c}});
        let nodes = serde_json::json!({"nodes": [
            {"id": "/", "children": [1, 2, 3]},
            {"id": "/a", "parent": 0, "action": run("echo {{ p }}"), "capture": {"found": "stdout"}},
            {"id": "/b", "parent": 0, "action": run("echo {{ item }}"),
             "locals": {"item": "x", "found": "shadowed", "operation": "no"}},
            {"id": "/c", "parent": 0, "action": run("echo {{ found }}"), "locals": {"inventory": 1}},
        ]});
        let plan = Plan::from_json(nodes.to_string().as_bytes()).unwrap();
        let op = Operation {
            id: "op".into(),
            procedure: "p".into(),
            description: String::new(),
            params: BTreeMap::from([("p".to_string(), serde_json::json!("v"))]),
            secret_params: vec!["token".into()],
            created_at: 0,
            created_by: Actor {
                user: "u".into(),
                host: "h".into(),
                pid: 1,
                command: "c".into(),
            },
            reason: None,
            state: OperationState::Active,
            finished_at: None,
            fingerprint: String::new(),
        };
        let params = Params {
            values: op.params.clone(),
            secrets: BTreeMap::from([("token".to_string(), String::new())]),
        };
        let vars = serde_json::Map::from_iter([("seen".to_string(), serde_json::json!(3))]);
        let contexts = Contexts::new(&op, &plan, &params, &vars, None);
        for i in 1..plan.len() {
            let fast = contexts.of(&plan, i);
            let slow = phase_context(&op, &plan, i, &params, &vars, None, false);
            assert_eq!(
                serde_json::to_value(&*fast).unwrap(),
                serde_json::to_value(&*slow).unwrap(),
                "{}",
                plan.node(i).id
            );
            assert_eq!(fast.pending(), slow.pending(), "{}", plan.node(i).id);
        }
    }

    #[test]
    fn overlap_is_the_shared_nodes_and_membership_named_up_to_a_limit() {
        let t = |nodes: &[&str], etcd| Targets {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            etcd_membership: etcd,
        };
        assert_eq!(t(&["a"], false).overlap(&t(&["b"], false)), None);
        assert_eq!(t(&["a"], true).overlap(&t(&["b"], false)), None);
        let both = t(&["a", "b"], true).overlap(&t(&["b", "c"], true)).unwrap();
        assert_eq!(both.describe(), "node b, the etcd membership");
        let many: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            t(&many, false).describe(),
            "node n0, node n1, node n2, node n3, node n4, node n5, node n6, node n7, 2 more nodes"
        );
    }
}
