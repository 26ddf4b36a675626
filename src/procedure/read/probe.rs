//! Reading what a phase means to `medic status`: `probe:` (a stable name, a severity, a
//! one-line finding and an optional remedy) and `may_fail:` (a failure is recorded, and the run
//! goes on).
//!
//! ```yaml
//! probe:
//!   name: node/kubelet-active
//!   severity: critical                 # or warning
//!   finding: "{{ node }}: kubelet {{ facts.kubelet }}"
//!   remedy: {procedure: restart-kubelet, with: {node: "{{ node }}"}}   # or a plain instruction
//! may_fail: true
//! ```

use std::collections::BTreeMap;

use marked_yaml::Node;

use crate::plan::{Probe, Remedy, Severity};
use crate::procedure::PhaseSpec;
use crate::source::{start_span, Fields, Reader, TemplateKind};

/// The keys of `probe:`, for the loader and the JSON Schema.
pub(crate) const PROBE_KEYS: &[&str] = &["name", "severity", "finding", "remedy"];

/// `probe:` and `may_fail:` of a phase with an action (`has_action`).
pub(super) fn read_probe(
    fields: &Fields<'_>,
    spec: &mut PhaseSpec,
    has_action: bool,
    what: &str,
    r: &mut Reader,
) {
    if let Some(n) = fields.get("may_fail") {
        spec.may_fail = r.bool(n, &format!("{what}: may_fail")).unwrap_or(false);
        if !has_action {
            r.error(
                &start_span(n),
                format!("{what}: `may_fail:` applies to a phase with an action; put it on the phases inside"),
            );
        }
    }
    let Some(n) = fields.get("probe") else {
        return;
    };
    if !has_action {
        r.error(
            &start_span(n),
            format!("{what}: `probe:` describes a phase with an action (a check, an ssh command, ...), not a group"),
        );
        return;
    }
    spec.probe = read_probe_fields(n, what, r);
}

fn read_probe_fields(n: &Node, what: &str, r: &mut Reader) -> Option<Probe> {
    let fields = Fields::new(n, &format!("{what} probe"), PROBE_KEYS, r)?;
    let name = match fields.get("name") {
        Some(n) => {
            let s = r.string(n, "probe.name")?;
            if !valid_probe_name(s.as_str()) {
                r.error(
                    &start_span(n),
                    format!(
                        "{what}: probe name `{}` must be a component and a check, lowercase, such as `node/kubelet-active`",
                        s.as_str()
                    ),
                );
            }
            s.as_str().to_string()
        }
        None => {
            r.error(
                fields.span(),
                format!(
                    "{what}: `probe:` needs `name:`, a stable name such as `node/kubelet-active`"
                ),
            );
            return None;
        }
    };
    let severity = match fields.get("severity") {
        Some(n) => match r.scalar(n, "probe.severity")?.as_str() {
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => {
                r.error(
                    &start_span(n),
                    format!("{what}: probe severity `{other}` must be `warning` or `critical`"),
                );
                return None;
            }
        },
        None => {
            r.error(
                fields.span(),
                format!("{what}: `probe:` needs `severity:`, `warning` or `critical`"),
            );
            return None;
        }
    };
    let finding = match fields.get("finding") {
        Some(n) => {
            let s = r.scalar(n, "probe.finding")?;
            // The finding also sees the phase's error (`engine/probe.rs`).
            r.locals.push("error".into());
            let finding = r.template(s, TemplateKind::Text);
            r.locals.pop();
            finding
        }
        None => {
            r.error(
                fields.span(),
                format!(
                    "{what}: `probe:` needs `finding:`, one line saying what is wrong (a template)"
                ),
            );
            return None;
        }
    };
    let remedy = match fields.get("remedy") {
        Some(n) => Some(read_remedy(n, what, r)?),
        None => None,
    };
    Some(Probe {
        name,
        severity,
        finding,
        remedy,
    })
}

