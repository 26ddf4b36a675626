//! Includes: loading each included procedure as an `include:` phase's children, and checking
//! the binding (known and required parameters, no secrets, relative requires, no captures).

use std::collections::BTreeSet;

use super::params::unknown_param_hint;
use super::{walk, PhaseSpec, Procedure, ProcedureError};
use crate::source::{Diagnostic, Reader};
use crate::template::Templates;

/// Loads every included procedure and makes its phases the include phase's children,
/// checking the binding: known parameters, required ones given, no secrets, relative requires.
/// An included procedure over the phase limit stops it at once (`Err(limit)`): the includer
/// is over the limit too.
pub(super) fn resolve_includes(
    phases: &mut [PhaseSpec],
    load: &mut dyn FnMut(&str) -> Result<Procedure, ProcedureError>,
    r: &mut Reader,
) -> Result<(), usize> {
    for phase in phases.iter_mut() {
        let Some(inc) = &mut phase.include else {
            resolve_includes(&mut phase.children, load, r)?;
            continue;
        };
        let what = format!("phase `{}`", phase.id);
        let here = Some(inc.location.clone());
        let included = match load(&inc.procedure) {
            Ok(p) => p,
            Err(e) => {
                let message = load_failure(e, &what, &inc.procedure, r)?;
                r.diagnostics.push(Diagnostic {
                    location: here,
                    message,
                });
                continue;
            }
        };
        let secrets: Vec<&str> = included
            .params
            .iter()
            .filter(|p| p.secret)
            .map(|p| p.name.as_str())
            .collect();
        if !secrets.is_empty() {
            r.diagnostics.push(Diagnostic {
                location: here.clone(),
                message: format!(
                    "{what}: procedure `{}` has secret parameters ({}); including a procedure with secret parameters is not supported, run it on its own",
                    inc.procedure,
                    secrets.join(", ")
                ),
            });
        }
        for (key, _, loc) in &inc.with {
            if included.param(key).is_none() {
                let hint = unknown_param_hint(&included.params, key);
                r.diagnostics.push(Diagnostic {
                    location: Some(loc.clone()),
                    message: format!(
                        "{what}: procedure `{}` has no parameter `{key}`{hint}",
                        inc.procedure
                    ),
                });
            }
        }
        for p in &included.params {
            if p.required && p.default.is_none() && !inc.with.iter().any(|w| w.0 == p.name) {
                r.diagnostics.push(Diagnostic {
                    location: here.clone(),
                    message: format!(
                        "{what}: procedure `{}` needs its required parameter `{}`; add `with: {{{}: ...}}`",
                        inc.procedure, p.name, p.name
                    ),
                });
            }
        }
        walk(&included.phases, &mut |p| {
            for (req, loc) in &p.requires {
                if req.starts_with('/') {
                    r.diagnostics.push(Diagnostic {
                        location: here.clone(),
                        message: format!(
                            "{what}: procedure `{}` cannot be included: it requires `{req}` by absolute path (at {loc}); inside an include only relative requires (a sibling's id) keep their meaning",
                            inc.procedure
                        ),
                    });
                }
            }
        });
        inc.params = included.params;
        inc.approval = included.approval;
        phase.children = included.phases;
    }
    Ok(())
}

/// Why `procedure`, included by `what`, could not be loaded. Its own problems are reported
/// too, each once however often it is included. Over the phase limit, the limit (`Err`).
fn load_failure(
    e: ProcedureError,
    what: &str,
    procedure: &str,
    r: &mut Reader,
) -> Result<String, usize> {
    Ok(match e {
        ProcedureError::Unknown { name, hint } => {
            format!("{what} includes unknown procedure `{name}`{hint}")
        }
        ProcedureError::IncludeCycle(chain) => format!(
            "{what}: include cycle: {} (a procedure cannot include itself)",
            chain.join(" → ")
        ),
        ProcedureError::Read { path, source } => format!(
            "{what}: cannot read included procedure {}: {source}",
            path.display()
        ),
        ProcedureError::TooManyPhases { limit, .. } => return Err(limit),
        ProcedureError::Invalid(diags) => {
            for d in diags {
                if !r.diagnostics.contains(&d) {
                    r.diagnostics.push(d);
                }
            }
            format!("{what}: included procedure `{procedure}` has problems (listed here too)")
        }
    })
}

/// `with:` values are bound when the plan is built: they cannot use values captured at run
/// time, nor secrets (the bound values are stored in the plan).
pub(super) fn validate_includes(procedure: &Procedure, r: &mut Reader) {
    fn visit(
        phases: &[PhaseSpec],
        procedure: &Procedure,
        captures: &BTreeSet<String>,
        templates: &Templates,
        r: &mut Reader,
    ) {
        for phase in phases {
            let Some(inc) = &phase.include else {
                visit(&phase.children, procedure, captures, templates, r);
                continue;
            };
            // The included phases were checked when their own procedure was loaded.
            for (key, source, loc) in &inc.with {
                for name in templates.template_names(source, false).unwrap_or_default() {
                    let why = if captures.contains(&name) {
                        "a value captured at run time"
                    } else if procedure.param(&name).is_some_and(|p| p.secret) {
                        "a secret parameter"
                    } else {
                        continue;
                    };
                    r.diagnostics.push(Diagnostic {
                        location: Some(loc.clone()),
                        message: format!(
                            "phase `{}`: include `with: {key}` uses `{name}`, {why}; included parameters are bound when the plan is built and stored in it"
                            , phase.id
                        ),
                    });
                }
            }
        }
    }
    let templates = Templates::new();
    visit(
        &procedure.phases,
        procedure,
        &procedure.capture_names(),
        &templates,
        r,
    );
}
