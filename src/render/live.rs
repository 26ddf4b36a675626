//! The text renderer of a run: live progress (spinners on a terminal) or the dry-run report,
//! one function per event kind.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{human_duration, marker, state_style};
use crate::action::Stream;
use crate::events::{Event, EventSink, Outcome, Waiting};
use crate::plan::{PhaseId, PhaseState};

/// Renders engine events as text on stdout: live progress, or a dry-run report.
pub(crate) struct TextRenderer {
    inner: Mutex<TextState>,
    terminal: bool,
}

struct TextState {
    progress: Option<MultiProgress>,
    bars: HashMap<PhaseId, ProgressBar>,
    would_run: usize,
}

impl TextRenderer {
    pub(crate) fn new() -> Self {
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
            } => Self::println(
                &st,
                run_started_line(operation, target, *rollback, *dry_run),
            ),
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
            } => self.phase_started(&mut st, id, description, action, *attempt, *rollback),
            Event::PhaseOutput { id, stream, line } => phase_output(&st, id, *stream, line),
            Event::PhaseRetrying {
                id,
                attempt,
                delay_secs,
                error,
            } => Self::println(
                &st,
                format!(
                    "{} {id} attempt {attempt} failed ({error}); retrying in {delay_secs:.1}s",
                    style("↻").yellow()
                ),
            ),
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
                let line = phase_finished_line(
                    id,
                    *state,
                    *elapsed_secs,
                    error.as_deref(),
                    summary.as_deref(),
                );
                Self::println(&st, line);
            }
            Event::PhasePaused { id, message } => {
                for line in phase_paused_lines(id, message) {
                    Self::println(&st, line);
                }
            }
            Event::PhaseWouldRun {
                id,
                description,
                action,
                rollback,
                note,
            } => {
                st.would_run += 1;
                let lines = would_run_lines(st.would_run, id, description, action, *rollback, note);
                for line in lines {
                    Self::println(&st, line);
                }
            }
            Event::RunFinished { outcome } => {
                for (_, bar) in st.bars.drain() {
                    bar.finish_and_clear();
                }
                Self::println(&st, outcome_line(outcome, st.would_run));
            }
        }
    }
}

impl TextRenderer {
    /// The phase's header and action lines, and a spinner on a terminal.
    fn phase_started(
        &self,
        st: &mut TextState,
        id: &PhaseId,
        description: &str,
        action: &[String],
        attempt: u32,
        rollback: bool,
    ) {
        let verb = if rollback {
            "rolling back"
        } else if attempt > 1 {
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
        Self::println(st, line);
        for a in action {
            Self::println(st, format!("    {}", style(a).dim()));
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
}

fn run_started_line(operation: &str, target: &PhaseId, rollback: bool, dry_run: bool) -> String {
    let verb = if rollback {
        "Rolling back"
    } else {
        "Executing"
    };
    if dry_run {
        format!(
            "{} of {} {target} in operation {operation} — nothing will change",
            style("Dry run").bold(),
            if rollback { "rollback" } else { "execute" }
        )
    } else {
        format!("{} {target} in operation {operation}", style(verb).bold())
    }
}

fn phase_output(st: &TextState, id: &PhaseId, stream: Stream, line: &str) {
    if let Some(bar) = st.bars.get(id) {
        bar.set_message(line.to_string());
    }
    let prefix = match stream {
        Stream::Stderr => style("  │").red().dim(),
        Stream::Stdout => style("  │").dim(),
        Stream::Medic => style("  ·").dim(),
    };
    TextRenderer::println(st, format!("{prefix} {line}"));
}

fn phase_finished_line(
    id: &PhaseId,
    state: PhaseState,
    elapsed_secs: f64,
    error: Option<&str>,
    summary: Option<&str>,
) -> String {
    let took = human_duration((elapsed_secs * 1000.0) as u64);
    match error {
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
            summary.map(|s| format!(" — {s}")).unwrap_or_default()
        ),
    }
}

fn phase_paused_lines(id: &PhaseId, message: &str) -> [String; 2] {
    [
        format!(
            "{} paused before {}: {message}",
            style("⏸").yellow().bold(),
            style(id).bold()
        ),
        format!(
            "  when the manual step is done: medic plan execute --phase={id} && medic plan resume"
        ),
    ]
}

/// The dry-run report's entry for the `n`th phase that would run.
fn would_run_lines(
    n: usize,
    id: &PhaseId,
    description: &str,
    action: &[String],
    rollback: bool,
    note: &Option<String>,
) -> Vec<String> {
    let mut lines = Vec::with_capacity(action.len() + 2);
    lines.push(if description.is_empty() {
        format!("{n:>3}. {}", style(id).bold())
    } else {
        format!("{n:>3}. {} — {description}", style(id).bold())
    });
    if rollback && action.is_empty() && note.is_none() {
        lines.push("       (no rollback action)".to_string());
    }
    for a in action {
        lines.push(format!("       {a}"));
    }
    if let Some(note) = note {
        lines.push(format!("       {}", style(format!("({note})")).dim()));
    }
    lines
}

/// The last line of a run: how it ended and what to do next. `would_run` counts the phases a
/// dry-run listed.
pub(super) fn outcome_line(outcome: &Outcome, would_run: usize) -> String {
    match outcome {
        Outcome::Completed => format!("{} done: every phase completed", style("✔").green()),
        Outcome::AlreadyCompleted => format!("{} nothing to do", style("✔").green()),
        Outcome::Paused { .. } => format!(
            "{} stopped at a pause (exit 0); the rest waits for the operator",
            style("⏸").yellow()
        ),
        Outcome::Failed { phase, .. } => format!(
            "{} stopped: {phase} failed. See `medic plan logs --phase={phase}`; fix and run `medic plan execute --phase={phase}`, or undo with `medic plan rollback --phase={phase}`",
            style("✘").red().bold()
        ),
        Outcome::Refused { phase, error } => format!(
            "{} {phase} was refused for safety (exit 3): {error}",
            style("⛔").red().bold()
        ),
        Outcome::Interrupted => format!(
            "{} interrupted; `medic plan resume` continues",
            style("⚠").yellow()
        ),
        Outcome::Stuck { waiting } => stuck_text(waiting),
        Outcome::RolledBack => format!("{} rolled back", style("↺").magenta()),
        Outcome::NothingToRollBack => format!("{} nothing to roll back", style("·").dim()),
        Outcome::DryRun => {
            if would_run == 0 {
                "nothing would run".to_string()
            } else {
                format!("{would_run} phase(s) would run; nothing was changed")
            }
        }
    }
}

/// The stuck hint: every phase that could not start, with what it waits for.
fn stuck_text(waiting: &[Waiting]) -> String {
    let mut text = format!(
        "{} stuck: {} phase{} could not start and nothing else can run (a medic bug; please report it with `medic plan export --format json`):",
        style("✘").red(),
        waiting.len(),
        if waiting.len() == 1 { "" } else { "s" }
    );
    for w in waiting {
        let on: Vec<String> = w.waits_for.iter().map(|p| p.to_string()).collect();
        text.push_str(&format!(
            "\n  {} waits for {}",
            w.phase,
            if on.is_empty() {
                "its group".to_string()
            } else {
                on.join(", ")
            }
        ));
    }
    text
}
