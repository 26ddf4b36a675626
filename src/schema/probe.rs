//! The schema of a phase's `probe:` (read by `procedure/read/probe.rs`).

use std::collections::BTreeMap;

use schemars::JsonSchema;

use super::scalars::Scalar;

/// What a failure of this phase means to `medic status`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Probe {
    /// A stable name, `component/check` (lowercase letters, digits, `-`), e.g. `node/kubelet-active`.
    #[schemars(regex(pattern = r"^[a-z0-9-]+(/[a-z0-9-]+)+$"))]
    pub name: String,
    /// How bad a failure is: a critical finding makes the cluster degraded.
    pub severity: Severity,
    /// One line saying what is wrong, rendered from the phase's values (a template).
    pub finding: String,
    /// What repairs it: a procedure and its parameters, or a plain instruction.
    pub remedy: Option<Remedy>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Remedy {
    Instruction(String),
    Procedure(RemedyProcedure),
}

/// `remedy: {procedure: NAME, with: {param: value}}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RemedyProcedure {
    /// The procedure that repairs the finding.
    pub procedure: String,
    /// Its parameters (templates over the probe's values).
    #[schemars(rename = "with")]
    pub with_params: Option<BTreeMap<String, Scalar>>,
}
