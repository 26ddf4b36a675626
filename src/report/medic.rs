//! The `medic` group: what medic itself recorded about the operations included (the plan
//! export as JSON and Markdown, history, phase logs), the inventory file and `medic status`.
//! Secret values are never read into these: exports show placeholders, logs and history
//! were redacted when stored, and the bundle scrubs everything again.

use std::time::Instant;

use serde_json::json;

use super::bundle::Collected;
use super::collectors::MedicItem;
use super::ReportOptions;
use crate::engine::interrupted_phases;
use crate::render::{Export, PlanView};
use crate::status::{StatusOptions, Summary};
use crate::store::{Access, Operation, Store};

/// How many log lines are read from the store at a time.
const LOG_BATCH: usize = 4096;

fn item(
    command: String,
    path: String,
    started: Instant,
    result: Result<Vec<u8>, String>,
) -> Collected {
    let mut c = Collected {
        source: "medic",
        command,
        path: Some(path),
        ..Default::default()
    };
    match result {
        Ok(data) => {
            c.data = data;
            c.exit_code = Some(0);
        }
        Err(e) => {
            c.path = None;
            c.error = Some(e);
        }
    }
    c.duration_ms = started.elapsed().as_millis() as u64;
    c
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("JSON values serialize")
}

/// One per-operation item of `op`.
fn operation_item(
    store: &mut Store,
    op: &Operation,
    what: MedicItem,
    opts: &ReportOptions,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let e = |e: crate::store::StoreError| e.to_string();
    match what {
        MedicItem::PlanJson | MedicItem::PlanMarkdown => {
            let plan = store.plan(&op.id).map_err(e)?;
            let records = store.records(&op.id).map_err(e)?;
            let lease = store.lease(&op.id).map_err(e)?;
            let (params, vars) =
                crate::operation::targets::shown_values(store, op).map_err(|e| e.to_string())?;
            let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
            let export = Export {
                view: PlanView {
                    operation: op,
                    plan: &plan,
                    records: &records,
                    lease: lease.as_ref(),
                    interrupted: &interrupted,
                    may_have_done: &Default::default(),
                },
                inventory: opts.inventory.as_deref(),
                params: &params,
                vars: &vars,
            };
            Ok(if what == MedicItem::PlanJson {
                export.json_string().into_bytes()
            } else {
                export.to_markdown().into_bytes()
            })
        }
        MedicItem::History => {
            let entries = store.history(&op.id).map_err(e)?;
            Ok(pretty(&json!({ "history": entries })))
        }
        MedicItem::Logs => {
            // Newest lines win when the log is larger than the cap: the bundle keeps the tail.
            let mut out: Vec<u8> = b"[\n".to_vec();
            let mut after: Option<Vec<u8>> = None;
            let mut first = true;
            loop {
                let (lines, next) = store
                    .logs_after(&op.id, after.as_deref(), LOG_BATCH)
                    .map_err(e)?;
                for l in &lines {
                    if !first {
                        out.extend_from_slice(b",\n");
                    }
                    first = false;
                    out.extend_from_slice(&serde_json::to_vec(l).expect("serializes"));
                }
                if out.len() > max_bytes * 2 {
                    out.drain(..out.len() - max_bytes);
                }
                match next {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
            out.extend_from_slice(b"\n]\n");
            Ok(out)
        }
        _ => Err("not a per-operation item".into()),
    }
}

/// The items of `what` for the operations `ops` (per-operation items: one per operation).
pub(crate) async fn collect(
    what: MedicItem,
    path: &str,
    ops: &[Operation],
    opts: &ReportOptions,
    max_bytes: usize,
) -> Vec<Collected> {
    let started = Instant::now();
    match what {
        MedicItem::Operations => {
            let list: Vec<_> = ops
                .iter()
                .map(|o| serde_json::to_value(o).expect("serializes"))
                .collect();
            vec![item(
                "medic operations".into(),
                path.into(),
                started,
                Ok(pretty(&json!({ "operations": list }))),
            )]
        }
        MedicItem::Inventory => vec![item(
            format!("cat {}", opts.inventory_path.display()),
            path.into(),
            started,
            std::fs::read(&opts.inventory_path).map_err(|e| e.to_string()),
        )],
        MedicItem::Status => vec![status(path, opts, started).await],
        _ if ops.is_empty() => Vec::new(),
        per_op => {
            let mut store = match Store::open_with(&opts.state_dir, Access::Read) {
                Ok(s) => s,
                Err(e) => {
                    return vec![item(
                        format!("{per_op:?}"),
                        path.into(),
                        started,
                        Err(e.to_string()),
                    )]
                }
            };
            let mut out = Vec::new();
            for op in ops {
                let started = Instant::now();
                let result = operation_item(&mut store, op, per_op, opts, max_bytes);
                store.release();
                let command = match per_op {
                    MedicItem::PlanJson => {
                        format!("medic plan export --format json --operation {}", op.id)
                    }
                    MedicItem::PlanMarkdown => {
                        format!("medic plan export --format markdown --operation {}", op.id)
                    }
                    MedicItem::History => {
                        format!("medic plan history -o json --operation {}", op.id)
                    }
                    _ => format!("medic plan logs -o json --operation {}", op.id),
                };
                out.push(item(command, path.replace("{op}", &op.id), started, result));
            }
            out
        }
    }
}

/// `medic status -o json`, through the library (no subprocess).
async fn status(path: &str, opts: &ReportOptions, started: Instant) -> Collected {
    let command = "medic status -o json".to_string();
    let Some(catalog) = &opts.catalog else {
        return item(
            command,
            path.into(),
            started,
            Err("no procedures catalog".into()),
        );
    };
    let options = StatusOptions {
        nodes: opts.nodes.clone(),
        timeout: opts.timeout,
        ..Default::default()
    };
    let result = crate::status::run_probes(
        catalog,
        opts.inventory.clone(),
        &options,
        opts.max_phases,
        opts.actor.clone(),
    )
    .await
    .map(|results| {
        let n = opts.inventory.as_ref().map_or(0, |i| i.nodes.len());
        let summary = Summary::of(&results, n);
        pretty(&json!({ "status": summary.status, "summary": summary, "probes": results }))
    })
    .map_err(|e| e.to_string());
    item(command, path.into(), started, result)
}
