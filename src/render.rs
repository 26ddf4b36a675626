//! What operators read: the live run and dry-run report (from engine events), the plan table,
//! and exports (Markdown, JSON, dot). Renderers consume events and stored state; they never
//! drive the engine.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use console::{style, Style};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::action::Plan;
use crate::action::{RenderScope, Stream};
use crate::engine::phase_context;
use crate::events::{Event, EventSink, Outcome};
use crate::plan::{PhaseId, PhaseRecord, PhaseState};
use crate::procedure::Params;
use crate::store::{format_time, now_ms, Lease, Operation};
use crate::template::Templates;

/// The state shown for a node: stored/derived state, or interrupted.
pub fn shown_state(state: PhaseState, interrupted: bool) -> &'static str {
    if interrupted {
        "interrupted"
    } else {
        state.as_str()
    }
}

fn marker(state: &str) -> console::StyledObject<&'static str> {
    match state {
        "completed" => style("✔").green(),
        "failed" => style("✘").red().bold(),
        "in_progress" => style("▶").cyan(),
        "interrupted" => style("⚠").yellow().bold(),
        "rolled_back" => style("↺").magenta(),
        _ => style("·").dim(),
    }
}

fn state_style(state: &str) -> Style {
    match state {
        "completed" => Style::new().green(),
        "failed" => Style::new().red().bold(),
        "in_progress" => Style::new().cyan(),
        "interrupted" => Style::new().yellow().bold(),
        "rolled_back" => Style::new().magenta(),
        _ => Style::new().dim(),
    }
}

fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

/// Everything the plan views need about one operation.
pub struct PlanView<'a> {
    pub operation: &'a Operation,
    pub plan: &'a Plan,
    pub records: &'a HashMap<PhaseId, PhaseRecord>,
    pub lease: Option<&'a Lease>,
    pub interrupted: &'a BTreeSet<PhaseId>,
}

impl PlanView<'_> {
    fn node_rows(&self) -> Vec<NodeRow> {
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
            let requires: Vec<String> = self
                .plan
                .direct_requirements(i)
                .into_iter()
                .map(|r| self.plan.node(r).id.to_string())
                .collect();
            let mut target = node
                .action
                .as_ref()
                .and_then(|a| a.target())
                .unwrap_or_default();
            // Fan-out phases show their node count and failures next to the target.
            let outcome = record.and_then(|r| match (&r.summary, &r.error) {
                (_, Some(e)) if e.contains(" nodes failed") => {
                    e.split(':').next().map(|s| s.to_string())
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
                description: node.description.clone(),
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
                    .map(|r| {
                        let summary = r.summary.as_deref().unwrap_or_default();
                        summary
                            .strip_prefix("skipped: ")
                            .unwrap_or(summary)
                            .to_string()
                    }),
            });
        }
        rows
    }

    /// The plan as JSON for `medic plan -o json`, serialized straight from the rows.
    pub fn json_string(&self) -> String {
        let rows = self.node_rows();
        let doc = self.document(&rows, rows.iter().skip(1).collect::<Vec<_>>());
        serde_json::to_string(&doc).expect("plan serializes")
    }

    fn document<'r, P: serde::Serialize>(
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
    pub fn to_text(&self, short: bool) -> String {
        let rows = self.node_rows();
        let mut out = String::new();
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
        let now = now_ms();
        // HH:MM:SS (UTC) without a full RFC 3339 formatting per row.
        let clock = |ms: u64| {
            let secs = (ms / 1000) % 86_400;
            format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            )
        };
        let time_of = |r: &NodeRow| match (r.started_at, r.finished_at) {
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
        };
        let width_of = |s: &str| {
            if s.is_ascii() {
                s.len()
            } else {
                s.chars().count()
            }
        };
        let colors = console::colors_enabled();
        if short {
            let width = shown.iter().map(|r| r.id.len()).max().unwrap_or(5).max(5);
            for r in &shown {
                let _ = writeln!(
                    out,
                    "{} {:width$}  {}",
                    marker(&r.state),
                    r.id,
                    state_style(&r.state).apply_to(&r.state)
                );
            }
        } else {
            let headers = [
                "PHASE",
                "STATE",
                "DESCRIPTION",
                "TARGET",
                "REQUIRES",
                "TIME",
            ];
            let cells: Vec<[String; 6]> = shown
                .iter()
                .map(|r| {
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
                        time_of(r),
                    ]
                })
                .collect();
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
        if let Some(lease) = self.lease.filter(|l| l.is_alive()) {
            let _ = writeln!(
                out,
                "\n{} executing now: {}",
                style("▶").cyan(),
                lease.describe()
            );
        }
        if !short {
            for r in &shown {
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
        for r in rows.iter().filter(|r| r.leaf && r.state == "interrupted") {
            let _ = writeln!(
                out,
                "\n{} {} was interrupted (its executor is gone); `medic plan resume` runs it again",
                marker("interrupted"),
                r.id
            );
        }
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
        out
    }
}

