//! Reading procedure YAML with positions: every problem is collected with file, line and column
//! so a load reports them all at once.

use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};
use serde::Serialize;

/// Where something is in a procedure file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem found in a procedure or its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// "N problems found:" and one indented line per problem.
pub fn render_diagnostics(prefix: &str, diags: &[Diagnostic]) -> String {
    let mut out = format!(
        "{prefix}{} problem{} found:",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    );
    for d in diags {
        out.push_str("\n  ");
        out.push_str(&d.to_string());
    }
    out
}

/// How a template string is used, for the load-time check of its names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    Text,
    Shell,
    Expression,
}

/// A template found while parsing, checked once every declared name is known.
#[derive(Clone, Debug)]
pub struct TemplateUse {
    pub location: Location,
    pub source: String,
    pub kind: TemplateKind,
    /// Loop variables visible where the template sits.
    pub locals: Vec<String>,
}

/// Collects diagnostics and template uses while a procedure file is read.
pub struct Reader {
    pub file: String,
    /// How deep the phase being read is nested (groups inside groups).
    pub depth: usize,
    pub diagnostics: Vec<Diagnostic>,
    pub templates: Vec<TemplateUse>,
    pub locals: Vec<String>,
}

impl Reader {
    pub fn new(file: &str) -> Self {
        Reader {
            file: file.to_string(),
            depth: 0,
            diagnostics: Vec::new(),
            templates: Vec::new(),
            locals: Vec::new(),
        }
    }

    pub fn location(&self, span: &Span) -> Location {
        let (line, column) = span
            .start()
            .map(|m| (m.line(), m.column()))
            .unwrap_or((1, 1));
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    pub fn error(&mut self, span: &Span, message: impl Into<String>) {
        let location = Some(self.location(span));
        self.diagnostics.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    /// Records a template for the name check and returns its text.
    pub fn template(&mut self, node: &MarkedScalarNode, kind: TemplateKind) -> String {
        let location = self.location(node.span());
        self.templates.push(TemplateUse {
            location,
            source: node.as_str().to_string(),
            kind,
            locals: self.locals.clone(),
        });
        node.as_str().to_string()
    }

    /// A scalar string, or an error naming what was expected.
    pub fn scalar<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n MarkedScalarNode> {
        match node {
            Node::Scalar(s) => Some(s),
            Node::Mapping(_) => {
                self.error(
                    &start_span(node),
                    format!("{what} must be a single value, not a mapping"),
                );
                None
            }
            Node::Sequence(_) => {
                self.error(
                    &start_span(node),
                    format!("{what} must be a single value, not a list"),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        let s = self.scalar(node, what)?;
        match s.as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            other => {
                self.error(
                    &start_span(node),
                    format!("{what} must be true or false, not `{other}`"),
                );
                None
            }
        }
    }

    pub fn uint(&mut self, node: &Node, what: &str) -> Option<u64> {
        let s = self.scalar(node, what)?;
        match s.as_str().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    &start_span(node),
                    format!(
                        "{what} must be a whole number such as 3, not `{}`",
                        s.as_str()
                    ),
                );
                None
            }
        }
    }

    /// A duration such as `30s`, `10m` or `1h30m`, in seconds.
    pub fn duration(&mut self, node: &Node, what: &str) -> Option<f64> {
        let s = self.scalar(node, what)?;
        match parse_duration(s.as_str()) {
            Some(d) if d > MAX_DURATION_SECS => {
                self.error(
                    &start_span(node),
                    format!("{what} must be at most 30 days, not `{}`", s.as_str()),
                );
                None
            }
            Some(d) => Some(d),
            None => {
                self.error(
                    &start_span(node),
                    format!(
                        "{what} must be a duration such as 30s, 10m or 1h, not `{}`",
                        s.as_str()
                    ),
                );
                None
            }
        }
    }
}

/// Where a node starts. A block mapping's own marker sits after its first key (a flow
/// mapping's is at its `{`), so the earlier of the two positions is used.
pub fn start_span(node: &Node) -> Span {
    if let Node::Mapping(map) = node {
        if let (Some(first), Some(own)) = (map.keys().next(), node.span().start()) {
            if let Some(key) = first.span().start() {
                if (key.line(), key.column()) < (own.line(), own.column()) {
                    return *first.span();
                }
            }
        }
    }
    *node.span()
}

/// The longest duration medic accepts anywhere (a timeout, an interval, a delay).
pub const MAX_DURATION_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// Parses `30s`, `10m`, `1h30m`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then_some(secs);
    }
    humantime::parse_duration(t).ok().map(|d| d.as_secs_f64())
}

/// The keys of a mapping, checked against the keys a reader knows.
pub struct Fields<'n> {
    map: &'n MarkedMappingNode,
    start: Span,
}

impl<'n> Fields<'n> {
    /// Reads `node` as a mapping; reports unknown keys (with the closest known one) at once.
    pub fn new(
        node: &'n Node,
        what: &str,
        known: &[&str],
        reader: &mut Reader,
    ) -> Option<Fields<'n>> {
        let Node::Mapping(map) = node else {
            reader.error(
                &start_span(node),
                format!(
                    "{what} must be a mapping with the keys {}",
                    known.join(", ")
                ),
            );
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let hint = closest(key.as_str(), known.iter().copied())
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_else(|| format!("; expected one of {}", known.join(", ")));
                reader.error(
                    key.span(),
                    format!("unknown key `{}` in {what}{hint}", key.as_str()),
                );
            }
        }
        Some(Fields {
            map,
            start: start_span(node),
        })
    }

    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.map.get_node(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &'n MarkedScalarNode> {
        self.map.keys()
    }

    /// Where the mapping starts (its first key).
    pub fn span(&self) -> &Span {
        &self.start
    }
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30.0));
        assert_eq!(parse_duration("10m"), Some(600.0));
        assert_eq!(parse_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_duration("2"), Some(2.0));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn closest_suggests_typos_only() {
        let known = ["requires", "retries", "rollback"];
        assert_eq!(closest("requries", known.iter().copied()), Some("requires"));
        assert_eq!(closest("zzzzzz", known.iter().copied()), None);
    }
}
