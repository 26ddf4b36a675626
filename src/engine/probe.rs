//! Probes in a run: failures it goes on after, and what a failed probe found.
//!
//! 1. A phase with `may_fail: true`, or every phase when the engine keeps going (`medic
//!    status` runs every probe whatever the others found), fails without ending the run: it is
//!    recorded as failed and counts as finished for scheduling, so phases that require it still
//!    run (a check over a value it did not capture then fails on the missing name).
//! 2. A failed phase with `probe:` records its finding, rendered right then (its values and
//!    `error`), as the record's summary: later phases may capture the same names again.

use std::collections::HashMap;

use super::{Engine, Shared};
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

impl Shared {
    /// The finding of a failed probe phase, rendered with its values as they are now and
    /// `error`; `None` for a phase without `probe:`. A finding that cannot render says why.
    pub(super) fn probe_finding(&self, leaf: usize, error: &str) -> Option<String> {
        let probe = self.plan.node(leaf).probe.as_ref()?;
        let ctx = self.display_context(leaf);
        let with_error = minijinja::value::merge_maps([
            minijinja::Value::from_serialize(serde_json::json!({ "error": error })),
            (*ctx).clone(),
        ]);
        let ctx = crate::template::TemplateContext::new(with_error, ctx.pending().clone());
        let text = match self.templates.render(&probe.finding, false, &ctx) {
            Ok(text) => text,
            Err(e) => format!(
                "{} failed ({error}); its finding did not render: {e}",
                probe.name
            ),
        };
        Some(
            self.redactor
                .redact(text.lines().next().unwrap_or_default().trim()),
        )
    }
}

impl Engine {
    /// Runs SSH actions over `ssh` (shared by several engines: one connection per node).
    pub(crate) fn with_ssh(mut self, ssh: std::sync::Arc<crate::ssh::SshPool>) -> Engine {
        std::sync::Arc::get_mut(&mut self.shared)
            .expect("a new engine is not shared yet")
            .ssh = ssh;
        self
    }
}
