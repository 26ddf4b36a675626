//! Reading a phase's action: exactly one of the action keys (or `phases:`), parsed by its kind.

use marked_yaml::Node;

use crate::action::{ActionSpec, ACTION_KINDS};
use crate::source::{Fields, Reader};

/// The phase's action: one of the action keys, unless it is a group (`has_phases`).
pub(super) fn read_action(
    fields: &Fields<'_>,
    has_phases: bool,
    what: &str,
    r: &mut Reader,
) -> Option<ActionSpec> {
    let action_keys: Vec<&marked_yaml::types::MarkedScalarNode> = fields
        .keys()
        .filter(|k| ACTION_KINDS.contains(&k.as_str()))
        .collect();
    if action_keys.len() > 1 {
        let names: Vec<&str> = action_keys.iter().map(|k| k.as_str()).collect();
        r.error(
            action_keys[1].span(),
            format!(
                "{what} has more than one action ({}); split it into one phase per action",
                names.join(", ")
            ),
        );
    } else if has_phases && !action_keys.is_empty() {
        r.error(
            action_keys[0].span(),
            format!("{what} has both `phases:` and an action (`{}`); a phase is either a group or does one thing", action_keys[0].as_str()),
        );
    } else if !has_phases && action_keys.is_empty() {
        r.error(
            fields.span(),
            format!(
                "{what} needs an action ({}) or `phases:`",
                ACTION_KINDS.join(", ")
            ),
        );
    }
    let key = action_keys.first()?;
    let node = fields.get(key.as_str()).expect("key listed");
    parse_action(key, node, r)
}

/// Parses one action; an empty value is reported at its key (the parser places empty values
/// at the next token, often on the following line).
pub(super) fn parse_action(
    key: &marked_yaml::types::MarkedScalarNode,
    node: &Node,
    r: &mut Reader,
) -> Option<ActionSpec> {
    if matches!(node, Node::Scalar(s) if s.as_str().trim().is_empty()) {
        r.error(
            key.span(),
            format!(
                "`{}:` needs a value; {} needs a command",
                key.as_str(),
                key.as_str()
            ),
        );
        return None;
    }
    ActionSpec::parse(key.as_str(), node, r).flatten()
}
