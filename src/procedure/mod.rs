//! Procedures: loading and validating `plans/*.yaml`, parameters, and rendering a plan.
//!
//! 1. [`Catalog`] finds procedures: the built-in ones compiled into the binary, then a plans
//!    directory (`--plans-dir`/`MEDIC_PLANS_DIR`) that adds or overrides by name.
//! 2. [`Procedure::parse_with`] reads one file and reports *every* problem at once with file,
//!    line and column: unknown keys, duplicate IDs, unknown `requires` (with the closest ID),
//!    cycles (with the cycle), bad templates and names no parameter or capture defines. An
//!    `include:` phase gets the included procedure's phases (loaded through the catalog) as
//!    its children before the requires graph and templates are checked.
//! 3. [`Procedure::resolve_params`] checks `--set` values: unknown, missing, pattern mismatch.
//! 4. [`Procedure::build_plan`] expands `foreach`, binds included procedures' parameters (as
//!    the subtree's locals), resolves `requires` to phase IDs and renders descriptions, giving
//!    the immutable [`Plan`] an operation runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use marked_yaml::{LoaderOptions, Node};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::action::{ActionSpec, ACTION_KINDS};
use crate::action::{Plan, PlanNode};
use crate::plan::{valid_phase_segment, Condition, PhaseId, PhaseIdError};
use crate::source::{
    self, closest, start_span, Diagnostic, Fields, Location, Reader, TemplateKind,
};
use crate::template::Templates;

/// How deep groups may nest; far beyond any real procedure, and keeps parsing bounded.
const MAX_DEPTH: usize = 32;

/// The procedures in `plans/`, compiled in so `medic` works from any directory. A test checks
/// that every file there is listed.
mod builtin {
    pub const BUILTIN_PLANS: &[(&str, &str)] = &[
        (
            "etcd-remove-member",
            include_str!("../../plans/etcd-remove-member.yaml"),
        ),
        (
            "local-preflight",
            include_str!("../../plans/local-preflight.yaml"),
        ),
        (
            "node-maintenance",
            include_str!("../../plans/node-maintenance.yaml"),
        ),
        (
            "replace-control-plane-node",
            include_str!("../../plans/replace-control-plane-node.yaml"),
        ),
        (
            "replace-worker-node",
            include_str!("../../plans/replace-worker-node.yaml"),
        ),
        (
            "upgrade-kubernetes",
            include_str!("../../plans/upgrade-kubernetes.yaml"),
        ),
        (
            "upgrade-kubernetes-node",
            include_str!("../../plans/upgrade-kubernetes-node.yaml"),
        ),
    ];
}

/// Names every template may use besides parameters, captures and loop items.
const BUILTIN_NAMES: &[&str] = &["operation", "inventory"];

const PHASE_KEYS: &[&str] = &[
    "id",
    "description",
    "requires",
    "parallel",
    "max_parallel",
    "foreach",
    "as",
    "phases",
    "rollback",
    "capture",
    "timeout",
    "retries",
    "retry_delay",
    "idempotent",
    "when",
    "include",
];

/// The keys a phase with `include:` may have besides it.
const INCLUDE_PHASE_KEYS: &[&str] = &[
    "id",
    "description",
    "requires",
    "include",
    "foreach",
    "as",
    "parallel",
    "max_parallel",
];

#[derive(Debug, thiserror::Error)]
pub enum ProcedureError {
    #[error("unknown procedure `{name}`{hint}; run `medic procedures` to list them")]
    Unknown { name: String, hint: String },
    #[error("read procedure {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
    #[error("include cycle: {}", .0.join(" → "))]
    IncludeCycle(Vec<String>),
    #[error("procedure `{procedure}` expands to more than {limit} phases; split it into smaller procedures, or raise the limit with --max-phases N (env MEDIC_MAX_PHASES)")]
    TooManyPhases { procedure: String, limit: usize },
}

/// The default cap on the phases of one expanded plan (`--max-phases`, env `MEDIC_MAX_PHASES`):
/// far above any real procedure, low enough that a runaway `foreach` or include fan-out fails
/// in a second instead of exhausting memory.
pub const DEFAULT_MAX_PHASES: usize = 50_000;

impl ProcedureError {
    /// A copy of the error, for the include cache (an I/O error keeps its kind and text).
    fn duplicate(&self) -> ProcedureError {
        match self {
            ProcedureError::Unknown { name, hint } => ProcedureError::Unknown {
                name: name.clone(),
                hint: hint.clone(),
            },
            ProcedureError::Read { path, source } => ProcedureError::Read {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            ProcedureError::Invalid(diags) => ProcedureError::Invalid(diags.clone()),
            ProcedureError::IncludeCycle(chain) => ProcedureError::IncludeCycle(chain.clone()),
            ProcedureError::TooManyPhases { procedure, limit } => ProcedureError::TooManyPhases {
                procedure: procedure.clone(),
                limit: *limit,
            },
        }
    }
}

fn render_diagnostics(diags: &[Diagnostic]) -> String {
    source::render_diagnostics("", diags)
}

/// The kind of value a parameter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    String,
    List,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParamSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<serde_json::Value>,
    pub pattern: Option<String>,
    pub secret: bool,
    pub kind: ParamKind,
    #[serde(skip)]
    pub location: Location,
}

#[derive(Clone, Debug)]
pub enum Foreach {
    /// An expression over parameters that yields a list.
    Expression(String),
    Items(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct PhaseSpec {
    pub id: String,
    pub location: Location,
    pub description: Option<String>,
    pub requires: Vec<(String, Location)>,
    pub parallel: bool,
    pub max_parallel: Option<usize>,
    pub foreach: Option<(Foreach, String)>,
    pub children: Vec<PhaseSpec>,
    pub action: Option<ActionSpec>,
    pub rollback: Option<ActionSpec>,
    pub capture: BTreeMap<String, String>,
    pub timeout_secs: Option<f64>,
    pub retries: u32,
    pub retry_delay_secs: f64,
    pub idempotent: Option<bool>,
    pub when: Option<Condition>,
    /// `include:` — a group whose children are another procedure's phases.
    pub include: Option<Include>,
}

/// `include: {procedure: NAME, with: {param: "template"}}`.
#[derive(Clone, Debug)]
pub struct Include {
    pub procedure: String,
    /// Parameter name, template rendered in the including procedure's context, where it is.
    pub with: Vec<(String, String, Location)>,
    /// The included procedure's parameters, known once the include is resolved.
    pub params: Vec<ParamSpec>,
    pub location: Location,
}

/// A validated procedure.
#[derive(Clone, Debug)]
pub struct Procedure {
    pub name: String,
    pub description: String,
    /// Where it came from, for messages (`plans/x.yaml`, or `plans/x.yaml (built in)`).
    pub file: String,
    pub params: Vec<ParamSpec>,
    pub phases: Vec<PhaseSpec>,
}

/// Parameter values for one operation; secret values are kept apart so they are never shown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    pub values: BTreeMap<String, serde_json::Value>,
    pub secrets: BTreeMap<String, String>,
}

impl Params {
    /// Values for templates: real secrets only when `reveal` (execution), else placeholders.
    pub fn template_values(&self, reveal: bool) -> BTreeMap<String, serde_json::Value> {
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
}

/// The shortest secret value medic accepts (and searches output for).
pub const MIN_SECRET_LEN: usize = 6;

pub fn secret_placeholder(name: &str) -> String {
    format!("<secret:{name}>")
}

/// Shown where a captured value is used before the phase that captures it has run.
pub fn pending_capture_placeholder(name: &str) -> String {
    format!("<{name}: captured at run time>")
}

impl Procedure {
    /// Parses and validates one procedure file that includes no other; `file` labels messages.
    pub fn parse(
        file: &str,
        text: &str,
        expected_name: Option<&str>,
    ) -> Result<Procedure, ProcedureError> {
        Self::parse_with(file, text, expected_name, &mut |name| {
            Err(ProcedureError::Unknown {
                name: name.to_string(),
                hint: " (includes are resolved through the catalog)".into(),
            })
        })
    }

    /// Parses and validates one procedure file; `include` loads the procedures it includes.
    pub fn parse_with(
        file: &str,
        text: &str,
        expected_name: Option<&str>,
        include: &mut dyn FnMut(&str) -> Result<Procedure, ProcedureError>,
    ) -> Result<Procedure, ProcedureError> {
        let mut reader = Reader::new(file);
        // YAML allows a byte-order mark; some editors write one.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Quoted and plain scalars are told apart, so `id: 42` is seen as a number.
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                let mut diag = load_error(file, text, &e);
                if let Some(loc) = &mut diag.location {
                    source::clamp_to_text(loc, text);
                }
                return Err(ProcedureError::Invalid(vec![diag]));
            }
        };
        if let Some(line) = source::second_document(text) {
            reader.diagnostics.push(Diagnostic {
                location: Some(Location {
                    file: file.to_string(),
                    line,
                    column: 1,
                }),
                message: "a second YAML document starts here; a procedure file holds one document: remove the `---` (or `...`) line, or move what follows to its own file".into(),
            });
        }
        let mut procedure = read_procedure(&root, &mut reader, expected_name);
        if let Some(p) = &mut procedure {
            if let Err(limit) = resolve_includes(&mut p.phases, include, &mut reader) {
                return Err(ProcedureError::TooManyPhases {
                    procedure: p.name.clone(),
                    limit,
                });
            }
            validate_includes(p, &mut reader);
            if let Some(graph) = validate_graph(p, &mut reader) {
                validate_capture_order(p, &graph, &mut reader);
            }
            validate_renderable(&mut reader);
            validate_templates(p, &mut reader);
        }
        if !reader.diagnostics.is_empty() || procedure.is_none() {
            let mut diags = reader.diagnostics;
            for d in &mut diags {
                if let Some(loc) = d.location.as_mut().filter(|l| l.file == file) {
                    source::clamp_to_text(loc, text);
                }
            }
            diags.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
            return Err(ProcedureError::Invalid(diags));
        }
        Ok(procedure.expect("checked above"))
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Every variable some phase captures.
    pub fn capture_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        walk(&self.phases, &mut |p| out.extend(p.capture.keys().cloned()));
        out
    }

