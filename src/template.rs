//! Jinja templates (minijinja) for procedure text: strict about undefined names, and shell-quoting
//! every value interpolated into a command.
//!
//! 1. A template marked as shell context (`run:`, `wait.run`) quotes each `{{ value }}` as one
//!    shell word; `{{ value | safe }}` opts out for trusted fragments.
//! 2. Templates are checked when a procedure loads: syntax, and names that are neither
//!    parameters, captured variables nor loop items.
//! 3. Rendering happens per phase at execution time (real values) or for display (secrets
//!    redacted, captured values not yet known shown as such).
//! 4. Every render and expression is bounded: [`FUEL`] steps, [`RECURSION_LIMIT`] levels of
//!    nesting, and [`MAX_RENDERED_BYTES`] of text (or of a value, as JSON), so a template such
//!    as `{{ [1] * 1000000000 }}` fails at once instead of eating memory.

use std::collections::BTreeSet;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// A template error with the line inside the template where it happened (1-based), if known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub(crate) message: String,
    pub(crate) line: Option<usize>,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            return TemplateError {
                message: format!(
                    "template takes more than {FUEL} steps to evaluate (the limit); loop over fewer items or compute the value outside the procedure"
                ),
                line: e.line(),
            };
        }
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

/// Instructions one render or expression may execute: real procedure templates use hundreds,
/// a loop over the inventory's nodes a few thousand.
pub(crate) const FUEL: u64 = 1_000_000;
/// Nesting (loops, conditions, macro calls) one render may reach.
pub(crate) const RECURSION_LIMIT: usize = 100;
/// Largest rendered text, or expression value as JSON.
pub(crate) const MAX_RENDERED_BYTES: usize = 1 << 20;

fn too_large(what: &str) -> TemplateError {
    TemplateError {
        message: format!(
            "{what} is larger than {} MiB (the limit); a template must not build huge values",
            MAX_RENDERED_BYTES >> 20
        ),
        line: None,
    }
}

/// Whether `value` printed (or as JSON) stays within `budget` bytes, roughly: one byte per
/// item plus the length of each string. Walks at most `budget` items, so a lazy
/// `[1] * 1000000000` is refused at once (minijinja would iterate all of it while printing,
/// even after the output refused more text).
fn fits(value: &Value, budget: &mut usize) -> bool {
    fn charge(budget: &mut usize, n: usize) -> bool {
        match budget.checked_sub(n) {
            Some(left) => {
                *budget = left;
                true
            }
            None => false,
        }
    }
    match value.kind() {
        ValueKind::String | ValueKind::Bytes => charge(budget, value.len().unwrap_or(0) + 1),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            if value.len().is_some_and(|n| n > *budget) {
                return false;
            }
            let Ok(items) = value.try_iter() else {
                return charge(budget, 1);
            };
            let map = value.kind() == ValueKind::Map;
            for item in items {
                if !charge(budget, 1) || !fits(&item, budget) {
                    return false;
                }
                if map && !fits(&value.get_item(&item).unwrap_or_default(), budget) {
                    return false;
                }
            }
            true
        }
        _ => charge(budget, 1),
    }
}

/// Collects rendered text and fails the render once it passes `MAX_RENDERED_BYTES`.
#[derive(Default)]
struct BoundedBuffer {
    bytes: Vec<u8>,
    exceeded: bool,
}

