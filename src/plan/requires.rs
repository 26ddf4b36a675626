//! What `requires` means, in one place: where an entry points, and what a phase requires
//! directly. Procedure validation (before any plan exists) and the plan the engine runs (its
//! [`Plan::direct_requirements`](super::Plan::direct_requirements)) both ask here, so they
//! cannot disagree.
//!
//! 1. An entry starting with `/` is an absolute phase path; anything else names a sibling (or
//!    a path below one), relative to the group the phase is in.
//! 2. A phase requires its entries plus, in an ordered (not parallel) group, the sibling just
//!    before it.

use crate::phase_id::PhaseId;

/// The phase a `requires:` entry written on a phase inside `group` names.
pub(crate) fn resolve(group: &PhaseId, entry: &str) -> PhaseId {
    if entry.starts_with('/') {
        PhaseId::parse(entry)
    } else {
        group.child(entry.trim_matches('/'))
    }
}

/// What one phase requires directly: its explicit requirements (as found), then, when its
/// group is ordered, the sibling just before it; each once, in that order.
pub(crate) fn direct(
    explicit: impl IntoIterator<Item = usize>,
    parallel_group: bool,
    previous_sibling: Option<usize>,
) -> Vec<usize> {
    let implicit = previous_sibling.filter(|_| !parallel_group);
    let mut out: Vec<usize> = Vec::new();
    for r in explicit.into_iter().chain(implicit) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}
