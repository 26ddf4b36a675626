//! The change-review exports of a plan (`medic plan export`): Markdown, JSON with each phase's
//! rendered action and rollback, Graphviz dot; a Mermaid flowchart inside the Markdown
//! (`export/mermaid.rs`), the SVG drawing (`export/svg.rs`) and the HTML page (`export/html.rs`).

mod html;
mod mermaid;
mod svg;

use std::fmt::Write as _;

use super::table::{NodeRow, PlanView};
use crate::action::{Plan, RenderScope};
use crate::engine::phase_context;
use crate::plan::PhaseState;
use crate::procedure::Params;
use crate::store::format_time;
use crate::template::Templates;

pub(crate) use html::Section;

/// Export of a plan for change review.
pub(crate) struct Export<'a> {
    pub(crate) view: PlanView<'a>,
    pub(crate) inventory: Option<&'a crate::inventory::Inventory>,
    pub(crate) params: &'a Params,
    pub(crate) vars: &'a serde_json::Map<String, serde_json::Value>,
}

impl Export<'_> {
    fn actions(&self, i: usize) -> (Vec<String>, Vec<String>) {
        let templates = Templates::new();
        let node = self.view.plan.node(i);
        let ctx = phase_context(
            self.view.operation,
            self.view.plan,
            i,
            self.params,
            self.vars,
            self.inventory,
            false,
        );
        let scope = RenderScope {
            inventory: self.inventory,
            templates: &templates,
            ctx,
        };
        // A change review reads the export: like the dry-run, it shows the live preview (which
        // pods a drain would move) after what the action does.
        let render = |a: Option<&crate::action::ActionSpec>| match a {
            Some(a) => {
                let mut lines = a
                    .describe(&scope)
                    .unwrap_or_else(|e| vec![format!("{}: cannot render yet ({e})", a.kind())]);
                lines.extend(a.preview_blocking(&scope));
                lines
            }
            None => Vec::new(),
        };
        (render(node.action.as_ref()), render(node.rollback.as_ref()))
    }

    pub(crate) fn json_string(&self) -> String {
        let plan = self.view.plan;
        let rows = self.view.node_rows();
        let phases: Vec<ExportRow<'_>> = rows
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, row)| {
                let (action, rollback) = self.actions(i);
                let node = plan.node(i);
                ExportRow {
                    row,
                    kind: node.action.as_ref().map(|a| a.kind()),
                    action,
                    rollback,
                    idempotent: node.idempotent,
                    parallel: node.parallel,
                    timeout_secs: node.timeout_secs,
                    retries: node.retries,
                    capture: &node.capture,
                }
            })
            .collect();
        let doc = self.view.document(&rows, phases);
        serde_json::to_string_pretty(&doc).expect("export serializes")
    }

    pub(crate) fn to_markdown(&self) -> String {
        let op = self.view.operation;
        let plan = self.view.plan;
        let mut out = String::new();
        let _ = writeln!(out, "# Operation {} — {}\n", op.id, op.procedure);
        if !op.description.is_empty() {
            let _ = writeln!(out, "{}\n", op.description.trim());
        }
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(
            out,
            "| Created | {} by {}@{} |",
            format_time(op.created_at),
            op.created_by.user,
            op.created_by.host
        );
        let _ = writeln!(
            out,
            "| Reason | {} |",
            md_cell(op.reason.as_deref().unwrap_or("—"))
        );
        let _ = writeln!(out, "| State | {} |", op.state.as_str());
        let _ = writeln!(out, "| Plan fingerprint | `sha256:{}` |\n", op.fingerprint);
        let _ = writeln!(out, "## Parameters\n");
        if op.params.is_empty() && op.secret_params.is_empty() {
            let _ = writeln!(out, "None.\n");
        } else {
            let _ = writeln!(out, "| Name | Value |\n|---|---|");
            for (k, v) in &op.params {
                let shown = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "| {k} | `{}` |", md_cell(&shown));
            }
            for k in &op.secret_params {
                let _ = writeln!(out, "| {k} | *(secret, not shown)* |");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "## Phases\n");
        let _ = writeln!(
            out,
            "| Phase | Description | Requires | State |\n|---|---|---|---|"
        );
        let rows = self.view.node_rows();
        for r in rows.iter().skip(1) {
            let indent = "&nbsp;&nbsp;".repeat(r.depth.saturating_sub(1));
            let _ = writeln!(
                out,
                "| {indent}`{}` | {} | {} | {} |",
                r.id,
                md_cell(&r.description),
                r.requires.join(", "),
                r.state
            );
        }
        let _ = writeln!(out, "\n## Graph\n\n{}", self.mermaid());
        let _ = writeln!(out, "## Actions\n");
        for i in plan.leaves() {
            let node = plan.node(i);
            let (action, rollback) = self.actions(i);
            let _ = writeln!(
                out,
                "### `{}`{}\n",
                node.id,
                if node.description.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", node.description)
                }
            );
            let _ = writeln!(out, "{}\n", phase_facts(node).join(" · "));
            let _ = writeln!(out, "```\n{}\n```\n", action.join("\n"));
            if rollback.is_empty() {
                let _ = writeln!(out, "Rollback: none (recorded as a no-op).\n");
            } else {
                let _ = writeln!(out, "Rollback:\n\n```\n{}\n```\n", rollback.join("\n"));
            }
        }
        out
    }

    pub(crate) fn to_dot(&self) -> String {
        let plan = self.view.plan;
        let states = plan.states(self.view.records);
        let mut out =
            String::from("digraph plan {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
        fn emit(out: &mut String, plan: &Plan, states: &[PhaseState], i: usize, depth: usize) {
            let node = plan.node(i);
            let pad = "  ".repeat(depth + 1);
            if node.is_leaf() {
                let _ = writeln!(
                    out,
                    "{pad}\"{}\" [label=\"{}\\n{}\"];",
                    node.id, node.id, states[i]
                );
            } else {
                let _ = writeln!(
                    out,
                    "{pad}subgraph \"cluster_{}\" {{\n{pad}  label=\"{}\";",
                    node.id, node.id
                );
                for c in &node.children {
                    emit(out, plan, states, *c, depth + 1);
                }
                let _ = writeln!(out, "{pad}}}");
            }
        }
        for c in &plan.node(0).children {
            emit(&mut out, plan, &states, *c, 0);
        }
        // Edges between leaves stand for requirements between any nodes: a group is
        // represented by its first leaf (as a target) and its last leaf (as a source).
        let first_leaf = |i: usize| plan.subtree(i).find(|d| plan.node(*d).is_leaf());
        let last_leaf = |i: usize| plan.subtree(i).rev().find(|d| plan.node(*d).is_leaf());
        for i in 1..plan.len() {
            for r in plan.direct_requirements(i) {
                if let (Some(from), Some(to)) = (last_leaf(r), first_leaf(i)) {
                    let _ = writeln!(
                        out,
                        "  \"{}\" -> \"{}\";",
                        plan.node(from).id,
                        plan.node(to).id
                    );
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

/// What a review needs to know about a leaf besides its action: idempotence, timeout,
/// retries, captures.
fn phase_facts(node: &crate::action::PlanNode) -> Vec<String> {
    let mut facts = vec![format!(
        "idempotent: {}",
        if node.idempotent { "yes" } else { "no" }
    )];
    if let Some(t) = node.timeout_secs {
        facts.push(format!("timeout: {}", crate::action::wait::human_secs(t)));
    }
    if node.retries > 0 {
        facts.push(format!("retries: {}", node.retries));
    }
    if !node.capture.is_empty() {
        facts.push(format!(
            "captures: {}",
            node.capture.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    facts
}

#[derive(serde::Serialize)]
struct ExportRow<'a> {
    #[serde(flatten)]
    row: &'a NodeRow,
    kind: Option<&'static str>,
    action: Vec<String>,
    rollback: Vec<String>,
    idempotent: bool,
    parallel: bool,
    timeout_secs: Option<f64>,
    retries: u32,
    capture: &'a std::collections::BTreeMap<String, String>,
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
