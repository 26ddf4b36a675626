//! The template context of a phase: parameters, captured variables, loop locals and the
//! operation, with real secrets only for execution.

use std::collections::BTreeMap;

use crate::action::Plan;
use crate::inventory::Inventory;
use crate::procedure::{pending_capture_placeholder, Params};
use crate::store::Operation;

use super::Shared;

/// Template context for a phase: parameters (real secrets only for execution), captured
/// variables (pending ones shown as such for display), loop locals, and the operation.
pub(crate) fn phase_context(
    op: &Operation,
    plan: &Plan,
    node: usize,
    params: &Params,
    vars: &serde_json::Map<String, serde_json::Value>,
    inventory: Option<&Inventory>,
    reveal: bool,
) -> minijinja::Value {
    let mut ctx: BTreeMap<String, serde_json::Value> = params.template_values(reveal);
    if !reveal {
        for name in plan.capture_names() {
            if !vars.contains_key(name) && !params.secrets.contains_key(name) {
                ctx.insert(
                    name.clone(),
                    serde_json::Value::String(pending_capture_placeholder(name)),
                );
            }
        }
    }
    for (k, v) in vars {
        ctx.insert(k.clone(), v.clone());
    }
    for (k, v) in &plan.node(node).locals {
        ctx.insert(k.clone(), v.clone());
    }
    ctx.insert(
        "operation".into(),
        serde_json::json!({ "id": op.id, "procedure": op.procedure }),
    );
    if let Some(inv) = inventory {
        ctx.insert("inventory".into(), inv.template_value());
    }
    minijinja::Value::from_serialize(&ctx)
}

impl Shared {
    pub(super) fn display_context(&self, node: usize) -> minijinja::Value {
        self.context(node, false)
    }

    /// The template context of `node` with the variables captured so far; real secret values
    /// only when `reveal` (execution).
    pub(super) fn context(&self, node: usize, reveal: bool) -> minijinja::Value {
        let vars = self.vars.lock().expect("vars lock").clone();
        let params = self.params.read().expect("params lock");
        phase_context(
            &self.op,
            &self.plan,
            node,
            &params,
            &vars,
            self.inventory.as_deref(),
            reveal,
        )
    }
}
