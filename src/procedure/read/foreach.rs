//! Reading `foreach:` and `as:`: the list or expression a phase expands over, and the name of
//! its item (which must not hide a parameter, an enclosing item or a built-in).

use marked_yaml::Node;

use super::valid_identifier;
use crate::procedure::{Foreach, BUILTIN_NAMES};
use crate::source::{start_span, Fields, Reader, TemplateKind};

/// `foreach:` with its item name (`as:`, by default `item`); `None` without `foreach:`.
pub(super) fn read_foreach(
    fields: &Fields<'_>,
    what: &str,
    r: &mut Reader,
) -> Option<(Foreach, String)> {
    let Some(n) = fields.get("foreach") else {
        if let Some(n) = fields.get("as") {
            r.error(
                &start_span(n),
                format!("{what}: `as:` only names the item of a `foreach:`"),
            );
        }
        return None;
    };
    let as_name = match fields.get("as") {
        Some(a) => r
            .scalar(a, "as")
            .map(|s| s.as_str().to_string())
            .unwrap_or("item".into()),
        None => "item".to_string(),
    };
    let as_span = fields
        .get("as")
        .map(start_span)
        .unwrap_or_else(|| start_span(n));
    if !valid_identifier(&as_name) {
        r.error(
            fields.span(),
            format!("{what}: `as: {as_name}` must be a plain name"),
        );
    } else {
        let shadowed = if r.params.contains(&as_name) {
            Some("the parameter")
        } else if r.locals.contains(&as_name) {
            Some("the item of an enclosing foreach")
        } else if BUILTIN_NAMES.contains(&as_name.as_str()) {
            Some("the built-in")
        } else {
            None
        };
        if let Some(what_else) = shadowed {
            r.error(
                &as_span,
                format!(
                    "{what}: the foreach item `{as_name}` hides {what_else} `{as_name}` inside this phase; name the item something else with `as:`"
                ),
            );
        }
        let location = r.location(&as_span);
        r.loop_names.push((as_name.clone(), location));
    }
    let foreach = match n {
        Node::Scalar(s) => Foreach::Expression(r.template(s, TemplateKind::Expression)),
        Node::Sequence(items) => Foreach::Items(
            items
                .iter()
                .filter_map(|i| r.scalar(i, "foreach item"))
                .map(|s| s.as_str().to_string())
                .collect(),
        ),
        Node::Mapping(_) => {
            r.error(
                &start_span(n),
                format!(
                    "{what}: foreach must be a list or an expression such as \"{{{{ workers }}}}\""
                ),
            );
            Foreach::Items(Vec::new())
        }
    };
    Some((foreach, as_name))
}
