//! Label and field selectors, a budget's `matchLabels`, and the query string they arrive in.

use std::collections::BTreeMap;

use serde_json::Value;

/// Equality-based selector terms, comma-separated: `k=v`, `k==v`, `k!=v`, `k` (present),
/// `!k` (absent), against `value_of(key)` (`None` = absent).
fn terms_match(selector: &str, value_of: impl Fn(&str) -> Option<String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                value_of(k.trim()).as_deref() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                value_of(k.trim()).as_deref() == Some(v.trim_start_matches('=').trim())
            } else if let Some(k) = term.strip_prefix('!') {
                value_of(k.trim()).is_none()
            } else {
                value_of(term).is_some()
            }
        })
}

pub(super) fn labels_match(selector: &str, labels: &Value) -> bool {
    terms_match(selector, |k| labels[k].as_str().map(String::from))
}

fn field(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        cur = &cur[part];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Field selectors (`spec.nodeName=n1`); a missing field compares as empty, as in Kubernetes.
pub(super) fn fields_match(selector: &str, obj: &Value) -> bool {
    terms_match(selector, |k| Some(field(obj, k)))
}

/// A PDB's selector (matchLabels only) against a pod's labels.
pub(super) fn selector_matches(selector: &Value, labels: &Value) -> bool {
    match selector["matchLabels"].as_object() {
        Some(m) => m.iter().all(|(k, v)| labels[k] == *v),
        None => selector.as_object().is_some_and(|o| o.is_empty()),
    }
}

pub(super) fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(labels_match("app=web,tier", &labels));
        assert!(labels_match("app==web,!missing", &labels));
        assert!(!labels_match("app!=web", &labels));
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert!(fields_match("spec.nodeName=n1", &pod));
        assert!(!fields_match("spec.nodeName!=n1", &pod));
        assert_eq!(percent_decode("spec.nodeName%3Dn1"), "spec.nodeName=n1");
    }
}
