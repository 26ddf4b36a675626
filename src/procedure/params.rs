//! Parameters: their declared kind, `--set` values checked against them, secrets kept apart,
//! and the two rules shared with include binding: how a text becomes a list, and how a value
//! is held to its pattern.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{plain, Procedure, ProcedureError};
use crate::source::{closest, Diagnostic, Location};

/// The kind of value a parameter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ParamKind {
    String,
    List,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct ParamSpec {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) required: bool,
    pub(crate) default: Option<serde_json::Value>,
    pub(crate) pattern: Option<String>,
    pub(crate) secret: bool,
    pub(crate) kind: ParamKind,
    #[serde(skip)]
    pub(crate) location: Location,
}

/// Parameter values for one operation; secret values are kept apart so they are never shown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    pub(crate) values: BTreeMap<String, serde_json::Value>,
    pub(crate) secrets: BTreeMap<String, String>,
}

impl Params {
    /// Values for templates: real secrets only when `reveal` (execution), else placeholders.
    pub(crate) fn template_values(&self, reveal: bool) -> BTreeMap<String, serde_json::Value> {
        let mut out = self.values.clone();
        for (k, v) in &self.secrets {
            let shown = if reveal {
                v.clone()
            } else {
                secret_placeholder(k)
            };
            out.insert(k.clone(), serde_json::Value::String(shown));
        }
        out
    }

    /// The parameters of a stored operation as a display shows them: secret values are never
    /// read, so each secret name holds its placeholder (an empty value would mean "an optional
    /// secret that was not given", which a display cannot know).
    pub(crate) fn shown(
        values: BTreeMap<String, serde_json::Value>,
        secret_names: impl IntoIterator<Item = String>,
    ) -> Params {
        Params {
            values,
            secrets: secret_names
                .into_iter()
                .map(|k| {
                    let shown = secret_placeholder(&k);
                    (k, shown)
                })
                .collect(),
        }
    }
}

/// The shortest secret value medic accepts (and searches output for).
pub(crate) const MIN_SECRET_LEN: usize = 6;

pub(crate) fn secret_placeholder(name: &str) -> String {
    format!("<secret:{name}>")
}

impl Procedure {
    /// Checks `--set key=value` pairs against the declared parameters; reports all problems.
    pub fn resolve_params(&self, sets: &[String]) -> Result<Params, ProcedureError> {
        let mut diags = Vec::new();
        let given = self.given_values(sets, &mut diags);
        let mut params = Params::default();
        for spec in &self.params {
            let value = match (given.get(&spec.name), &spec.default) {
                (Some(v), _) => match spec.kind {
                    ParamKind::String => serde_json::Value::String(v.clone()),
                    ParamKind::List => split_list(v),
                },
                (None, Some(d)) => d.clone(),
                (None, None) if spec.required => {
                    diags.push(missing(spec));
                    continue;
                }
                (None, None) => {
                    // Optional and not given: empty, and not held to its pattern.
                    let empty = serde_json::Value::String(String::new());
                    if spec.secret {
                        params.secrets.insert(spec.name.clone(), String::new());
                    } else {
                        params.values.insert(spec.name.clone(), empty);
                    }
                    continue;
                }
            };
            admit(spec, value, &mut params, &mut diags);
        }
        if diags.is_empty() {
            Ok(params)
        } else {
            Err(ProcedureError::Invalid(diags))
        }
    }

    /// The `--set key=value` pairs by key, reporting malformed, unknown and repeated ones.
    fn given_values(
        &self,
        sets: &[String],
        diags: &mut Vec<Diagnostic>,
    ) -> BTreeMap<String, String> {
        let mut given: BTreeMap<String, String> = BTreeMap::new();
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                // The argument may hold a secret typed with the wrong separator: only echo it
                // when it is exactly the name of a parameter that is not secret.
                let shown = match self.param(set.trim()) {
                    Some(p) if !p.secret => format!("--set `{}`", p.name),
                    _ => "a --set argument".to_string(),
                };
                diags.push(plain(format!(
                    "{shown} has no `=`; it must have the form key=value"
                )));
                continue;
            };
            let key = key.trim();
            if key.is_empty() {
                diags.push(plain(format!(
                    "--set `{}` has an empty parameter name; use key=value",
                    redact_set(self, set)
                )));
                continue;
            }
            if self.param(key).is_none() {
                diags.push(plain(format!(
                    "unknown parameter `{key}` for procedure {}{}",
                    self.name,
                    unknown_param_hint(&self.params, key)
                )));
                continue;
            }
            if given.insert(key.to_string(), value.to_string()).is_some() {
                diags.push(plain(format!("parameter `{key}` is set more than once")));
            }
        }
        given
    }
}

