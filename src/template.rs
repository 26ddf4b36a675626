//! Jinja templates (minijinja) for procedure text: strict about undefined names, and shell-quoting
//! every value interpolated into a command.
//!
//! 1. A template marked as shell context (`run:`, `wait.run`) quotes each `{{ value }}` as one
//!    shell word; `{{ value | safe }}` opts out for trusted fragments.
//! 2. Templates are checked when a procedure loads: syntax, and names that are neither
//!    parameters, captured variables nor loop items.
//! 3. Rendering happens per phase at execution time (real values) or for display (secrets
//!    redacted, captured values not yet known shown as such).

use std::collections::BTreeSet;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// A template error with the line inside the template where it happened (1-based), if known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    pub line: Option<usize>,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let mut message = e.kind().to_string();
        if let Some(detail) = e.detail() {
            message = format!("{message}: {detail}");
        }
        TemplateError {
            message,
            line: e.line(),
        }
    }
}

const SHELL: &str = "shell";

pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Quotes one word for `sh`: unchanged when it has no special characters.
pub fn shell_quote(word: &str) -> String {
    if word.is_empty() {
        return "''".to_string();
    }
    match shlex::try_quote(word) {
        Ok(q) => q.into_owned(),
        // Only NUL bytes are refused; they cannot be passed to a command at all.
        Err(_) => shell_quote(&word.replace('\0', "")),
    }
}

/// The `shell_words` filter. The value is not echoed in the error: it may hold a secret.
fn shell_words(text: String) -> Result<Value, minijinja::Error> {
    match shlex::split(&text) {
        Some(words) => Ok(Value::from(words)),
        None => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "filter shell_words: the value has an unbalanced quote or ends in a backslash, so it cannot be split into words",
        )),
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".sh") {
                AutoEscape::Custom(SHELL)
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::Custom(SHELL)) && !value.is_safe() {
                let words: Vec<String> = if value.kind() == ValueKind::Seq {
                    value
                        .try_iter()
                        .map(|it| it.map(|v| shell_quote(&v.to_string())).collect())
                        .unwrap_or_default()
                } else {
                    vec![shell_quote(&value.to_string())]
                };
                out.write_str(&words.join(" ")).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                })
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        // `{{ inventory.nodes | with_role('worker') }}`: the nodes that have a role.
        env.add_filter(
            "with_role",
            |nodes: Value, role: String| -> Result<Value, minijinja::Error> {
                let mut out = Vec::new();
                for node in nodes.try_iter()? {
                    let roles = node.get_attr("roles")?;
                    let has = roles
                        .try_iter()
                        .map(|mut it| it.any(|r| r.as_str() == Some(role.as_str())))
                        .unwrap_or(false);
                    if has {
                        out.push(node);
                    }
                }
                Ok(Value::from(out))
            },
        );
        // `{{ join_command | shell_words }}`: the words a POSIX shell would split the string
        // into, as a list, so a shell template quotes each word on its own.
        env.add_filter("shell_words", shell_words);
        Templates { env }
    }

    fn name(shell: bool) -> &'static str {
        if shell {
            "command.sh"
        } else {
            "text"
        }
    }

    /// Renders `source` with `ctx`; in shell context every interpolated value is quoted.
    pub fn render(&self, source: &str, shell: bool, ctx: &Value) -> Result<String, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(source.to_string());
        }
        Ok(self.env.render_named_str(Self::name(shell), source, ctx)?)
    }

    /// Evaluates an expression such as `members | length >= 2`; `{{ ... }}` around it is
    /// accepted for readability.
    pub fn eval(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let compiled = self.env.compile_expression(strip_braces(expr))?;
        Ok(compiled.eval(ctx)?)
    }

    /// Names a template uses that it does not define itself (checked at load time).
    pub fn template_names(
        &self,
        source: &str,
        shell: bool,
    ) -> Result<BTreeSet<String>, TemplateError> {
        let tmpl = self
            .env
            .template_from_named_str(Self::name(shell), source)?;
        Ok(tmpl.undeclared_variables(false).into_iter().collect())
    }

    /// Names an expression uses (checked at load time).
    pub fn expression_names(&self, expr: &str) -> Result<BTreeSet<String>, TemplateError> {
        let compiled = self.env.compile_expression(strip_braces(expr))?;
        Ok(compiled.undeclared_variables(false).into_iter().collect())
    }
}

