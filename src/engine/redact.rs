//! Secret redaction: [`Redactor`] replaces secret values (and the forms commands print them
//! back in) with `<secret:NAME>` in everything that reaches the store or a renderer.

use std::collections::BTreeMap;

use crate::procedure::MIN_SECRET_LEN;

/// Replaces secret values in text that came from the outside (command output, errors).
///
/// A multi-line secret is replaced whole, and each of its lines on its own too, since output
/// reaches the redactor line by line. Values and lines shorter than [`MIN_SECRET_LEN`] are not
/// searched for (they would garble every output they happen to occur in); secret parameters
/// that short are refused when the operation starts.
#[derive(Default)]
pub(crate) struct Redactor {
    secrets: std::sync::RwLock<Vec<(String, String)>>,
}

impl Redactor {
    pub(crate) fn new(secrets: &BTreeMap<String, String>) -> Self {
        let redactor = Redactor::default();
        for (k, v) in secrets {
            redactor.add(k, v);
        }
        redactor
    }

    /// Starts hiding `value` (and each of its lines) as `<secret:NAME>`.
    pub(crate) fn add(&self, name: &str, value: &str) {
        let placeholder = crate::procedure::secret_placeholder(name);
        let mut list = self.secrets.write().expect("redactor lock");
        let lines = value.lines().map(|l| l.trim_end_matches('\r'));
        for v in std::iter::once(value).chain(lines) {
            if v.chars().count() < MIN_SECRET_LEN {
                continue;
            }
            // Also the forms in which commands print it back: shell-quoted (medic's own
            // quoting, bash's `set -x`) and inside a JSON string (jq, kubectl -o json).
            let json = serde_json::to_string(v).unwrap_or_default();
            let forms = [
                v.to_string(),
                crate::template::shell_quote(v),
                format!("'{}'", v.replace('\'', "'\\''")),
                json.strip_prefix('"')
                    .and_then(|j| j.strip_suffix('"'))
                    .unwrap_or(v)
                    .to_string(),
            ];
            for form in forms {
                if !list.iter().any(|(x, _)| *x == form) {
                    list.push((form, placeholder.clone()));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        list.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, placeholder) in self.secrets.read().expect("redactor lock").iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), placeholder);
            }
        }
        out
    }

    /// Like [`Redactor::redact`], for a line that output reading cut at `cut` (a byte offset
    /// of the marker it appended): the kept text may end in the first part of a secret whose
    /// rest was dropped, so such a partial secret is removed too.
    pub(crate) fn redact_cut(&self, text: &str, cut: usize) -> String {
        let (kept, marker) = text.split_at(cut.min(text.len()));
        let mut kept = self.redact(kept);
        for (value, placeholder) in self.secrets.read().expect("redactor lock").iter() {
            let partial = (1..value.len())
                .rev()
                .filter(|k| value.is_char_boundary(*k))
                .find(|k| kept.ends_with(&value[..*k]));
            if let Some(k) = partial {
                kept.truncate(kept.len() - k);
                kept.push_str(placeholder);
                break;
            }
        }
        kept + &self.redact(marker)
    }

    /// Whether `text` holds a secret value (or a line of one).
    pub(crate) fn reveals(&self, text: &str) -> bool {
        self.secrets
            .read()
            .expect("redactor lock")
            .iter()
            .any(|(value, _)| text.contains(value.as_str()))
    }
}

#[cfg(test)]
mod redactor_tests {
    use super::Redactor;

    #[test]
    pub(super) fn quoted_and_json_escaped_forms_of_a_secret_are_hidden() {
        let secret = "Ab'cd\"ef\\gh-SECRETTAIL";
        let r = Redactor::new(&[("token".to_string(), secret.to_string())].into());
        for shown in [
            secret.to_string(),
            // bash `set -x`
            "+ true 'Ab'\\''cd\"ef\\gh-SECRETTAIL'".to_string(),
            // medic's own quoting, as in an error naming the rendered command
            crate::template::shell_quote(secret),
            // jq / kubectl -o json
            serde_json::json!({ "k": secret }).to_string(),
        ] {
            let out = r.redact(&shown);
            assert!(!out.contains("SECRETTAIL"), "{shown} -> {out}");
            assert!(out.contains("<secret:token>"), "{out}");
        }
    }
}
