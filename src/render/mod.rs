//! What operators read: the live run and dry-run report (from engine events), the plan table,
//! and exports (Markdown, JSON, dot). Renderers consume events and stored state; they never
//! drive the engine.
//!
//! - [`table`]: the plan table and `medic plan -o json` ([`PlanView`]).
//! - [`export`]: the change-review exports (Markdown with a Mermaid graph, JSON, dot, HTML, SVG).
//! - [`live`]: the text renderer of a live run or dry-run ([`TextRenderer`]).
//! - [`json`]: the `-o json` event collector and the operation as JSON.
//!
//! This file holds what they share: state markers, colours and durations.

mod export;
mod json;
mod live;
mod review;
mod table;
#[cfg(test)]
mod tests;

use std::time::Duration;

use console::{style, Style};

use crate::plan::PhaseState;

pub(crate) use export::{Export, Section};
pub(crate) use json::{operation_json, JsonCollector};
pub(crate) use live::TextRenderer;
pub(crate) use review::{
    policy_sentence, review_json, review_markdown, review_sections, with_review,
};
pub(crate) use table::PlanView;

/// The state shown for a node: stored/derived state, or interrupted.
fn shown_state(state: PhaseState, interrupted: bool) -> &'static str {
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
