//! `medic schema procedure|inventory`: the printed JSON Schema accepts every shipped procedure
//! and a drill-style inventory, and refuses malformed files (checked with the `jsonschema`
//! validator, on YAML read as an editor's YAML language server reads it).

mod common;

use std::path::Path;

use common::Env;
use marked_yaml::{LoaderOptions, Node};
use serde_json::Value;

/// The schema `medic schema DOCUMENT` prints, compiled.
fn validator(document: &str) -> jsonschema::Validator {
    let schema = Env::new().medic(&["schema", document]).run().code(0).json();
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{schema}"
    );
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// YAML as JSON with YAML 1.2 core types: a plain `3` is a number, `true` a boolean, `~` null;
/// a quoted scalar is text.
fn yaml_to_json(text: &str) -> Value {
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options).expect("valid YAML");
    fn convert(node: &Node) -> Value {
        match node {
            Node::Mapping(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.as_str().to_string(), convert(v)))
                    .collect(),
            ),
            Node::Sequence(s) => Value::Array(s.iter().map(convert).collect()),
            Node::Scalar(s) => {
                let text = s.as_str();
                match medic::source::plain_non_string(s) {
                    Some("a boolean") => Value::Bool(text.eq_ignore_ascii_case("true")),
                    Some("null") => Value::Null,
                    Some(_) => text
                        .parse::<i64>()
                        .map(Value::from)
                        .or_else(|_| text.parse::<f64>().map(Value::from))
                        .unwrap_or_else(|_| Value::from(text)),
                    None if text.is_empty() && s.may_coerce() => Value::Null,
                    None => Value::from(text),
                }
            }
        }
    }
    convert(&root)
}

fn problems(validator: &jsonschema::Validator, yaml: &str) -> Vec<String> {
    let instance = yaml_to_json(yaml);
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_shipped_procedure_validates() {
    let validator = validator("procedure");
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut checked = 0;
    for entry in std::fs::read_dir(&plans).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let found = problems(&validator, &text);
            assert!(
                found.is_empty(),
                "{}:\n{}",
                path.display(),
                found.join("\n")
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} procedures in {}",
        plans.display()
    );
}

/// The inventory `medic drill up` writes, with the keys a site adds (etcd TLS, per-node SSH).
const DRILL_INVENTORY: &str = r#"
# The drill's inventory, written by `medic drill up`.
name: drill
ssh:
  user: medic
  port: 2222
  identity_file: /tmp/drill/ssh/user_key
  known_hosts: /tmp/drill/known_hosts
  connect_timeout: 5s
nodes:
  - {name: cp-1, address: 127.0.10.1, roles: [control-plane, etcd]}
  - {name: cp-2, address: 127.0.10.2, roles: [control-plane, etcd]}
  - {name: worker-1, address: 127.0.10.4, roles: [worker]}
  - name: worker-2
    roles: worker
    ssh: {user: admin, sudo: true, host_key_checking: accept-new, jump_host: bastion:2200}
kubernetes:
  kubeconfig: /tmp/drill/kubeconfig
  context: drill
etcd:
  endpoints:
    - https://127.0.10.1:2379
    - https://127.0.10.2:2379
  ca: pki/ca.crt
  cert: pki/client.crt
  key: pki/client.key
  transport: ssh
  via: cp-1
"#;

