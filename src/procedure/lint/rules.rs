//! Lint warnings for procedure authors (`medic procedures lint`): pure functions over a procedure
//! the loader has already validated. The loader's errors are the errors; these are the things
//! that load fine but that a reviewer would ask about.
//!
//! 1. [`lint`] walks the phases this file defines (an `include:` phase's children belong to the
//!    included file and are linted there), sequential groups in order.
//! 2. Each rule is a function that pushes [`Warning`]s with a stable [`LintCode`].
//! 3. Warnings are returned sorted by position; the CLI only prints them.

use std::collections::BTreeSet;

use crate::action::etcd::EtcdOp;
use crate::action::kube::KubeSpec;
use crate::action::ActionSpec;
use crate::procedure::{walk, PhaseSpec, Procedure};
use crate::source::Location;
use crate::template::Templates;

/// What a warning is about; the string form is stable (CI and editors match on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LintCode {
    DestructiveWithoutCheck,
    MissingDescription,
    Irreversible,
    UnusedParam,
    SecretInDescription,
    UnknownRemedy,
}

impl LintCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LintCode::DestructiveWithoutCheck => "destructive-without-check",
            LintCode::MissingDescription => "missing-description",
            LintCode::Irreversible => "irreversible",
            LintCode::UnusedParam => "unused-param",
            LintCode::SecretInDescription => "secret-in-description",
            LintCode::UnknownRemedy => "unknown-remedy",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Warning {
    pub(crate) code: LintCode,
    pub(crate) location: Location,
    pub(crate) message: String,
}

/// Every warning for one procedure, in file order.
pub(crate) fn lint(procedure: &Procedure) -> Vec<Warning> {
    let mut out = Vec::new();
    destructive_without_check(&procedure.phases, &mut out);
    each_own_phase(&procedure.phases, &mut |p| {
        missing_description(p, &mut out);
        irreversible(p, &mut out);
        secret_in_description(procedure, p, &mut out);
    });
    unused_params(procedure, &mut out);
    out.sort_by(|a, b| {
        (a.location.line, a.location.column, a.code).cmp(&(
            b.location.line,
            b.location.column,
            b.code,
        ))
    });
    out
}

/// The phases this file defines: an include's children come from another file.
fn each_own_phase<'a>(phases: &'a [PhaseSpec], f: &mut dyn FnMut(&'a PhaseSpec)) {
    for p in phases {
        f(p);
        if p.include.is_none() {
            each_own_phase(&p.children, f);
        }
    }
}

fn warn(out: &mut Vec<Warning>, code: LintCode, phase: &PhaseSpec, message: String) {
    out.push(Warning {
        code,
        location: phase.location.clone(),
        message,
    });
}

fn missing_description(p: &PhaseSpec, out: &mut Vec<Warning>) {
    if p.description.as_deref().is_none_or(|d| d.trim().is_empty()) {
        warn(
            out,
            LintCode::MissingDescription,
            p,
            format!(
                "phase `{}` has no description; add `description:`, which operators read in the plan and in reviews",
                p.id
            ),
        );
    }
}

/// A phase that is not safe to run twice and has no rollback: after a failure further on,
/// nothing undoes it, and after an interruption it cannot simply be run again.
fn irreversible(p: &PhaseSpec, out: &mut Vec<Warning>) {
    let Some(action) = &p.action else { return };
    let idempotent = p.idempotent.unwrap_or_else(|| action.default_idempotent());
    if !idempotent && p.rollback.is_none() {
        warn(
            out,
            LintCode::Irreversible,
            p,
            format!(
                "phase `{}` ({}) is not idempotent and has no rollback; add `rollback:`, or `idempotent: true` if running it again is safe",
                p.id,
                action.kind()
            ),
        );
    }
}

/// Names a template uses; a template that does not compile was reported by the loader.
fn text_names(source: &str) -> BTreeSet<String> {
    Templates::new()
        .template_names(source, false)
        .unwrap_or_default()
}