    /// Checks `--set key=value` pairs against the declared parameters; reports all problems.
    pub fn resolve_params(&self, sets: &[String]) -> Result<Params, ProcedureError> {
        let mut diags = Vec::new();
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
                let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                let hint = match closest(key, names.iter().copied()) {
                    Some(c) => format!("; did you mean `{c}`?"),
                    None if names.is_empty() => "; it takes no parameters".to_string(),
                    None => format!("; its parameters are {}", names.join(", ")),
                };
                diags.push(plain(format!(
                    "unknown parameter `{key}` for procedure {}{hint}",
                    self.name
                )));
                continue;
            }
            if given.insert(key.to_string(), value.to_string()).is_some() {
                diags.push(plain(format!("parameter `{key}` is set more than once")));
            }
        }
        let mut params = Params::default();
        for spec in &self.params {
            let value = match (given.get(&spec.name), &spec.default) {
                (Some(v), _) => match spec.kind {
                    ParamKind::String => serde_json::Value::String(v.clone()),
                    ParamKind::List => serde_json::Value::Array(
                        v.split(',')
                            .map(|s| s.trim())
                            .filter(|s| !s.is_empty())
                            .map(|s| serde_json::Value::String(s.to_string()))
                            .collect(),
                    ),
                },
                (None, Some(d)) => d.clone(),
                (None, None) if spec.required => {
                    let about = if spec.description.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", spec.description)
                    };
                    diags.push(Diagnostic {
                        location: Some(spec.location.clone()),
                        message: format!(
                            "missing required parameter `{}`{about}; pass --set {}=VALUE",
                            spec.name, spec.name
                        ),
                    });
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
            let problems_before = diags.len();
            if let Some(pattern) = &spec.pattern {
                let re = regex::Regex::new(pattern).expect("validated at load");
                let items: Vec<String> = match &value {
                    serde_json::Value::Array(a) => a.iter().map(json_text).collect(),
                    other => vec![json_text(other)],
                };
                for item in items {
                    if !re.is_match(&item) {
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
            }
            if spec.secret {
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
                    continue;
                }
                params.secrets.insert(spec.name.clone(), text);
            } else {
                params.values.insert(spec.name.clone(), value);
            }
        }
        if diags.is_empty() {
            Ok(params)
        } else {
            Err(ProcedureError::Invalid(diags))
        }
    }

    /// Renders the plan for `params`: `foreach` expanded, includes bound, `requires` resolved,
    /// descriptions rendered with secrets redacted and captured values marked as pending. The
    /// inventory (`inventory.nodes`, roles), when given, is available to templates that shape
    /// the plan, e.g. a `foreach` over the control-plane nodes. Building stops with
    /// [`ProcedureError::TooManyPhases`] as soon as the plan would exceed `max_phases`.
    pub fn build_plan(
        &self,
        params: &Params,
        templates: &Templates,
        inventory: Option<serde_json::Value>,
        max_phases: usize,
    ) -> Result<Plan, ProcedureError> {
        let mut base = params.template_values(false);
        if let Some(inv) = inventory {
            base.insert("inventory".into(), inv);
        }
        for c in self.capture_names() {
            base.insert(
                c.clone(),
                serde_json::Value::String(pending_capture_placeholder(&c)),
            );
        }
        let mut builder = PlanBuilder {
            templates,
            base: minijinja::Value::from_serialize(&base),
            operation: minijinja::Value::from_serialize(
                serde_json::json!({"operation": {"procedure": self.name}}),
            ),
            nodes: Vec::new(),
            diags: Vec::new(),
            max_phases,
            over_limit: false,
        };
        builder.nodes.push(PlanNode {
            id: PhaseId::root(),
            description: self.description.clone(),
            parent: None,
            children: Vec::new(),
            parallel: false,
            max_parallel: None,
            requires: Vec::new(),
            action: None,
            rollback: None,
            locals: BTreeMap::new(),
            capture: BTreeMap::new(),
            timeout_secs: None,
            retries: 0,
            retry_delay_secs: 1.0,
            idempotent: true,
            when: None,
        });
        builder.add_children(0, &self.phases, &BTreeMap::new());
        if builder.over_limit {
            return Err(ProcedureError::TooManyPhases {
                procedure: self.name.clone(),
                limit: max_phases,
            });
        }
        if builder.diags.is_empty() {
            Ok(Plan::new(builder.nodes))
        } else {
            Err(ProcedureError::Invalid(builder.diags))
        }
    }
}

fn plain(message: String) -> Diagnostic {
    Diagnostic {
        location: None,
        message,
    }
}

/// `--set token=abc` → `token=<secret:token>` when `token` is secret.
pub fn redact_set(procedure: &Procedure, set: &str) -> String {
    match set.split_once('=') {
        Some((k, _)) if procedure.param(k.trim()).is_some_and(|p| p.secret) => {
            format!("{k}={}", secret_placeholder(k.trim()))
        }
        _ => set.to_string(),
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn walk<'a>(phases: &'a [PhaseSpec], f: &mut dyn FnMut(&'a PhaseSpec)) {
    for p in phases {
        f(p);
        walk(&p.children, f);
    }
}

fn load_error(file: &str, text: &str, e: &marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError::*;
    let (marker, message) = match e {
        TopLevelMustBeMapping(m) => (
            Some(*m),
            "a procedure must be a mapping with name, description, params and phases".to_string(),
        ),
        TopLevelMustBeSequence(m) => (Some(*m), "expected a list".to_string()),
        UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported in procedures; write the value out"
                .to_string(),
        ),
        MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".to_string()),
        UnexpectedTag(m) => (
            Some(*m),
            "YAML tags are not supported in procedures".to_string(),
        ),
        ScanError(m, err) => {
            // The scanner repeats the position we already print; keep only the reason.
            let message = err.to_string();
            let reason = message
                .split(" at byte ")
                .next()
                .unwrap_or(&message)
                .to_string();
            // For a tab the scanner points at the token before it; point at the tab instead.
            let tab_line = reason
                .contains("tab")
                .then(|| {
                    text.lines().position(|l| {
                        l.starts_with([' ', '\t']) && l.trim_start_matches(' ').starts_with('\t')
                    })
                })
                .flatten();
            let marker = match tab_line {
                Some(line) => marked_yaml::Marker::new(0, 0, line + 1, 1),
                None => *m,
            };
            (Some(marker), format!("invalid YAML: {reason}"))
        }
        DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first at line {})",
                inner.key.as_str(),
                inner.prev_key.span().start().map(|m| m.line()).unwrap_or(0)
            ),
        ),
    };
    Diagnostic {
        location: marker.map(|m| Location {
            file: file.to_string(),
            line: m.line(),
            column: m.column(),
        }),
        message,
    }
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_procedure(root: &Node, r: &mut Reader, expected_name: Option<&str>) -> Option<Procedure> {
    let fields = Fields::new(
        root,
        "the procedure",
        &["name", "description", "params", "phases"],
        r,
    )?;
    let name = match fields.get("name") {
        Some(n) => {
            let s = r.string(n, "name")?;
            if let Some(expected) = expected_name.filter(|e| *e != s.as_str()) {
                r.error(
                    &start_span(n),
                    format!(
                        "procedure name `{}` does not match its file name; rename one so both are `{expected}`",
                        s.as_str()
                    ),
                );
            }
            s.as_str().to_string()
        }
        None => {
            r.error(fields.span(), "the procedure needs `name:`");
            expected_name.unwrap_or_default().to_string()
        }
    };
    let description = match fields.get("description") {
        Some(n) => r
            .scalar(n, "description")
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        None => String::new(),
    };
    let params = match fields.get("params") {
        Some(n) => read_params(n, r),
        None => Vec::new(),
    };
    r.params = params.iter().map(|p| p.name.clone()).collect();
    let phases = match fields.get("phases") {
        Some(n) => {
            let phases = read_phases(n, r);
            if phases.is_empty() && matches!(n, Node::Sequence(_)) {
                r.error(
                    &start_span(n),
                    "the procedure has an empty `phases:` list; add at least one phase",
                );
            }
            phases
        }
        None => {
            r.error(
                fields.span(),
                "the procedure needs `phases:`, a list of phases",
            );
            Vec::new()
        }
    };
    Some(Procedure {
        name,
        description,
        file: r.file.clone(),
        params,
        phases,
    })
}

