//! Reading `kube: {OP: ...}` from a procedure: one operation per action, its settings checked
//! with positions. Durations and flags may be templates (rendered when the phase runs);
//! literal values are checked here, at load time.

use std::collections::BTreeMap;

use marked_yaml::Node;

use super::{DrainSpec, KubeSpec, OPS};
use crate::source::{start_span, Fields, Reader, TemplateKind};

/// The settings each operation with a mapping body accepts.
fn keys_of(op: &str) -> &'static [&'static str] {
    match op {
        "drain" => &[
            "node",
            "timeout",
            "delete_emptydir_data",
            "ignore_daemonsets",
            "force",
            "grace_period",
            "disable_eviction",
        ],
        "wait_ready" => &["node", "timeout", "version"],
        "wait_gone" => &["node", "timeout"],
        "label" => &["node", "labels"],
        "unlabel" => &["node", "keys"],
        "taint" => &["node", "key", "value", "effect"],
        _ => &["node", "key"],
    }
}

fn scalar(reader: &mut Reader, n: &Node, what: &str) -> Option<String> {
    let s = reader.scalar(n, what)?;
    Some(reader.template(s, TemplateKind::Text))
}

pub(super) fn parse(node: &Node, reader: &mut Reader) -> Option<KubeSpec> {
    let fields = Fields::new(node, "kube", OPS, reader)?;
    let keys: Vec<&str> = fields.keys().map(|k| k.as_str()).collect();
    let [op] = keys.as_slice() else {
        reader.error(
            fields.span(),
            format!("kube needs exactly one operation: {}", OPS.join(", ")),
        );
        return None;
    };
    let body = fields.get(op).expect("listed");
    let spec = match *op {
        "cordon" => KubeSpec::Cordon(scalar(reader, body, "kube cordon")?),
        "uncordon" => KubeSpec::Uncordon(scalar(reader, body, "kube uncordon")?),
        "delete_node" => KubeSpec::DeleteNode(scalar(reader, body, "kube delete_node")?),
        "node_info" => KubeSpec::NodeInfo(scalar(reader, body, "kube node_info")?),
        "nodes" => {
            Fields::new(body, "kube nodes", &[], reader)?;
            KubeSpec::Nodes
        }
        "pods" => {
            let f = Fields::new(body, "kube pods", &["namespace"], reader)?;
            let Some(ns) = f.get("namespace") else {
                reader.error(
                    &start_span(body),
                    "kube pods needs `namespace:` (e.g. kube-system)",
                );
                return None;
            };
            KubeSpec::Pods {
                namespace: scalar(reader, ns, "kube pods namespace")?,
            }
        }
        _ => parse_node_op(op, body, reader)?,
    };
    Some(spec)
}

/// An operation whose body is a mapping with `node:` and its settings.
fn parse_node_op(op: &str, body: &Node, reader: &mut Reader) -> Option<KubeSpec> {
    let f = Fields::new(body, &format!("kube {op}"), keys_of(op), reader)?;
    let Some(node_n) = f.get("node") else {
        reader.error(&start_span(body), format!("kube {op} needs `node:`"));
        return None;
    };
    let node = scalar(reader, node_n, "node")?;
    let spec = match op {
        "drain" => KubeSpec::Drain(parse_drain(node, &f, reader)),
        "wait_ready" => KubeSpec::WaitReady {
            node,
            timeout: duration_field(&f, reader, "10m"),
            version: match f.get("version") {
                Some(n) => Some(scalar(reader, n, "kube wait_ready version")?),
                None => None,
            },
        },
        "wait_gone" => KubeSpec::WaitGone {
            node,
            timeout: duration_field(&f, reader, "5m"),
        },
        "label" => KubeSpec::Label {
            node,
            labels: parse_labels(&f, reader)?,
        },
        "unlabel" => KubeSpec::Unlabel {
            node,
            keys: parse_keys(&f, reader)?,
        },
        "taint" => parse_taint(node, &f, reader)?,
        _ => {
            let Some(key) = f
                .get("key")
                .and_then(|n| reader.scalar(n, "key"))
                .map(|s| s.as_str().to_string())
            else {
                reader.error(f.span(), "kube untaint needs `key:`");
                return None;
            };
            KubeSpec::Untaint { node, key }
        }
    };
    Some(spec)
}

