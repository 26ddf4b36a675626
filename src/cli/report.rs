//! `medic report` and `medic report verify`: parse the options, call `crate::report`, print
//! the outcome (text, or `-o json|yaml`), the warnings on stderr.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::args::{ReportArgs, ReportCommand};
use super::{print_json, CliError, Ctx};
use crate::report::{self, ReportError, ReportOptions};
use crate::store::{format_time, now_ms};

impl From<ReportError> for CliError {
    fn from(e: ReportError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

/// `25MiB`, `100k`, `1GiB`, `4096`: a size in bytes.
fn parse_size(name: &str, text: &str) -> Result<u64, CliError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && factor > 0 => Ok(n.saturating_mul(factor)),
        _ => Err(CliError::usage(format!(
            "--{name} `{text}` is not a size such as 25MiB, 512KiB or 4096"
        ))),
    }
}

fn options(ctx: &Ctx, args: &ReportArgs) -> Result<ReportOptions, CliError> {
    let since = match &args.since {
        Some(text) => Some(report::parse_since(text).ok_or_else(|| {
            CliError::usage(format!(
                "--since `{text}` is neither a duration (2h, 30m) nor a time (2026-12-03 10:00:00)"
            ))
        })?),
        None if args.operation.is_none() => report::parse_since("24h"),
        None => None,
    };
    let timeout = crate::source::parse_duration(&args.timeout)
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--timeout `{}` is not a duration such as 30s or 2m",
                args.timeout
            ))
        })?;
    let output = args.file.clone().unwrap_or_else(|| {
        let stamp = format_time(now_ms()).replace([':', '-'], "");
        PathBuf::from(format!(
            "medic-report-{}.tar.gz",
            stamp.trim_end_matches('Z')
        ))
    });
    let inventory = ctx.inventory()?;
    let needs_inventory =
        args.only.is_empty() || args.only.iter().any(|g| *g != report::Group::Medic);
    if inventory.is_none() && needs_inventory {
        return Err(CliError::usage(format!(
            "medic report collects from the nodes of an inventory, but {} does not exist; pass --inventory FILE (or set MEDIC_INVENTORY), or --only medic",
            ctx.cli.inventory.display()
        )));
    }
    Ok(ReportOptions {
        output,
        only: args.only.clone(),
        nodes: args.nodes.clone(),
        since,
        operation: args.operation.clone(),
        max_file_size: parse_size("max-file-size", &args.max_file_size)?,
        max_size: parse_size("max-size", &args.max_size)?,
        timeout,
        state_dir: ctx.cli.state_dir.clone(),
        inventory_path: ctx.cli.inventory.clone(),
        inventory,
        catalog: ctx.catalog().ok(),
        max_phases: ctx.cli.max_phases,
        actor: ctx.actor(|a| a.to_string()),
        command_line: ctx
            .args
            .iter()
            .map(|a| crate::template::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        progress: !ctx.json() && console::Term::stderr().is_term(),
    })
}

/// `medic report`.
pub(super) async fn report(ctx: &Ctx, args: &ReportArgs) -> Result<i32, CliError> {
    if let Some(ReportCommand::Verify { file }) = &args.command {
        return verify(ctx, file);
    }
    let opts = options(ctx, args)?;
    let scope = report::plan(&opts)?;
    if args.dry_run {
        let planned = report::dry_run(&opts, &scope);
        if ctx.json() {
            print_json(&json!({ "collect": planned, "notes": scope.notes }));
        } else {
            for p in &planned {
                println!(
                    "{:<11} {:<28} {}  <- {}",
                    format!("{:?}", p.group).to_lowercase(),
                    p.path,
                    p.command,
                    p.from
                );
            }
            for n in &scope.notes {
                println!("note: {n}");
            }
            println!("{} items; nothing collected (--dry-run)", planned.len());
        }
        return Ok(0);
    }
    let outcome = report::collect(&opts, &scope).await?;
    for w in &outcome.warnings {
        eprintln!("{} {w}", console::style("warning:").yellow().bold());
    }
    if ctx.json() {
        print_json(&serde_json::to_value(&outcome).expect("serializes"));
    } else {
        println!(
            "wrote {} ({} files, {} bytes; {} items failed, listed in MANIFEST.json)",
            outcome.file.display(),
            outcome.files,
            outcome.bytes,
            outcome.failed
        );
    }
    Ok(0)
}

/// `medic report verify FILE`.
fn verify(ctx: &Ctx, file: &std::path::Path) -> Result<i32, CliError> {
    let (checked, problems) = report::verify(file)?;
    let code = if problems.is_empty() { 0 } else { 1 };
    if ctx.json() {
        print_json(
            &json!({ "file": file, "checked": checked, "ok": problems.is_empty(), "mismatches": problems }),
        );
        return Ok(code);
    }
    for p in &problems {
        println!("{}: {}", p.path, p.problem);
    }
    if problems.is_empty() {
        println!(
            "{}: all {checked} files match MANIFEST.json",
            file.display()
        );
    } else {
        println!(
            "{}: {} of {checked} files do not match MANIFEST.json",
            file.display(),
            problems.len()
        );
    }
    Ok(code)
}
