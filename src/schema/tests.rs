//! The schema cannot drift from the loader: for every mapping the loader reads, the keys it
//! accepts (asked of the loader itself, through its "unknown key" diagnostic) are exactly the
//! properties the schema gives that mapping.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::inventory::{Inventory, InventoryError};
use crate::procedure::{Procedure, ProcedureError};
use crate::source::Diagnostic;

/// A key no mapping has and no known key is close to, so the loader lists every key it knows.
const PROBE: &str = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";

/// The keys the loader lists in its diagnostic about [`PROBE`].
fn loader_keys(diags: &[Diagnostic], yaml: &str) -> BTreeSet<String> {
    let message = diags
        .iter()
        .map(|d| d.message.as_str())
        .find(|m| m.starts_with(&format!("unknown key `{PROBE}`")))
        .unwrap_or_else(|| panic!("no unknown-key diagnostic for\n{yaml}\n{diags:?}"));
    let (_, list) = message
        .split_once("; expected one of ")
        .unwrap_or_else(|| panic!("no key list in `{message}`"));
    list.split(", ")
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

/// The properties of the object schema reached by `path` (property names; `[]` for a list's
/// items, `*` for a map's values), following `$ref` and picking the object among `anyOf`.
fn schema_keys(root: &Value, path: &[&str]) -> BTreeSet<String> {
    fn object<'a>(root: &'a Value, mut node: &'a Value) -> Value {
        loop {
            if let Some(r) = node.get("$ref").and_then(Value::as_str) {
                node = root
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("dangling {r}"));
            } else if let Some(alternatives) = node.get("anyOf").and_then(Value::as_array) {
                let resolved: Vec<Value> = alternatives
                    .iter()
                    .map(|a| match a.get("$ref").and_then(Value::as_str) {
                        Some(r) => root.pointer(r.trim_start_matches('#')).unwrap().clone(),
                        None => a.clone(),
                    })
                    .collect();
                return resolved
                    .into_iter()
                    .find(|a| a.get("type") == Some(&Value::from("object")))
                    .unwrap_or_else(|| panic!("no object among {alternatives:?}"));
            } else {
                return node.clone();
            }
        }
    }
    let mut node = object(root, root);
    for step in path {
        let next = match *step {
            "[]" => node["items"].clone(),
            "*" => node["additionalProperties"].clone(),
            key => node["properties"][key].clone(),
        };
        assert!(!next.is_null(), "no `{step}` in the schema along {path:?}");
        node = object(root, &next);
    }
    assert!(
        node.get("additionalProperties") == Some(&Value::Bool(false))
            || node.get("maxProperties") == Some(&Value::from(0)),
        "{path:?} must refuse unknown keys, as the loader does"
    );
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn procedure_diagnostics(yaml: &str) -> Vec<Diagnostic> {
    match Procedure::parse("p.yaml", yaml, None) {
        Err(ProcedureError::Invalid(diags)) => diags,
        other => panic!("expected diagnostics for\n{yaml}\ngot {other:?}"),
    }
}

/// A one-phase procedure whose phase is `phase` (flow YAML, `PROBE` replaced).
fn with_phase(phase: &str) -> String {
    format!("name: p\nphases:\n  - {}\n", phase.replace("PROBE", PROBE))
}

