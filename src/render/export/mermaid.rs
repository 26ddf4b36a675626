//! The Mermaid flowchart of a plan, inside the Markdown export: code-review sites draw it.
//!
//! 1. Every phase gets a node ID of our own (`p1`, `p2`, …: its index in the plan), so no phase
//!    ID or description ever becomes Mermaid syntax; the text is only ever a quoted label.
//! 2. Groups are subgraphs, leaves are nodes, each direct requirement (`requires:` and the
//!    order of a sequential group) is one edge from the requirement to the phase.
//! 3. States are classes (`classDef completed …`), the same colours as the HTML drawing.

use std::fmt::Write as _;

use super::Export;
use crate::action::Plan;

/// The longest description shown in a label; the full text is in the phase table.
const LABEL_DESCRIPTION_CHARS: usize = 60;

impl Export<'_> {
    /// A fenced ```` ```mermaid ```` block with the phase graph.
    pub(super) fn mermaid(&self) -> String {
        let plan = self.view.plan;
        let rows = self.view.node_rows();
        let mut out = String::from("```mermaid\nflowchart TB\n");
        for (state, fill, stroke) in super::svg::STATE_COLOURS {
            let _ = writeln!(out, "  classDef {state} fill:{fill},stroke:{stroke};");
        }
        fn emit(out: &mut String, plan: &Plan, labels: &[String], i: usize, depth: usize) {
            let pad = "  ".repeat(depth + 1);
            let node = plan.node(i);
            if node.is_leaf() {
                let _ = writeln!(out, "{pad}p{i}[\"{}\"]", labels[i]);
            } else {
                let _ = writeln!(out, "{pad}subgraph p{i}[\"{}\"]", labels[i]);
                for c in &node.children {
                    emit(out, plan, labels, *c, depth + 1);
                }
                let _ = writeln!(out, "{pad}end");
            }
        }
        let labels: Vec<String> = rows.iter().map(|r| label(&r.id, &r.description)).collect();
        for c in &plan.node(0).children {
            emit(&mut out, plan, &labels, *c, 0);
        }
        for i in 1..plan.len() {
            for r in plan.direct_requirements(i) {
                if r != 0 {
                    let _ = writeln!(out, "  p{r} --> p{i}");
                }
            }
        }
        for (i, row) in rows.iter().enumerate().skip(1) {
            let _ = writeln!(out, "  class p{i} {}", row.state);
        }
        out.push_str("```\n");
        out
    }
}

/// A node's label: its ID, then its description (shortened), as Mermaid-safe text.
fn label(id: &str, description: &str) -> String {
    let mut text = escape(id);
    let description: String = description.chars().take(LABEL_DESCRIPTION_CHARS).collect();
    if !description.trim().is_empty() {
        text.push_str("<br/>");
        text.push_str(&escape(description.trim()));
    }
    text
}

/// Text safe inside a quoted Mermaid label and inside the Markdown fence around it: every
/// character that could end the label, start markup or close the fence becomes an entity code.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '`' => out.push_str("#96;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn nothing_in_a_label_can_end_it() {
        let hostile = "x\"] --> evil[\"<script>alert(1)</script>``` #1 &amp;\nend";
        let escaped = escape(hostile);
        for bad in ['"', '<', '>', '`', '\n'] {
            assert!(!escaped.contains(bad), "{bad:?} in {escaped}");
        }
        assert_eq!(escape("a#b"), "a#35;b");
    }
}
