//! The template context of a phase: parameters, captured variables, loop locals and the
//! operation, with real secrets only for execution.

use std::collections::BTreeMap;

use crate::action::Plan;
use crate::inventory::Inventory;
use crate::procedure::Params;
use crate::store::Operation;
use crate::template::{Pending, TemplateContext};

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
) -> TemplateContext {
    let mut ctx: BTreeMap<String, serde_json::Value> = params.template_values(reveal);
    // An optional secret that was not given is empty, and shown as such: a dry-run then
    // shows which value a template falls back to.
    for (name, value) in &params.secrets {
        if value.is_empty() {
            ctx.insert(name.clone(), serde_json::Value::String(String::new()));
        }
    }
    let mut pending = Pending::default();
    if !reveal {
        for name in plan.capture_names() {
            if !vars.contains_key(name) && !params.secrets.contains_key(name) {
                pending.insert(name);
            }
        }
    }
    ctx.extend(pending.placeholders());
    if !reveal {
        // A secret captured later is shown as the secret it will be, never as pending text.
        for name in plan.secret_capture_names() {
            if pending.contains(name) {
                pending.remove(name);
                ctx.insert(
                    name.clone(),
                    crate::procedure::secret_placeholder(name).into(),
                );
            }
        }
    }
    for (k, v) in vars.iter().chain(&plan.node(node).locals) {
        pending.remove(k);
        ctx.insert(k.clone(), v.clone());
    }
    pending.remove("operation");
    ctx.insert(
        "operation".into(),
        serde_json::json!({ "id": op.id, "procedure": op.procedure }),
    );
    if let Some(inv) = inventory {
        pending.remove("inventory");
        ctx.insert("inventory".into(), inv.template_value());
    }
    TemplateContext::new(minijinja::Value::from_serialize(&ctx), pending)
}

impl Shared {
    pub(super) fn display_context(&self, node: usize) -> TemplateContext {
        self.context(node, false)
    }

    /// The template context of `node` with the variables captured so far; real secret values
    /// only when `reveal` (execution).
    pub(super) fn context(&self, node: usize, reveal: bool) -> TemplateContext {
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
