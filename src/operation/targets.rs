//! What an operation acts on, derived from its rendered plan (never declared by hand): the
//! nodes its `ssh` and `kube` phases name, and whether it changes the etcd membership. Two
//! active operations that share any of these collide.
//!
//! 1. Each leaf's action and rollback are rendered in the leaf's display context (parameters,
//!    captured values so far, the inventory; secrets as placeholders).
//! 2. Each action says what it touches (`Action::touches`); values captured later are left out.

use std::collections::BTreeSet;

use crate::action::{Plan, RenderScope, Touch};
use crate::engine::phase_context;
use crate::inventory::Inventory;
use crate::procedure::Params;
use crate::store::{Operation, Store};
use crate::template::Templates;

use super::OperationError;

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

    /// `node cp-1, node cp-2, the etcd membership`.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self.nodes.iter().map(|n| format!("node {n}")).collect();
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
    let mut targets = Targets::default();
    for leaf in plan.leaves() {
        let node = plan.node(leaf);
        let scope = RenderScope {
            templates: &templates,
            ctx: phase_context(op, plan, leaf, params, vars, inventory, false),
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
    let params = Params {
        values: op.params.clone(),
        secrets: op
            .secret_params
            .iter()
            .cloned()
            .chain(secret_names)
            .map(|k| (k, String::new()))
            .collect(),
    };
    Ok((params, vars))
}
