//! Template validation: templates that can never render, bad syntax, unknown filters, unsafe
//! shell placements and names no parameter, capture or loop item defines (with suggestions).

use std::collections::{BTreeSet, HashMap};

use super::super::{Procedure, BUILTIN_NAMES};
use crate::source::{closest, Diagnostic, Reader, TemplateKind};
use crate::template::Templates;

/// Templates that compile but can never render are refused at load, not when their phase
/// runs: tags that load other templates (a procedure's templates are single strings), macros
/// that call themselves, and templates that use no names at all yet fail (`{{ 1 // 0 }}`).
pub(in crate::procedure) fn validate_renderable(r: &mut Reader) {
    static TAG: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        regex::Regex::new(r"\{%[-+]?\s*(include|extends|import|from)\b").expect("valid")
    });
    let templates = Templates::new();
    let mut found = Vec::new();
    for use_ in &r.templates {
        let is_jinja = use_.kind == TemplateKind::Expression
            || use_.source.contains("{{")
            || use_.source.contains("{%");
        if !is_jinja {
            continue;
        }
        let at = |offset: usize| {
            let mut location = use_.location.clone();
            location.line += use_.source[..offset].matches('\n').count();
            location
        };
        let mut refused = false;
        for cap in tag.captures_iter(&use_.source) {
            refused = true;
            let word = &cap[1];
            found.push(Diagnostic {
                location: Some(at(cap.get(0).map(|m| m.start()).unwrap_or(0))),
                message: format!(
                    "bad template: `{{% {word} %}}` can never render here: procedure templates are single strings with no other templates to load; to reuse phases, use an `include:` phase"
                ),
            });
        }
        if let Some((cycle, offset)) = recursive_macro(&use_.source) {
            refused = true;
            found.push(Diagnostic {
                location: Some(at(offset)),
                message: format!(
                    "bad template: macro `{}` calls itself ({}); recursive macros are not supported in procedure templates, write the steps out",
                    cycle[0],
                    cycle.join(" → ")
                ),
            });
        }
        if refused {
            continue;
        }
        // A template that uses no names renders the same now as when its phase runs.
        let empty = minijinja::Value::from(());
        let result = match use_.kind {
            TemplateKind::Expression => match templates.expression_names(&use_.source) {
                Ok(names) if names.is_empty() => templates.eval(&use_.source, &empty).err(),
                _ => None,
            },
            kind => {
                let shell = kind == TemplateKind::Shell;
                match templates.template_names(&use_.source, shell) {
                    Ok(names) if names.is_empty() => {
                        templates.render(&use_.source, shell, &empty).err()
                    }
                    _ => None,
                }
            }
        };
        if let Some(e) = result {
            let mut location = use_.location.clone();
            if let Some(line) = e.line.filter(|l| *l > 1) {
                location.line += line - 1;
            }
            found.push(Diagnostic {
                location: Some(location),
                message: format!(
                    "bad template: it uses no names, yet it can never render: {}",
                    e.message
                ),
            });
        }
    }
    r.diagnostics.extend(found);
}

