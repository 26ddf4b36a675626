//! `medic operations`: every operation with its progress.

use serde_json::json;

use super::{print_json, CliError, Ctx};
use crate::render::operation_json;
use crate::store::{format_time, Access, Store};

/// `medic operations`: each operation with its state, progress and who created it why.
pub(super) fn list(ctx: &Ctx) -> Result<i32, CliError> {
    let mut store = match Store::open_with(&ctx.cli.state_dir, Access::Read) {
        Ok(store) => store,
        // Listing nothing is the truth here, but say why rather than "no operations yet".
        Err(e) if e.is_missing() => {
            if ctx.json() {
                print_json(&json!({ "operations": [], "note": e.to_string() }));
            } else {
                println!("no operations: {e}");
            }
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let ops = store.operations()?;
    let mut rows = Vec::new();
    for op in &ops {
        let plan = store.plan(&op.id)?;
        let records = store.records(&op.id)?;
        let leaves = plan.leaves().count();
        let done = plan
            .leaves()
            .filter(|l| {
                records
                    .get(&plan.node(*l).id)
                    .is_some_and(|r| r.state == crate::plan::PhaseState::Completed)
            })
            .count();
        let lease = store.lease(&op.id)?;
        let running = lease.as_ref().is_some_and(|l| l.is_alive());
        rows.push((op, done, leaves, running));
    }
    store.release();
    if ctx.json() {
        let list: Vec<_> = rows
            .iter()
            .map(|(op, done, leaves, running)| {
                let mut v = operation_json(op);
                v["progress"] = json!({"completed": done, "leaves": leaves});
                v["executing"] = json!(running);
                v
            })
            .collect();
        print_json(&json!({ "operations": list }));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no operations yet; start one with `medic start NAME` (see `medic procedures`)");
        return Ok(0);
    }
    println!(
        "{}",
        console::style(format!(
            "{:26} {:26} {:10} {:9} {:20} {}",
            "OPERATION", "PROCEDURE", "STATE", "PROGRESS", "CREATED", "BY / REASON"
        ))
        .bold()
    );
    for (op, done, leaves, running) in rows {
        let state = if running {
            "executing"
        } else {
            op.state.as_str()
        };
        println!(
            "{:26} {:26} {:10} {:9} {:20} {}@{}{}",
            op.id,
            op.procedure,
            state,
            format!("{done}/{leaves}"),
            format_time(op.created_at),
            op.created_by.user,
            op.created_by.host,
            op.reason
                .as_ref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}