fn read_params(node: &Node, r: &mut Reader) -> Vec<ParamSpec> {
    let Node::Mapping(map) = node else {
        r.error(
            &start_span(node),
            "params must be a mapping of parameter name to its settings",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in map.iter() {
        let name = key.as_str().to_string();
        let location = r.location(key.span());
        if !valid_identifier(&name) {
            r.error(
                key.span(),
                format!("parameter name `{name}` must be letters, digits and _ (starting with a letter)"),
            );
        }
        let mut spec = ParamSpec {
            name: name.clone(),
            description: String::new(),
            required: false,
            default: None,
            pattern: None,
            secret: false,
            kind: ParamKind::String,
            location,
        };
        // `{}` or an empty value means a plain optional string parameter.
        if let Node::Scalar(s) = value {
            if s.as_str().is_empty() {
                out.push(spec);
                continue;
            }
        }
        let what = format!("parameter `{name}`");
        let Some(fields) = Fields::new(
            value,
            &what,
            &[
                "description",
                "required",
                "default",
                "pattern",
                "secret",
                "type",
            ],
            r,
        ) else {
            continue;
        };
        if let Some(n) = fields.get("description") {
            spec.description = r
                .scalar(n, "description")
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
        }
        if let Some(n) = fields.get("required") {
            spec.required = r.bool(n, &format!("{what}: required")).unwrap_or(false);
        }
        if let Some(n) = fields.get("secret") {
            spec.secret = r.bool(n, &format!("{what}: secret")).unwrap_or(false);
        }
        let declared_type = fields.get("type");
        if let Some(n) = declared_type {
            if let Some(s) = r.scalar(n, "type") {
                match s.as_str() {
                    "string" => spec.kind = ParamKind::String,
                    "list" => spec.kind = ParamKind::List,
                    other => r.error(
                        &start_span(n),
                        format!("{what}: type must be string or list, not `{other}`"),
                    ),
                }
            }
        }
        if let Some(n) = fields.get("pattern") {
            if let Some(s) = r.scalar(n, "pattern") {
                match regex::Regex::new(s.as_str()) {
                    Ok(_) => spec.pattern = Some(s.as_str().to_string()),
                    Err(e) => r.error(
                        &start_span(n),
                        format!(
                            "{what}: pattern is not a valid regular expression: {}",
                            first_line(&e.to_string())
                        ),
                    ),
                }
            }
        }
        if let Some(n) = fields.get("default") {
            let typed = |kind| declared_type.is_some() && spec.kind == kind;
            match n {
                Node::Scalar(s) if source::plain_non_string(s) == Some("null") => r.error(
                    &start_span(n),
                    format!("{what}: default `{}` is null in YAML, not a value; leave `default:` out (an optional parameter is empty when not given), or quote it", s.as_str()),
                ),
                Node::Scalar(s) if typed(ParamKind::List) && !s.as_str().is_empty() => r.error(
                    &start_span(n),
                    format!("{what}: type is list but the default `{}` is a single value; write it as a list, e.g. default: [a, b]", s.as_str()),
                ),
                Node::Sequence(_) if typed(ParamKind::String) => r.error(
                    &start_span(n),
                    format!("{what}: type is string but the default is a list; remove `type: string` or give one value"),
                ),
                _ => {}
            }
            spec.default = Some(match n {
                Node::Scalar(s) => serde_json::Value::String(s.as_str().to_string()),
                Node::Sequence(items) => {
                    spec.kind = ParamKind::List;
                    serde_json::Value::Array(
                        items
                            .iter()
                            .filter_map(|i| r.scalar(i, "default item"))
                            .map(|s| serde_json::Value::String(s.as_str().to_string()))
                            .collect(),
                    )
                }
                Node::Mapping(_) => {
                    r.error(
                        &start_span(n),
                        format!("{what}: default must be a value or a list"),
                    );
                    serde_json::Value::Null
                }
            });
        }
        if spec.secret && spec.kind == ParamKind::List {
            r.error(
                fields.span(),
                format!("{what}: a secret parameter must be a string"),
            );
        }
        out.push(spec);
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

fn read_phases(node: &Node, r: &mut Reader) -> Vec<PhaseSpec> {
    let Node::Sequence(items) = node else {
        r.error(
            &start_span(node),
            "phases must be a list (each item starts with `- id:`)",
        );
        return Vec::new();
    };
    if r.depth >= MAX_DEPTH {
        r.error(
            &start_span(node),
            format!("phases are nested more than {MAX_DEPTH} levels deep; flatten the procedure"),
        );
        return Vec::new();
    }
    let mut out: Vec<PhaseSpec> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in items.iter() {
        if let Some(phase) = read_phase(item, r) {
            if let Some(first_line) = seen.get(&phase.id) {
                let span = item
                    .as_mapping()
                    .and_then(|m| m.get_node("id"))
                    .map(|n| *n.span())
                    .unwrap_or(*item.span());
                r.error(
                    &span,
                    format!(
                        "duplicate phase id `{}` (first defined at line {first_line})",
                        phase.id
                    ),
                );
                continue;
            }
            seen.insert(phase.id.clone(), phase.location.line);
            out.push(phase);
        }
    }
    out
}

fn read_phase(node: &Node, r: &mut Reader) -> Option<PhaseSpec> {
    let mut known: Vec<&str> = PHASE_KEYS.to_vec();
    known.extend_from_slice(ACTION_KINDS);
    let fields = Fields::new(node, "a phase", &known, r)?;
    let id = match fields.get("id") {
        Some(n) => {
            let s = r.string(n, "phase id")?;
            if !valid_phase_segment(s.as_str()) {
                r.error(
                    &start_span(n),
                    format!(
                        "phase id `{}` must be lowercase letters, digits, `-`, `_` or `.` (no `/`), starting and ending with a letter or digit",
                        s.as_str()
                    ),
                );
            }
            s.as_str().to_string()
        }
        None => {
            r.error(fields.span(), "every phase needs an `id:`");
            return None;
        }
    };
    let what = format!("phase `{id}`");
    let location = r.location(fields.span());
    r.phase_path.push(id.clone());
    let spec = read_phase_body(&fields, id, location, &what, r);
    r.phase_path.pop();
    Some(spec)
}

/// Everything of a phase after its id (the phase is on `r.phase_path` meanwhile).
fn read_phase_body(
    fields: &Fields<'_>,
    id: String,
    location: Location,
    what: &str,
    r: &mut Reader,
) -> PhaseSpec {
    let mut spec = PhaseSpec {
        id: id.clone(),
        location,
        description: None,
        requires: Vec::new(),
        parallel: false,
        max_parallel: None,
        foreach: None,
        children: Vec::new(),
        action: None,
        rollback: None,
        capture: BTreeMap::new(),
        timeout_secs: None,
        retries: 0,
        retry_delay_secs: 1.0,
        idempotent: None,
        when: None,
        include: None,
    };
    if let Some(n) = fields.get("foreach") {
        let as_name = match fields.get("as") {
            Some(a) => r
                .scalar(a, "as")
                .map(|s| s.as_str().to_string())
                .unwrap_or("item".into()),
            None => "item".to_string(),
        };
        let as_span = fields
            .get("as")
            .map(start_span)
            .unwrap_or_else(|| start_span(n));
        if !valid_identifier(&as_name) {
            r.error(
                fields.span(),
                format!("{what}: `as: {as_name}` must be a plain name"),
            );
        } else {
            let shadowed = if r.params.contains(&as_name) {
                Some("the parameter")
            } else if r.locals.contains(&as_name) {
                Some("the item of an enclosing foreach")
            } else if BUILTIN_NAMES.contains(&as_name.as_str()) {
                Some("the built-in")
            } else {
                None
            };
            if let Some(what_else) = shadowed {
                r.error(
                    &as_span,
                    format!(
                        "{what}: the foreach item `{as_name}` hides {what_else} `{as_name}` inside this phase; name the item something else with `as:`"
                    ),
                );
            }
            let location = r.location(&as_span);
            r.loop_names.push((as_name.clone(), location));
        }
        let foreach = match n {
            Node::Scalar(s) => Foreach::Expression(r.template(s, TemplateKind::Expression)),
            Node::Sequence(items) => Foreach::Items(
                items
                    .iter()
                    .filter_map(|i| r.scalar(i, "foreach item"))
                    .map(|s| s.as_str().to_string())
                    .collect(),
            ),
            Node::Mapping(_) => {
                r.error(&start_span(n), format!("{what}: foreach must be a list or an expression such as \"{{{{ workers }}}}\""));
                Foreach::Items(Vec::new())
            }
        };
        spec.foreach = Some((foreach, as_name));
    } else if let Some(n) = fields.get("as") {
        r.error(
            &start_span(n),
            format!("{what}: `as:` only names the item of a `foreach:`"),
        );
    }
    let pushed_local = spec.foreach.as_ref().map(|(_, name)| name.clone());
    if let Some(name) = &pushed_local {
        r.locals.push(name.clone());
    }
    if let Some(n) = fields.get("include") {
        for key in fields.keys() {
            if !INCLUDE_PHASE_KEYS.contains(&key.as_str()) {
                r.error(
                    key.span(),
                    format!(
                        "{what}: `{}:` does not apply to a phase with `include:`; it may only have {}",
                        key.as_str(),
                        INCLUDE_PHASE_KEYS.join(", ")
                    ),
                );
            }
        }
        if let Some(d) = fields.get("description") {
            if let Some(s) = r.scalar(d, "description") {
                spec.description = Some(r.template(s, TemplateKind::Text));
            }
        }
        spec.requires = read_requires(fields, what, r);
        spec.include = read_include(n, what, r);
        let group = spec.foreach.is_some();
        read_parallel(fields, &mut spec, what, group, r);
        if pushed_local.is_some() {
            r.locals.pop();
        }
        return spec;
    }
    if let Some(n) = fields.get("description") {
        if let Some(s) = r.scalar(n, "description") {
            spec.description = Some(r.template(s, TemplateKind::Text));
        }
    }
    spec.requires = read_requires(fields, what, r);
    let action_keys: Vec<&marked_yaml::types::MarkedScalarNode> = fields
        .keys()
        .filter(|k| ACTION_KINDS.contains(&k.as_str()))
        .collect();
    let has_phases = fields.get("phases").is_some();
    if action_keys.len() > 1 {
        let names: Vec<&str> = action_keys.iter().map(|k| k.as_str()).collect();
        r.error(
            action_keys[1].span(),
            format!(
                "{what} has more than one action ({}); split it into one phase per action",
                names.join(", ")
            ),
        );
    } else if has_phases && !action_keys.is_empty() {
        r.error(
            action_keys[0].span(),
            format!("{what} has both `phases:` and an action (`{}`); a phase is either a group or does one thing", action_keys[0].as_str()),
        );
    } else if !has_phases && action_keys.is_empty() {
        r.error(
            fields.span(),
            format!(
                "{what} needs an action ({}) or `phases:`",
                ACTION_KINDS.join(", ")
            ),
        );
    }
    if let Some(key) = action_keys.first() {
        let node = fields.get(key.as_str()).expect("key listed");
        spec.action = parse_action(key, node, r);
    }
    if let Some(n) = fields.get("phases") {
        r.depth += 1;
        spec.children = read_phases(n, r);
        r.depth -= 1;
        if spec.children.is_empty() && matches!(n, Node::Sequence(_)) {
            r.error(
                &start_span(n),
                format!("{what} has an empty `phases:` list"),
            );
        }
    }
    if let Some(n) = fields.get("rollback") {
        if has_phases {
            r.error(
                &start_span(n),
                format!("{what}: `rollback:` belongs on the leaf phases of a group, not the group"),
            );
        }
        if let Some(rb) = Fields::new(n, &format!("{what} rollback"), ACTION_KINDS, r) {
            let keys: Vec<_> = rb.keys().collect();
            if keys.len() != 1 {
                r.error(
                    rb.span(),
                    format!(
                        "{what}: rollback must have exactly one action ({})",
                        ACTION_KINDS.join(", ")
                    ),
                );
            } else if let Some(node) = rb.get(keys[0].as_str()) {
                r.in_rollback = true;
                spec.rollback = parse_action(keys[0], node, r);
                r.in_rollback = false;
            }
        }
    }
    if let Some(n) = fields.get("capture") {
        if has_phases {
            r.error(
                &start_span(n),
                format!("{what}: only a phase with an action can `capture:` its result"),
            );
        }
        if let Node::Mapping(map) = n {
            for (k, v) in map.iter() {
                if !valid_identifier(k.as_str()) {
                    r.error(
                        k.span(),
                        format!("{what}: capture name `{}` must be a plain name", k.as_str()),
                    );
                }
                if let Some(s) = r.scalar(v, "capture expression") {
                    if let Err(e) = Templates::new().expression_names(s.as_str()) {
                        r.error(
                            v.span(),
                            format!("{what}: capture `{}`: {}", k.as_str(), e.message),
                        );
                    }
                    spec.capture
                        .insert(k.as_str().to_string(), s.as_str().to_string());
                }
            }
        } else {
            r.error(&start_span(n), format!("{what}: capture must map names to expressions over the result, e.g. `capture: {{member_id: json.id}}`"));
        }
    }
    let group = has_phases || spec.foreach.is_some();
    read_parallel(fields, &mut spec, what, group, r);
    if let Some(n) = fields.get("timeout") {
        spec.timeout_secs = r.duration(n, &format!("{what}: timeout"));
    }
    if let Some(n) = fields.get("retries") {
        match r.uint(n, &format!("{what}: retries")) {
            Some(v) if v > 100 => r.error(
                &start_span(n),
                format!("{what}: retries must be at most 100, not {v}"),
            ),
            Some(v) => spec.retries = v as u32,
            None => {}
        }
    }
    if let Some(n) = fields.get("retry_delay") {
        spec.retry_delay_secs = r
            .duration_or_zero(n, &format!("{what}: retry_delay"))
            .unwrap_or(1.0);
    }
    if let Some(n) = fields.get("idempotent") {
        spec.idempotent = r.bool(n, &format!("{what}: idempotent"));
    }
    if let Some(n) = fields.get("when") {
        if has_phases {
            r.error(
                &start_span(n),
                format!("{what}: `when:` applies to a phase with an action, not a group; put it on the phases inside"),
            );
        } else {
            spec.when = read_condition(n, what, r);
        }
    }
    if pushed_local.is_some() {
        r.locals.pop();
    }
    spec
}

fn read_requires(fields: &Fields<'_>, what: &str, r: &mut Reader) -> Vec<(String, Location)> {
    let mut out = Vec::new();
    if let Some(n) = fields.get("requires") {
        let items: Vec<&Node> = match n {
            Node::Sequence(seq) => seq.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if let Some(s) = r.scalar(item, "requires") {
                let problem = match PhaseId::parse_input(s.as_str()) {
                    Ok(id) if id.is_root() => Some("`/` is the whole plan".to_string()),
                    Ok(_) => None,
                    Err(PhaseIdError::Empty) => Some("the entry is empty".to_string()),
                    Err(PhaseIdError::Malformed { reason, .. }) => Some(reason),
                };
                if let Some(reason) = problem {
                    r.error(
                        item.span(),
                        format!(
                            "{what}: requires `{}` does not name a phase: {reason}; write a phase path such as /etcd/remove, or a sibling's id",
                            s.as_str()
                        ),
                    );
                    continue;
                }
                let loc = r.location(item.span());
                out.push((s.as_str().to_string(), loc));
            }
        }
    }
    out
}

/// `include: {procedure: NAME, with: {param: "{{ value }}"}}`; resolved later.
fn read_include(node: &Node, what: &str, r: &mut Reader) -> Option<Include> {
    let location = r.location(&start_span(node));
    let fields = Fields::new(node, &format!("{what} include"), &["procedure", "with"], r)?;
    let Some(name) = fields.get("procedure") else {
        r.error(
            fields.span(),
            format!("{what}: `include:` needs `procedure:`, the name of the procedure to include"),
        );
        return None;
    };
    let procedure = r.scalar(name, "include.procedure")?.as_str().to_string();
    let mut with = Vec::new();
    match fields.get("with") {
        Some(Node::Mapping(map)) => {
            for (k, v) in map.iter() {
                if let Some(s) = r.scalar(v, &format!("include with `{}`", k.as_str())) {
                    let loc = r.location(k.span());
                    let source = r.template(s, TemplateKind::Text);
                    with.push((k.as_str().to_string(), source, loc));
                }
            }
        }
        Some(other) => r.error(
            &start_span(other),
            format!("{what}: `with:` must map the included procedure's parameters to values"),
        ),
        None => {}
    }
    Some(Include {
        procedure,
        with,
        params: Vec::new(),
        location,
    })
}

/// Loads every included procedure and makes its phases the include phase's children,
/// checking the binding: known parameters, required ones given, no secrets, relative requires.
/// An included procedure over the phase limit stops it at once (`Err(limit)`): the includer
/// is over the limit too.
fn resolve_includes(
    phases: &mut [PhaseSpec],
    load: &mut dyn FnMut(&str) -> Result<Procedure, ProcedureError>,
    r: &mut Reader,
) -> Result<(), usize> {
    for phase in phases.iter_mut() {
        let Some(inc) = &mut phase.include else {
            resolve_includes(&mut phase.children, load, r)?;
            continue;
        };
        let what = format!("phase `{}`", phase.id);
        let here = Some(inc.location.clone());
        let included = match load(&inc.procedure) {
            Ok(p) => p,
            Err(e) => {
                let message = match e {
                    ProcedureError::Unknown { name, hint } => {
                        format!("{what} includes unknown procedure `{name}`{hint}")
                    }
                    ProcedureError::IncludeCycle(chain) => format!(
                        "{what}: include cycle: {} (a procedure cannot include itself)",
                        chain.join(" → ")
                    ),
                    ProcedureError::Read { path, source } => format!(
                        "{what}: cannot read included procedure {}: {source}",
                        path.display()
                    ),
                    ProcedureError::TooManyPhases { limit, .. } => return Err(limit),
                    ProcedureError::Invalid(diags) => {
                        // The same procedure included twice reports its problems once.
                        for d in diags {
                            if !r.diagnostics.contains(&d) {
                                r.diagnostics.push(d);
                            }
                        }
                        format!(
                            "{what}: included procedure `{}` has problems (listed here too)",
                            inc.procedure
                        )
                    }
                };
                r.diagnostics.push(Diagnostic {
                    location: here,
                    message,
                });
                continue;
            }
        };
        let secrets: Vec<&str> = included
            .params
            .iter()
            .filter(|p| p.secret)
            .map(|p| p.name.as_str())
            .collect();
        if !secrets.is_empty() {
            r.diagnostics.push(Diagnostic {
                location: here.clone(),
                message: format!(
                    "{what}: procedure `{}` has secret parameters ({}); including a procedure with secret parameters is not supported, run it on its own",
                    inc.procedure,
                    secrets.join(", ")
                ),
            });
        }
        for (key, _, loc) in &inc.with {
            if included.param(key).is_none() {
                let names: Vec<&str> = included.params.iter().map(|p| p.name.as_str()).collect();
                let hint = match closest(key, names.iter().copied()) {
                    Some(c) => format!("; did you mean `{c}`?"),
                    None if names.is_empty() => "; it takes no parameters".to_string(),
                    None => format!("; its parameters are {}", names.join(", ")),
                };
                r.diagnostics.push(Diagnostic {
                    location: Some(loc.clone()),
                    message: format!(
                        "{what}: procedure `{}` has no parameter `{key}`{hint}",
                        inc.procedure
                    ),
                });
            }
        }
        for p in &included.params {
            if p.required && p.default.is_none() && !inc.with.iter().any(|w| w.0 == p.name) {
                r.diagnostics.push(Diagnostic {
                    location: here.clone(),
                    message: format!(
                        "{what}: procedure `{}` needs its required parameter `{}`; add `with: {{{}: ...}}`",
                        inc.procedure, p.name, p.name
                    ),
                });
            }
        }
        walk(&included.phases, &mut |p| {
            for (req, loc) in &p.requires {
                if req.starts_with('/') {
                    r.diagnostics.push(Diagnostic {
                        location: here.clone(),
                        message: format!(
                            "{what}: procedure `{}` cannot be included: it requires `{req}` by absolute path (at {loc}); inside an include only relative requires (a sibling's id) keep their meaning",
                            inc.procedure
                        ),
                    });
                }
            }
        });
        inc.params = included.params;
        phase.children = included.phases;
    }
    Ok(())
}

/// `with:` values are bound when the plan is built: they cannot use values captured at run
/// time, nor secrets (the bound values are stored in the plan).
fn validate_includes(procedure: &Procedure, r: &mut Reader) {
    fn visit(
        phases: &[PhaseSpec],
        procedure: &Procedure,
        captures: &BTreeSet<String>,
        templates: &Templates,
        r: &mut Reader,
    ) {
        for phase in phases {
            let Some(inc) = &phase.include else {
                visit(&phase.children, procedure, captures, templates, r);
                continue;
            };
            // The included phases were checked when their own procedure was loaded.
            for (key, source, loc) in &inc.with {
                for name in templates.template_names(source, false).unwrap_or_default() {
                    let why = if captures.contains(&name) {
                        "a value captured at run time"
                    } else if procedure.param(&name).is_some_and(|p| p.secret) {
                        "a secret parameter"
                    } else {
                        continue;
                    };
                    r.diagnostics.push(Diagnostic {
                        location: Some(loc.clone()),
                        message: format!(
                            "phase `{}`: include `with: {key}` uses `{name}`, {why}; included parameters are bound when the plan is built and stored in it"
                            , phase.id
                        ),
                    });
                }
            }
        }
    }
    let templates = Templates::new();
    visit(
        &procedure.phases,
        procedure,
        &procedure.capture_names(),
        &templates,
        r,
    );
}

/// `when: "{{ expr }}"` or `when: {that: "{{ expr }}", reason: "text"}`.
fn read_condition(node: &Node, what: &str, r: &mut Reader) -> Option<Condition> {
    if let Node::Scalar(s) = node {
        if s.as_str().trim().is_empty() {
            r.error(
                &start_span(node),
                format!("{what}: `when:` needs a condition such as \"{{{{ node_ready }}}}\""),
            );
            return None;
        }
        return Some(Condition {
            that: r.template(s, TemplateKind::Expression),
            reason: None,
        });
    }
    let fields = Fields::new(node, &format!("{what} when"), &["that", "reason"], r)?;
    let that = match fields.get("that") {
        Some(n) => {
            let s = r.scalar(n, "when.that")?;
            r.template(s, TemplateKind::Expression)
        }
        None => {
            r.error(
                fields.span(),
                format!("{what}: `when:` needs `that:`, the condition under which the action runs"),
            );
            return None;
        }
    };
    let reason = match fields.get("reason") {
        Some(n) => {
            let s = r.scalar(n, "when.reason")?;
            Some(r.template(s, TemplateKind::Text))
        }
        None => None,
    };
    Some(Condition { that, reason })
}

/// `parallel:` and `max_parallel:` of a group (`phases:`, `foreach:` or a foreach of includes).
fn read_parallel(fields: &Fields, spec: &mut PhaseSpec, what: &str, group: bool, r: &mut Reader) {
    if let Some(n) = fields.get("parallel") {
        spec.parallel = r.bool(n, &format!("{what}: parallel")).unwrap_or(false);
        if !group {
            r.error(
                &start_span(n),
                format!("{what}: `parallel:` applies to a group (`phases:` or `foreach:`)"),
            );
        }
    }
    if let Some(n) = fields.get("max_parallel") {
        match r.uint(n, &format!("{what}: max_parallel")) {
            Some(0) => r.error(
                &start_span(n),
                format!("{what}: max_parallel must be at least 1"),
            ),
            Some(v) => spec.max_parallel = Some(v as usize),
            None => {}
        }
        if !spec.parallel {
            r.error(
                &start_span(n),
                format!("{what}: max_parallel needs `parallel: true`"),
            );
        }
    }
}

/// Parses one action; an empty value is reported at its key (the parser places empty values
/// at the next token, often on the following line).
fn parse_action(
    key: &marked_yaml::types::MarkedScalarNode,
    node: &Node,
    r: &mut Reader,
) -> Option<ActionSpec> {
    if matches!(node, Node::Scalar(s) if s.as_str().trim().is_empty()) {
        r.error(
            key.span(),
            format!(
                "`{}:` needs a value; {} needs a command",
                key.as_str(),
                key.as_str()
            ),
        );
        return None;
    }
    ActionSpec::parse(key.as_str(), node, r).flatten()
}

/// Static phase paths: path → (spec, whether it sits inside a foreach body).
fn static_paths(procedure: &Procedure) -> Vec<(String, &PhaseSpec, bool, Option<usize>)> {
    fn visit<'a>(
        phases: &'a [PhaseSpec],
        prefix: &str,
        inside_foreach: bool,
        parent: Option<usize>,
        out: &mut Vec<(String, &'a PhaseSpec, bool, Option<usize>)>,
    ) {
        for p in phases {
            let path = format!("{prefix}/{}", p.id);
            let me = out.len();
            out.push((path.clone(), p, inside_foreach, parent));
            visit(
                &p.children,
                &path,
                inside_foreach || p.foreach.is_some(),
                Some(me),
                out,
            );
        }
    }
    let mut out = Vec::new();
    visit(&procedure.phases, "", false, None, &mut out);
    out
}

/// Resolves a `requires` entry written in phase `from` (a static path): absolute `/a/b`, or a
/// sibling name relative to the phase's group.
fn resolve_requirement(from: &str, req: &str) -> String {
    if req.starts_with('/') {
        PhaseId::parse(req).to_string()
    } else {
        let parent = &from[..from.rfind('/').unwrap_or(0)];
        PhaseId::parse(&format!("{parent}/{req}")).to_string()
    }
}

/// The static requires graph: two vertices per phase path, `start` (may begin) and `done`
/// (all of it completed); an edge means "must happen before".
struct RequiresGraph {
    paths: Vec<String>,
    graph: DiGraph<(usize, bool), ()>,
    start: Vec<NodeIndex>,
    done: Vec<NodeIndex>,
}

/// Unknown requires, requiring oneself or one's own ancestors/descendants, and cycles. Gives
/// the graph back when it has no cycle.
fn validate_graph(procedure: &Procedure, r: &mut Reader) -> Option<RequiresGraph> {
    let paths = static_paths(procedure);
    let index: HashMap<&str, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.0.as_str(), i))
        .collect();
    // Two vertices per phase: start (may begin) and done (all of it completed).
    let mut graph: DiGraph<(usize, bool), ()> = DiGraph::new();
    let start: Vec<NodeIndex> = (0..paths.len())
        .map(|i| graph.add_node((i, false)))
        .collect();
    let done: Vec<NodeIndex> = (0..paths.len())
        .map(|i| graph.add_node((i, true)))
        .collect();
    // Each phase's sibling just before it (paths are in depth-first order), found in one pass.
    let mut previous_sibling: Vec<Option<usize>> = vec![None; paths.len()];
    let mut last_child: HashMap<Option<usize>, usize> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        previous_sibling[i] = last_child.insert(p.3, i);
    }
    for (i, (path, spec, _, parent)) in paths.iter().enumerate() {
        if let Some(p) = parent {
            graph.add_edge(start[*p], start[i], ());
            graph.add_edge(done[i], done[*p], ());
        }
        if spec.children.is_empty() {
            graph.add_edge(start[i], done[i], ());
        }
        for (req, loc) in &spec.requires {
            let target = resolve_requirement(path, req);
            let Some(&t) = index.get(target.as_str()) else {
                let hint = closest(&target, paths.iter().map(|p| p.0.as_str()))
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| {
                        "; requires takes a phase path such as /etcd/remove, or a sibling's id"
                            .to_string()
                    });
                r.diagnostics.push(Diagnostic {
                    location: Some(loc.clone()),
                    message: format!("phase {path} requires unknown phase `{req}`{hint}"),
                });
                continue;
            };
            if t == i {
                r.diagnostics.push(Diagnostic {
                    location: Some(loc.clone()),
                    message: format!("phase {path} requires itself"),
                });
                continue;
            }
            if paths[t].2
                && req.starts_with('/')
                && !path.starts_with(&format!("{}/", &target[..target.rfind('/').unwrap_or(0)]))
            {
                r.diagnostics.push(Diagnostic {
                    location: Some(loc.clone()),
                    message: format!(
                        "phase {path} requires {target}, which is inside a foreach; require the foreach phase itself"
                    ),
                });
                continue;
            }
            graph.add_edge(done[t], start[i], ());
        }
        // Ordered groups: each sibling requires the one before it.
        let parallel = parent.map(|p| paths[p].1.parallel).unwrap_or(false);
        if !parallel {
            if let Some(before) = previous_sibling[i] {
                graph.add_edge(done[before], start[i], ());
            }
        }
    }
    let mut acyclic = true;
    for scc in petgraph::algo::kosaraju_scc(&graph) {
        if scc.len() < 2 {
            continue;
        }
        acyclic = false;
        let mut cycle: Vec<String> = Vec::new();
        for v in find_cycle(&graph, &scc) {
            let path = paths[graph[v].0].0.clone();
            if cycle.last() != Some(&path) {
                cycle.push(path);
            }
        }
        if cycle.len() > 1 && cycle.first() == cycle.last() {
            cycle.pop();
        }
        let first = paths
            .iter()
            .find(|p| p.0 == cycle[0])
            .map(|p| p.1.location.clone());
        let mut shown = cycle.clone();
        shown.push(cycle[0].clone());
        r.diagnostics.push(Diagnostic {
            location: first,
            message: format!(
                "requires cycle: {} (a phase cannot wait for itself, its own group, or anything waiting for it)",
                shown.join(" → ")
            ),
        });
    }
    acyclic.then(|| RequiresGraph {
        paths: paths.into_iter().map(|p| p.0).collect(),
        graph,
        start,
        done,
    })
}

