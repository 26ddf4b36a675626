//! `medic operations`: every operation with its progress (`crate::operation::summaries`).

use serde_json::json;

use super::{print_json, CliError, Ctx};
use crate::operation;
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
    let rows = operation::summaries(&mut store)?;
    store.release();
    if ctx.json() {
        let list: Vec<_> = rows
            .iter()
            .map(|row| {
                let mut v = operation_json(&row.operation);
                v["progress"] = json!({"completed": row.completed, "leaves": row.leaves});
                v["executing"] = json!(row.executing);
                v["executor"] = json!(row.executor);
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
    for row in rows {
        let (op, done, leaves) = (&row.operation, row.completed, row.leaves);
        let state = if row.executing {
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
                .unwrap_or_default(),
        );
        if let Some(who) = &row.executor {
            println!("{:26} executed now by {who}", "");
        }
    }
    Ok(0)
}
