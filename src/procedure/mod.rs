//! Procedures: loading and validating `plans/*.yaml`, parameters, and rendering a plan.
//!
//! 1. [`Catalog`] (`catalog.rs`) finds procedures: the built-in ones compiled into the binary,
//!    then a plans directory (`--plans-dir`/`MEDIC_PLANS_DIR`) that adds or overrides by name.
//! 2. [`Procedure::parse_with`] (`read/`) reads one file and reports *every* problem at once
//!    with file, line and column. An `include:` phase gets the included procedure's phases
//!    (`include.rs`, loaded through the catalog) as its children; then `validate/` checks the
//!    whole procedure: unknown `requires` (with the closest ID), cycles (with the cycle),
//!    capture order, bad templates and names no parameter or capture defines.
//! 3. [`Procedure::resolve_params`] (`params.rs`) checks `--set` values: unknown, missing,
//!    pattern mismatch.
//! 4. [`Procedure::build_plan`] (`build.rs`) expands `foreach`, binds included procedures'
//!    parameters (as the subtree's locals), resolves `requires` to phase IDs and renders
//!    descriptions, giving the immutable [`Plan`] an operation runs.
//! 5. [`lint`] finds what loads fine but a reviewer would question (`medic procedures lint`).

mod build;
mod catalog;
mod include;
pub(crate) mod lint;
mod params;
mod read;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::action::ActionSpec;
use crate::plan::Condition;
use crate::source::{self, Diagnostic, Location};

pub(crate) use catalog::Catalog;
pub use params::Params;
pub(crate) use params::{redact_set, secret_placeholder, ParamKind, ParamSpec, MIN_SECRET_LEN};

/// Names every template may use besides parameters, captures and loop items.
const BUILTIN_NAMES: &[&str] = &["operation", "inventory"];

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

#[derive(Clone, Debug)]
pub(crate) enum Foreach {
    /// An expression over parameters that yields a list.
    Expression(String),
    Items(Vec<String>),
}

#[derive(Clone, Debug)]
pub(crate) struct PhaseSpec {
    pub(crate) id: String,
    pub(crate) location: Location,
    pub(crate) description: Option<String>,
    pub(crate) requires: Vec<(String, Location)>,
    pub(crate) parallel: bool,
    pub(crate) max_parallel: Option<usize>,
    pub(crate) foreach: Option<(Foreach, String)>,
    pub(crate) children: Vec<PhaseSpec>,
    pub(crate) action: Option<ActionSpec>,
    pub(crate) rollback: Option<ActionSpec>,
    pub(crate) capture: BTreeMap<String, String>,
    /// The names of `capture` marked `secret: true`.
    pub(crate) secret_capture: BTreeSet<String>,
    pub(crate) timeout_secs: Option<f64>,
    pub(crate) retries: u32,
    pub(crate) retry_delay_secs: f64,
    pub(crate) idempotent: Option<bool>,
    pub(crate) when: Option<Condition>,
    /// `include:` — a group whose children are another procedure's phases.
    pub(crate) include: Option<Include>,
    /// `may_fail: true`: a failure is recorded and the run goes on.
    pub(crate) may_fail: bool,
    /// `probe:`: what a failure means and what repairs it (`read/probe.rs`).
    pub(crate) probe: Option<crate::plan::Probe>,
    /// `confirm: true`: the operator confirms before it runs (`read/confirm.rs`).
    pub(crate) confirm: bool,
}

/// The keys a phase with `include:` may have besides it; the loader refuses the others and
/// the JSON Schema (`crate::schema`) allows exactly these.
pub(crate) const INCLUDE_PHASE_KEYS: &[&str] = &[
    "id",
    "description",
    "requires",
    "include",
    "foreach",
    "as",
    "parallel",
    "max_parallel",
];

/// `include: {procedure: NAME, with: {param: "template"}}`.
#[derive(Clone, Debug)]
pub(crate) struct Include {
    pub(crate) procedure: String,
    /// Parameter name, template rendered in the including procedure's context, where it is.
    pub(crate) with: Vec<(String, String, Location)>,
    /// The included procedure's parameters, known once the include is resolved.
    pub(crate) params: Vec<ParamSpec>,
    pub(crate) location: Location,
    /// The included procedure's own `approval:`, known once the include is resolved; it
    /// joins the includer's policy (`operation::approve::policy_for`, strictest wins).
    pub(crate) approval: Option<ApprovalSpec>,
}

/// A validated procedure.
#[derive(Clone, Debug)]
pub struct Procedure {
    pub(crate) name: String,
    pub(crate) description: String,
    /// Where it came from, for messages (`plans/x.yaml`, or `plans/x.yaml (built in)`).
    pub(crate) file: String,
    pub(crate) params: Vec<ParamSpec>,
    pub(crate) phases: Vec<PhaseSpec>,
    /// Every name this file's templates use (not those of the procedures it includes);
    /// capture expressions are kept in [`PhaseSpec::capture`].
    pub(crate) template_names: BTreeSet<String>,
    /// `approval:`: who must approve an operation of it before it executes.
    pub(crate) approval: Option<ApprovalSpec>,
}

/// A procedure's `approval:` (`read/approval.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ApprovalSpec {
    pub(crate) required: bool,
    pub(crate) count: u32,
    pub(crate) distinct_from_creator: bool,
}

impl Procedure {
    pub(crate) fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Every variable some phase captures.
    pub(crate) fn capture_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        walk(&self.phases, &mut |p| out.extend(p.capture.keys().cloned()));
        out
    }
}

fn plain(message: String) -> Diagnostic {
    Diagnostic {
        location: None,
        message,
    }
}

pub(crate) fn walk<'a>(phases: &'a [PhaseSpec], f: &mut dyn FnMut(&'a PhaseSpec)) {
    for p in phases {
        f(p);
        walk(&p.children, f);
    }
}
