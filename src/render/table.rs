//! The plan table (`medic plan`) and its JSON form (`medic plan -o json`): one row per node of
//! the plan, from the stored records and the lease.
//!
//! 1. [`PlanView::node_rows`] turns the plan and its records into rows (state, target, times).
//! 2. [`PlanView::to_text`] lays the rows out as a table and adds the hints below it (skipped,
//!    interrupted, failed); [`PlanView::json_string`] serializes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use console::style;

use super::json::operation_json;
use super::{human_duration, marker, shown_state, state_style};
use crate::action::Plan;
use crate::plan::{FailureKind, PhaseId, PhaseRecord, PhaseState};
use crate::store::{now_ms, Lease, Operation};

/// Everything the plan views need about one operation.
pub(crate) struct PlanView<'a> {
    pub(crate) operation: &'a Operation,
    pub(crate) plan: &'a Plan,
    pub(crate) records: &'a HashMap<PhaseId, PhaseRecord>,
    pub(crate) lease: Option<&'a Lease>,
    pub(crate) interrupted: &'a BTreeSet<PhaseId>,
    /// What each interrupted leaf may have done: its action (or rollback) rendered, secrets
    /// as placeholders (`crate::operation::hints`); empty when not at hand.
    pub(crate) may_have_done: &'a BTreeMap<PhaseId, Vec<String>>,
}

impl PlanView<'_> {
    pub(super) fn node_rows(&self) -> Vec<NodeRow> {
        self.rows(true)
    }

    /// The rows; without `full`, only what `--short` shows (ID, state, error, hints): no
    /// description, target or requirements are copied or computed.
    fn rows(&self, full: bool) -> Vec<NodeRow> {
        let states = self.plan.states(self.records);
        let mut rows = Vec::with_capacity(self.plan.len());
        for (i, node) in self.plan.nodes().iter().enumerate() {
            let interrupted = if node.is_leaf() {
                self.interrupted.contains(&node.id)
            } else {
                states[i] == PhaseState::InProgress
                    && self
                        .plan
                        .subtree(i)
                        .any(|d| self.interrupted.contains(&self.plan.node(d).id))
            };
            let record = self.records.get(&node.id);
            let requires: Vec<String> = if full {
                self.plan
                    .direct_requirements(i)
                    .into_iter()
                    .map(|r| self.plan.node(r).id.to_string())
                    .collect()
            } else {
                Vec::new()
            };
            let mut target = if full {
                node.action
                    .as_ref()
                    .and_then(|a| a.target())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            // Fan-out phases show their node count and failures next to the target.
            let outcome = record
                .filter(|_| full)
                .and_then(|r| match (&r.summary, r.failure) {
                    (_, Some(FailureKind::NodesFailed { failed, total })) => {
                        Some(format!("{failed} of {total} nodes failed"))
                    }
                    (Some(s), _) if s.contains("node") => Some(s.clone()),
                    _ => None,
                });
            if let Some(o) = outcome {
                target = format!("{target} ({o})");
            }
            rows.push(NodeRow {
                id: node.id.to_string(),
                depth: node.id.depth(),
                leaf: node.is_leaf(),
                group: !node.is_leaf(),
                state: shown_state(states[i], interrupted).to_string(),
                description: if full {
                    node.description.clone()
                } else {
                    String::new()
                },
                target,
                requires,
                started_at: record.and_then(|r| r.started_at),
                finished_at: record.and_then(|r| r.finished_at),
                error: record.and_then(|r| r.error.clone()),
                attempts: record.map(|r| r.attempts).unwrap_or(0),
                rolling_back: record.is_some_and(|r| r.rolling_back),
                summary: record.and_then(|r| r.summary.clone()),
                skipped: record
                    .filter(|r| r.skipped && r.state == PhaseState::Completed)
                    .map(|r| r.skip_reason.clone().unwrap_or_default()),
                may_have_done: self
                    .may_have_done
                    .get(&node.id)
                    .filter(|_| interrupted)
                    .cloned(),
            });
        }
        rows
    }

    /// The plan as JSON for `medic plan -o json`, serialized straight from the rows.
    pub(crate) fn json_string(&self) -> String {
        let mut out = Vec::new();
        let _ = self.write_json(&mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// The same JSON, streamed to `out` as it is serialized (no copy of the whole document).
    pub(crate) fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let rows = self.node_rows();
        let doc = self.document(&rows, rows.iter().skip(1).collect::<Vec<_>>());
        serde_json::to_writer(out, &doc).map_err(std::io::Error::from)
    }

    pub(super) fn document<'r, P: serde::Serialize>(
        &'r self,
        rows: &'r [NodeRow],
        phases: P,
    ) -> PlanDocument<'r, P> {
        PlanDocument {
            operation: operation_json(self.operation),
            state: rows
                .first()
                .map(|r| r.state.as_str())
                .unwrap_or("unstarted"),
            progress: Progress {
                completed: rows
                    .iter()
                    .filter(|r| r.leaf && r.state == "completed")
                    .count(),
                leaves: rows.iter().filter(|r| r.leaf).count(),
            },
            executor: self.lease.filter(|l| l.is_alive()),
            phases,
        }
    }

    /// The plan table for `medic plan`; `short` keeps top-level phases only.
    pub(crate) fn to_text(&self, short: bool) -> String {
        let mut out = String::new();
        self.write_text(&mut out, short);
        out
    }

    /// The plan table written to `out` row by row (a buffered stdout streams it).
    pub(crate) fn write_text(&self, out: &mut impl Write, short: bool) {
        let rows = self.rows(!short);
        let op = self.operation;
        let leaves = rows.iter().filter(|r| r.leaf).count();
        let done = rows
            .iter()
            .filter(|r| r.leaf && r.state == "completed")
            .count();
        let _ = writeln!(
            out,
            "Operation {} · {} · {} · {done}/{leaves} phases completed",
            style(&op.id).bold(),
            op.procedure,
            state_style(op.state.as_str()).apply_to(op.state.as_str())
        );
        let shown: Vec<&NodeRow> = rows
            .iter()
            .skip(1)
            .filter(|r| !short || r.depth <= 1)
            .collect();
        if short {
            write_short_list(out, &shown);
        } else {
            write_table(out, &shown, now_ms());
        }
        if let Some(lease) = self.lease.filter(|l| l.is_alive()) {
            let _ = writeln!(
                out,
                "\n{} executing now: {}",
                style("▶").cyan(),
                lease.describe()
            );
        }
        if !short {
            write_skipped_hints(out, &shown);
        }
        self.write_interrupted_hints(out, &rows);
        write_failed_hint(out, &rows);
    }
}