impl std::io::Write for BoundedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.exceeded = true;
            return Err(std::io::Error::other("rendered text too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Quotes one word for `sh`: unchanged when it has no special characters.
pub(crate) fn shell_quote(word: &str) -> String {
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

/// The `tojson` filter, with an optional indent, returning a plain (not safe) string.
fn tojson(value: Value, indent: Option<usize>) -> Result<String, minijinja::Error> {
    let fail = |e: serde_json::Error| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
    };
    let Some(indent) = indent else {
        return serde_json::to_string(&value).map_err(fail);
    };
    let spaces = " ".repeat(indent);
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&value, &mut ser).map_err(fail)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
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
            if !fits(value, &mut MAX_RENDERED_BYTES.clone()) {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    too_large("a value").message,
                ));
            }
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
        // minijinja marks `tojson` output safe (it is meant for HTML), so a shell command would
        // get it unquoted and `"$(...)"` inside a JSON string would run. Here it is a plain
        // string, quoted as one word like any value.
        env.add_filter("tojson", tojson);
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
    pub(crate) fn render(
        &self,
        source: &str,
        shell: bool,
        ctx: &Value,
    ) -> Result<String, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(source.to_string());
        }
        let template = self
            .env
            .template_from_named_str(Self::name(shell), source)?;
        let mut out = BoundedBuffer::default();
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => Ok(String::from_utf8_lossy(&out.bytes).into_owned()),
            Err(_) if out.exceeded => Err(too_large("the rendered text")),
            Err(e) => Err(name_undefined(
                e,
                || self.template_names(source, shell),
                ctx,
            )),
        }
    }

    /// Evaluates an expression such as `members | length >= 2`; `{{ ... }}` around it is
    /// accepted for readability.
    pub(crate) fn eval(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let compiled = self.env.compile_expression(strip_braces(expr))?;
        let value = compiled
            .eval(ctx)
            .map_err(|e| name_undefined(e, || self.expression_names(expr), ctx))?;
        // Callers turn values into JSON (foreach items, captures); a lazy `[x] * n` would
        // only grow then, so its size is checked here, within the same bound.
        if !fits(&value, &mut MAX_RENDERED_BYTES.clone()) {
            return Err(too_large("the value"));
        }
        Ok(value)
    }

    /// Names a template uses that it does not define itself (checked at load time).
    pub(crate) fn template_names(
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
    pub(crate) fn expression_names(&self, expr: &str) -> Result<BTreeSet<String>, TemplateError> {
        let compiled = self.env.compile_expression(strip_braces(expr))?;
        Ok(compiled.undeclared_variables(false).into_iter().collect())
    }
}

impl Templates {
    /// Filters (`| name`) and tests (`is name`) a template uses that do not exist. minijinja
    /// only finds these while rendering, so they are checked here by name at load time.
    pub(crate) fn unknown_filters_and_tests(&self, source: &str, expression: bool) -> Vec<String> {
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

/// An "undefined value" error names the names that are undefined (minijinja does not), e.g. a
/// value captured by a phase that was skipped.
fn name_undefined(
    e: minijinja::Error,
    names: impl FnOnce() -> Result<BTreeSet<String>, TemplateError>,
    ctx: &Value,
) -> TemplateError {
    let undefined = e.kind() == minijinja::ErrorKind::UndefinedError;
    let mut err = TemplateError::from(e);
    if undefined {
        let missing: Vec<String> = names()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| ctx.get_attr(n).map_or(true, |v| v.is_undefined()))
            .map(|n| format!("`{n}`"))
            .collect();
        if !missing.is_empty() {
            err.message = format!(
                "{}: {} {} not defined here (a captured value whose phase was skipped or has not run?)",
                err.message,
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" }
            );
        }
    }
    err
}

/// Names whose value is captured at run time and not known yet (a dry-run, a plan preview). A
/// template sees [`Pending::placeholder`] for each; code asks this set, never the text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending(BTreeSet<String>);

impl Pending {
    /// What a template shows for the pending `name`.
    pub(crate) fn placeholder(name: &str) -> String {
        format!("<{name}: captured at run time>")
    }

    pub(crate) fn insert(&mut self, name: &str) {
        self.0.insert(name.to_string());
    }

    /// `name` is bound to a known value after all.
    pub(crate) fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Each pending name with its placeholder, to put in a template context.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = (String, serde_json::Value)> + '_ {
        self.0
            .iter()
            .map(|n| (n.clone(), serde_json::Value::String(Self::placeholder(n))))
    }
}