/// A phase may only use a captured value that some phase captures before it starts: one whose
/// completion the requires graph (ordered siblings included) puts before it. A capture made
/// by a later phase, or by a sibling in a parallel group, may not exist yet when it runs. A
/// rollback runs after its phase, so it may also use what its own phase captures.
fn validate_capture_order(procedure: &Procedure, graph: &RequiresGraph, r: &mut Reader) {
    let mut capturers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let index: HashMap<&str, usize> = graph
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let specs = static_paths(procedure);
    for (i, (_, spec, _, _)) in specs.iter().enumerate() {
        for name in spec.capture.keys() {
            capturers.entry(name.as_str()).or_default().push(i);
        }
    }
    let templates = Templates::new();
    // Per captured name, every vertex reached once one of its capturers is done.
    let mut reached: HashMap<&str, Vec<bool>> = HashMap::new();
    for use_ in &r.templates {
        let Some(&phase) = index.get(use_.phase.as_str()) else {
            continue;
        };
        let names = match use_.kind {
            TemplateKind::Expression => templates.expression_names(&use_.source),
            TemplateKind::Text => templates.template_names(&use_.source, false),
            TemplateKind::Shell => templates.template_names(&use_.source, true),
        };
        for name in names.unwrap_or_default() {
            let Some((&name, by)) = capturers.get_key_value(name.as_str()) else {
                continue;
            };
            if use_.locals.iter().any(|l| l == name) {
                continue;
            }
            if use_.rollback && by.contains(&phase) {
                continue;
            }
            let seen = reached.entry(name).or_insert_with(|| {
                let mut seen = vec![false; graph.graph.node_count()];
                let mut stack: Vec<NodeIndex> = by.iter().map(|&q| graph.done[q]).collect();
                while let Some(v) = stack.pop() {
                    if !std::mem::replace(&mut seen[v.index()], true) {
                        stack.extend(graph.graph.neighbors(v));
                    }
                }
                seen
            });
            if seen[graph.start[phase].index()] {
                continue;
            }
            let by: Vec<&str> = by.iter().map(|&q| graph.paths[q].as_str()).collect();
            let fix = if by.len() == 1 {
                format!(
                    "make sure {} completes first: move {} after it, or add `requires: [{}]`",
                    by[0], use_.phase, by[0]
                )
            } else {
                format!("make {} require one of {}", use_.phase, by.join(", "))
            };
            r.diagnostics.push(Diagnostic {
                location: Some(use_.location.clone()),
                message: format!(
                    "phase {} uses `{name}`, which {} captures, but not before {} runs (it comes later, or runs in parallel); {fix}",
                    use_.phase,
                    by.join(" and "),
                    use_.phase
                ),
            });
        }
    }
}