impl PlanView<'_> {
    /// The interrupted hints: each leaf whose executor is gone, and exactly what to run. An
    /// idempotent action runs again with `resume`; any other may have had its effect, so the
    /// hint shows what it may have done and the two ways on (`--force`, or roll it back).
    fn write_interrupted_hints(&self, out: &mut impl Write, rows: &[NodeRow]) {
        // Rows are the plan's nodes, in order.
        for (i, r) in rows.iter().enumerate() {
            if !(r.leaf && r.state == "interrupted") {
                continue;
            }
            let node = self.plan.node(i);
            let id = &node.id;
            let done = self.may_have_done.get(id);
            let mark = marker("interrupted");
            if r.rolling_back {
                let _ = writeln!(
                    out,
                    "\n{mark} {id} was interrupted while rolling back (its executor is gone){}",
                    if done.is_some() {
                        "; it may have done:"
                    } else {
                        ""
                    }
                );
                write_action_lines(out, done);
                let _ = writeln!(
                    out,
                    "  `medic plan rollback --phase={id}` runs its rollback again"
                );
            } else if node.idempotent {
                let _ = writeln!(
                    out,
                    "\n{mark} {id} was interrupted (its executor is gone); its action is safe to repeat: `medic plan resume` runs it again"
                );
            } else {
                let _ = writeln!(
                    out,
                    "\n{mark} {id} was interrupted (its executor is gone) and its action is not safe to repeat{}",
                    if done.is_some() { "; it may have done:" } else { "" }
                );
                write_action_lines(out, done);
                let _ = writeln!(
                    out,
                    "  check what it did, then run it again: `medic plan resume --force`\n  or undo it: `medic plan rollback --phase={id}`\n  or, if it finished (or you did it by hand): `medic plan set --phase={id} --state=completed --reason TEXT`"
                );
            }
        }
    }
}

/// The rendered action lines of a hint, indented under it.
fn write_action_lines(out: &mut impl Write, lines: Option<&Vec<String>>) {
    for line in lines.into_iter().flatten() {
        let _ = writeln!(out, "    {line}");
    }
}

