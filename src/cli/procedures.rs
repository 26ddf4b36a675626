//! `medic procedures` and `medic procedures show NAME`: the catalog as a list or one procedure in detail.

use serde_json::json;

use super::{print_json, CliError, Ctx};
use crate::procedure::{PhaseSpec, Procedure};

/// `medic procedures`: each procedure with the first line of its description, or why it is invalid.
pub(super) fn list(ctx: &Ctx) -> Result<i32, CliError> {
    let catalog = ctx.catalog()?;
    let mut rows = Vec::new();
    for name in catalog.names() {
        match catalog.get(name) {
            Ok(p) => rows.push(
                json!({"name": name, "description": p.description, "file": p.file, "valid": true}),
            ),
            Err(e) => rows.push(json!({"name": name, "error": e.to_string(), "valid": false})),
        }
    }
    if ctx.json() {
        print_json(&json!({ "procedures": rows }));
        return Ok(0);
    }
    let width = rows
        .iter()
        .filter_map(|r| r["name"].as_str())
        .map(|n| n.len())
        .max()
        .unwrap_or(4);
    for r in &rows {
        let name = r["name"].as_str().unwrap_or_default();
        match r["description"].as_str() {
            Some(d) => println!("{name:width$}  {}", d.lines().next().unwrap_or_default()),
            None => println!(
                "{name:width$}  {} (invalid; `medic procedures show {name}` lists the problems)",
                console::style("✘").red()
            ),
        }
    }
    Ok(0)
}

/// `medic procedures show NAME`: parameters and the phase tree (text) or the whole procedure (JSON).
pub(super) fn show(ctx: &Ctx, name: &str) -> Result<i32, CliError> {
    let procedure = ctx.catalog()?.get(name)?;
    if ctx.json() {
        print_json(&json!({
            "name": procedure.name,
            "description": procedure.description,
            "file": procedure.file,
            "params": procedure.params,
            "phases": phases_json(&procedure.phases),
        }));
    } else {
        print_procedure(&procedure);
    }
    Ok(0)
}

fn phases_json(list: &[PhaseSpec]) -> Vec<serde_json::Value> {
    list.iter()
        .map(|p| {
            json!({
                "id": p.id,
                "description": p.description,
                "action": p.action.as_ref().map(|a| a.kind()),
                "has_rollback": p.rollback.is_some(),
                "requires": p.requires.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                "foreach": p.foreach.is_some(),
                "parallel": p.parallel,
                "include": p.include.as_ref().map(|i| i.procedure.clone()),
                "phases": phases_json(&p.children),
            })
        })
        .collect()
}

fn print_procedure(procedure: &Procedure) {
    println!(
        "{} — {}",
        console::style(&procedure.name).bold(),
        procedure.description.trim()
    );
    println!("file: {}\n", procedure.file);
    println!("parameters:");
    if procedure.params.is_empty() {
        println!("  (none)");
    }
    for p in &procedure.params {
        let mut facts = Vec::new();
        if p.required {
            facts.push("required".to_string());
        }
        if let Some(d) = &p.default {
            facts.push(format!("default {d}"));
        }
        if let Some(pat) = &p.pattern {
            facts.push(format!("pattern {pat}"));
        }
        if p.secret {
            facts.push("secret".to_string());
        }
        println!(
            "  {:16} {} {}",
            p.name,
            p.description,
            console::style(format!("[{}]", facts.join(", "))).dim()
        );
    }
    println!("\nphases:");
    print_phase_tree(&procedure.phases, "");
}

fn print_phase_tree(list: &[PhaseSpec], prefix: &str) {
    for p in list {
        let path = format!("{prefix}/{}", p.id);
        let kind = match (&p.action, p.foreach.is_some()) {
            (Some(a), false) => a.kind().to_string(),
            (Some(a), true) => format!("{} for each item", a.kind()),
            (None, true) => "group for each item".to_string(),
            (None, false) if p.include.is_some() => format!(
                "include {}",
                p.include
                    .as_ref()
                    .map(|i| i.procedure.as_str())
                    .unwrap_or_default()
            ),
            (None, false) => {
                if p.parallel {
                    "group (parallel)".into()
                } else {
                    "group".into()
                }
            }
        };
        println!(
            "  {:30} {:22} {}",
            path,
            kind,
            p.description.as_deref().unwrap_or_default()
        );
        print_phase_tree(&p.children, &path);
    }
}

/// `medic procedures lint [FILE|DIR]...`: every diagnostic, then a summary line.
pub(super) fn lint(ctx: &Ctx, paths: &[std::path::PathBuf], strict: bool) -> Result<i32, CliError> {
    use crate::procedure::lint::{lint_catalog, lint_paths, Severity};
    let report = if paths.is_empty() {
        lint_catalog(&ctx.catalog()?)
    } else {
        lint_paths(paths, ctx.cli.max_phases)
    };
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);
    if ctx.json() {
        print_json(&json!({ "diagnostics": report.diagnostics }));
    } else {
        for d in &report.diagnostics {
            let place = match (d.line, d.column) {
                (Some(line), Some(column)) => format!("{}:{line}:{column}", d.file),
                _ => d.file.clone(),
            };
            match d.severity {
                // As the loader prints them.
                Severity::Error => println!("{place}: {}", d.message),
                Severity::Warning => println!(
                    "{place}: {}: {}",
                    console::style(format!("warning[{}]", d.code)).yellow(),
                    d.message
                ),
            }
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        println!(
            "linted {}: {}, {}",
            plural(report.files, "procedure"),
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    Ok(if errors > 0 {
        2
    } else if warnings > 0 && strict {
        1
    } else {
        0
    })
}
