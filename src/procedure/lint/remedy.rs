//! The `unknown-remedy` warning: a probe's remedy names a procedure the catalog lacks (a
//! remedy whose name is a template is checked when `medic status` prints it, not here).

use super::rules::{LintCode, Warning};
use crate::plan::Remedy;
use crate::procedure::{PhaseSpec, Procedure};

/// A warning for each probe of `procedure`'s own phases whose remedy procedure is not one of
/// `known`.
pub(crate) fn unknown_remedies(procedure: &Procedure, known: &[&str]) -> Vec<Warning> {
    fn walk(phases: &[PhaseSpec], known: &[&str], out: &mut Vec<Warning>) {
        for p in phases {
            let remedy = p.probe.as_ref().and_then(|probe| probe.remedy.as_ref());
            if let Some(Remedy::Procedure { procedure, .. }) = remedy {
                if !procedure.contains("{{") && !known.contains(&procedure.as_str()) {
                    out.push(Warning {
                        code: LintCode::UnknownRemedy,
                        location: p.location.clone(),
                        message: format!(
                            "phase `{}`: its probe's remedy names procedure `{procedure}`, which is not in the catalog (`medic procedures` lists them)",
                            p.id
                        ),
                    });
                }
            }
            if p.include.is_none() {
                walk(&p.children, known, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&procedure.phases, known, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::unknown_remedies;
    use crate::procedure::Procedure;

    #[test]
    fn a_remedy_naming_no_procedure_of_the_catalog_is_a_warning() {
        let p = Procedure::parse(
            "p.yaml",
            "name: p\nphases:\n  - id: a\n    check: true\n    probe: {name: a/b, severity: warning, finding: f, remedy: {procedure: fix-it}}\n  - id: b\n    check: true\n    probe: {name: a/c, severity: warning, finding: f, remedy: \"{{ 'fix-it' }}\"}\n",
            None,
        )
        .unwrap();
        let warnings = unknown_remedies(&p, &["p"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].code.as_str(), "unknown-remedy");
        assert_eq!(warnings[0].location.line, 3);
        assert!(unknown_remedies(&p, &["fix-it"]).is_empty());
    }
}