/// After "unknown parameter `key`": the closest name, or the names there are.
pub(super) fn unknown_param_hint(params: &[ParamSpec], key: &str) -> String {
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    match closest(key, names.iter().copied()) {
        Some(c) => format!("; did you mean `{c}`?"),
        None if names.is_empty() => "; it takes no parameters".to_string(),
        None => format!("; its parameters are {}", names.join(", ")),
    }
}

/// A list parameter given as text: comma-separated, each item trimmed, empty items dropped.
pub(super) fn split_list(text: &str) -> serde_json::Value {
    serde_json::Value::Array(
        text.split(',')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| serde_json::Value::String(s.to_string()))
            .collect(),
    )
}

/// The items of `value` (each item of a list, else the value itself) that `pattern`, checked
/// when the procedure loaded, does not match.
pub(super) fn pattern_mismatches(pattern: &str, value: &serde_json::Value) -> Vec<String> {
    let re = regex::Regex::new(pattern).expect("validated at load");
    let items: Vec<String> = match value {
        serde_json::Value::Array(a) => a.iter().map(json_text).collect(),
        other => vec![json_text(other)],
    };
    items.into_iter().filter(|i| !re.is_match(i)).collect()
}

fn missing(spec: &ParamSpec) -> Diagnostic {
    let about = if spec.description.is_empty() {
        String::new()
    } else {
        format!(" ({})", spec.description)
    };
    Diagnostic {
        location: Some(spec.location.clone()),
        message: format!(
            "missing required parameter `{}`{about}; pass --set {}=VALUE",
            spec.name, spec.name
        ),
    }
}

/// Holds a given (or default) value to its pattern and, for a secret, its length; keeps it
/// with the values or the secrets.
fn admit(
    spec: &ParamSpec,
    value: serde_json::Value,
    params: &mut Params,
    diags: &mut Vec<Diagnostic>,
) {
    let problems_before = diags.len();
    if let Some(pattern) = &spec.pattern {
        for item in pattern_mismatches(pattern, &value) {
            let shown = if spec.secret {
                "the given value".to_string()
            } else {
                format!("`{item}`")
            };
            diags.push(Diagnostic {
                location: Some(spec.location.clone()),
                message: format!(
                    "parameter `{}`: {shown} does not match the pattern {pattern}",
                    spec.name
                ),
            });
        }
    }
    if !spec.secret {
        params.values.insert(spec.name.clone(), value);
        return;
    }
    let text = json_text(&value);
    let len = text.chars().count();
    if len < MIN_SECRET_LEN && diags.len() == problems_before {
        diags.push(Diagnostic {
            location: Some(spec.location.clone()),
            message: format!(
                "secret parameter `{}` is {len} character{} long; a secret needs at least {} (a shorter one would be hidden wherever it happens to occur in output, garbling it)",
                spec.name,
                if len == 1 { "" } else { "s" },
                MIN_SECRET_LEN
            ),
        });
        return;
    }
    params.secrets.insert(spec.name.clone(), text);
}

/// `--set token=abc` → `token=<secret:token>` when `token` is secret.
pub(crate) fn redact_set(procedure: &Procedure, set: &str) -> String {
    match set.split_once('=') {
        Some((k, _)) if procedure.param(k.trim()).is_some_and(|p| p.secret) => {
            format!("{k}={}", secret_placeholder(k.trim()))
        }
        _ => set.to_string(),
    }
}

pub(super) fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
