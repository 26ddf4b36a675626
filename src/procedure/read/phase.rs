//! Reading `phases:`: the list (duplicate IDs, depth), one phase's keys dispatched to the file
//! that owns them, and the keys every phase shares (`requires`, `parallel`, `when`).

use std::collections::{BTreeMap, HashMap};

use marked_yaml::Node;

use super::common::{read_condition, read_description, read_parallel, read_requires};
use super::MAX_DEPTH;
use crate::action::ACTION_KINDS;
use crate::plan::valid_phase_segment;
use crate::procedure::PhaseSpec;
use crate::source::{start_span, Fields, Location, Reader};

const PHASE_KEYS: &[&str] = &[
    "id",
    "description",
    "requires",
    "parallel",
    "max_parallel",
    "foreach",
    "as",
    "phases",
    "rollback",
    "capture",
    "timeout",
    "retries",
    "retry_delay",
    "idempotent",
    "when",
    "include",
    "probe",
    "may_fail",
    "confirm",
];

pub(super) fn read_phases(node: &Node, r: &mut Reader) -> Vec<PhaseSpec> {
    let Node::Sequence(items) = node else {
        r.error(
            &start_span(node),
            "phases must be a list (each item starts with `- id:`)",
        );
        return Vec::new();
    };
    if r.depth >= MAX_DEPTH {
        r.error(
            &start_span(node),
            format!("phases are nested more than {MAX_DEPTH} levels deep; flatten the procedure"),
        );
        return Vec::new();
    }
    let mut out: Vec<PhaseSpec> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in items.iter() {
        if let Some(phase) = read_phase(item, r) {
            if let Some(first_line) = seen.get(&phase.id) {
                let span = item
                    .as_mapping()
                    .and_then(|m| m.get_node("id"))
                    .map(|n| *n.span())
                    .unwrap_or(*item.span());
                r.error(
                    &span,
                    format!(
                        "duplicate phase id `{}` (first defined at line {first_line})",
                        phase.id
                    ),
                );
                continue;
            }
            seen.insert(phase.id.clone(), phase.location.line);
            out.push(phase);
        }
    }
    out
}

fn read_phase(node: &Node, r: &mut Reader) -> Option<PhaseSpec> {
    let mut known: Vec<&str> = PHASE_KEYS.to_vec();
    known.extend_from_slice(ACTION_KINDS);
    let fields = Fields::new(node, "a phase", &known, r)?;
    let id = match fields.get("id") {
        Some(n) => {
            let s = r.string(n, "phase id")?;
            if !valid_phase_segment(s.as_str()) {
                r.error(
                    &start_span(n),
                    format!(
                        "phase id `{}` must be lowercase letters, digits, `-`, `_` or `.` (no `/`), starting and ending with a letter or digit",
                        s.as_str()
                    ),
                );
            }
            s.as_str().to_string()
        }
        None => {
            r.error(fields.span(), "every phase needs an `id:`");
            return None;
        }
    };
    let what = format!("phase `{id}`");
    let location = r.location(fields.span());
    r.phase_path.push(id.clone());
    let spec = read_phase_body(&fields, id, location, &what, r);
    r.phase_path.pop();
    Some(spec)
}

/// Everything of a phase after its id (the phase is on `r.phase_path` meanwhile): each key
/// read by the file that owns it.
fn read_phase_body(
    fields: &Fields<'_>,
    id: String,
    location: Location,
    what: &str,
    r: &mut Reader,
) -> PhaseSpec {
    let mut spec = PhaseSpec {
        id: id.clone(),
        location,
        description: None,
        requires: Vec::new(),
        parallel: false,
        max_parallel: None,
        foreach: None,
        children: Vec::new(),
        action: None,
        rollback: None,
        capture: BTreeMap::new(),
        secret_capture: Default::default(),
        timeout_secs: None,
        retries: 0,
        retry_delay_secs: 1.0,
        idempotent: None,
        when: None,
        include: None,
        may_fail: false,
        probe: None,
        confirm: false,
    };
    spec.foreach = super::foreach::read_foreach(fields, what, r);
    // The foreach item is a name inside this phase only.
    let pushed_local = spec.foreach.as_ref().map(|(_, name)| name.clone());
    if let Some(name) = &pushed_local {
        r.locals.push(name.clone());
    }
    if let Some(n) = fields.get("include") {
        super::include::read_include_phase(fields, n, &mut spec, what, r);
    } else {
        read_description(fields, &mut spec, r);
        spec.requires = read_requires(fields, what, r);
        read_work(fields, &mut spec, what, r);
    }
    if pushed_local.is_some() {
        r.locals.pop();
    }
    spec
}

/// What a phase that is not an include does: an action or `phases:`, with the keys that go
/// with them.
fn read_work(fields: &Fields<'_>, spec: &mut PhaseSpec, what: &str, r: &mut Reader) {
    let has_phases = fields.get("phases").is_some();
    spec.action = super::action::read_action(fields, has_phases, what, r);
    if let Some(n) = fields.get("phases") {
        r.depth += 1;
        spec.children = read_phases(n, r);
        r.depth -= 1;
        if spec.children.is_empty() && matches!(n, Node::Sequence(_)) {
            r.error(
                &start_span(n),
                format!("{what} has an empty `phases:` list"),
            );
        }
    }
    if let Some(n) = fields.get("rollback") {
        spec.rollback = super::rollback::read_rollback(n, has_phases, what, r);
    }
    if let Some(n) = fields.get("capture") {
        let capture = super::capture::read_capture(n, has_phases, what, r);
        spec.capture = capture.exprs;
        spec.secret_capture = capture.secret;
    }
    let group = has_phases || spec.foreach.is_some();
    read_parallel(fields, spec, what, group, r);
    super::retry::read_retry(fields, spec, what, r);
    super::probe::read_probe(fields, spec, spec.action.is_some(), what, r);
    super::confirm::read_confirm(fields, spec, has_phases, what, r);
    if let Some(n) = fields.get("when") {
        if has_phases {
            r.error(
                &start_span(n),
                format!("{what}: `when:` applies to a phase with an action, not a group; put it on the phases inside"),
            );
        } else {
            spec.when = read_condition(n, what, r);
        }
    }
}
