//! The HTML export of a plan (`medic plan export --format html`): one self-contained page for a
//! change review.
//!
//! 1. A Content-Security-Policy that forbids scripts and every network fetch, inline styles
//!    only: the page works offline and nothing in it can run.
//! 2. The summary, the SVG drawing (`svg.rs`), the parameters (secrets by name only), every
//!    leaf's rendered action and rollback (the same lines as the Markdown export), the extra
//!    sections a caller passes (approvals, drift facts), and the history.
//! 3. All text goes through one escape function; callers of [`Section`] pass plain text.

use std::fmt::Write as _;

use super::svg::escape;
use super::Export;
use crate::store::{format_time, HistoryEntry};

/// A section added to the HTML export by its caller, as plain text (escaped here): a table
/// (approvals: who, when, fingerprint, reason; drift facts: fact, value) and/or lines.
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) headers: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) lines: Vec<String>,
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:80em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;\
text-align:left;vertical-align:top;overflow-wrap:anywhere}pre{background:#f6f8fa;padding:.5em;overflow-x:auto}\
.graph{overflow-x:auto}.secret{font-style:italic;color:#777}code{font-family:monospace}";

impl Export<'_> {
    /// The page; `history` is the operation's history, `extra` the sections that go after the
    /// actions (approvals and drift facts).
    pub(crate) fn to_html(&self, history: &[HistoryEntry], extra: &[Section]) -> String {
        let op = self.view.operation;
        let mut out = String::new();
        let title = escape(&format!("Operation {} — {}", op.id, op.procedure));
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; img-src data:\">\
             <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
        );
        if !op.description.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", escape(op.description.trim()));
        }
        let created = format!(
            "{} by {}@{}",
            format_time(op.created_at),
            op.created_by.user,
            op.created_by.host
        );
        let fingerprint = format!("sha256:{}", op.fingerprint);
        table(
            &mut out,
            &[],
            &[
                vec!["Created".into(), created],
                vec!["Reason".into(), op.reason.clone().unwrap_or("—".into())],
                vec!["State".into(), op.state.as_str().into()],
                vec!["Plan fingerprint".into(), fingerprint],
            ],
        );
        let _ = writeln!(
            out,
            "<h2>Graph</h2>\n<div class=\"graph\">{}</div>",
            self.to_svg()
        );
        self.html_parameters(&mut out);
        self.html_actions(&mut out);
        for s in extra {
            section(&mut out, s);
        }
        section(&mut out, &history_section(history));
        out.push_str("</body></html>\n");
        out
    }

    fn html_parameters(&self, out: &mut String) {
        let op = self.view.operation;
        let _ = writeln!(out, "<h2>Parameters</h2>");
        if op.params.is_empty() && op.secret_params.is_empty() {
            let _ = writeln!(out, "<p>None.</p>");
            return;
        }
        let _ = writeln!(out, "<table><tr><th>Name</th><th>Value</th></tr>");
        for (k, v) in &op.params {
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                escape(k),
                escape(&shown)
            );
        }
        for k in &op.secret_params {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"secret\">(secret, not shown)</td></tr>",
                escape(k)
            );
        }
        out.push_str("</table>\n");
    }

    fn html_actions(&self, out: &mut String) {
        let plan = self.view.plan;
        let _ = writeln!(out, "<h2>Actions</h2>");
        for i in plan.leaves() {
            let node = plan.node(i);
            let (action, rollback) = self.actions(i);
            let _ = write!(
                out,
                "<section class=\"phase\" data-phase=\"{id}\"><h3><code>{id}</code>",
                id = escape(&node.id.to_string())
            );
            if !node.description.is_empty() {
                let _ = write!(out, " — {}", escape(&node.description));
            }
            let _ = writeln!(
                out,
                "</h3>\n<p>{}</p>\n<pre>{}</pre>",
                escape(&super::phase_facts(node).join(" · ")),
                escape(&action.join("\n"))
            );
            if rollback.is_empty() {
                let _ = writeln!(out, "<p>Rollback: none (recorded as a no-op).</p>");
            } else {
                let _ = writeln!(
                    out,
                    "<p>Rollback:</p>\n<pre>{}</pre>",
                    escape(&rollback.join("\n"))
                );
            }
            out.push_str("</section>\n");
        }
    }
}

/// The history as a section like any other.
fn history_section(history: &[HistoryEntry]) -> Section {
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|h| {
            let change = match (h.from, h.to) {
                (Some(f), Some(t)) => format!("{} → {}", f.as_str(), t.as_str()),
                (None, Some(t)) => t.as_str().to_string(),
                _ => String::new(),
            };
            let mut notes: Vec<String> = Vec::new();
            notes.extend(h.reason.clone());
            notes.extend(h.error.clone());
            notes.extend(h.detail.clone());
            if h.forced {
                notes.push("forced".into());
            }
            vec![
                format_time(h.time),
                format!("{}@{}", h.user, h.host),
                h.event.clone(),
                h.phase.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                change,
                notes.join("; "),
            ]
        })
        .collect();
    Section {
        title: "History".into(),
        headers: ["Time", "Who", "Event", "Phase", "State", "Notes"]
            .map(String::from)
            .to_vec(),
        lines: if rows.is_empty() {
            vec!["None yet.".into()]
        } else {
            Vec::new()
        },
        rows,
    }
}

fn section(out: &mut String, s: &Section) {
    let _ = writeln!(out, "<h2>{}</h2>", escape(&s.title));
    if !s.rows.is_empty() {
        table(out, &s.headers, &s.rows);
    }
    for line in &s.lines {
        let _ = writeln!(out, "<p>{}</p>", escape(line));
    }
}

fn table(out: &mut String, headers: &[String], rows: &[Vec<String>]) {
    out.push_str("<table>");
    if !headers.is_empty() {
        out.push_str("<tr>");
        for h in headers {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr>");
    }
    out.push('\n');
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}
