//! What an interrupted phase may have done, for the hints under the plan table: its action
//! (or, if it was rolling back, its rollback) rendered as a dry-run shows it, secrets as
//! placeholders.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::action::{Plan, RenderScope};
use crate::inventory::Inventory;
use crate::plan::{PhaseId, PhaseRecord};
use crate::store::{Operation, Store};
use crate::template::Templates;

use super::targets::{shown_values, Contexts};
use super::OperationError;

/// The rendered action of each leaf in `interrupted`, one line per step.
pub(crate) fn interrupted_actions(
    store: &mut Store,
    op: &Operation,
    plan: &Plan,
    records: &HashMap<PhaseId, PhaseRecord>,
    interrupted: &BTreeSet<PhaseId>,
    inventory: Option<&Inventory>,
) -> Result<BTreeMap<PhaseId, Vec<String>>, OperationError> {
    let mut out = BTreeMap::new();
    if interrupted.is_empty() {
        return Ok(out);
    }
    let (params, vars) = shown_values(store, op)?;
    let templates = Templates::new();
    let contexts = Contexts::new(op, plan, &params, &vars, inventory);
    for id in interrupted {
        let Some(i) = plan.find(id) else { continue };
        let node = plan.node(i);
        let rolling_back = records.get(id).is_some_and(|r| r.rolling_back);
        let action = if rolling_back {
            node.rollback.as_ref()
        } else {
            node.action.as_ref()
        };
        let Some(action) = action else { continue };
        let scope = RenderScope {
            templates: &templates,
            ctx: contexts.of(plan, i),
            inventory,
        };
        let lines = action
            .describe(&scope)
            .unwrap_or_else(|e| vec![format!("{}: cannot render ({e})", action.kind())]);
        out.insert(id.clone(), lines);
    }
    Ok(out)
}