/// `remedy: "instruction"` or `remedy: {procedure: NAME, with: {param: "template"}}`.
fn read_remedy(n: &Node, what: &str, r: &mut Reader) -> Option<Remedy> {
    if let Node::Scalar(s) = n {
        return Some(Remedy::Instruction(r.template(s, TemplateKind::Text)));
    }
    let fields = Fields::new(n, &format!("{what} remedy"), &["procedure", "with"], r)?;
    let Some(p) = fields.get("procedure") else {
        r.error(
            fields.span(),
            format!("{what}: a remedy needs `procedure:` (a procedure that repairs it), or is a plain instruction"),
        );
        return None;
    };
    // A template: the remedy may depend on the node (a control-plane or a worker node).
    let name = r.scalar(p, "remedy.procedure")?;
    let procedure = r.template(name, TemplateKind::Text);
    let mut with = BTreeMap::new();
    if let Some(w) = fields.get("with") {
        let Node::Mapping(map) = w else {
            r.error(
                &start_span(w),
                format!("{what}: remedy `with:` maps parameter names to values, e.g. `with: {{node: \"{{{{ node }}}}\"}}`"),
            );
            return None;
        };
        for (k, v) in map.iter() {
            let s = r.scalar(v, "remedy.with")?;
            with.insert(k.as_str().to_string(), r.template(s, TemplateKind::Text));
        }
    }
    Some(Remedy::Procedure { procedure, with })
}

/// `component/check`, lowercase letters, digits and `-`, each part non-empty.
pub(crate) fn valid_probe_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::valid_probe_name;
    use crate::plan::{Remedy, Severity};
    use crate::procedure::Procedure;

    fn errors(text: &str) -> String {
        match Procedure::parse("p.yaml", text, None) {
            Ok(_) => panic!("loaded:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_probe_is_read_with_its_remedy() {
        let p = Procedure::parse(
            "p.yaml",
            "name: p\nparams: {node: {default: n1}}\nphases:\n  - id: a\n    check: \"{{ false }}\"\n    may_fail: true\n    probe: {name: node/x, severity: warning, finding: \"{{ node }}: {{ error }}\", remedy: {procedure: fix, with: {node: \"{{ node }}\"}}}\n",
            None,
        )
        .unwrap();
        let phase = &p.phases[0];
        assert!(phase.may_fail);
        let probe = phase.probe.as_ref().unwrap();
        assert_eq!(probe.severity, Severity::Warning);
        assert!(
            matches!(&probe.remedy, Some(Remedy::Procedure { procedure, with }) if procedure == "fix" && with["node"] == "{{ node }}")
        );
    }

    #[test]
    fn bad_probes_are_refused_with_their_position() {
        let e = errors("name: p\nphases:\n  - id: a\n    check: x\n    probe: {name: x, severity: fatal, finding: f}\n");
        assert!(
            e.contains("p.yaml:5:19: phase `a`: probe name `x` must be a component and a check"),
            "{e}"
        );
        assert!(
            e.contains(
                "p.yaml:5:32: phase `a`: probe severity `fatal` must be `warning` or `critical`"
            ),
            "{e}"
        );
        let e = errors("name: p\nphases:\n  - id: g\n    probe: {name: a/b, severity: warning, finding: f}\n    phases: [{id: a, check: x}]\n");
        assert!(
            e.contains("p.yaml:4:12: phase `g`: `probe:` describes a phase with an action"),
            "{e}"
        );
        let e = errors("name: p\nphases:\n  - id: a\n    check: x\n    probe: {name: a/b, severity: warning}\n");
        assert!(e.contains("needs `finding:`"), "{e}");
        let e = errors("name: p\nphases:\n  - id: a\n    check: x\n    probe: {name: a/b, severity: warning, finding: \"{{ nope }}\"}\n");
        assert!(e.contains("undefined name `nope`"), "{e}");
        let e = errors("name: p\nphases:\n  - id: a\n    check: x\n    probe: {name: a/b, severity: warning, finding: f, remedy: {with: {}}}\n");
        assert!(e.contains("a remedy needs `procedure:`"), "{e}");
    }

    #[test]
    fn probe_names_are_component_and_check() {
        assert!(valid_probe_name("node/kubelet-active"));
        assert!(valid_probe_name("site/db/replication"));
        assert!(!valid_probe_name("kubelet"));
        assert!(!valid_probe_name("Node/x"));
        assert!(!valid_probe_name("node/"));
    }
}
