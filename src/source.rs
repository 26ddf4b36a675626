//! Reading YAML with positions (procedures, the inventory, action specs): every problem is
//! collected with file, line and column so a load reports them all at once, and a closest-match
//! hint for a misspelt name.

use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};
use serde::Serialize;

/// The largest procedure or inventory file medic reads: far more than any real one, and a
/// bound on what a wrong path (`/dev/zero`, a disk image, a FIFO) can cost.
pub const MAX_SOURCE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a procedure or inventory file: a regular file (checked before opening, since opening
/// a FIFO blocks and a device never ends) of at most [`MAX_SOURCE_BYTES`].
pub fn read_source(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read as _};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is not a regular file (a directory, device, pipe or socket); give a YAML file",
        ));
    }
    let too_big = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "it is larger than {} MiB, far more than any procedure or inventory",
                MAX_SOURCE_BYTES / (1024 * 1024)
            ),
        )
    };
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

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
    /// The static path of the phase it belongs to (`/etcd/remove`), empty outside phases.
    pub phase: String,
    /// Whether it is part of the phase's `rollback:` (which runs after the phase itself).
    pub rollback: bool,
}

/// Collects diagnostics and template uses while a procedure file is read.
pub struct Reader {
    pub file: String,
    /// How deep the phase being read is nested (groups inside groups).
    pub depth: usize,
    pub diagnostics: Vec<Diagnostic>,
    pub templates: Vec<TemplateUse>,
    pub locals: Vec<String>,
    /// The procedure's parameter names, known once `params:` is read; a loop variable may
    /// not shadow one.
    pub params: Vec<String>,
    /// Every loop variable (`as:`) with where it is named, checked against captures later.
    pub loop_names: Vec<(String, Location)>,
    /// The ids of the phases being read, outermost first.
    pub phase_path: Vec<String>,
    /// Whether a `rollback:` is being read.
    pub in_rollback: bool,
}

impl Reader {
    pub fn new(file: &str) -> Self {
        Reader {
            file: file.to_string(),
            depth: 0,
            diagnostics: Vec::new(),
            templates: Vec::new(),
            locals: Vec::new(),
            params: Vec::new(),
            loop_names: Vec::new(),
            phase_path: Vec::new(),
            in_rollback: false,
        }
    }

    /// A scalar that must be text: a plain `42`, `true` or `~` is a number, boolean or null
    /// in YAML, and names no phase or procedure; quoting it makes it text.
    pub fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n MarkedScalarNode> {
        let s = self.scalar(node, what)?;
        if let Some(kind) = plain_non_string(s) {
            self.error(
                &start_span(node),
                format!(
                    "{what} must be a string, but `{}` is {kind} in YAML; write a name, or quote it",
                    s.as_str()
                ),
            );
            return None;
        }
        Some(s)
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
            phase: self.phase_path.iter().map(|id| format!("/{id}")).collect(),
            rollback: self.in_rollback,
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

    /// A duration such as `30s`, `10m` or `1h30m`, in seconds; zero is refused (a timeout or
    /// an interval of zero is never what was meant).
    pub fn duration(&mut self, node: &Node, what: &str) -> Option<f64> {
        let d = self.duration_or_zero(node, what)?;
        // Below a millisecond is zero for every timer medic runs.
        if d < 0.001 {
            let text = node.as_scalar().map(|s| s.as_str()).unwrap_or_default();
            self.error(
                &start_span(node),
                format!("{what} must be longer than zero, not `{text}`; give a duration such as 30s, 10m or 1h"),
            );
            return None;
        }
        Some(d)
    }

    /// A duration where zero means "at once" (e.g. a retry delay).
    pub fn duration_or_zero(&mut self, node: &Node, what: &str) -> Option<f64> {
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

/// What a plain (unquoted) scalar resolves to under the YAML 1.2 core schema, when it is not
/// a string: "a number", "a boolean" or "null". Quoted scalars are always strings (the loader
/// must run with `prevent_coercion(true)` for the distinction to be kept).
pub fn plain_non_string(s: &MarkedScalarNode) -> Option<&'static str> {
    if !s.may_coerce() {
        return None;
    }
    static NUMBER: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let number = NUMBER.get_or_init(|| {
        regex::Regex::new(
            r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        )
        .expect("valid")
    });
    match s.as_str() {
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => Some("a boolean"),
        "null" | "Null" | "NULL" | "~" => Some("null"),
        t if number.is_match(t) => Some("a number"),
        _ => None,
    }
}

/// The text of a file, or a diagnostic naming the line and column of its first byte that is
/// not UTF-8.
pub fn decode_utf8(file: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let bytes = e.as_bytes();
            let valid = e.utf8_error().valid_up_to();
            let message = if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
                "the file is UTF-16 text; save it as UTF-8".to_string()
            } else {
                format!(
                    "the file is not valid UTF-8 (byte 0x{:02x}); save it as UTF-8",
                    bytes[valid]
                )
            };
            let before = String::from_utf8_lossy(&bytes[..valid]);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            Err(Diagnostic {
                location: Some(Location {
                    file: file.to_string(),
                    line,
                    column,
                }),
                message,
            })
        }
    }
}

