//! What operators read from `medic status`: the summary line, the probes grouped by component
//! and node, and what to do. Pure functions from results to text; the CLI prints them.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{ProbeResult, ProbeState};
use crate::plan::Severity;

/// The counts behind the summary line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// `healthy`, `warning` (only warnings) or `degraded` (a critical finding).
    pub(crate) status: &'static str,
    pub(crate) critical: usize,
    pub(crate) warning: usize,
    pub(crate) passed: usize,
    pub(crate) unknown: usize,
    pub(crate) skipped: usize,
    pub(crate) nodes: usize,
}

impl Summary {
    /// The counts of `results`, on a cluster of `nodes` nodes.
    pub(crate) fn of(results: &[ProbeResult], nodes: usize) -> Summary {
        let failed = |s: Severity| {
            results
                .iter()
                .filter(|r| r.state == ProbeState::Fail && r.severity == s)
                .count()
        };
        let count = |s: ProbeState| results.iter().filter(|r| r.state == s).count();
        let (critical, warning) = (failed(Severity::Critical), failed(Severity::Warning));
        Summary {
            status: if critical > 0 {
                "degraded"
            } else if warning > 0 {
                "warning"
            } else {
                "healthy"
            },
            critical,
            warning,
            passed: count(ProbeState::Pass),
            unknown: count(ProbeState::Unknown),
            skipped: count(ProbeState::Skipped),
            nodes,
        }
    }

    /// `degraded: 2 critical, 1 warning on 5 nodes`.
    pub(crate) fn line(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut parts = Vec::new();
        if self.critical > 0 {
            parts.push(format!("{} critical", self.critical));
        }
        if self.warning > 0 {
            parts.push(plural(self.warning, "warning"));
        }
        if parts.is_empty() {
            parts.push(format!("{} passed", plural(self.passed, "probe")));
        }
        let mut line = format!(
            "{}: {} on {}",
            self.status,
            parts.join(", "),
            plural(self.nodes, "node")
        );
        if self.unknown > 0 {
            line.push_str(&format!("; {} not checked", self.unknown));
        }
        if self.skipped > 0 {
            line.push_str(&format!("; {} waived", self.skipped));
        }
        line
    }
}

/// 1 on a critical finding (or a warning with `strict`), else 0.
pub(crate) fn exit_code(summary: &Summary, strict: bool) -> i32 {
    i32::from(summary.critical > 0 || (strict && summary.warning > 0))
}

fn state_text(r: &ProbeResult) -> String {
    match r.state {
        ProbeState::Pass => "ok".into(),
        ProbeState::Fail => r.severity.as_str().to_string(),
        ProbeState::Unknown => "unknown".into(),
        ProbeState::Skipped => "waived".into(),
    }
}

fn styled(r: &ProbeResult, text: String) -> String {
    let s = console::style(format!("{text:9}"));
    match (r.state, r.severity) {
        (ProbeState::Pass, _) => s.green().to_string(),
        (ProbeState::Fail, Severity::Critical) => s.red().bold().to_string(),
        (ProbeState::Fail, Severity::Warning) => s.yellow().to_string(),
        _ => s.dim().to_string(),
    }
}

/// The whole report: summary line, table (component, then node), what to do, and the active
/// operations (`operations`: one line each).
pub(crate) fn render_text(
    summary: &Summary,
    results: &[ProbeResult],
    operations: &[String],
) -> String {
    let mut out = String::new();
    let headline = match summary.status {
        "degraded" => console::style(summary.line()).red().bold(),
        "warning" => console::style(summary.line()).yellow().bold(),
        _ => console::style(summary.line()).green().bold(),
    };
    out.push_str(&format!("{headline}\n"));
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut groups: Vec<(String, Vec<&ProbeResult>)> = Vec::new();
    for r in results {
        let group = match &r.node {
            Some(node) if r.component == "node" => format!("{} {node}", r.component),
            _ => r.component.clone(),
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, rows)) => rows.push(r),
            None => groups.push((group, vec![r])),
        }
    }
    for (group, rows) in &groups {
        out.push_str(&format!("\n{}\n", console::style(group).bold()));
        for r in rows {
            let finding = match r.state {
                ProbeState::Pass => String::new(),
                _ => r.finding.clone().unwrap_or_default(),
            };
            out.push_str(
                format!(
                    "  {:width$}  {} {finding}\n",
                    r.name,
                    styled(r, state_text(r))
                )
                .trim_end(),
            );
            out.push('\n');
        }
    }
    let todo: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.state == ProbeState::Fail)
        .collect();
    if !todo.is_empty() {
        out.push_str(&format!("\n{}\n", console::style("what to do:").bold()));
        let mut seen = BTreeSet::new();
        for r in todo {
            let action = match &r.remedy {
                Some(remedy) => remedy
                    .command
                    .clone()
                    .or_else(|| remedy.instruction.clone())
                    .unwrap_or_default(),
                None => "no remedy is known; look at the finding".into(),
            };
            if !seen.insert((r.name.clone(), action.clone())) {
                continue;
            }
            out.push_str(&format!(
                "  {} {}\n      {action}\n",
                r.name,
                r.finding.clone().unwrap_or_default()
            ));
        }
    }
    out.push_str(&format!(
        "\n{}\n",
        console::style("active operations:").bold()
    ));
    if operations.is_empty() {
        out.push_str("  none\n");
    }
    for o in operations {
        out.push_str(&format!("  {o}\n"));
    }
    out
}
