//! Reading a procedure's `approval:` (`{required: true, count: 1, distinct_from_creator:
//! true}`): how many people must approve an operation of it before it executes.

use marked_yaml::Node;

use crate::procedure::ApprovalSpec;
use crate::source::{start_span, Fields, Reader};

/// Most approvals a procedure may ask for; far beyond a real change board.
const MAX_COUNT: u64 = 10;

pub(super) fn read_approval(node: &Node, r: &mut Reader) -> Option<ApprovalSpec> {
    let f = Fields::new(
        node,
        "approval",
        &["required", "count", "distinct_from_creator"],
        r,
    )?;
    let mut spec = ApprovalSpec {
        required: true,
        count: 1,
        distinct_from_creator: false,
    };
    if let Some(n) = f.get("required") {
        spec.required = r.bool(n, "approval.required")?;
    }
    if let Some(n) = f.get("count") {
        match r.uint(n, "approval.count")? {
            c @ 1..=MAX_COUNT => spec.count = c as u32,
            c => {
                r.error(
                    &start_span(n),
                    format!("approval.count must be between 1 and {MAX_COUNT}, not {c}"),
                );
                return None;
            }
        }
    }
    if let Some(n) = f.get("distinct_from_creator") {
        spec.distinct_from_creator = r.bool(n, "approval.distinct_from_creator")?;
    }
    Some(spec)
}