/// A macro that calls itself, directly or through other macros of the same template: the
/// names on the cycle and where the first one is defined.
pub(in crate::procedure) fn recursive_macro(source: &str) -> Option<(Vec<String>, usize)> {
    static MACRO: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = MACRO.get_or_init(|| {
        regex::Regex::new(r"\{%[-+]?\s*macro\s+([A-Za-z_][A-Za-z0-9_]*)").expect("valid")
    });
    static END: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let end = END.get_or_init(|| regex::Regex::new(r"\{%[-+]?\s*endmacro\b").expect("valid"));
    // Each macro's body runs from its tag to the next `endmacro` (nested macros are rare in a
    // command line; a nested one only widens the body, which can only find more calls).
    let macros: Vec<(String, usize, &str)> = re
        .captures_iter(source)
        .map(|c| {
            let whole = c.get(0).expect("match");
            let rest = &source[whole.end()..];
            let body = match end.find(rest) {
                Some(m) => &rest[..m.start()],
                None => rest,
            };
            (c[1].to_string(), whole.start(), body)
        })
        .collect();
    let calls = |body: &str, name: &str| {
        let call = format!("{name}(");
        body.match_indices(&call).any(|(i, _)| {
            !body[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
    };
    for (name, offset, _) in &macros {
        // Breadth-first over "calls", back to `name`.
        let mut prev: HashMap<&str, &str> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([name.as_str()]);
        while let Some(current) = queue.pop_front() {
            let Some((_, _, body)) = macros.iter().find(|m| m.0 == current) else {
                continue;
            };
            for (callee, _, _) in &macros {
                if !calls(body, callee) {
                    continue;
                }
                if callee == name {
                    let mut cycle = vec![current.to_string()];
                    let mut at = current;
                    while at != name.as_str() {
                        at = prev[at];
                        cycle.push(at.to_string());
                    }
                    cycle.reverse();
                    cycle.push(name.clone());
                    return Some((cycle, *offset));
                }
                if !prev.contains_key(callee.as_str()) {
                    prev.insert(callee.as_str(), current);
                    queue.push_back(callee.as_str());
                }
            }
        }
    }
    None
}

/// Every template compiles and uses only names the procedure defines. Returns every name the
/// file's templates use (what `medic procedures lint` checks parameters against).
pub(in crate::procedure) fn validate_templates(
    procedure: &Procedure,
    r: &mut Reader,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let templates = Templates::new();
    let mut known: BTreeSet<String> = procedure.params.iter().map(|p| p.name.clone()).collect();
    let captures = procedure.capture_names();
    for c in &captures {
        if known.contains(c) {
            let loc = procedure.param(c).map(|p| p.location.clone());
            r.diagnostics.push(Diagnostic {
                location: loc,
                message: format!("`{c}` is both a parameter and a captured variable; rename one"),
            });
        }
    }
    for (name, location) in &r.loop_names {
        if captures.contains(name) {
            r.diagnostics.push(Diagnostic {
                location: Some(location.clone()),
                message: format!("the foreach item `{name}` hides the captured variable `{name}` inside its phase; name the item something else with `as:`"),
            });
        }
    }
    known.extend(captures);
    known.extend(BUILTIN_NAMES.iter().map(|s| s.to_string()));
    for use_ in std::mem::take(&mut r.templates) {
        // A template that does not compile is reported below; its placements cannot be judged.
        if use_.kind == TemplateKind::Shell && templates.template_names(&use_.source, true).is_ok()
        {
            for problem in crate::shell_placement::check(&use_.source) {
                let mut location = use_.location.clone();
                location.line += use_.source[..problem.offset].matches('\n').count();
                r.diagnostics.push(Diagnostic {
                    location: Some(location),
                    message: problem.message,
                });
            }
        }
        let names = match use_.kind {
            TemplateKind::Expression => templates.expression_names(&use_.source),
            TemplateKind::Text => templates.template_names(&use_.source, false),
            TemplateKind::Shell => templates.template_names(&use_.source, true),
        };
        match names {
            Err(e) => {
                let mut location = use_.location.clone();
                if let Some(line) = e.line.filter(|l| *l > 1) {
                    location.line += line - 1;
                }
                r.diagnostics.push(Diagnostic {
                    location: Some(location),
                    message: format!("bad template: {}", e.message),
                });
            }
            Ok(_)
                if !templates
                    .unknown_filters_and_tests(&use_.source, use_.kind == TemplateKind::Expression)
                    .is_empty() =>
            {
                for problem in templates
                    .unknown_filters_and_tests(&use_.source, use_.kind == TemplateKind::Expression)
                {
                    r.diagnostics.push(Diagnostic {
                        location: Some(use_.location.clone()),
                        message: format!("bad template: {problem}"),
                    });
                }
            }
            Ok(names) => {
                used.extend(names.iter().cloned());
                for name in names {
                    if known.contains(&name) || use_.locals.contains(&name) {
                        continue;
                    }
                    let candidates: Vec<&str> = known
                        .iter()
                        .map(|s| s.as_str())
                        .chain(use_.locals.iter().map(|s| s.as_str()))
                        .collect();
                    let hint = match closest(&name, candidates.iter().copied()) {
                        Some(c) => format!("; did you mean `{c}`?"),
                        None => "; declare it under `params:` or capture it in an earlier phase"
                            .to_string(),
                    };
                    r.diagnostics.push(Diagnostic {
                        location: Some(use_.location.clone()),
                        message: format!("template uses undefined name `{name}`{hint}"),
                    });
                }
            }
        }
    }
    used
}
