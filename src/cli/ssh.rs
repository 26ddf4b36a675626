//! `medic ssh close`: ends the SSH master connections kept between runs (`ssh.persist`).

use serde_json::json;

use super::args::SshCommand;
use super::{print_json, CliError, Ctx};
use crate::ssh::{close_kept_masters, ClosedMaster};

pub(super) fn ssh_command(ctx: &Ctx, command: &SshCommand) -> Result<i32, CliError> {
    match command {
        SshCommand::Close { node, all } => {
            let closed = if *all {
                close_kept_masters(None)
            } else {
                let inventory = ctx.inventory()?.ok_or_else(|| {
                    CliError::usage(format!(
                        "medic ssh close closes the masters of the inventory's nodes, but {} does not exist; pass --inventory FILE, or --all for every kept master",
                        ctx.cli.inventory.display()
                    ))
                })?;
                let nodes = match node {
                    Some(name) => inventory
                        .select(&crate::inventory::Selector::Nodes(vec![name.clone()]))
                        .map_err(CliError::usage)?
                        .into_iter()
                        .cloned()
                        .collect(),
                    None => inventory.nodes.clone(),
                };
                close_kept_masters(Some(&nodes))
            };
            print_closed(ctx, &closed);
            Ok(0)
        }
    }
}

fn print_closed(ctx: &Ctx, closed: &[ClosedMaster]) {
    if ctx.json() {
        print_json(&json!({ "closed": closed }));
        return;
    }
    if closed.is_empty() {
        println!("no ssh master was open");
    }
    for m in closed {
        let who = match (&m.node, &m.destination) {
            (Some(node), Some(dest)) => format!("{node} ({dest})"),
            _ => m.socket.display().to_string(),
        };
        if m.was_running {
            println!("closed the ssh master of {who}");
        } else {
            println!("removed the stale ssh socket of {who}");
        }
    }
}
