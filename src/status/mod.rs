//! `medic status`: the health probes of the cluster, their findings, and the procedure that
//! repairs each. Probes are phases with `probe:` in the `*-health` procedures (built in, or in
//! the plans directory); this module runs them through the engine and reads what they found.
//!
//! 1. [`units`] picks the probe procedures: every `*-health` procedure with probes of its own
//!    (one that only includes others, such as `cluster-health`, is not run twice); one with a
//!    `node` parameter runs once per inventory node (`--node` limits them).
//! 2. `run.rs` builds each unit's plan and runs it on an engine that keeps going after a
//!    failure (`Engine::keep_going`), all units at once, each bounded by a timeout, with no
//!    operation stored; `--record` instead stores one operation of `cluster-health`.
//! 3. [`collect`] turns each probe leaf's record into a [`ProbeResult`] (a failed probe's
//!    finding is rendered by the engine when it fails) and renders remedies as commands.
//! 4. `report.rs` is what operators read: the summary line, the table, what to do.

mod report;
mod run;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::action::Plan;
use crate::engine::Engine;
use crate::plan::{PhaseId, PhaseRecord, PhaseState, Remedy, Severity};
use crate::procedure::{Catalog, Procedure};
use crate::template::{shell_quote, Templates};

pub(crate) use report::{exit_code, render_text, Summary};
pub(crate) use run::{run_probes, run_probes_until, run_recorded, StatusError};

/// What `medic status` was asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct StatusOptions {
    /// Probe name patterns to run (`node/` or `node/*` for a component); empty: all.
    pub(crate) only: Vec<String>,
    /// Probe name patterns waived (still shown, never counted).
    pub(crate) skip: Vec<String>,
    /// Nodes whose per-node probes run; empty: every inventory node.
    pub(crate) nodes: Vec<String>,
    /// How long one unit (a procedure, or a procedure on one node) may take.
    pub(crate) timeout: Duration,
}

/// One procedure to run, with the node it runs for (per-node procedures).
#[derive(Clone, Debug)]
pub(crate) struct Unit {
    pub(crate) procedure: Procedure,
    pub(crate) node: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProbeState {
    Pass,
    Fail,
    /// Did not run to a verdict: a phase before it failed, or the unit timed out.
    Unknown,
    /// Waived with `--skip`.
    Skipped,
}

/// A remedy, rendered: the command to run, or an instruction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RemedyView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) procedure: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) params: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) instruction: Option<String>,
}

/// What one probe found.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProbeResult {
    pub(crate) name: String,
    pub(crate) component: String,
    pub(crate) node: Option<String>,
    pub(crate) severity: Severity,
    pub(crate) state: ProbeState,
    pub(crate) finding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) procedure: String,
    pub(crate) phase: PhaseId,
    /// The values the unit captured (what the finding was rendered from).
    pub(crate) data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) remedy: Option<RemedyView>,
}

/// Whether probe `name` matches `pattern`: equal, or under it (`node`, `node/`, `node/*`).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let prefix = pattern.trim_end_matches('*').trim_end_matches('/');
    name == pattern || name == prefix || name.starts_with(&format!("{prefix}/"))
}

fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