#[derive(serde::Serialize)]
struct PlanDocument<'a, P> {
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
struct NodeRow {
    id: String,
    #[serde(skip)]
    depth: usize,
    #[serde(skip)]
    leaf: bool,
    group: bool,
    state: String,
    description: String,
    target: String,
    requires: Vec<String>,
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
}

pub fn operation_json(op: &Operation) -> serde_json::Value {
    let mut params = serde_json::Map::new();
    for (k, v) in &op.params {
        params.insert(k.clone(), v.clone());
    }
    for k in &op.secret_params {
        params.insert(k.clone(), json!(crate::procedure::secret_placeholder(k)));
    }
    json!({
        "id": op.id,
        "procedure": op.procedure,
        "description": op.description,
        "state": op.state,
        "params": params,
        "created_at": format_time(op.created_at),
        "created_by": op.created_by,
        "reason": op.reason,
        "finished_at": op.finished_at.map(format_time),
        "fingerprint": op.fingerprint,
    })
}

/// Export of a plan for change review.
pub struct Export<'a> {
    pub view: PlanView<'a>,
    pub inventory: Option<&'a crate::inventory::Inventory>,
    pub params: &'a Params,
    pub vars: &'a serde_json::Map<String, serde_json::Value>,
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
        let render = |a: Option<&crate::action::ActionSpec>| match a {
            Some(a) => a
                .describe(&scope)
                .unwrap_or_else(|e| vec![format!("{}: cannot render yet ({e})", a.kind())]),
            None => Vec::new(),
        };
        (render(node.action.as_ref()), render(node.rollback.as_ref()))
    }

    pub fn json_string(&self) -> String {
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

    pub fn to_markdown(&self) -> String {
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
        let _ = writeln!(out, "\n## Actions\n");
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
            let _ = writeln!(out, "{}\n", facts.join(" · "));
            let _ = writeln!(out, "```\n{}\n```\n", action.join("\n"));
            if rollback.is_empty() {
                let _ = writeln!(out, "Rollback: none (recorded as a no-op).\n");
            } else {
                let _ = writeln!(out, "Rollback:\n\n```\n{}\n```\n", rollback.join("\n"));
            }
        }
        out
    }

    pub fn to_dot(&self) -> String {
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

/// Renders engine events as text on stdout: live progress, or a dry-run report.
pub struct TextRenderer {
    inner: Mutex<TextState>,
    terminal: bool,
}

struct TextState {
    progress: Option<MultiProgress>,
    bars: HashMap<PhaseId, ProgressBar>,
    would_run: usize,
}

impl TextRenderer {
    pub fn new() -> Self {
        let terminal = console::Term::stdout().is_term();
        TextRenderer {
            inner: Mutex::new(TextState {
                progress: terminal.then(MultiProgress::new),
                bars: HashMap::new(),
                would_run: 0,
            }),
            terminal,
        }
    }

    fn println(state: &TextState, line: String) {
        match &state.progress {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

impl Default for TextRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for TextRenderer {
    fn emit(&self, event: &Event) {
        let mut st = self.inner.lock().expect("renderer lock");
        match event {
            Event::RunStarted {
                operation,
                target,
                rollback,
                dry_run,
            } => {
                let verb = if *rollback {
                    "Rolling back"
                } else {
                    "Executing"
                };
                let line = if *dry_run {
                    format!(
                        "{} of {} {target} in operation {operation} — nothing will change",
                        style("Dry run").bold(),
                        if *rollback { "rollback" } else { "execute" }
                    )
                } else {
                    format!("{} {target} in operation {operation}", style(verb).bold())
                };
                Self::println(&st, line);
            }
            Event::PhaseSkipped { id, reason } => {
                Self::println(&st, format!("{} {id}: {reason}", style("·").dim()))
            }
            Event::Forced { detail } => Self::println(
                &st,
                format!("{} {}", style("! forced").yellow().bold(), detail),
            ),
            Event::PhaseStarted {
                id,
                description,
                action,
                attempt,
                rollback,
            } => {
                let verb = if *rollback {
                    "rolling back"
                } else if *attempt > 1 {
                    "running again"
                } else {
                    ""
                };
                let mut line = format!("{} {}", style("▶").cyan(), style(id).bold());
                if !verb.is_empty() {
                    line.push_str(&format!(" ({verb})"));
                }
                if !description.is_empty() {
                    line.push_str(&format!("  {description}"));
                }
                Self::println(&st, line);
                for a in action {
                    Self::println(&st, format!("    {}", style(a).dim()));
                }
                if self.terminal {
                    if let Some(mp) = &st.progress {
                        let bar = mp.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template(
                                "  {spinner:.cyan} {prefix} {elapsed} {wide_msg:.dim}",
                            )
                            .expect("valid template"),
                        );
                        bar.set_prefix(id.to_string());
                        bar.enable_steady_tick(Duration::from_millis(150));
                        st.bars.insert(id.clone(), bar);
                    }
                }
            }
            Event::PhaseOutput { id, stream, line } => {
                if let Some(bar) = st.bars.get(id) {
                    bar.set_message(line.clone());
                }
                let prefix = match stream {
                    Stream::Stderr => style("  │").red().dim(),
                    Stream::Stdout => style("  │").dim(),
                    Stream::Medic => style("  ·").dim(),
                };
                Self::println(&st, format!("{prefix} {line}"));
            }
            Event::PhaseRetrying {
                id,
                attempt,
                delay_secs,
                error,
            } => {
                Self::println(
                    &st,
                    format!(
                        "{} {id} attempt {attempt} failed ({error}); retrying in {delay_secs:.1}s",
                        style("↻").yellow()
                    ),
                );
            }
            Event::PhaseFinished {
                id,
                state,
                elapsed_secs,
                error,
                summary,
                ..
            } => {
                if let Some(bar) = st.bars.remove(id) {
                    bar.finish_and_clear();
                }
                let took = human_duration((elapsed_secs * 1000.0) as u64);
                let line = match error {
                    Some(e) => format!(
                        "{} {} {} after {took}: {e}",
                        marker(state.as_str()),
                        style(id).bold(),
                        state_style(state.as_str()).apply_to(state.as_str())
                    ),
                    None => format!(
                        "{} {} {} in {took}{}",
                        marker(state.as_str()),
                        id,
                        state_style(state.as_str()).apply_to(state.as_str()),
                        summary
                            .as_ref()
                            .map(|s| format!(" — {s}"))
                            .unwrap_or_default()
                    ),
                };
                Self::println(&st, line);
            }
            Event::PhasePaused { id, message } => {
                Self::println(
                    &st,
                    format!(
                        "{} paused before {}: {message}",
                        style("⏸").yellow().bold(),
                        style(id).bold()
                    ),
                );
                Self::println(&st, format!("  when the manual step is done: medic plan execute --phase={id} && medic plan resume"));
            }
            Event::PhaseWouldRun {
                id,
                description,
                action,
                rollback,
                note,
            } => {
                st.would_run += 1;
                let n = st.would_run;
                let head = if description.is_empty() {
                    format!("{n:>3}. {}", style(id).bold())
                } else {
                    format!("{n:>3}. {} — {description}", style(id).bold())
                };
                Self::println(&st, head);
                if *rollback && action.is_empty() && note.is_none() {
                    Self::println(&st, "       (no rollback action)".to_string());
                }
                for a in action {
                    Self::println(&st, format!("       {a}"));
                }
                if let Some(note) = note {
                    Self::println(&st, format!("       {}", style(format!("({note})")).dim()));
                }
            }
            Event::RunFinished { outcome } => {
                for (_, bar) in st.bars.drain() {
                    bar.finish_and_clear();
                }
                let line = match outcome {
                    Outcome::Completed => format!("{} done: every phase completed", style("✔").green()),
                    Outcome::AlreadyCompleted => format!("{} nothing to do", style("✔").green()),
                    Outcome::Paused { .. } => format!("{} stopped at a pause (exit 0); the rest waits for the operator", style("⏸").yellow()),
                    Outcome::Failed { phase, .. } => format!(
                        "{} stopped: {phase} failed. See `medic plan logs --phase={phase}`; fix and run `medic plan execute --phase={phase}`, or undo with `medic plan rollback --phase={phase}`",
                        style("✘").red().bold()
                    ),
                    Outcome::Refused { phase, error } => format!(
                        "{} {phase} was refused for safety (exit 3): {error}",
                        style("⛔").red().bold()
                    ),
                    Outcome::Interrupted => format!("{} interrupted; `medic plan resume` continues", style("⚠").yellow()),
                    Outcome::Stuck { waiting } => {
                        let mut text = format!(
                            "{} stuck: {} phase{} could not start and nothing else can run (a medic bug; please report it with `medic plan export --format json`):",
                            style("✘").red(),
                            waiting.len(),
                            if waiting.len() == 1 { "" } else { "s" }
                        );
                        for w in waiting {
                            let on: Vec<String> = w.waits_for.iter().map(|p| p.to_string()).collect();
                            text.push_str(&format!("\n  {} waits for {}", w.phase, if on.is_empty() { "its group".to_string() } else { on.join(", ") }));
                        }
                        text
                    }
                    Outcome::RolledBack => format!("{} rolled back", style("↺").magenta()),
                    Outcome::NothingToRollBack => format!("{} nothing to roll back", style("·").dim()),
                    Outcome::DryRun => {
                        if st.would_run == 0 {
                            "nothing would run".to_string()
                        } else {
                            format!("{} phase(s) would run; nothing was changed", st.would_run)
                        }
                    }
                };
                Self::println(&st, line);
            }
        }
    }
}

/// Collects events for `-o json`.
#[derive(Default)]
pub struct JsonCollector {
    pub events: Mutex<Vec<serde_json::Value>>,
    /// Output (bytes, lines) collected per phase: past the log's head size or
    /// [`JSON_OUTPUT_LINES`], the rest of a phase's output is left out (one note says so), so
    /// a chatty command cannot grow the report without bound.
    output_seen: Mutex<HashMap<PhaseId, (usize, usize)>>,
}

/// Output lines per phase in a `-o json` report (an event costs far more memory than its text).
const JSON_OUTPUT_LINES: usize = 10_000;

impl EventSink for JsonCollector {
    fn emit(&self, event: &Event) {
        if let Event::PhaseOutput { id, line, .. } = event {
            let mut seen = self.output_seen.lock().expect("sizes lock");
            let (bytes, lines) = seen.entry(id.clone()).or_default();
            let full = |bytes: usize, lines: usize| {
                bytes > crate::store::LOG_HEAD_BYTES || lines > JSON_OUTPUT_LINES
            };
            let was_full = full(*bytes, *lines);
            *bytes += line.len() + 1;
            *lines += 1;
            if full(*bytes, *lines) {
                if !was_full {
                    let note = Event::PhaseOutput {
                        id: id.clone(),
                        stream: crate::action::Stream::Medic,
                        line: format!(
                            "… the rest of this phase's output is left out here; run `medic plan logs --phase={id}` for its head and tail"
                        ),
                    };
                    let value = serde_json::to_value(&note).expect("events serialize");
                    self.events.lock().expect("events lock").push(value);
                }
                return;
            }
        }
        let value = serde_json::to_value(event).expect("events serialize");
        self.events.lock().expect("events lock").push(value);
    }
}