/// The line (1-based) where a second YAML document starts, if the text has more than one.
/// The loader reads only the first document and would silently drop the rest. A `---` (or
/// content after `...`) at column 1 always ends a document in YAML, also inside block text.
pub fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    let mut ended = false;
    for (i, line) in yaml_lines(text).into_iter().enumerate() {
        let marker = |m: &str| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        if marker("---") {
            if content || ended {
                return Some(i + 1);
            }
            // `--- value`: the first document starts with content on the marker's line.
            let rest = line[3..].trim();
            content = !rest.is_empty() && !rest.starts_with('#');
            continue;
        }
        if marker("...") {
            ended = true;
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || (!content && t.starts_with('%')) {
            continue;
        }
        if ended {
            return Some(i + 1);
        }
        content = true;
    }
    None
}

/// The lines of a text as YAML counts them (`\n`, `\r\n` and a lone `\r` end a line).
pub fn yaml_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r'))
        .collect()
}

/// Keeps a location inside the text: the parser places problems found at the end of the
/// input (an unclosed bracket, a missing key) on a line after the last; they are shown at
/// the end of the last line instead.
pub fn clamp_to_text(location: &mut Location, text: &str) {
    let lines = yaml_lines(text);
    if location.line > lines.len() {
        location.line = lines.len();
        location.column = lines.last().map_or(0, |l| l.chars().count()) + 1;
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
    fn second_documents_are_found() {
        assert_eq!(second_document("a: 1\n"), None);
        assert_eq!(second_document("# c\n---\na: 1\n...\n# end\n"), None);
        assert_eq!(second_document("%YAML 1.2\n---\na: 1\n"), None);
        assert_eq!(second_document("a: 1\n---\nb: 2\n"), Some(2));
        assert_eq!(second_document("--- {a: 1}\n---\n"), Some(2));
        assert_eq!(second_document("a: |\n  x\n---\n"), Some(3));
        assert_eq!(second_document("a: 1\n...\nb: 2\n"), Some(3));
        assert_eq!(second_document("a: ---x\n----\n"), None);
        assert_eq!(second_document("a: 1\r\n---\r\nb: 2\r\n"), Some(2));
        assert_eq!(second_document("a: 1\r---\rb: 2"), Some(2));
    }

    #[test]
    fn invalid_utf8_names_its_line_and_column() {
        let d = decode_utf8("f.yaml", b"a: 1\nb: x\xffy\n".to_vec()).unwrap_err();
        let loc = d.location.unwrap();
        assert_eq!((loc.line, loc.column), (2, 5));
        assert!(d.message.contains("0xff"), "{}", d.message);
        let d = decode_utf8("f.yaml", b"\xff\xfen\x00".to_vec()).unwrap_err();
        assert!(d.message.contains("UTF-16"), "{}", d.message);
    }

    #[test]
    fn closest_suggests_typos_only() {
        let known = ["requires", "retries", "rollback"];
        assert_eq!(closest("requries", known.iter().copied()), Some("requires"));
        assert_eq!(closest("zzzzzz", known.iter().copied()), None);
    }
}
