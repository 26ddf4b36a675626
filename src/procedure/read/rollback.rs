//! Reading `rollback:`: the one action that undoes a leaf phase.

use marked_yaml::Node;

use super::action::parse_action;
use crate::action::{ActionSpec, ACTION_KINDS};
use crate::source::{start_span, Fields, Reader};

/// `rollback:` (node `n`) of a phase; a group (`has_phases`) may not have one.
pub(super) fn read_rollback(
    n: &Node,
    has_phases: bool,
    what: &str,
    r: &mut Reader,
) -> Option<ActionSpec> {
    if has_phases {
        r.error(
            &start_span(n),
            format!("{what}: `rollback:` belongs on the leaf phases of a group, not the group"),
        );
    }
    let rb = Fields::new(n, &format!("{what} rollback"), ACTION_KINDS, r)?;
    let keys: Vec<_> = rb.keys().collect();
    if keys.len() != 1 {
        r.error(
            rb.span(),
            format!(
                "{what}: rollback must have exactly one action ({})",
                ACTION_KINDS.join(", ")
            ),
        );
        return None;
    }
    let node = rb.get(keys[0].as_str())?;
    r.in_rollback = true;
    let action = parse_action(keys[0], node, r);
    r.in_rollback = false;
    action
}