/// A secret parameter in a description: the plan renders it as `<secret:NAME>` (descriptions
/// are for reading, and a secret must not reach the plan, exports or history), so the author
/// meant to show something that will never be shown.
fn secret_in_description(procedure: &Procedure, p: &PhaseSpec, out: &mut Vec<Warning>) {
    let Some(description) = &p.description else {
        return;
    };
    for name in text_names(description) {
        if procedure.param(&name).is_some_and(|param| param.secret) {
            warn(
                out,
                LintCode::SecretInDescription,
                p,
                format!(
                    "phase `{}` puts the secret parameter `{name}` in its description, where the plan shows `<secret:{name}>` instead; describe the step without the secret",
                    p.id
                ),
            );
        }
    }
}

fn unused_params(procedure: &Procedure, out: &mut Vec<Warning>) {
    let mut used = procedure.template_names.clone();
    walk(&procedure.phases, &mut |p| {
        for expr in p.capture.values() {
            used.extend(Templates::new().expression_names(expr).unwrap_or_default());
        }
    });
    for param in &procedure.params {
        if !used.contains(&param.name) {
            out.push(Warning {
                code: LintCode::UnusedParam,
                location: param.location.clone(),
                message: format!(
                    "parameter `{}` is never used in a template; use it, or remove it",
                    param.name
                ),
            });
        }
    }
}

