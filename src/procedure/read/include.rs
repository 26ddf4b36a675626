//! Reading an `include:` phase: the keys it may have and `include: {procedure, with}`.

use marked_yaml::Node;

use super::common::{read_description, read_parallel, read_requires};
use crate::procedure::{Include, PhaseSpec, INCLUDE_PHASE_KEYS};
use crate::source::{start_span, Fields, Reader, TemplateKind};

/// `include: {procedure: NAME, with: {param: "{{ value }}"}}`; resolved later.
/// A phase with `include:` (node `n`): only the keys that apply to it, then the include.
pub(super) fn read_include_phase(
    fields: &Fields<'_>,
    n: &Node,
    spec: &mut PhaseSpec,
    what: &str,
    r: &mut Reader,
) {
    for key in fields.keys() {
        if !INCLUDE_PHASE_KEYS.contains(&key.as_str()) {
            r.error(
                key.span(),
                format!(
                    "{what}: `{}:` does not apply to a phase with `include:`; it may only have {}",
                    key.as_str(),
                    INCLUDE_PHASE_KEYS.join(", ")
                ),
            );
        }
    }
    read_description(fields, spec, r);
    spec.requires = read_requires(fields, what, r);
    spec.include = read_include(n, what, r);
    let group = spec.foreach.is_some();
    read_parallel(fields, spec, what, group, r);
}

fn read_include(node: &Node, what: &str, r: &mut Reader) -> Option<Include> {
    let location = r.location(&start_span(node));
    let fields = Fields::new(node, &format!("{what} include"), &["procedure", "with"], r)?;
    let Some(name) = fields.get("procedure") else {
        r.error(
            fields.span(),
            format!("{what}: `include:` needs `procedure:`, the name of the procedure to include"),
        );
        return None;
    };
    let procedure = r.scalar(name, "include.procedure")?.as_str().to_string();
    let mut with = Vec::new();
    match fields.get("with") {
        Some(Node::Mapping(map)) => {
            for (k, v) in map.iter() {
                if let Some(s) = r.scalar(v, &format!("include with `{}`", k.as_str())) {
                    let loc = r.location(k.span());
                    let source = r.template(s, TemplateKind::Text);
                    with.push((k.as_str().to_string(), source, loc));
                }
            }
        }
        Some(other) => r.error(
            &start_span(other),
            format!("{what}: `with:` must map the included procedure's parameters to values"),
        ),
        None => {}
    }
    Some(Include {
        procedure,
        with,
        params: Vec::new(),
        location,
        approval: None,
    })
}