#[test]
fn every_procedure_mapping_has_the_loaders_keys() {
    let schema = super::procedure();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("name: p\n{PROBE}: 1\nphases: [{{id: a, pause: x}}]\n"),
            vec![],
        ),
        (
            format!("name: p\nparams:\n  x: {{{PROBE}: 1}}\nphases: [{{id: a, pause: x}}]\n"),
            vec!["params", "*"],
        ),
        (
            with_phase("{id: a, pause: x, PROBE: 1}"),
            vec!["phases", "[]"],
        ),
        (
            with_phase("{id: a, pause: x, when: {that: x, PROBE: 1}}"),
            vec!["phases", "[]", "when"],
        ),
        (
            with_phase("{id: a, include: {procedure: q, PROBE: 1}}"),
            vec!["phases", "[]", "include"],
        ),
        (
            with_phase("{id: a, pause: x, rollback: {PROBE: 1}}"),
            vec!["phases", "[]", "rollback"],
        ),
        (
            with_phase("{id: a, run: {command: x, PROBE: 1}}"),
            vec!["phases", "[]", "run"],
        ),
        (
            with_phase("{id: a, ssh: {on: n, run: x, PROBE: 1}}"),
            vec!["phases", "[]", "ssh"],
        ),
        (
            with_phase("{id: a, ssh: {on: {PROBE: 1}, run: x}}"),
            vec!["phases", "[]", "ssh", "on"],
        ),
        (
            with_phase("{id: a, check: {that: x, PROBE: 1}}"),
            vec!["phases", "[]", "check"],
        ),
        (
            with_phase("{id: a, wait: {run: x, PROBE: 1}}"),
            vec!["phases", "[]", "wait"],
        ),
        (
            with_phase("{id: a, etcd: {health: , PROBE: 1}}"),
            vec!["phases", "[]", "etcd"],
        ),
        (
            with_phase("{id: a, kube: {PROBE: 1}}"),
            vec!["phases", "[]", "kube"],
        ),
        (
            with_phase("{id: a, pause: x, probe: {name: a/b, PROBE: 1}}"),
            vec!["phases", "[]", "probe"],
        ),
        (
            with_phase("{id: a, pause: x, probe: {name: a/b, severity: warning, finding: x, remedy: {procedure: q, PROBE: 1}}}"),
            vec!["phases", "[]", "probe", "remedy"],
        ),
    ];
    let etcd_ops = [
        "member_list",
        "health",
        "status",
        "member_remove",
        "member_add",
        "member_promote",
        "snapshot",
        "move_leader",
        "defragment",
        "snapshot_status",
    ];
    let kube_ops = [
        "nodes",
        "drain",
        "wait_ready",
        "wait_gone",
        "label",
        "unlabel",
        "taint",
        "untaint",
        "pods",
    ];
    let op_cases = etcd_ops
        .iter()
        .map(|op| ("etcd", *op))
        .chain(kube_ops.iter().map(|op| ("kube", *op)))
        .map(|(kind, op)| {
            (
                with_phase(&format!("{{id: a, {kind}: {{{op}: {{PROBE: 1}}}}}}")),
                vec!["phases", "[]", kind, op],
            )
        });
    for (yaml, path) in cases.into_iter().chain(op_cases) {
        assert_eq!(
            schema_keys(&schema, &path),
            loader_keys(&procedure_diagnostics(&yaml), &yaml),
            "schema properties (left) and loader keys (right) differ at {path:?}"
        );
    }
}

#[test]
fn a_secret_capture_and_the_host_key_action_have_the_loaders_keys() {
    let schema = super::procedure();
    for (phase, path) in [
        (
            "{id: a, ssh_host_key: {node: n, PROBE: 1}}",
            vec!["phases", "[]", "ssh_host_key"],
        ),
        (
            "{id: a, pause: x, capture: {t: {from: x, PROBE: 1}}}",
            vec!["phases", "[]", "capture", "*"],
        ),
    ] {
        let yaml = with_phase(phase);
        assert_eq!(
            schema_keys(&schema, &path),
            loader_keys(&procedure_diagnostics(&yaml), &yaml),
            "schema properties (left) and loader keys (right) differ at {path:?}"
        );
    }
}

#[test]
fn an_include_phase_has_the_loaders_keys() {
    let yaml = with_phase("{id: a, include: {procedure: q}, PROBE: 1}");
    let diags = procedure_diagnostics(&yaml);
    let message = diags
        .iter()
        .map(|d| d.message.as_str())
        .find(|m| m.contains("does not apply to a phase with `include:`"))
        .unwrap_or_else(|| panic!("no include diagnostic: {diags:?}"));
    let (_, list) = message.split_once("it may only have ").expect("a key list");
    let loader: BTreeSet<&str> = list.split(", ").collect();
    let schema = super::procedure();
    let allowed = &schema["$defs"]["Phase"]["then"]["propertyNames"]["enum"];
    let allowed: BTreeSet<&str> = allowed
        .as_array()
        .expect("the include rule")
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(allowed, loader);
}

#[test]
fn every_inventory_mapping_has_the_loaders_keys() {
    let schema = super::inventory();
    let cases = [
        (format!("{PROBE}: 1\nnodes: [{{name: a}}]\n"), vec![]),
        (
            format!("ssh: {{{PROBE}: 1}}\nnodes: [{{name: a}}]\n"),
            vec!["ssh"],
        ),
        (
            format!("nodes: [{{name: a, {PROBE}: 1}}]\n"),
            vec!["nodes", "[]"],
        ),
        (
            format!("nodes: [{{name: a, ssh: {{{PROBE}: 1}}}}]\n"),
            vec!["nodes", "[]", "ssh"],
        ),
        (
            format!("nodes: [{{name: a}}]\nkubernetes: {{{PROBE}: 1}}\n"),
            vec!["kubernetes"],
        ),
        (
            format!("nodes: [{{name: a}}]\netcd: {{{PROBE}: 1}}\n"),
            vec!["etcd"],
        ),
    ];
    for (yaml, path) in cases {
        let diags = match Inventory::parse(Path::new("cluster.yaml"), &yaml) {
            Err(InventoryError::Invalid(diags)) => diags,
            other => panic!("expected diagnostics for\n{yaml}\ngot {other:?}"),
        };
        assert_eq!(
            schema_keys(&schema, &path),
            loader_keys(&diags, &yaml),
            "schema properties (left) and loader keys (right) differ at {path:?}"
        );
    }
}
