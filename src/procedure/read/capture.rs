//! Reading `capture:`: names set from the action's result, each an expression over it.

use std::collections::BTreeMap;

use marked_yaml::Node;

use super::valid_identifier;
use crate::source::{start_span, Reader};
use crate::template::Templates;

/// `capture:` (node `n`) of a phase; only a phase with an action (not `has_phases`) may.
pub(super) fn read_capture(
    n: &Node,
    has_phases: bool,
    what: &str,
    r: &mut Reader,
) -> BTreeMap<String, String> {
    let mut capture = BTreeMap::new();
    if has_phases {
        r.error(
            &start_span(n),
            format!("{what}: only a phase with an action can `capture:` its result"),
        );
    }
    let Node::Mapping(map) = n else {
        r.error(&start_span(n), format!("{what}: capture must map names to expressions over the result, e.g. `capture: {{member_id: json.id}}`"));
        return capture;
    };
    for (k, v) in map.iter() {
        if !valid_identifier(k.as_str()) {
            r.error(
                k.span(),
                format!("{what}: capture name `{}` must be a plain name", k.as_str()),
            );
        }
        if let Some(s) = r.scalar(v, "capture expression") {
            if let Err(e) = Templates::new().expression_names(s.as_str()) {
                r.error(
                    v.span(),
                    format!("{what}: capture `{}`: {}", k.as_str(), e.message),
                );
            }
            capture.insert(k.as_str().to_string(), s.as_str().to_string());
        }
    }
    capture
}
