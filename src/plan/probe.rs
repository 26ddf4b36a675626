//! A phase's probe metadata (`probe:` in a procedure): plain data the plan carries so that
//! `medic status` and a recorded run can say what a failed check means and what repairs it.
//! The scheduler never looks at it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How bad a failed probe is: a critical finding makes the cluster *degraded*.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What repairs a failed probe: a procedure with its parameters (templates), or an instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    Procedure {
        procedure: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        with: BTreeMap<String, String>,
    },
    Instruction(String),
}

/// `probe: {name, severity, finding, remedy}` of a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Stable name, e.g. `node/kubelet-active`; `--skip`/`--only` match it.
    pub name: String,
    pub severity: Severity,
    /// A one-line text template rendered from the phase's values when it fails.
    pub finding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
}
