//! Reading `confirm:`: whether the operator confirms a phase's action before it runs (an
//! irreversible step: a member removed, a node deleted, a machine reset).

use crate::procedure::PhaseSpec;
use crate::source::{start_span, Fields, Reader};

pub(super) fn read_confirm(
    fields: &Fields<'_>,
    spec: &mut PhaseSpec,
    has_phases: bool,
    what: &str,
    r: &mut Reader,
) {
    let Some(n) = fields.get("confirm") else {
        return;
    };
    if has_phases {
        r.error(
            &start_span(n),
            format!("{what}: `confirm:` applies to a phase with an action, not a group; put it on the phases inside"),
        );
        return;
    }
    spec.confirm = r.bool(n, &format!("{what}: confirm")).unwrap_or(false);
}