#[test]
fn a_drill_inventory_validates() {
    let found = problems(&validator("inventory"), DRILL_INVENTORY);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// A procedure using every kind of value the schema describes, so a wrong shape in it shows.
const FULL_PROCEDURE: &str = r#"
name: full
description: every key
params:
  node: {required: true, pattern: "^[a-z0-9-]+$", description: the node}
  nodes: {type: list, default: [a, b]}
  token: {secret: yes}
  plain:
phases:
  - id: checks
    phases:
      - {id: one, check: "{{ node }}"}
      - {id: two, check: {that: "{{ node }}", message: "no"}, when: {that: "{{ true }}", reason: r}}
  - id: each
    foreach: "{{ nodes }}"
    as: n
    parallel: true
    max_parallel: 2
    requires: checks
    include: {procedure: other, with: {node: "{{ n }}", count: 3}}
  - id: work
    requires: [/checks/one, each]
    run: {command: "echo {{ node }}", env: {TOKEN: "{{ token }}"}}
    rollback: {ssh: {on: {role: worker}, run: "true", sudo: true, timeout: 1m}}
    timeout: 30
    retries: 3
    retry_delay: 500ms
    idempotent: false
    capture: {out: stdout}
  - {id: wait, wait: {run: "true", timeout: 5m, interval: 5s}}
  - {id: members, etcd: {member_list: , transport: direct}}
  - {id: health, etcd: {health: }}
  - {id: remove, etcd: {member_remove: {node: "{{ node }}"}, via: cp-1}}
  - {id: drain, kube: {drain: {node: "{{ node }}", timeout: "{{ t }}", force: true, grace_period: 30}}}
  - {id: taint, kube: {taint: {node: x, key: k, effect: NoExecute}}}
  - {id: nodes, kube: {nodes: }}
  - {id: pause, pause: "do it"}
"#;

#[test]
fn a_procedure_with_every_key_validates() {
    let found = problems(&validator("procedure"), FULL_PROCEDURE);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn malformed_procedures_fail_validation() {
    let validator = validator("procedure");
    let phase = |extra: &str| format!("name: p\nphases:\n  - {{id: a, run: x, {extra}}}\n");
    let cases = [
        ("unknown phase key", phase("retires: 3"), "retires"),
        (
            "unknown top-level key",
            "name: p\nphase: []\nphases: [{id: a, run: x}]\n".to_string(),
            "phase",
        ),
        (
            "timeout as a list",
            phase("timeout: [5m]"),
            "/phases/0/timeout",
        ),
        (
            "timeout as a boolean",
            phase("timeout: true"),
            "/phases/0/timeout",
        ),
        (
            "timeout that is no duration",
            phase("timeout: soon"),
            "/phases/0/timeout",
        ),
        (
            "retries as text",
            phase("retries: many"),
            "/phases/0/retries",
        ),
        (
            "retries as a fraction",
            phase("retries: 1.5"),
            "/phases/0/retries",
        ),
        (
            "too many retries",
            phase("retries: 101"),
            "/phases/0/retries",
        ),
        ("empty timeout", phase("timeout: "), "/phases/0/timeout"),
        (
            "phases not a list",
            "name: p\nphases: {id: a, run: x}\n".to_string(),
            "/phases",
        ),
        ("no phases", "name: p\n".to_string(), "phases"),
        (
            "two actions in a rollback",
            phase("rollback: {run: x, pause: y}"),
            "/phases/0/rollback",
        ),
        ("two actions", phase("pause: y"), "/phases/0"),
        (
            "no action",
            "name: p\nphases: [{id: a}]\n".to_string(),
            "/phases/0",
        ),
        (
            "an include with retries",
            "name: p\nphases: [{id: a, include: {procedure: q}, retries: 2}]\n".to_string(),
            "retries",
        ),
        (
            "two etcd operations",
            "name: p\nphases: [{id: a, etcd: {health: , status: }}]\n".to_string(),
            "/phases/0/etcd",
        ),
        (
            "no etcd operation",
            "name: p\nphases: [{id: a, etcd: {via: cp-1}}]\n".to_string(),
            "/phases/0/etcd",
        ),
        (
            "member_remove by name and id",
            "name: p\nphases: [{id: a, etcd: {member_remove: {name: x, id: y}}}]\n".to_string(),
            "member_remove",
        ),
        (
            "unknown kube operation",
            "name: p\nphases: [{id: a, kube: {evict: x}}]\n".to_string(),
            "evict",
        ),
        (
            "taint effect",
            "name: p\nphases: [{id: a, kube: {taint: {node: x, key: k, effect: Never}}}]\n"
                .to_string(),
            "effect",
        ),
    ];
    for (what, yaml, mentions) in cases {
        let found = problems(&validator, &yaml);
        assert!(!found.is_empty(), "{what}: the schema accepts\n{yaml}");
        assert!(
            found.iter().any(|p| p.contains(mentions)),
            "{what}: no problem mentions `{mentions}`:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn malformed_inventories_fail_validation() {
    let validator = validator("inventory");
    let cases = [
        (
            "node without name",
            "nodes:\n  - {address: 10.0.0.1}\n",
            "name",
        ),
        (
            "unknown node key",
            "nodes:\n  - {name: a, role: worker}\n",
            "role",
        ),
        ("nodes not a list", "nodes: {name: a}\n", "/nodes"),
        (
            "port out of range",
            "ssh: {port: 70000}\nnodes: [{name: a}]\n",
            "/ssh/port",
        ),
        (
            "host key checking off",
            "ssh: {host_key_checking: no}\nnodes: [{name: a}]\n",
            "host_key_checking",
        ),
        (
            "unknown etcd transport",
            "nodes: [{name: a}]\netcd: {transport: grpc}\n",
            "/etcd/transport",
        ),
    ];
    for (what, yaml, mentions) in cases {
        let found = problems(&validator, yaml);
        assert!(!found.is_empty(), "{what}: the schema accepts\n{yaml}");
        assert!(
            found.iter().any(|p| p.contains(mentions)),
            "{what}: no problem mentions `{mentions}`:\n{}",
            found.join("\n")
        );
    }
}