/// What a phase's templates render against: the values (dereferences to them), and which
/// names among them are [`Pending`].
#[derive(Clone, Debug)]
pub struct TemplateContext {
    values: Value,
    pending: Pending,
}

impl TemplateContext {
    pub(crate) fn new(values: Value, pending: Pending) -> Self {
        TemplateContext { values, pending }
    }

    pub(crate) fn pending(&self) -> &Pending {
        &self.pending
    }
}

impl std::ops::Deref for TemplateContext {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.values
    }
}

/// `{{ a >= 2 }}` → `a >= 2`; anything else is returned trimmed.
pub(crate) fn strip_braces(expr: &str) -> &str {
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
        let err = t
            .render("{{ node }} {{ nope }}", false, &ctx())
            .unwrap_err();
        assert!(
            err.message.contains("`nope` is not defined"),
            "{}",
            err.message
        );
        let err = t.eval("nope > 1", &ctx()).unwrap_err();
        assert!(
            err.message.contains("`nope` is not defined"),
            "{}",
            err.message
        );
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
    fn rendering_is_bounded_in_steps_nesting_and_size() {
        let t = Templates::new();
        let cases: &[(&str, bool, &str)] = &[
            ("{{ [1] * 1000000000 }}", false, "larger than 1 MiB"),
            ("{{ 'x' * 2000000 }}", true, "larger than 1 MiB"),
            (
                "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
                false,
                "more than 1000000 steps",
            ),
            (
                "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
                false,
                "recursion",
            ),
        ];
        for (source, shell, want) in cases {
            let err = t.render(source, *shell, &ctx()).unwrap_err();
            assert!(err.message.contains(want), "{source}: {}", err.message);
        }
        let err = t.eval("[1] * 1000000000", &ctx()).unwrap_err();
        assert!(err.message.contains("larger than 1 MiB"), "{}", err.message);
        // Within the bounds a long render still works.
        let ok = t
            .render(
                "{% for i in range(20000) %}{{ i }} {% endfor %}",
                false,
                &ctx(),
            )
            .unwrap();
        assert!(ok.trim_end().ends_with("19999"), "{}", &ok[ok.len() - 20..]);
        assert!(t.eval("range(1000) | list | length", &ctx()).unwrap() == Value::from(1000));
    }

    #[test]
    fn tojson_is_quoted_in_shell_context() {
        let t = Templates::new();
        let ctx = Value::from_serialize(serde_json::json!({"v": "$(touch /tmp/x)"}));
        let out = t.render("echo {{ v | tojson }}", true, &ctx).unwrap();
        assert_eq!(out, "echo '\"$(touch /tmp/x)\"'");
        let out = t.render("{{ {'a': v} | tojson(2) }}", false, &ctx).unwrap();
        assert_eq!(out, "{\n  \"a\": \"$(touch /tmp/x)\"\n}");
    }

    #[test]
    fn pending_names_are_typed_and_shown_as_a_placeholder() {
        let mut pending = Pending::default();
        pending.insert("member");
        pending.insert("gone");
        pending.remove("gone");
        assert!(pending.contains("member") && !pending.contains("gone"));
        let values: serde_json::Map<_, _> = pending.placeholders().collect();
        assert_eq!(
            serde_json::Value::Object(values),
            serde_json::json!({"member": "<member: captured at run time>"})
        );
        // A value that merely reads like a placeholder is not pending.
        let ctx = TemplateContext::new(
            Value::from_serialize(serde_json::json!({"x": "<x: captured at run time>"})),
            Pending::default(),
        );
        assert!(!ctx.pending().contains("x"));
        assert_eq!(
            Templates::new().render("{{ x }}", false, &ctx).unwrap(),
            "<x: captured at run time>"
        );
    }

    #[test]
    fn expressions_accept_braces() {
        let t = Templates::new();
        assert!(t.eval("{{ n >= 2 }}", &ctx()).unwrap().is_true());
        assert!(!t.eval("n > 5", &ctx()).unwrap().is_true());
        assert_eq!(strip_braces(" {{ x }} "), "x");
    }
}