/// The width of a cell as shown (characters, not bytes).
fn width_of(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// HH:MM:SS (UTC) without a full RFC 3339 formatting per row.
fn clock(ms: u64) -> String {
    let secs = (ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The TIME cell: when the phase started and how long it took (or has been running at `now`).
fn time_of(r: &NodeRow, now: u64) -> String {
    match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => format!("{} {}", clock(s), human_duration(f.saturating_sub(s))),
        (Some(s), None) if r.state == "in_progress" => {
            format!(
                "{} running {}",
                clock(s),
                human_duration(now.saturating_sub(s))
            )
        }
        (Some(s), None) => clock(s),
        _ => String::new(),
    }
}

/// `medic plan --short`: one line per top-level phase, its marker, ID and state.
fn write_short_list(out: &mut impl Write, shown: &[&NodeRow]) {
    let width = shown.iter().map(|r| r.id.len()).max().unwrap_or(5).max(5);
    for r in shown {
        let _ = writeln!(
            out,
            "{} {:width$}  {}",
            marker(&r.state),
            r.id,
            state_style(&r.state).apply_to(&r.state)
        );
    }
}

/// The cells of one table row, in the order of the table's headers.
fn cells_of(r: &NodeRow, now: u64) -> [String; 6] {
    let mut desc = r.description.replace('\n', " ");
    if width_of(&desc) > 60 {
        desc = desc.chars().take(59).collect::<String>() + "…";
    }
    let state = if r.rolling_back && r.state == "in_progress" {
        "rolling_back".to_string()
    } else if r.skipped.is_some() {
        "skipped".to_string()
    } else {
        r.state.clone()
    };
    [
        r.id.clone(),
        state,
        desc,
        r.target.clone(),
        r.requires.join(","),
        time_of(r, now),
    ]
}

/// The full plan table: a header and one aligned row per node (styled when colours are on).
fn write_table(out: &mut impl Write, shown: &[&NodeRow], now: u64) {
    let headers = [
        "PHASE",
        "STATE",
        "DESCRIPTION",
        "TARGET",
        "REQUIRES",
        "TIME",
    ];
    let colors = console::colors_enabled();
    let cells: Vec<[String; 6]> = shown.iter().map(|r| cells_of(r, now)).collect();
    let mut widths = headers.map(|h| h.len());
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(width_of(v));
        }
    }
    let mut header = String::new();
    for (h, w) in headers.iter().zip(widths) {
        header.push_str(&format!("{h:w$}  "));
    }
    let _ = writeln!(out, "  {}", style(header.trim_end()).bold());
    let mut line = String::new();
    for (r, c) in shown.iter().zip(cells) {
        line.clear();
        for (k, (v, w)) in c.iter().zip(widths).enumerate() {
            let padding = w.saturating_sub(width_of(v));
            if colors {
                let cell = format!("{v}{}", " ".repeat(padding));
                let styled = match k {
                    0 if !r.leaf => style(cell).bold().to_string(),
                    1 => state_style(&r.state).apply_to(cell).to_string(),
                    2..=4 => style(cell).dim().to_string(),
                    _ => cell,
                };
                line.push_str(&styled);
            } else {
                line.push_str(v);
                line.extend(std::iter::repeat_n(' ', padding));
            }
            line.push_str("  ");
        }
        let _ = writeln!(out, "{} {}", marker(&r.state), line.trim_end());
    }
}

/// Why each skipped phase did not run its action.
fn write_skipped_hints(out: &mut impl Write, shown: &[&NodeRow]) {
    for r in shown {
        if let Some(reason) = &r.skipped {
            let _ = writeln!(
                out,
                "\n{} {} was skipped: {reason}",
                marker("completed"),
                r.id
            );
        }
    }
}

/// The first failed leaf, its error and where its logs are.
fn write_failed_hint(out: &mut impl Write, rows: &[NodeRow]) {
    if let Some(r) = rows.iter().find(|r| r.leaf && r.state == "failed") {
        let _ = writeln!(
            out,
            "\n{} {} failed: {}",
            marker("failed"),
            style(&r.id).bold(),
            r.error.as_deref().unwrap_or("(no error recorded)")
        );
        let _ = writeln!(out, "  logs: medic plan logs --phase={}", r.id);
    }
}

#[derive(serde::Serialize)]
pub(super) struct PlanDocument<'a, P> {
    operation: serde_json::Value,
    state: &'a str,
    progress: Progress,
    executor: Option<&'a Lease>,
    phases: P,
}

#[derive(serde::Serialize)]
struct Progress {
    completed: usize,
    leaves: usize,
}

#[derive(serde::Serialize)]
pub(super) struct NodeRow {
    pub(super) id: String,
    #[serde(skip)]
    pub(super) depth: usize,
    #[serde(skip)]
    leaf: bool,
    group: bool,
    pub(super) state: String,
    pub(super) description: String,
    target: String,
    pub(super) requires: Vec<String>,
    started_at: Option<u64>,
    finished_at: Option<u64>,
    error: Option<String>,
    attempts: u32,
    rolling_back: bool,
    /// What the action reported when it finished (e.g. how many pods a drain moved).
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    /// Why a completed phase did not run its action (`when:` was false).
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
    /// An interrupted leaf's action (or rollback) as rendered: what it may have done.
    #[serde(skip_serializing_if = "Option::is_none")]
    may_have_done: Option<Vec<String>>,
}