/// What a destructive action does, for the message; `None` for anything else.
///
/// Only actions whose damage is clear from the procedure count: deleting a Node, removing or
/// adding an etcd member, and a drain that bypasses disruption budgets (`force`,
/// `disable_eviction`). A plain drain evicts through the eviction API, where every
/// PodDisruptionBudget is checked by the cluster itself, and the cordon's uncordon undoes it.
/// Shell commands are judged only for the same operations spelled with kubectl or etcdctl.
fn destructive(action: &ActionSpec) -> Option<&'static str> {
    static SHELL: std::sync::OnceLock<[(regex::Regex, &'static str); 3]> =
        std::sync::OnceLock::new();
    let shell = SHELL.get_or_init(|| {
        let re = |s: &str| regex::Regex::new(s).expect("valid");
        [
            (re(r"\bkubectl\b[^|;&]*\sdelete\b"), "runs kubectl delete"),
            (
                re(r"\bkubectl\b[^|;&]*\sdrain\b[^|;&]*--(force|disable-eviction)\b"),
                "runs kubectl drain bypassing disruption budgets",
            ),
            (
                re(r"\betcdctl\b[^|;&]*\smember\s+(remove|add)\b"),
                "changes the etcd membership with etcdctl",
            ),
        ]
    });
    let command = match action {
        ActionSpec::Kube(KubeSpec::DeleteNode(_)) => return Some("deletes a Node object"),
        ActionSpec::Kube(KubeSpec::Drain(d)) if d.force || d.disable_eviction => {
            return Some("drains a node bypassing disruption budgets (force or disable_eviction)")
        }
        ActionSpec::Etcd(e) => {
            return match e.op {
                EtcdOp::MemberRemove { .. } => Some("removes an etcd member"),
                EtcdOp::MemberAdd { .. } => Some("adds an etcd member"),
                _ => None,
            }
        }
        ActionSpec::Ssh(s) => &s.run,
        ActionSpec::Run(r) => &r.command,
        _ => return None,
    };
    shell
        .iter()
        .find(|(re, _)| re.is_match(command))
        .map(|(_, what)| *what)
}

/// Whether the phase is, or contains, a `check`.
fn has_check(p: &PhaseSpec) -> bool {
    matches!(p.action, Some(ActionSpec::Check(_))) || p.children.iter().any(has_check)
}

/// A destructive phase needs a `check` that runs before it: in an earlier sibling of a
/// sequential group (at its own level or around any group that encloses it), in a phase it or
/// an enclosing group `requires`, or its own `when:` condition.
fn destructive_without_check(top: &[PhaseSpec], out: &mut Vec<Warning>) {
    walk_level(top, top, false, false, out);
}

/// One level of phases (`parallel`: a parallel group's); `guarded`: a check runs before the
/// group that holds them.
fn walk_level(
    top: &[PhaseSpec],
    phases: &[PhaseSpec],
    parallel: bool,
    guarded: bool,
    out: &mut Vec<Warning>,
) {
    let mut seen_check = false;
    for p in phases {
        let required_check = p.requires.iter().any(|(target, _)| {
            let target = if target.starts_with('/') {
                find_by_path(top, target)
            } else {
                phases.iter().find(|s| s.id == *target)
            };
            target.is_some_and(has_check)
        });
        let here = guarded || seen_check || required_check;
        if let Some(action) = &p.action {
            if let Some(what) = destructive(action).filter(|_| !here && p.when.is_none()) {
                warn(
                    out,
                    LintCode::DestructiveWithoutCheck,
                    p,
                    format!(
                        "phase `{}` {what}, and no `check` phase runs before it; add one earlier in its group that confirms it is safe (or give it a `when:`)",
                        p.id
                    ),
                );
            }
        }
        if p.include.is_none() && !p.children.is_empty() {
            walk_level(top, &p.children, p.parallel, here, out);
        }
        // In a parallel group siblings are not ordered: an earlier one is not "before".
        if !parallel && has_check(p) {
            seen_check = true;
        }
    }
}

/// The phase at a `requires` path written from the top (`/checks/quorum`), when it is one.
fn find_by_path<'a>(top: &'a [PhaseSpec], path: &str) -> Option<&'a PhaseSpec> {
    let mut level = top;
    let mut found = None;
    for segment in path.strip_prefix('/')?.split('/') {
        let p = level.iter().find(|p| p.id == segment)?;
        found = Some(p);
        level = &p.children;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes `lint` gives for one procedure with these phases.
    fn codes(phases: &str) -> Vec<&'static str> {
        let yaml = format!("name: p\ndescription: t\nphases:\n{phases}");
        let procedure = Procedure::parse("p.yaml", &yaml, None).expect("a valid procedure");
        lint(&procedure).iter().map(|w| w.code.as_str()).collect()
    }

    #[test]
    fn shell_commands_that_count_as_destructive() {
        let cases = [
            ("kubectl delete node n1", true),
            ("kubectl --context prod delete pod p", true),
            ("kubectl get pods -o name | grep delete", false),
            ("kubectl drain n1 --ignore-daemonsets", false),
            ("kubectl drain n1 --ignore-daemonsets --force", true),
            ("kubectl drain n1 --disable-eviction", true),
            ("etcdctl member remove 8e9e05c52164694d", true),
            (
                "etcdctl member add n4 --peer-urls=https://10.0.0.4:2380",
                true,
            ),
            ("etcdctl member list -w json", false),
            ("systemctl restart kubelet", false),
        ];
        for (command, destructive) in cases {
            let phases = format!(
                "  - id: step\n    description: a step\n    idempotent: true\n    run: \"{command}\"\n"
            );
            let expected: Vec<&str> = if destructive {
                vec!["destructive-without-check"]
            } else {
                vec![]
            };
            assert_eq!(codes(&phases), expected, "{command}");
        }
    }

    #[test]
    fn a_check_guards_later_phases_at_every_enclosing_level() {
        let check = "  - id: ok\n    description: ok\n    check: {that: \"{{ 1 == 1 }}\"}\n";
        let delete = "      - id: del\n        description: del\n        idempotent: true\n        run: \"kubectl delete node n1\"\n";
        let group = format!("  - id: g\n    description: g\n    phases:\n{delete}");
        assert_eq!(codes(&format!("{check}{group}")), Vec::<&str>::new());
        assert_eq!(
            codes(&format!("{group}{check}")),
            vec!["destructive-without-check"],
            "a check after it does not guard it"
        );
    }
}
