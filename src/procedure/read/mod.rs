//! Reading a procedure file: the YAML document, the top-level keys, then `params:` and
//! `phases:` (one file per concern of a phase), collecting every problem in the [`Reader`].

mod action;
mod approval;
mod capture;
mod common;
mod confirm;
mod foreach;
mod include;
mod params;
mod phase;
pub(crate) mod probe;
mod retry;
mod rollback;

use marked_yaml::{LoaderOptions, Node};

use params::read_params;
use phase::read_phases;

use super::include::{resolve_includes, validate_includes};
use super::validate::templates::{validate_renderable, validate_templates};
use super::validate::{validate_capture_order, validate_graph};
use super::{Procedure, ProcedureError};
use crate::source::{self, start_span, Diagnostic, Fields, Location, Reader};

/// How deep groups may nest; far beyond any real procedure, and keeps parsing bounded.
const MAX_DEPTH: usize = 32;

impl Procedure {
    /// Parses and validates one procedure file that includes no other; `file` labels messages.
    pub fn parse(
        file: &str,
        text: &str,
        expected_name: Option<&str>,
    ) -> Result<Procedure, ProcedureError> {
        Self::parse_with(file, text, expected_name, &mut |name| {
            Err(ProcedureError::Unknown {
                name: name.to_string(),
                hint: " (includes are resolved through the catalog)".into(),
            })
        })
    }

    /// Parses and validates one procedure file; `include` loads the procedures it includes.
    pub(crate) fn parse_with(
        file: &str,
        text: &str,
        expected_name: Option<&str>,
        include: &mut dyn FnMut(&str) -> Result<Procedure, ProcedureError>,
    ) -> Result<Procedure, ProcedureError> {
        let mut reader = Reader::new(file);
        // YAML allows a byte-order mark; some editors write one.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Quoted and plain scalars are told apart, so `id: 42` is seen as a number.
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                let mut diag = load_error(file, text, &e);
                if let Some(loc) = &mut diag.location {
                    source::clamp_to_text(loc, text);
                }
                return Err(ProcedureError::Invalid(vec![diag]));
            }
        };
        if let Some(line) = source::second_document(text) {
            reader.diagnostics.push(Diagnostic {
                location: Some(Location {
                    file: file.to_string(),
                    line,
                    column: 1,
                }),
                message: "a second YAML document starts here; a procedure file holds one document: remove the `---` (or `...`) line, or move what follows to its own file".into(),
            });
        }
        let mut procedure = read_procedure(&root, &mut reader, expected_name);
        if let Some(p) = &mut procedure {
            if let Err(limit) = resolve_includes(&mut p.phases, include, &mut reader) {
                return Err(ProcedureError::TooManyPhases {
                    procedure: p.name.clone(),
                    limit,
                });
            }
            validate_includes(p, &mut reader);
            if let Some(graph) = validate_graph(p, &mut reader) {
                validate_capture_order(p, &graph, &mut reader);
            }
            validate_renderable(&mut reader);
            p.template_names = validate_templates(p, &mut reader);
        }
        if !reader.diagnostics.is_empty() || procedure.is_none() {
            let mut diags = reader.diagnostics;
            for d in &mut diags {
                if let Some(loc) = d.location.as_mut().filter(|l| l.file == file) {
                    source::clamp_to_text(loc, text);
                }
            }
            diags.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
            return Err(ProcedureError::Invalid(diags));
        }
        Ok(procedure.expect("checked above"))
    }
}

fn load_error(file: &str, text: &str, e: &marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError::*;
    let (marker, message) = match e {
        TopLevelMustBeMapping(m) => (
            Some(*m),
            "a procedure must be a mapping with name, description, params and phases".to_string(),
        ),
        TopLevelMustBeSequence(m) => (Some(*m), "expected a list".to_string()),
        UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported in procedures; write the value out"
                .to_string(),
        ),
        MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".to_string()),
        UnexpectedTag(m) => (
            Some(*m),
            "YAML tags are not supported in procedures".to_string(),
        ),
        ScanError(m, err) => {
            // The scanner repeats the position we already print; keep only the reason.
            let message = err.to_string();
            let reason = message
                .split(" at byte ")
                .next()
                .unwrap_or(&message)
                .to_string();
            // For a tab the scanner points at the token before it; point at the tab instead.
            let tab_line = reason
                .contains("tab")
                .then(|| {
                    text.lines().position(|l| {
                        l.starts_with([' ', '\t']) && l.trim_start_matches(' ').starts_with('\t')
                    })
                })
                .flatten();
            let marker = match tab_line {
                Some(line) => marked_yaml::Marker::new(0, 0, line + 1, 1),
                None => *m,
            };
            (Some(marker), format!("invalid YAML: {reason}"))
        }
        DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first at line {})",
                inner.key.as_str(),
                inner.prev_key.span().start().map(|m| m.line()).unwrap_or(0)
            ),
        ),
    };
    Diagnostic {
        location: marker.map(|m| Location {
            file: file.to_string(),
            line: m.line(),
            column: m.column(),
        }),
        message,
    }
}

pub(super) fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_procedure(root: &Node, r: &mut Reader, expected_name: Option<&str>) -> Option<Procedure> {
    let fields = Fields::new(
        root,
        "the procedure",
        &["name", "description", "params", "phases", "approval"],
        r,
    )?;
    let name = match fields.get("name") {
        Some(n) => {
            let s = r.string(n, "name")?;
            if let Some(expected) = expected_name.filter(|e| *e != s.as_str()) {
                r.error(
                    &start_span(n),
                    format!(
                        "procedure name `{}` does not match its file name; rename one so both are `{expected}`",
                        s.as_str()
                    ),
                );
            }
            s.as_str().to_string()
        }
        None => {
            r.error(fields.span(), "the procedure needs `name:`");
            expected_name.unwrap_or_default().to_string()
        }
    };
    let description = match fields.get("description") {
        Some(n) => r
            .scalar(n, "description")
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        None => String::new(),
    };
    let params = match fields.get("params") {
        Some(n) => read_params(n, r),
        None => Vec::new(),
    };
    r.params = params.iter().map(|p| p.name.clone()).collect();
    let phases = match fields.get("phases") {
        Some(n) => {
            let phases = read_phases(n, r);
            if phases.is_empty() && matches!(n, Node::Sequence(_)) {
                r.error(
                    &start_span(n),
                    "the procedure has an empty `phases:` list; add at least one phase",
                );
            }
            phases
        }
        None => {
            r.error(
                fields.span(),
                "the procedure needs `phases:`, a list of phases",
            );
            Vec::new()
        }
    };
    let approval = fields
        .get("approval")
        .and_then(|n| approval::read_approval(n, r));
    Some(Procedure {
        name,
        description,
        file: r.file.clone(),
        params,
        phases,
        template_names: Default::default(),
        approval,
    })
}

pub(super) fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}
