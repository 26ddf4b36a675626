//! `medic procedures lint`: load procedure files without an operation or a cluster and report
//! every problem: the loader's errors (as it reports them, file:line:col) and the warnings of
//! `rules.rs`, each with a stable code.
//!
//! 1. [`lint_catalog`] lints every procedure of a catalog (built in and the plans directory);
//!    [`lint_paths`] lints files and directories, each directory a catalog of its own, so a
//!    procedure includes its neighbours as it would from `--plans-dir`.
//! 2. A procedure that does not load gives its loader diagnostics as errors; one that loads
//!    is passed to [`rules::lint`].
//! 3. The result is a flat list of [`LintDiagnostic`]s; the CLI prints them.

mod remedy;
mod rules;

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Catalog, ProcedureError};

use rules::lint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Error,
    Warning,
}

/// One problem, as `-o json` shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LintDiagnostic {
    pub(crate) file: String,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
    pub(crate) severity: Severity,
    /// A warning's rule, or the kind of load error (`invalid`, `read`, `include-cycle`, ...).
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// What was linted and what was found.
#[derive(Debug, Default)]
pub(crate) struct LintReport {
    /// How many procedure files were looked at.
    pub(crate) files: usize,
    pub(crate) diagnostics: Vec<LintDiagnostic>,
}

impl LintReport {
    pub(crate) fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// Lints procedure `name` of `catalog`.
    fn add(&mut self, catalog: &Catalog, name: &str) {
        self.files += 1;
        match catalog.get(name) {
            Ok(procedure) => {
                let known: Vec<&str> = catalog.names().collect();
                let mut warnings = lint(&procedure);
                warnings.extend(remedy::unknown_remedies(&procedure, &known));
                self.extend_warnings(warnings)
            }
            Err(e) => self.load_error(&catalog.label(name), e),
        }
    }

    fn extend_warnings(&mut self, warnings: Vec<rules::Warning>) {
        self.diagnostics
            .extend(warnings.into_iter().map(|w| LintDiagnostic {
                file: w.location.file,
                line: Some(w.location.line),
                column: Some(w.location.column),
                severity: Severity::Warning,
                code: w.code.as_str(),
                message: w.message,
            }));
    }

    fn load_error(&mut self, file: &str, error: ProcedureError) {
        let code = match &error {
            ProcedureError::Invalid(diags) => {
                for d in diags {
                    self.diagnostics.push(LintDiagnostic {
                        file: d
                            .location
                            .as_ref()
                            .map_or_else(|| file.to_string(), |l| l.file.clone()),
                        line: d.location.as_ref().map(|l| l.line),
                        column: d.location.as_ref().map(|l| l.column),
                        severity: Severity::Error,
                        code: "invalid",
                        message: d.message.clone(),
                    });
                }
                return;
            }
            ProcedureError::Unknown { .. } => "unknown-procedure",
            ProcedureError::Read { .. } => "read",
            ProcedureError::IncludeCycle(_) => "include-cycle",
            ProcedureError::TooManyPhases { .. } => "too-many-phases",
        };
        self.error(file, code, error.to_string());
    }

    fn error(&mut self, file: &str, code: &'static str, message: String) {
        self.diagnostics.push(LintDiagnostic {
            file: file.to_string(),
            line: None,
            column: None,
            severity: Severity::Error,
            code,
            message,
        });
    }
}

/// Every procedure of the catalog: the built-in ones and the plans directory's.
pub(crate) fn lint_catalog(catalog: &Catalog) -> LintReport {
    let mut report = LintReport::default();
    for name in catalog.names() {
        report.add(catalog, name);
    }
    report
}

/// Procedure files, and the `.yaml`/`.yml` files of directories. Includes are resolved
/// through the file's directory, then the built-in procedures.
pub(crate) fn lint_paths(paths: &[PathBuf], max_phases: usize) -> LintReport {
    let mut report = LintReport::default();
    for path in paths {
        let file = path.display().to_string();
        if path.is_dir() {
            match Catalog::load(Some(path)) {
                Ok(catalog) => {
                    let catalog = catalog.with_max_phases(max_phases);
                    let names: Vec<String> = catalog.file_names().map(String::from).collect();
                    if names.is_empty() {
                        report.error(
                            &file,
                            "read",
                            "the directory has no procedure files (NAME.yaml or NAME.yml)".into(),
                        );
                    }
                    for name in names {
                        report.add(&catalog, &name);
                    }
                }
                Err(e) => report.load_error(&file, e),
            }
            continue;
        }
        let Some(name) = procedure_name(path) else {
            report.error(
                &file,
                "read",
                "not a procedure file: give a NAME.yaml or NAME.yml file, or a directory of them"
                    .into(),
            );
            continue;
        };
        if !path.exists() {
            report.error(&file, "read", "no such file".into());
            continue;
        }
        let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => PathBuf::from("."),
        };
        match Catalog::load(Some(&dir)) {
            Ok(catalog) => report.add(&catalog.with_max_phases(max_phases), name),
            Err(e) => report.load_error(&file, e),
        }
    }
    report
}

/// The procedure a file defines, from its name.
fn procedure_name(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
}
