//! `medic status`: runs the health probes (`crate::status`) and prints the summary line, the
//! table, what to do and the active operations; `-o json|yaml` prints the same data.

use std::time::Duration;

use serde_json::json;

use super::args::StatusArgs;
use super::{print_json, CliError, Ctx};
use crate::operation;
use crate::status::{self, StatusError, StatusOptions, Summary};
use crate::store::{Access, Store};

impl From<StatusError> for CliError {
    fn from(e: StatusError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

fn duration_arg(name: &str, text: &str) -> Result<Duration, CliError> {
    crate::source::parse_duration(text)
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--{name} `{text}` is not a duration such as 30s or 2m"
            ))
        })
}

/// `medic status`.
pub(super) async fn status(ctx: &Ctx, args: &StatusArgs) -> Result<i32, CliError> {
    let options = StatusOptions {
        only: args.only.clone(),
        skip: args.skip.clone(),
        nodes: args.nodes.clone(),
        timeout: duration_arg("timeout", &args.timeout)?,
    };
    let interval = duration_arg("interval", &args.interval)?;
    let inventory = ctx.inventory()?;
    if let Some(inv) = &inventory {
        for node in &options.nodes {
            if !inv.nodes.iter().any(|n| &n.name == node) {
                return Err(CliError::usage(format!(
                    "--node {node}: the inventory {} has no such node",
                    ctx.cli.inventory.display()
                )));
            }
        }
    } else {
        return Err(CliError::usage(format!(
            "medic status probes the nodes of an inventory, but {} does not exist; pass --inventory FILE (or set MEDIC_INVENTORY)",
            ctx.cli.inventory.display()
        )));
    }
    let catalog = ctx.catalog()?;
    let watch = args.watch && !ctx.json() && console::Term::stdout().is_term();
    if watch {
        return watch_loop(ctx, args, &catalog, inventory, &options, interval).await;
    }
    let actor = ctx.actor(|a| a.to_string());
    let (results, recorded) = if args.record {
        let store = ctx.store(Access::Create)?;
        let (op, results) = status::run_recorded(
            store,
            &catalog,
            inventory.clone(),
            &options,
            ctx.cli.max_phases,
            actor,
        )
        .await?;
        (results, Some(op))
    } else {
        let results = status::run_probes(
            &catalog,
            inventory.clone(),
            &options,
            ctx.cli.max_phases,
            actor,
        )
        .await?;
        (results, None)
    };
    let active = active_operations(ctx);
    let summary = Summary::of(&results, inventory.as_ref().map_or(0, |i| i.nodes.len()));
    if ctx.json() {
        print_json(&json!({
            "status": summary.status,
            "summary": summary,
            "probes": results,
            "active_operations": active,
            "recorded_operation": recorded.as_ref().map(|o| o.id.clone()),
        }));
    } else {
        print!(
            "{}",
            report_text(&summary, &results, &active, recorded.as_ref())
        );
    }
    Ok(status::exit_code(&summary, args.strict))
}

/// `--watch` on a terminal: runs the probes every `interval` and redraws the report in place.
/// Ctrl-C, SIGTERM or the terminal going away (SIGHUP) end it at any moment, during a run
/// too: the probes still running are stopped and their SSH masters closed. The exit code is
/// the last report's, or 130 when none was shown.
async fn watch_loop(
    ctx: &Ctx,
    args: &StatusArgs,
    catalog: &crate::procedure::Catalog,
    inventory: Option<std::sync::Arc<crate::inventory::Inventory>>,
    options: &StatusOptions,
    interval: Duration,
) -> Result<i32, CliError> {
    let mut signals = super::status_watch::WatchSignals::listen()?;
    let mut last = None;
    loop {
        let actor = ctx.actor(|a| a.to_string());
        let results = status::run_probes_until(
            catalog,
            inventory.clone(),
            options,
            ctx.cli.max_phases,
            actor,
            signals.next(),
        )
        .await?;
        let Some(results) = results else {
            return Ok(last.unwrap_or(130));
        };
        let active = active_operations(ctx);
        let summary = Summary::of(&results, inventory.as_ref().map_or(0, |i| i.nodes.len()));
        let text = report_text(&summary, &results, &active, None);
        super::status_watch::redraw(&format!(
            "{text}\n(refreshing every {}; Ctrl-C to stop)\n",
            args.interval
        ));
        last = Some(status::exit_code(&summary, args.strict));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = signals.next() => return Ok(last.unwrap_or(130)),
        }
    }
}

/// The report as text, with the recorded operation, if any.
fn report_text(
    summary: &Summary,
    results: &[status::ProbeResult],
    active: &[serde_json::Value],
    recorded: Option<&crate::store::Operation>,
) -> String {
    let lines: Vec<String> = active
        .iter()
        .map(|o| {
            format!(
                "{} {} {}",
                o["id"].as_str().unwrap_or_default(),
                o["procedure"].as_str().unwrap_or_default(),
                o["progress"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let mut text = status::render_text(summary, results, &lines);
    if let Some(op) = recorded {
        text.push_str(&format!(
            "\nrecorded as operation {} (`medic plan history --operation {}`)\n",
            op.id, op.id
        ));
    }
    text
}

/// The active operations, as `medic operations -o json` shows them; none when there is no
/// state directory (status creates nothing).
fn active_operations(ctx: &Ctx) -> Vec<serde_json::Value> {
    let Ok(mut store) = Store::open_with(&ctx.cli.state_dir, Access::Read) else {
        return Vec::new();
    };
    let rows = operation::summaries(&mut store).unwrap_or_default();
    store.release();
    rows.iter()
        .filter(|r| r.operation.state == crate::store::OperationState::Active)
        .map(|r| {
            json!({
                "id": r.operation.id,
                "procedure": r.operation.procedure,
                "progress": format!("{}/{}", r.completed, r.leaves),
                "executing": r.executing,
            })
        })
        .collect()
}