fn parse_drain(node: String, f: &Fields<'_>, reader: &mut Reader) -> DrainSpec {
    let flag = |reader: &mut Reader, k: &str, d: bool| {
        f.get(k).and_then(|n| reader.bool(n, k)).unwrap_or(d)
    };
    DrainSpec {
        node,
        timeout: duration_field(f, reader, "10m"),
        delete_emptydir_data: bool_field(f, reader, "delete_emptydir_data", false),
        ignore_daemonsets: flag(reader, "ignore_daemonsets", true),
        force: flag(reader, "force", false),
        grace_period: f
            .get("grace_period")
            .and_then(|n| reader.uint(n, "grace_period"))
            .map(|g| g as i64),
        disable_eviction: flag(reader, "disable_eviction", false),
    }
}

fn parse_labels(f: &Fields<'_>, reader: &mut Reader) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let Some(Node::Mapping(m)) = f.get("labels") else {
        reader.error(f.span(), "kube label needs `labels: {key: value}`");
        return None;
    };
    for (k, v) in m.iter() {
        if let Some(s) = reader.scalar(v, "label value") {
            labels.insert(
                k.as_str().to_string(),
                reader.template(s, TemplateKind::Text),
            );
        }
    }
    Some(labels)
}

fn parse_keys(f: &Fields<'_>, reader: &mut Reader) -> Option<Vec<String>> {
    Some(match f.get("keys") {
        Some(Node::Sequence(items)) => items
            .iter()
            .filter_map(|i| reader.scalar(i, "key"))
            .map(|s| s.as_str().to_string())
            .collect(),
        Some(n) => vec![reader.scalar(n, "keys")?.as_str().to_string()],
        None => {
            reader.error(f.span(), "kube unlabel needs `keys:`");
            return None;
        }
    })
}

fn parse_taint(node: String, f: &Fields<'_>, reader: &mut Reader) -> Option<KubeSpec> {
    let get = |reader: &mut Reader, k: &str| {
        f.get(k)
            .and_then(|n| reader.scalar(n, k))
            .map(|s| s.as_str().to_string())
    };
    let Some(key) = get(reader, "key") else {
        reader.error(f.span(), "kube taint needs `key:`");
        return None;
    };
    let effect = get(reader, "effect").unwrap_or_else(|| "NoSchedule".into());
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect.as_str()) {
        reader.error(
            f.span(),
            format!(
                "kube taint effect must be NoSchedule, PreferNoSchedule or NoExecute, not `{effect}`"
            ),
        );
    }
    Some(KubeSpec::Taint {
        node,
        key,
        value: get(reader, "value").unwrap_or_default(),
        effect,
    })
}

/// A duration that may be a template; literal values are checked at load time.
fn duration_field(f: &Fields<'_>, reader: &mut Reader, default: &str) -> String {
    match f.get("timeout") {
        Some(n) => match reader.scalar(n, "kube timeout") {
            Some(s) if s.as_str().contains("{{") => reader.template(s, TemplateKind::Text),
            Some(_) => {
                reader.duration(n, "kube timeout");
                n.as_scalar()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            }
            None => default.to_string(),
        },
        None => default.to_string(),
    }
}

/// A boolean that may be a template; literal values are checked at load time.
fn bool_field(f: &Fields<'_>, reader: &mut Reader, key: &str, default: bool) -> String {
    match f.get(key) {
        Some(n) => match reader.scalar(n, key) {
            Some(s) if s.as_str().contains("{{") => reader.template(s, TemplateKind::Text),
            Some(s) => {
                let text = s.as_str().to_string();
                reader.bool(n, key).map(|b| b.to_string()).unwrap_or(text)
            }
            None => default.to_string(),
        },
        None => default.to_string(),
    }
}