/// One cycle inside a strongly connected component, as a vertex path.
fn find_cycle(graph: &DiGraph<(usize, bool), ()>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let begin = *scc.iter().min().expect("non-empty");
    // Breadth-first from `begin` back to itself within the component.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([begin]);
    while let Some(v) = queue.pop_front() {
        for w in graph.neighbors(v) {
            if !members.contains(&w) {
                continue;
            }
            if w == begin {
                let mut path = vec![v];
                let mut cur = v;
                while cur != begin {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    scc.to_vec()
}

/// Templates that compile but can never render are refused at load, not when their phase
/// runs: tags that load other templates (a procedure's templates are single strings), macros
/// that call themselves, and templates that use no names at all yet fail (`{{ 1 // 0 }}`).
fn validate_renderable(r: &mut Reader) {
    static TAG: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        regex::Regex::new(r"\{%[-+]?\s*(include|extends|import|from)\b").expect("valid")
    });
    let templates = Templates::new();
    let mut found = Vec::new();
    for use_ in &r.templates {
        let is_jinja = use_.kind == TemplateKind::Expression
            || use_.source.contains("{{")
            || use_.source.contains("{%");
        if !is_jinja {
            continue;
        }
        let at = |offset: usize| {
            let mut location = use_.location.clone();
            location.line += use_.source[..offset].matches('\n').count();
            location
        };
        let mut refused = false;
        for cap in tag.captures_iter(&use_.source) {
            refused = true;
            let word = &cap[1];
            found.push(Diagnostic {
                location: Some(at(cap.get(0).map(|m| m.start()).unwrap_or(0))),
                message: format!(
                    "bad template: `{{% {word} %}}` can never render here: procedure templates are single strings with no other templates to load; to reuse phases, use an `include:` phase"
                ),
            });
        }
        if let Some((cycle, offset)) = recursive_macro(&use_.source) {
            refused = true;
            found.push(Diagnostic {
                location: Some(at(offset)),
                message: format!(
                    "bad template: macro `{}` calls itself ({}); recursive macros are not supported in procedure templates, write the steps out",
                    cycle[0],
                    cycle.join(" → ")
                ),
            });
        }
        if refused {
            continue;
        }
        // A template that uses no names renders the same now as when its phase runs.
        let empty = minijinja::Value::from(());
        let result = match use_.kind {
            TemplateKind::Expression => match templates.expression_names(&use_.source) {
                Ok(names) if names.is_empty() => templates.eval(&use_.source, &empty).err(),
                _ => None,
            },
            kind => {
                let shell = kind == TemplateKind::Shell;
                match templates.template_names(&use_.source, shell) {
                    Ok(names) if names.is_empty() => {
                        templates.render(&use_.source, shell, &empty).err()
                    }
                    _ => None,
                }
            }
        };
        if let Some(e) = result {
            let mut location = use_.location.clone();
            if let Some(line) = e.line.filter(|l| *l > 1) {
                location.line += line - 1;
            }
            found.push(Diagnostic {
                location: Some(location),
                message: format!(
                    "bad template: it uses no names, yet it can never render: {}",
                    e.message
                ),
            });
        }
    }
    r.diagnostics.extend(found);
}

/// A macro that calls itself, directly or through other macros of the same template: the
/// names on the cycle and where the first one is defined.
fn recursive_macro(source: &str) -> Option<(Vec<String>, usize)> {
    static MACRO: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = MACRO.get_or_init(|| {
        regex::Regex::new(r"\{%[-+]?\s*macro\s+([A-Za-z_][A-Za-z0-9_]*)").expect("valid")
    });
    static END: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let end = END.get_or_init(|| regex::Regex::new(r"\{%[-+]?\s*endmacro\b").expect("valid"));
    // Each macro's body runs from its tag to the next `endmacro` (nested macros are rare in a
    // command line; a nested one only widens the body, which can only find more calls).
    let macros: Vec<(String, usize, &str)> = re
        .captures_iter(source)
        .map(|c| {
            let whole = c.get(0).expect("match");
            let rest = &source[whole.end()..];
            let body = match end.find(rest) {
                Some(m) => &rest[..m.start()],
                None => rest,
            };
            (c[1].to_string(), whole.start(), body)
        })
        .collect();
    let calls = |body: &str, name: &str| {
        let call = format!("{name}(");
        body.match_indices(&call).any(|(i, _)| {
            !body[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
    };
    for (name, offset, _) in &macros {
        // Breadth-first over "calls", back to `name`.
        let mut prev: HashMap<&str, &str> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([name.as_str()]);
        while let Some(current) = queue.pop_front() {
            let Some((_, _, body)) = macros.iter().find(|m| m.0 == current) else {
                continue;
            };
            for (callee, _, _) in &macros {
                if !calls(body, callee) {
                    continue;
                }
                if callee == name {
                    let mut cycle = vec![current.to_string()];
                    let mut at = current;
                    while at != name.as_str() {
                        at = prev[at];
                        cycle.push(at.to_string());
                    }
                    cycle.reverse();
                    cycle.push(name.clone());
                    return Some((cycle, *offset));
                }
                if !prev.contains_key(callee.as_str()) {
                    prev.insert(callee.as_str(), current);
                    queue.push_back(callee.as_str());
                }
            }
        }
    }
    None
}

/// Every template compiles and uses only names the procedure defines.
fn validate_templates(procedure: &Procedure, r: &mut Reader) {
    let templates = Templates::new();
    let mut known: BTreeSet<String> = procedure.params.iter().map(|p| p.name.clone()).collect();
    let captures = procedure.capture_names();
    for c in &captures {
        if known.contains(c) {
            let loc = procedure.param(c).map(|p| p.location.clone());
            r.diagnostics.push(Diagnostic {
                location: loc,
                message: format!("`{c}` is both a parameter and a captured variable; rename one"),
            });
        }
    }
    for (name, location) in &r.loop_names {
        if captures.contains(name) {
            r.diagnostics.push(Diagnostic {
                location: Some(location.clone()),
                message: format!("the foreach item `{name}` hides the captured variable `{name}` inside its phase; name the item something else with `as:`"),
            });
        }
    }
    known.extend(captures);
    known.extend(BUILTIN_NAMES.iter().map(|s| s.to_string()));
    for use_ in std::mem::take(&mut r.templates) {
        // A template that does not compile is reported below; its placements cannot be judged.
        if use_.kind == TemplateKind::Shell && templates.template_names(&use_.source, true).is_ok()
        {
            for problem in crate::shell_placement::check(&use_.source) {
                let mut location = use_.location.clone();
                location.line += use_.source[..problem.offset].matches('\n').count();
                r.diagnostics.push(Diagnostic {
                    location: Some(location),
                    message: problem.message,
                });
            }
        }
        let names = match use_.kind {
            TemplateKind::Expression => templates.expression_names(&use_.source),
            TemplateKind::Text => templates.template_names(&use_.source, false),
            TemplateKind::Shell => templates.template_names(&use_.source, true),
        };
        match names {
            Err(e) => {
                let mut location = use_.location.clone();
                if let Some(line) = e.line.filter(|l| *l > 1) {
                    location.line += line - 1;
                }
                r.diagnostics.push(Diagnostic {
                    location: Some(location),
                    message: format!("bad template: {}", e.message),
                });
            }
            Ok(_)
                if !templates
                    .unknown_filters_and_tests(&use_.source, use_.kind == TemplateKind::Expression)
                    .is_empty() =>
            {
                for problem in templates
                    .unknown_filters_and_tests(&use_.source, use_.kind == TemplateKind::Expression)
                {
                    r.diagnostics.push(Diagnostic {
                        location: Some(use_.location.clone()),
                        message: format!("bad template: {problem}"),
                    });
                }
            }
            Ok(names) => {
                for name in names {
                    if known.contains(&name) || use_.locals.contains(&name) {
                        continue;
                    }
                    let candidates: Vec<&str> = known
                        .iter()
                        .map(|s| s.as_str())
                        .chain(use_.locals.iter().map(|s| s.as_str()))
                        .collect();
                    let hint = match closest(&name, candidates.iter().copied()) {
                        Some(c) => format!("; did you mean `{c}`?"),
                        None => "; declare it under `params:` or capture it in an earlier phase"
                            .to_string(),
                    };
                    r.diagnostics.push(Diagnostic {
                        location: Some(use_.location.clone()),
                        message: format!("template uses undefined name `{name}`{hint}"),
                    });
                }
            }
        }
    }
}

struct PlanBuilder<'a> {
    templates: &'a Templates,
    /// Parameters, the inventory and captured names as pending, converted once: a phase's
    /// context layers its locals over this instead of copying it per phase.
    base: minijinja::Value,
    operation: minijinja::Value,
    nodes: Vec<PlanNode>,
    diags: Vec<Diagnostic>,
    /// Phases allowed in the expanded plan; building stops as soon as it would exceed it.
    max_phases: usize,
    over_limit: bool,
}

impl PlanBuilder<'_> {
    fn context(&self, locals: &BTreeMap<String, serde_json::Value>) -> minijinja::Value {
        minijinja::value::merge_maps([
            self.operation.clone(),
            minijinja::Value::from_serialize(locals),
            self.base.clone(),
        ])
    }

    fn add_children(
        &mut self,
        parent: usize,
        specs: &[PhaseSpec],
        locals: &BTreeMap<String, serde_json::Value>,
    ) {
        for spec in specs {
            if self.over_limit {
                return;
            }
            let id = self.nodes[parent].id.child(&spec.id);
            match &spec.foreach {
                Some((foreach, as_name)) => {
                    let group = self.push(parent, id.clone(), spec, locals, true);
                    let items = self.foreach_items(spec, foreach, locals);
                    let mut seen = BTreeSet::new();
                    for item in items {
                        if self.over_limit {
                            return;
                        }
                        let segment = match item_segment(&item) {
                            Some(s) if valid_phase_segment(&s) => s,
                            _ => {
                                self.diags.push(Diagnostic {
                                    location: Some(spec.location.clone()),
                                    message: format!(
                                        "phase {id}: foreach item {item} cannot name a phase; items must be lowercase names (or mappings with a `name`)"
                                    ),
                                });
                                continue;
                            }
                        };
                        if !seen.insert(segment.clone()) {
                            self.diags.push(Diagnostic {
                                location: Some(spec.location.clone()),
                                message: format!(
                                    "phase {id}: foreach item `{segment}` appears twice"
                                ),
                            });
                            continue;
                        }
                        let mut inner = locals.clone();
                        inner.insert(as_name.clone(), item);
                        let child_id = id.child(&segment);
                        let child = self.push(group, child_id.clone(), spec, &inner, false);
                        if let Some(inc) = &spec.include {
                            inner = self.bind_include(&child_id, inc, &inner);
                        }
                        if !spec.children.is_empty() {
                            self.add_children(child, &spec.children, &inner);
                        }
                    }
                }
                None => {
                    let node = self.push(parent, id.clone(), spec, locals, false);
                    let inner = match &spec.include {
                        Some(inc) => self.bind_include(&id, inc, locals),
                        None => locals.clone(),
                    };
                    if !spec.children.is_empty() {
                        self.add_children(node, &spec.children, &inner);
                    }
                }
            }
        }
    }

    /// The included procedure's parameters for its subtree: `with:` values rendered in the
    /// including context (a lone `{{ expr }}` keeps its type, e.g. a list), else defaults;
    /// each checked against its pattern.
    fn bind_include(
        &mut self,
        id: &PhaseId,
        inc: &Include,
        locals: &BTreeMap<String, serde_json::Value>,
    ) -> BTreeMap<String, serde_json::Value> {
        let ctx = self.context(locals);
        let mut inner = locals.clone();
        for param in &inc.params {
            let given = inc.with.iter().find(|w| w.0 == param.name);
            let value = match given {
                Some((key, source, loc)) => {
                    let rendered = if crate::template::strip_braces(source) != source.trim() {
                        self.templates.eval(source, &ctx).and_then(|v| {
                            serde_json::to_value(&v).map_err(|e| crate::template::TemplateError {
                                message: e.to_string(),
                                line: None,
                            })
                        })
                    } else {
                        self.templates
                            .render(source, false, &ctx)
                            .map(serde_json::Value::String)
                    };
                    match rendered {
                        Ok(v) => v,
                        Err(e) => {
                            self.diags.push(Diagnostic {
                                location: Some(loc.clone()),
                                message: format!(
                                    "phase {id}: include `with: {key}`: {}",
                                    e.message
                                ),
                            });
                            continue;
                        }
                    }
                }
                None => param
                    .default
                    .clone()
                    .unwrap_or_else(|| serde_json::Value::String(String::new())),
            };
            let value = match (param.kind, value) {
                (ParamKind::List, serde_json::Value::String(s)) => serde_json::Value::Array(
                    s.split(',')
                        .map(|s| s.trim())
                        .filter(|s| !s.is_empty())
                        .map(|s| serde_json::Value::String(s.to_string()))
                        .collect(),
                ),
                (ParamKind::String, v @ serde_json::Value::Array(_)) | (ParamKind::List, v) => v,
                (ParamKind::String, v) => serde_json::Value::String(json_text(&v)),
            };
            if let (Some(pattern), Some((_, _, loc))) = (&param.pattern, given) {
                let re = regex::Regex::new(pattern).expect("validated at load");
                let items: Vec<String> = match &value {
                    serde_json::Value::Array(a) => a.iter().map(json_text).collect(),
                    other => vec![json_text(other)],
                };
                for item in items.iter().filter(|i| !re.is_match(i)) {
                    self.diags.push(Diagnostic {
                        location: Some(loc.clone()),
                        message: format!(
                            "phase {id}: parameter `{}` of procedure `{}`: `{item}` does not match the pattern {pattern}",
                            param.name, inc.procedure
                        ),
                    });
                }
            }
            inner.insert(param.name.clone(), value);
        }
        inner
    }

    fn foreach_items(
        &mut self,
        spec: &PhaseSpec,
        foreach: &Foreach,
        locals: &BTreeMap<String, serde_json::Value>,
    ) -> Vec<serde_json::Value> {
        match foreach {
            Foreach::Items(items) => items
                .iter()
                .map(|s| serde_json::Value::String(s.clone()))
                .collect(),
            Foreach::Expression(expr) => {
                let ctx = self.context(locals);
                let result = self.templates.eval(expr, &ctx).and_then(|v| {
                    serde_json::to_value(&v).map_err(|e| crate::template::TemplateError {
                        message: e.to_string(),
                        line: None,
                    })
                });
                match result {
                    Ok(serde_json::Value::Array(items)) => items,
                    Ok(serde_json::Value::String(s)) if s.is_empty() => Vec::new(),
                    Ok(other) => {
                        self.diags.push(Diagnostic {
                            location: Some(spec.location.clone()),
                            message: format!(
                                "phase `{}`: foreach must give a list, got {other}",
                                spec.id
                            ),
                        });
                        Vec::new()
                    }
                    Err(e) => {
                        self.diags.push(Diagnostic {
                            location: Some(spec.location.clone()),
                            message: format!("phase `{}`: foreach: {}", spec.id, e.message),
                        });
                        Vec::new()
                    }
                }
            }
        }
    }

    /// Adds one plan node for `spec`. A foreach group carries only the grouping settings; its
    /// expansions carry the action (or become groups of the spec's children).
    fn push(
        &mut self,
        parent: usize,
        id: PhaseId,
        spec: &PhaseSpec,
        locals: &BTreeMap<String, serde_json::Value>,
        foreach_group: bool,
    ) -> usize {
        if self.nodes.len() > self.max_phases {
            // Checked while expanding, so a runaway foreach or include stops here; the caller
            // stops adding children once this is set.
            self.over_limit = true;
        }
        let description = match &spec.description {
            Some(d) => match self.templates.render(d, false, &self.context(locals)) {
                Ok(text) => text,
                Err(e) => {
                    self.diags.push(Diagnostic {
                        location: Some(spec.location.clone()),
                        message: format!("phase {id}: description: {}", e.message),
                    });
                    String::new()
                }
            },
            None => String::new(),
        };
        let is_expansion = spec.foreach.is_some() && !foreach_group;
        let carries_action = !foreach_group && spec.children.is_empty();
        // Relative requires name siblings, so inside a foreach expansion they stay in it.
        let requires = if is_expansion {
            Vec::new()
        } else {
            spec.requires
                .iter()
                .map(|(req, _)| {
                    if req.starts_with('/') {
                        PhaseId::parse(req)
                    } else {
                        self.nodes[parent].id.child(req.trim_matches('/'))
                    }
                })
                .collect()
        };
        let action = if carries_action {
            spec.action.clone()
        } else {
            None
        };
        let idempotent = spec.idempotent.unwrap_or_else(|| {
            action
                .as_ref()
                .map(|a| a.default_idempotent())
                .unwrap_or(true)
        });
        let node = PlanNode {
            id,
            description,
            parent: Some(parent),
            children: Vec::new(),
            parallel: if foreach_group || spec.foreach.is_none() {
                spec.parallel
            } else {
                false
            },
            max_parallel: if foreach_group || spec.foreach.is_none() {
                spec.max_parallel
            } else {
                None
            },
            requires,
            rollback: if carries_action {
                spec.rollback.clone()
            } else {
                None
            },
            action,
            locals: locals.clone(),
            capture: if carries_action {
                spec.capture.clone()
            } else {
                BTreeMap::new()
            },
            timeout_secs: spec.timeout_secs,
            retries: spec.retries,
            retry_delay_secs: spec.retry_delay_secs,
            idempotent,
            when: if carries_action {
                spec.when.clone()
            } else {
                None
            },
        };
        let i = self.nodes.len();
        self.nodes.push(node);
        self.nodes[parent].children.push(i);
        i
    }
}

fn item_segment(item: &serde_json::Value) -> Option<String> {
    match item {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Object(map) => map
            .get("name")
            .or_else(|| map.get("id"))
            .and_then(|v| v.as_str())
            .map(|s| s.to_string()),
        _ => None,
    }
}

/// Where procedures come from: built in, overridden or added by a plans directory.
///
/// Files are only read when their procedure is asked for, so one broken file does not stop
/// the others from being used.
pub struct Catalog {
    entries: BTreeMap<String, Vec<CatalogSource>>,
    max_phases: usize,
    /// Each procedure loaded so far, so an include fan-out (`a` includes `b` twice, `b`
    /// includes `c` twice, ...) or a listing parses each file once.
    loaded: std::cell::RefCell<HashMap<String, Result<Procedure, ProcedureError>>>,
}

/// One [`Catalog::get`]: the procedures being loaded around the current one, to name an
/// include cycle.
#[derive(Default)]
struct Loading {
    stack: Vec<String>,
}

enum CatalogSource {
    Builtin(&'static str),
    File(PathBuf),
}

impl Catalog {
    pub fn load(plans_dir: Option<&Path>) -> Result<Catalog, ProcedureError> {
        let mut entries: BTreeMap<String, Vec<CatalogSource>> = BTreeMap::new();
        for (name, text) in builtin::BUILTIN_PLANS {
            entries.insert(name.to_string(), vec![CatalogSource::Builtin(text)]);
        }
        if let Some(dir) = plans_dir {
            let read = std::fs::read_dir(dir).map_err(|source| ProcedureError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let mut files: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".yaml").or_else(|| n.strip_suffix(".yml")))
                else {
                    continue;
                };
                let list = entries.entry(name.to_string()).or_default();
                // A file overrides the built-in procedure of the same name.
                list.retain(|s| matches!(s, CatalogSource::File(_)));
                list.push(CatalogSource::File(path.clone()));
            }
        }
        Ok(Catalog {
            entries,
            max_phases: DEFAULT_MAX_PHASES,
            loaded: Default::default(),
        })
    }

    /// Refuses procedures whose phases (includes inlined) exceed `max_phases`.
    pub fn with_max_phases(mut self, max_phases: usize) -> Self {
        self.max_phases = max_phases;
        self.loaded.get_mut().clear();
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    pub fn get(&self, name: &str) -> Result<Procedure, ProcedureError> {
        self.load_procedure(name, &mut Loading::default())
    }

    /// Loads `name` once per [`Loading`], resolving its includes through this catalog.
    fn load_procedure(
        &self,
        name: &str,
        loading: &mut Loading,
    ) -> Result<Procedure, ProcedureError> {
        if let Some(done) = self.loaded.borrow().get(name) {
            return match done {
                Ok(p) => Ok(p.clone()),
                Err(e) => Err(e.duplicate()),
            };
        }
        let result = self.parse_procedure(name, loading).and_then(|p| {
            // Includes are inlined, so this counts every phase the plan will have before any
            // `foreach` expands; the plan builder checks again while expanding.
            let mut phases = 0;
            walk(&p.phases, &mut |_| phases += 1);
            if phases > self.max_phases {
                Err(ProcedureError::TooManyPhases {
                    procedure: name.to_string(),
                    limit: self.max_phases,
                })
            } else {
                Ok(p)
            }
        });
        let copy = match &result {
            Ok(p) => Ok(p.clone()),
            Err(e) => Err(e.duplicate()),
        };
        self.loaded.borrow_mut().insert(name.to_string(), copy);
        result
    }

    fn parse_procedure(
        &self,
        name: &str,
        loading: &mut Loading,
    ) -> Result<Procedure, ProcedureError> {
        let Some(sources) = self.entries.get(name) else {
            let hint = closest(name, self.names())
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(ProcedureError::Unknown {
                name: name.to_string(),
                hint,
            });
        };
        let (file, text) = match sources.as_slice() {
            [CatalogSource::Builtin(text)] => {
                (format!("plans/{name}.yaml (built in)"), text.to_string())
            }
            [CatalogSource::File(path)] => {
                let bytes = source::read_source(path).map_err(|source| ProcedureError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = path.display().to_string();
                let text = source::decode_utf8(&file, bytes)
                    .map_err(|d| ProcedureError::Invalid(vec![d]))?;
                (file, text)
            }
            many => {
                let files: Vec<String> = many
                    .iter()
                    .filter_map(|s| match s {
                        CatalogSource::File(p) => Some(p.display().to_string()),
                        CatalogSource::Builtin(_) => None,
                    })
                    .collect();
                return Err(ProcedureError::Invalid(vec![Diagnostic {
                    location: None,
                    message: format!(
                        "procedure `{name}` is defined by more than one file: {}; keep one",
                        files.join(" and ")
                    ),
                }]));
            }
        };
        loading.stack.push(name.to_string());
        let result = Procedure::parse_with(&file, &text, Some(name), &mut |included| {
            if let Some(pos) = loading.stack.iter().position(|l| l == included) {
                let mut chain = loading.stack[pos..].to_vec();
                chain.push(included.to_string());
                return Err(ProcedureError::IncludeCycle(chain));
            }
            self.load_procedure(included, loading)
        });
        loading.stack.pop();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Procedure, Vec<String>> {
        Procedure::parse("t.yaml", text, None).map_err(|e| match e {
            ProcedureError::Invalid(d) => d.into_iter().map(|d| d.to_string()).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn foreach_expands_into_a_group_and_relative_requires_stay_inside() {
        let p = parse(
            "name: t\nparams:\n  nodes: {default: [a, b]}\nphases:\n  - id: each\n    foreach: \"{{ nodes }}\"\n    parallel: true\n    phases:\n      - id: one\n        run: echo {{ item }}\n      - id: two\n        requires: [one]\n        run: echo two\n",
        )
        .unwrap();
        let params = p.resolve_params(&[]).unwrap();
        let plan = p
            .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
            .unwrap();
        let ids: Vec<&str> = plan.nodes().iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "/",
                "/each",
                "/each/a",
                "/each/a/one",
                "/each/a/two",
                "/each/b",
                "/each/b/one",
                "/each/b/two"
            ]
        );
        let two = plan.node(plan.find(&PhaseId::parse("/each/b/two")).unwrap());
        assert_eq!(two.requires, [PhaseId::parse("/each/b/one")]);
        assert!(plan.node(1).parallel);
        assert_eq!(plan.node(3).locals["item"], "a");
    }

    #[test]
    fn the_phase_cap_counts_expanded_phases_without_the_root() {
        let p = parse(
            "name: t\nparams:\n  nodes: {default: [a, b]}\nphases:\n  - id: each\n    foreach: \"{{ nodes }}\"\n    phases:\n      - id: one\n        run: echo {{ item }}\n      - id: two\n        run: echo two\n",
        )
        .unwrap();
        let params = p.resolve_params(&[]).unwrap();
        // /each, /each/a, /each/a/one, /each/a/two, and the same for b: 7 phases.
        let build = |max| p.build_plan(&params, &Templates::new(), None, max);
        assert_eq!(build(7).unwrap().len(), 8);
        match build(6) {
            Err(ProcedureError::TooManyPhases { procedure, limit }) => {
                assert_eq!((procedure.as_str(), limit), ("t", 6))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_params_split_on_commas() {
        let p = parse("name: t\nparams:\n  nodes: {type: list, required: true}\nphases:\n  - id: a\n    foreach: \"{{ nodes }}\"\n    run: echo {{ item }}\n").unwrap();
        let params = p.resolve_params(&["nodes=w-1, w-2".into()]).unwrap();
        assert_eq!(params.values["nodes"], serde_json::json!(["w-1", "w-2"]));
    }

    #[test]
    fn every_file_in_plans_is_built_in_verbatim() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".yaml"))
                    .map(|n| n.to_string())
            })
            .collect();
        files.sort();
        let listed: Vec<String> = builtin::BUILTIN_PLANS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(
            listed, files,
            "list every plans/*.yaml in builtin::BUILTIN_PLANS"
        );
        for (name, text) in builtin::BUILTIN_PLANS {
            let on_disk = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
            assert_eq!(*text, on_disk);
        }
    }

    #[test]
    fn every_built_in_procedure_is_valid_and_renders_with_its_defaults() {
        let catalog = Catalog::load(None).unwrap();
        let names: Vec<&str> = catalog.names().collect();
        assert!(names.contains(&"local-preflight"), "{names:?}");
        for name in names {
            let p = catalog.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let sets: Vec<String> = p
                .params
                .iter()
                .filter(|s| s.required && s.default.is_none())
                .map(|s| {
                    // A value each required parameter's pattern accepts.
                    let value = match s.name.as_str() {
                        "version" => "1.31.2".to_string(),
                        "from_version" => "1.30.2".to_string(),
                        "join_command" => {
                            "kubeadm join 10.0.0.1:6443 --discovery-token-ca-cert-hash sha256:00"
                                .to_string()
                        }
                        "token" => "abcdef.0123456789abcdef".to_string(),
                        "certificate_key" => "0".repeat(64),
                        _ => "example".to_string(),
                    };
                    format!("{}={value}", s.name)
                })
                .collect();
            let params = p
                .resolve_params(&sets)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // Procedures that expand over the inventory's nodes get a small one.
            let inventory = serde_json::json!({"nodes": [
                {"name": "cp-1", "address": "10.0.0.1", "roles": ["control-plane", "etcd"]},
                {"name": "worker-1", "address": "10.0.0.2", "roles": ["worker"]},
            ]});
            p.build_plan(
                &params,
                &Templates::new(),
                Some(inventory),
                DEFAULT_MAX_PHASES,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn recursive_macros_are_found_with_their_cycle() {
        let table: &[(&str, Option<&[&str]>)] = &[
            ("{% macro f() %}{{ f() }}{% endmacro %}", Some(&["f", "f"])),
            (
                "{% macro f() %}{{ g() }}{% endmacro %}{% macro g() %}{{ f() }}{% endmacro %}",
                Some(&["f", "g", "f"]),
            ),
            (
                "{%- macro f(n) -%}{{ f(n - 1) }}{%- endmacro %}",
                Some(&["f", "f"]),
            ),
            (
                "{% macro f() %}{{ g() }}{% endmacro %}{% macro g() %}x{% endmacro %}",
                None,
            ),
            // `ff(` and `x.f(` are not calls of `f`.
            ("{% macro f() %}{{ ff() }}{{ x.f() }}{% endmacro %}", None),
            ("{{ f() }}", None),
        ];
        for (source, expected) in table {
            let found = recursive_macro(source).map(|(cycle, _)| cycle);
            let expected = expected.map(|c| c.iter().map(|s| s.to_string()).collect());
            assert_eq!(found, expected, "{source}");
        }
    }

    #[test]
    fn cycle_is_named() {
        let errs = parse(
            "name: t\nphases:\n  - id: a\n    requires: [b]\n    run: x\n  - id: b\n    run: y\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("requires cycle: /a → /b → /a")
                || errs[0].contains("requires cycle: /b → /a → /b"),
            "{errs:?}"
        );
    }

    #[test]
    fn include_binds_the_included_parameters_for_its_subtree_only() {
        let inner = "name: inner\nparams:\n  node: {required: true}\n  tools: {type: list, default: [a]}\n  mode: {default: soft}\nphases:\n  - id: each\n    foreach: \"{{ tools }}\"\n    run: echo {{ node }} {{ item }} {{ mode }}\n";
        let outer = "name: outer\nparams:\n  target: {default: cp-2}\n  list: {default: [x, y]}\nphases:\n  - id: inc\n    description: about {{ target }}\n    include: {procedure: inner, with: {node: \"n-{{ target }}\", tools: \"{{ list }}\"}}\n  - id: after\n    requires: [/inc/each]\n    when: \"{{ target == 'cp-2' }}\"\n    run: echo {{ target }}\n";
        let p = Procedure::parse_with("outer.yaml", outer, None, &mut |name| {
            assert_eq!(name, "inner");
            Procedure::parse("inner.yaml", inner, None)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let params = p.resolve_params(&[]).unwrap();
        let plan = p
            .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
            .unwrap();
        let ids: Vec<&str> = plan.nodes().iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "/",
                "/inc",
                "/inc/each",
                "/inc/each/x",
                "/inc/each/y",
                "/after"
            ]
        );
        let x = plan.node(plan.find(&PhaseId::parse("/inc/each/x")).unwrap());
        assert_eq!(x.locals["node"], "n-cp-2");
        assert_eq!(x.locals["tools"], serde_json::json!(["x", "y"]));
        assert_eq!(x.locals["mode"], "soft");
        assert_eq!(x.locals["item"], "x");
        assert_eq!(x.when, None);
        let after = plan.node(plan.find(&PhaseId::parse("/after")).unwrap());
        assert!(after.locals.is_empty(), "{:?}", after.locals);
        assert_eq!(after.requires, [PhaseId::parse("/inc/each")]);
        assert_eq!(
            after.when.as_ref().map(|w| w.that.as_str()),
            Some("{{ target == 'cp-2' }}")
        );
        assert_eq!(plan.node(1).description, "about cp-2");
    }

    #[test]
    fn secrets_are_kept_apart() {
        let p = parse("name: t\nparams:\n  token: {secret: true, required: true}\nphases:\n  - id: a\n    description: join with {{ token }}\n    run: echo {{ token }}\n").unwrap();
        let params = p.resolve_params(&["token=hunter2".into()]).unwrap();
        assert!(params.values.is_empty());
        let plan = p
            .build_plan(&params, &Templates::new(), None, DEFAULT_MAX_PHASES)
            .unwrap();
        let json = serde_json::to_string(&plan).unwrap();
        assert!(!json.contains("hunter2"));
        assert!(json.contains("join with <secret:token>"));
    }
}
