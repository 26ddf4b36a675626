//! Reading `capture:`: names set from the action's result, each an expression over it
//! (`capture: {member_id: json.id}`), or `{from: EXPR, secret: true}` for a value kept as a
//! secret (`capture: {token: {from: "stdout | trim", secret: true}}`).

use std::collections::{BTreeMap, BTreeSet};

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::Node;

use super::valid_identifier;
use crate::source::{start_span, Fields, Reader};
use crate::template::Templates;

/// What a phase captures: name → expression, and the names marked `secret: true`.
#[derive(Default)]
pub(super) struct CaptureSpec {
    pub(super) exprs: BTreeMap<String, String>,
    pub(super) secret: BTreeSet<String>,
}

/// `capture:` (node `n`) of a phase; only a phase with an action (not `has_phases`) may.
pub(super) fn read_capture(n: &Node, has_phases: bool, what: &str, r: &mut Reader) -> CaptureSpec {
    let mut capture = CaptureSpec::default();
    if has_phases {
        r.error(
            &start_span(n),
            format!("{what}: only a phase with an action can `capture:` its result"),
        );
    }
    let Node::Mapping(map) = n else {
        r.error(&start_span(n), format!("{what}: capture must map names to expressions over the result, e.g. `capture: {{member_id: json.id}}` or `capture: {{token: {{from: \"stdout | trim\", secret: true}}}}`"));
        return capture;
    };
    for (k, v) in map.iter() {
        let name = k.as_str();
        if !valid_identifier(name) {
            r.error(
                k.span(),
                format!("{what}: capture name `{name}` must be a plain name"),
            );
        }
        let (expr, secret) = match v {
            Node::Mapping(_) => match read_long_form(v, what, name, r) {
                Some(parts) => parts,
                None => continue,
            },
            _ => match r.scalar(v, "capture expression") {
                Some(s) => (s, false),
                None => continue,
            },
        };
        if let Err(e) = Templates::new().expression_names(expr.as_str()) {
            r.error(
                expr.span(),
                format!("{what}: capture `{name}`: {}", e.message),
            );
        }
        capture
            .exprs
            .insert(name.to_string(), expr.as_str().to_string());
        if secret {
            capture.secret.insert(name.to_string());
        }
    }
    capture
}

/// `{from: EXPR, secret: BOOL}`: the expression and whether the value is a secret.
fn read_long_form<'n>(
    v: &'n Node,
    what: &str,
    name: &str,
    r: &mut Reader,
) -> Option<(&'n MarkedScalarNode, bool)> {
    let context = format!("{what}: capture `{name}`");
    let fields = Fields::new(v, &context, &["from", "secret"], r)?;
    let secret = match fields.get("secret") {
        Some(n) => r.bool(n, "capture secret")?,
        None => false,
    };
    match fields.get("from") {
        Some(n) => r.scalar(n, "capture `from`").map(|s| (s, secret)),
        None => {
            r.error(
                fields.span(),
                format!("{context} needs `from:`, an expression over the result, e.g. `from: \"stdout | trim\"`"),
            );
            None
        }
    }
}
