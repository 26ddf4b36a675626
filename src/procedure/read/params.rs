//! Reading `params:`: each parameter's settings (type, default, pattern, secret).

use marked_yaml::Node;

use super::{first_line, valid_identifier};
use crate::procedure::{ParamKind, ParamSpec};
use crate::source::{self, start_span, Fields, Reader};

pub(super) fn read_params(node: &Node, r: &mut Reader) -> Vec<ParamSpec> {
    let Node::Mapping(map) = node else {
        r.error(
            &start_span(node),
            "params must be a mapping of parameter name to its settings",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in map.iter() {
        let name = key.as_str().to_string();
        let location = r.location(key.span());
        if !valid_identifier(&name) {
            r.error(
                key.span(),
                format!("parameter name `{name}` must be letters, digits and _ (starting with a letter)"),
            );
        }
        let mut spec = ParamSpec {
            name: name.clone(),
            description: String::new(),
            required: false,
            default: None,
            pattern: None,
            secret: false,
            kind: ParamKind::String,
            location,
        };
        // `{}` or an empty value means a plain optional string parameter.
        if let Node::Scalar(s) = value {
            if s.as_str().is_empty() {
                out.push(spec);
                continue;
            }
        }
        let what = format!("parameter `{name}`");
        let Some(fields) = Fields::new(
            value,
            &what,
            &[
                "description",
                "required",
                "default",
                "pattern",
                "secret",
                "type",
            ],
            r,
        ) else {
            continue;
        };
        if let Some(n) = fields.get("description") {
            spec.description = r
                .scalar(n, "description")
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
        }
        if let Some(n) = fields.get("required") {
            spec.required = r.bool(n, &format!("{what}: required")).unwrap_or(false);
        }
        if let Some(n) = fields.get("secret") {
            spec.secret = r.bool(n, &format!("{what}: secret")).unwrap_or(false);
        }
        let declared_type = fields.get("type");
        if let Some(n) = declared_type {
            if let Some(s) = r.scalar(n, "type") {
                match s.as_str() {
                    "string" => spec.kind = ParamKind::String,
                    "list" => spec.kind = ParamKind::List,
                    other => r.error(
                        &start_span(n),
                        format!("{what}: type must be string or list, not `{other}`"),
                    ),
                }
            }
        }
        if let Some(n) = fields.get("pattern") {
            if let Some(s) = r.scalar(n, "pattern") {
                match regex::Regex::new(s.as_str()) {
                    Ok(_) => spec.pattern = Some(s.as_str().to_string()),
                    Err(e) => r.error(
                        &start_span(n),
                        format!(
                            "{what}: pattern is not a valid regular expression: {}",
                            first_line(&e.to_string())
                        ),
                    ),
                }
            }
        }
        if let Some(n) = fields.get("default") {
            read_default(n, declared_type.is_some(), &mut spec, &what, r);
        }
        if spec.secret && spec.kind == ParamKind::List {
            r.error(
                fields.span(),
                format!("{what}: a secret parameter must be a string"),
            );
        }
        out.push(spec);
    }
    out
}

/// `default:` of a parameter: a value, or a list (which makes the parameter a list); checked
/// against the declared `type:` when there is one.
fn read_default(n: &Node, declared: bool, spec: &mut ParamSpec, what: &str, r: &mut Reader) {
    let typed = |kind| declared && spec.kind == kind;
    match n {
        Node::Scalar(s) if source::plain_non_string(s) == Some("null") => r.error(
            &start_span(n),
            format!("{what}: default `{}` is null in YAML, not a value; leave `default:` out (an optional parameter is empty when not given), or quote it", s.as_str()),
        ),
        Node::Scalar(s) if typed(ParamKind::List) && !s.as_str().is_empty() => r.error(
            &start_span(n),
            format!("{what}: type is list but the default `{}` is a single value; write it as a list, e.g. default: [a, b]", s.as_str()),
        ),
        Node::Sequence(_) if typed(ParamKind::String) => r.error(
            &start_span(n),
            format!("{what}: type is string but the default is a list; remove `type: string` or give one value"),
        ),
        _ => {}
    }
    spec.default = Some(match n {
        Node::Scalar(s) => serde_json::Value::String(s.as_str().to_string()),
        Node::Sequence(items) => {
            spec.kind = ParamKind::List;
            serde_json::Value::Array(
                items
                    .iter()
                    .filter_map(|i| r.scalar(i, "default item"))
                    .map(|s| serde_json::Value::String(s.as_str().to_string()))
                    .collect(),
            )
        }
        Node::Mapping(_) => {
            r.error(
                &start_span(n),
                format!("{what}: default must be a value or a list"),
            );
            serde_json::Value::Null
        }
    });
}