impl Templates {
    /// Filters (`| name`) and tests (`is name`) a template uses that do not exist. minijinja
    /// only finds these while rendering, so they are checked here by name at load time.
    pub fn unknown_filters_and_tests(&self, source: &str, expression: bool) -> Vec<String> {
        // In a template only the `{{ }}` and `{% %}` blocks are Jinja; the rest is plain text
        // (often a shell command with its own `|`).
        static BLOCK: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let block = BLOCK
            .get_or_init(|| regex::Regex::new(r"(?s)\{\{(.*?)\}\}|\{%(.*?)%\}").expect("valid"));
        let code: String = if expression {
            source.to_string()
        } else {
            block
                .captures_iter(source)
                .filter_map(|c| c.get(1).or_else(|| c.get(2)))
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let source = code.as_str();
        static FILTER: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        static TEST: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let filter = FILTER
            .get_or_init(|| regex::Regex::new(r"\|\s*([A-Za-z_][A-Za-z0-9_]*)").expect("valid"));
        let test = TEST.get_or_init(|| {
            regex::Regex::new(r"\bis\s+(?:not\s+)?([A-Za-z_][A-Za-z0-9_]*)").expect("valid")
        });
        let mut unknown = Vec::new();
        for (re, kind) in [(filter, "filter"), (test, "test")] {
            for cap in re.captures_iter(source) {
                let name = &cap[1];
                let probe = if kind == "filter" {
                    format!("none | {name}")
                } else {
                    format!("none is {name}")
                };
                let missing = match self.env.compile_expression(&probe) {
                    Ok(expr) => matches!(
                        expr.eval(()),
                        Err(e) if matches!(e.kind(), minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest)
                    ),
                    Err(_) => false,
                };
                let label = format!("unknown {kind} `{name}`");
                if missing && !unknown.contains(&label) {
                    unknown.push(label);
                }
            }
        }
        unknown
    }
}

/// `{{ a >= 2 }}` → `a >= 2`; anything else is returned trimmed.
pub fn strip_braces(expr: &str) -> &str {
    let t = expr.trim();
    if let Some(inner) = t.strip_prefix("{{").and_then(|s| s.strip_suffix("}}")) {
        if !inner.contains("{{") && !inner.contains("}}") {
            return inner.trim();
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        Value::from_serialize(serde_json::json!({
            "node": "x; touch /tmp/pwned",
            "plain": "cp-1",
            "list": ["a b", "c"],
            "n": 3
        }))
    }

    #[test]
    fn shell_context_quotes_each_value() {
        let t = Templates::new();
        let out = t
            .render("echo {{ node }} {{ plain }}", true, &ctx())
            .unwrap();
        assert_eq!(out, "echo 'x; touch /tmp/pwned' cp-1");
        let out = t.render("ls {{ list }}", true, &ctx()).unwrap();
        assert_eq!(out, "ls 'a b' c");
        let out = t.render("echo {{ node }}", false, &ctx()).unwrap();
        assert_eq!(out, "echo x; touch /tmp/pwned");
    }

    #[test]
    fn undefined_names_are_errors() {
        let t = Templates::new();
        assert!(t.render("{{ nope }}", false, &ctx()).is_err());
        let names = t.template_names("{{ a }} {{ b | upper }}", false).unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn unknown_filters_and_tests_are_found_by_name() {
        let t = Templates::new();
        let check = |src: &str, expr: bool| t.unknown_filters_and_tests(src, expr);
        assert_eq!(
            check("{{ x | lenght }} {{ y | length }}", false),
            ["unknown filter `lenght`"]
        );
        assert_eq!(
            check("{% if x is nmber %}{% endif %}", false),
            ["unknown test `nmber`"]
        );
        assert!(check("x | int >= 2 and y is defined", true).is_empty());
        assert_eq!(check("x | lenght", true), ["unknown filter `lenght`"]);
        // Shell pipes outside Jinja blocks are not filters.
        assert!(check("df {{ dir }} | awk '{print}' && echo is ok", false).is_empty());
    }

    #[test]
    fn shell_words_quotes_each_word_and_refuses_unbalanced_quotes() {
        let t = Templates::new();
        let ctx = Value::from_serialize(serde_json::json!({
            "cmd": "kubeadm join 'a b' --token x;y",
            "bad": "echo 'oops",
        }));
        let out = t
            .render("sudo {{ cmd | shell_words }}", true, &ctx)
            .unwrap();
        assert_eq!(out, "sudo kubeadm join 'a b' --token 'x;y'");
        // Without the filter the whole value stays one word.
        let out = t.render("sudo {{ cmd }}", true, &ctx).unwrap();
        assert_eq!(out, "sudo \"kubeadm join 'a b' --token x;y\"");
        let err = t.render("{{ bad | shell_words }}", true, &ctx).unwrap_err();
        assert!(err.message.contains("shell_words"), "{}", err.message);
        assert!(!err.message.contains("oops"), "{}", err.message);
        assert!(t
            .unknown_filters_and_tests("{{ cmd | shell_words }}", false)
            .is_empty());
    }

    #[test]
    fn expressions_accept_braces() {
        let t = Templates::new();
        assert!(t.eval("{{ n >= 2 }}", &ctx()).unwrap().is_true());
        assert!(!t.eval("n > 5", &ctx()).unwrap().is_true());
        assert_eq!(strip_braces(" {{ x }} "), "x");
    }
}
