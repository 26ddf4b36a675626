//! The drill: a disposable local cluster for rehearsals and tests.
//!
//! - [`cluster`]: `medic drill up|status|break|provision|down` (etcd members, one sshd, the
//!   API emulator, the drill's inventory);
//! - [`node`]: what `systemctl`, `kubeadm`, `apt-get` do on a drill node;
//! - [`apiserver`]: the Kubernetes API emulator (`medic drill apiserver`), which the `kube`
//!   action and the stock `kubectl` use as a cluster.

pub mod apiserver;
pub mod cluster;
pub mod node;

use marked_yaml::Node;
use serde_json::Value;

/// YAML (as marked_yaml reads it) to JSON, typing unquoted scalars as YAML 1.2 core does:
/// `true`/`false`, integers, floats and `null` become JSON values, the rest strings.
pub fn yaml_to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return Value::String(text.to_string());
            }
            match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" | "~" | "" => Value::Null,
                _ => {
                    if let Ok(i) = text.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(f) = text
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && text.contains('.'))
                    {
                        Value::from(f)
                    } else {
                        Value::String(text.to_string())
                    }
                }
            }
        }
        Node::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), yaml_to_json(v)))
                .collect(),
        ),
    }
}

/// Reads a seed file: a YAML list of Kubernetes objects.
pub fn read_seed(path: &std::path::Path) -> Result<Vec<Value>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read seed {}: {e}", path.display()))?;
    // With coercion "prevented", marked_yaml remembers which scalars were plain (unquoted).
    let options = marked_yaml::LoaderOptions::default()
        .toplevel_sequence()
        .prevent_coercion(true);
    let node = marked_yaml::parse_yaml_with_options(0, &text, options)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match yaml_to_json(&node) {
        Value::Array(items) => Ok(items),
        _ => Err(format!(
            "{}: the seed must be a YAML list of objects",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_typed_unless_quoted() {
        let options = marked_yaml::LoaderOptions::default().prevent_coercion(true);
        let node = marked_yaml::parse_yaml_with_options(
            0,
            "a: true\nb: \"true\"\nc: 3\nd: 1.5\ne: x\nf: null\ng: '7'\nh: \"\"\n",
            options,
        )
        .unwrap();
        assert_eq!(
            yaml_to_json(&node),
            serde_json::json!({"a": true, "b": "true", "c": 3, "d": 1.5, "e": "x", "f": null, "g": "7", "h": ""})
        );
    }
}