/// The probe names among a procedure's own phases (not those it includes).
pub(crate) fn own_probes(procedure: &Procedure) -> Vec<String> {
    fn walk(phases: &[crate::procedure::PhaseSpec], out: &mut Vec<String>) {
        for p in phases {
            if let Some(probe) = &p.probe {
                out.push(probe.name.clone());
            }
            if p.include.is_none() {
                walk(&p.children, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&procedure.phases, &mut out);
    out
}

/// The units to run: each `*-health` procedure with probes of its own that `--only` selects,
/// once, or once per node when it has a `node` parameter.
pub(crate) fn units(
    catalog: &Catalog,
    inventory_nodes: &[String],
    options: &StatusOptions,
) -> Result<Vec<Unit>, crate::procedure::ProcedureError> {
    let mut out = Vec::new();
    let names: Vec<String> = catalog
        .names()
        .filter(|n| n.ends_with("-health"))
        .map(String::from)
        .collect();
    for name in names {
        let procedure = catalog.get(&name)?;
        let probes = own_probes(&procedure);
        if probes.is_empty() {
            continue;
        }
        if !options.only.is_empty() && !probes.iter().any(|p| any_match(&options.only, p)) {
            continue;
        }
        if procedure.param("node").is_some() {
            for node in inventory_nodes {
                if options.nodes.is_empty() || options.nodes.contains(node) {
                    out.push(Unit {
                        procedure: procedure.clone(),
                        node: Some(node.clone()),
                    });
                }
            }
        } else {
            out.push(Unit {
                procedure,
                node: None,
            });
        }
    }
    Ok(out)
}

/// The probe results of one finished run of `plan` on `engine`.
pub(crate) fn collect(
    engine: &Engine,
    plan: &Plan,
    procedure: &str,
    timed_out: bool,
    options: &StatusOptions,
) -> Vec<ProbeResult> {
    let (records, vars) = engine.results();
    let templates = Templates::new();
    let mut out = Vec::new();
    for leaf in plan.leaves() {
        let node = plan.node(leaf);
        let Some(probe) = &node.probe else { continue };
        if !options.only.is_empty() && !any_match(&options.only, &probe.name) {
            continue;
        }
        let ctx = engine.leaf_context(leaf);
        let node_name = ctx
            .get_attr("node")
            .ok()
            .and_then(|v| v.as_str().map(String::from));
        let record = records.get(&node.id).cloned().unwrap_or_default();
        let (state, finding, error) = verdict(&record, timed_out);
        let state = if any_match(&options.skip, &probe.name) {
            ProbeState::Skipped
        } else {
            state
        };
        let remedy = match (&probe.remedy, state) {
            (Some(r), ProbeState::Fail) => Some(render_remedy(r, &templates, &ctx)),
            _ => None,
        };
        out.push(ProbeResult {
            component: probe.name.split('/').next().unwrap_or_default().to_string(),
            name: probe.name.clone(),
            node: node_name,
            severity: probe.severity,
            state,
            finding,
            error,
            procedure: procedure.to_string(),
            phase: node.id.clone(),
            data: serde_json::Value::Object(vars.clone()),
            remedy,
        });
    }
    out
}

/// A probe's state from its record: completed passes; failed with a finding fails; failed
/// without one (the engine renders one for every failed probe) or never finished is unknown.
fn verdict(record: &PhaseRecord, timed_out: bool) -> (ProbeState, Option<String>, Option<String>) {
    match record.state {
        PhaseState::Completed => (ProbeState::Pass, None, None),
        PhaseState::Failed if is_missing_value(record) => (
            ProbeState::Unknown,
            Some("not checked: a phase it reads from failed".into()),
            record.error.clone(),
        ),
        PhaseState::Failed => (
            ProbeState::Fail,
            record.summary.clone().or_else(|| record.error.clone()),
            record.error.clone(),
        ),
        _ => (
            ProbeState::Unknown,
            Some(if timed_out {
                "not checked: the probes timed out".into()
            } else {
                "not checked".into()
            }),
            None,
        ),
    }
}

/// A check that could not evaluate because a value it reads was never captured (the phase
/// that captures it failed): the failure's kind says so.
fn is_missing_value(record: &PhaseRecord) -> bool {
    record.failure == Some(crate::plan::FailureKind::Render)
}

fn render_remedy(
    remedy: &Remedy,
    templates: &Templates,
    ctx: &crate::template::TemplateContext,
) -> RemedyView {
    match remedy {
        Remedy::Instruction(text) => RemedyView {
            procedure: None,
            params: BTreeMap::new(),
            command: None,
            instruction: Some(
                templates
                    .render(text, false, ctx)
                    .unwrap_or_else(|_| text.clone()),
            ),
        },
        Remedy::Procedure { procedure, with } => {
            let procedure = &templates
                .render(procedure, false, ctx)
                .unwrap_or_else(|_| procedure.clone());
            let params: BTreeMap<String, String> = with
                .iter()
                .map(|(k, v)| {
                    let value = templates
                        .render(v, false, ctx)
                        .unwrap_or_else(|_| v.clone());
                    (k.clone(), value)
                })
                .collect();
            let mut command = format!("medic start {procedure}");
            for (k, v) in &params {
                command.push_str(&format!(" --set {}", shell_word(&format!("{k}={v}"))));
            }
            command.push_str(" --dry-run");
            RemedyView {
                procedure: Some(procedure.clone()),
                params,
                command: Some(command),
                instruction: None,
            }
        }
    }
}

/// `word` as one shell word: as it is when only plain characters, else quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._,:/=@+-".contains(c));
    if plain {
        word.to_string()
    } else {
        shell_quote(word)
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, shell_word};

    #[test]
    fn remedy_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("node=cp-2"), "node=cp-2");
        assert_eq!(shell_word("node=a b"), "'node=a b'");
        assert_eq!(shell_word("x=$(rm)"), "'x=$(rm)'");
    }

    #[test]
    fn patterns_match_a_name_or_a_component() {
        assert!(matches("node/swap-off", "node/swap-off"));
        assert!(matches("node/", "node/swap-off"));
        assert!(matches("node/*", "node/swap-off"));
        assert!(matches("node", "node/swap-off"));
        assert!(!matches("node/swap", "node/swap-off"));
        assert!(!matches("etcd/", "node/swap-off"));
    }
}
