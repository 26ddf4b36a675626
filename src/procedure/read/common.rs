//! Keys every phase may have, an `include:` phase too: `description`, `requires`,
//! `parallel`/`max_parallel`, and `when` (for a phase with an action).

use marked_yaml::Node;

use crate::plan::{Condition, PhaseId, PhaseIdError};
use crate::procedure::PhaseSpec;
use crate::source::{start_span, Fields, Location, Reader, TemplateKind};

/// `description:`, a text template.
pub(super) fn read_description(fields: &Fields<'_>, spec: &mut PhaseSpec, r: &mut Reader) {
    if let Some(n) = fields.get("description") {
        if let Some(s) = r.scalar(n, "description") {
            spec.description = Some(r.template(s, TemplateKind::Text));
        }
    }
}

pub(super) fn read_requires(
    fields: &Fields<'_>,
    what: &str,
    r: &mut Reader,
) -> Vec<(String, Location)> {
    let mut out = Vec::new();
    if let Some(n) = fields.get("requires") {
        let items: Vec<&Node> = match n {
            Node::Sequence(seq) => seq.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if let Some(s) = r.scalar(item, "requires") {
                let problem = match PhaseId::parse_input(s.as_str()) {
                    Ok(id) if id.is_root() => Some("`/` is the whole plan".to_string()),
                    Ok(_) => None,
                    Err(PhaseIdError::Empty) => Some("the entry is empty".to_string()),
                    Err(PhaseIdError::Malformed { reason, .. }) => Some(reason),
                };
                if let Some(reason) = problem {
                    r.error(
                        item.span(),
                        format!(
                            "{what}: requires `{}` does not name a phase: {reason}; write a phase path such as /etcd/remove, or a sibling's id",
                            s.as_str()
                        ),
                    );
                    continue;
                }
                let loc = r.location(item.span());
                out.push((s.as_str().to_string(), loc));
            }
        }
    }
    out
}

/// `when: "{{ expr }}"` or `when: {that: "{{ expr }}", reason: "text"}`.
pub(super) fn read_condition(node: &Node, what: &str, r: &mut Reader) -> Option<Condition> {
    if let Node::Scalar(s) = node {
        if s.as_str().trim().is_empty() {
            r.error(
                &start_span(node),
                format!("{what}: `when:` needs a condition such as \"{{{{ node_ready }}}}\""),
            );
            return None;
        }
        return Some(Condition {
            that: r.template(s, TemplateKind::Expression),
            reason: None,
        });
    }
    let fields = Fields::new(node, &format!("{what} when"), &["that", "reason"], r)?;
    let that = match fields.get("that") {
        Some(n) => {
            let s = r.scalar(n, "when.that")?;
            r.template(s, TemplateKind::Expression)
        }
        None => {
            r.error(
                fields.span(),
                format!("{what}: `when:` needs `that:`, the condition under which the action runs"),
            );
            return None;
        }
    };
    let reason = match fields.get("reason") {
        Some(n) => {
            let s = r.scalar(n, "when.reason")?;
            Some(r.template(s, TemplateKind::Text))
        }
        None => None,
    };
    Some(Condition { that, reason })
}

/// `parallel:` and `max_parallel:` of a group (`phases:`, `foreach:` or a foreach of includes).
pub(super) fn read_parallel(
    fields: &Fields,
    spec: &mut PhaseSpec,
    what: &str,
    group: bool,
    r: &mut Reader,
) {
    if let Some(n) = fields.get("parallel") {
        spec.parallel = r.bool(n, &format!("{what}: parallel")).unwrap_or(false);
        if !group {
            r.error(
                &start_span(n),
                format!("{what}: `parallel:` applies to a group (`phases:` or `foreach:`)"),
            );
        }
    }
    if let Some(n) = fields.get("max_parallel") {
        match r.uint(n, &format!("{what}: max_parallel")) {
            Some(0) => r.error(
                &start_span(n),
                format!("{what}: max_parallel must be at least 1"),
            ),
            Some(v) => spec.max_parallel = Some(v as usize),
            None => {}
        }
        if !spec.parallel {
            r.error(
                &start_span(n),
                format!("{what}: max_parallel needs `parallel: true`"),
            );
        }
    }
}
