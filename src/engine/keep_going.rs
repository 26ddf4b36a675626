//! Failures a run goes on after: a phase with `may_fail: true`, or every phase when the
//! engine keeps going (`medic status` runs every probe whatever the others found). A tolerated
//! failure is recorded as failed and counts as finished for scheduling, so phases that require
//! it still run (a check over a value it did not capture then fails on the missing name).

use std::collections::HashMap;

use super::Engine;
use crate::plan::{PhaseId, PhaseRecord};

impl Engine {
    /// The engine records every failure and goes on.
    pub(crate) fn keep_going(mut self) -> Engine {
        self.keep_going = true;
        self
    }

    /// Whether a failure of `leaf` lets the run go on.
    pub(super) fn tolerates(&self, leaf: usize) -> bool {
        self.keep_going || self.shared.plan.node(leaf).may_fail
    }

    /// The phase records and captured variables, after a run.
    pub(crate) fn results(
        &self,
    ) -> (
        HashMap<PhaseId, PhaseRecord>,
        serde_json::Map<String, serde_json::Value>,
    ) {
        let records = self.shared.records.lock().expect("records lock").clone();
        let vars = self.shared.vars.lock().expect("vars lock").clone();
        (records, vars)
    }

    /// The template context of `leaf` (parameters, captured values, loop item), secrets hidden.
    pub(crate) fn leaf_context(&self, leaf: usize) -> crate::template::TemplateContext {
        self.shared.display_context(leaf)
    }
}
