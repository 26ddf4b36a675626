//! A leaf's `when:`: evaluated before the action runs (skip or go on), and explained in
//! dry-runs.

use crate::action::RenderScope;
use crate::plan::Condition;

use super::Shared;

impl Shared {
    /// The dry-run note for a `when:`: the condition as written, and what it gives now when
    /// it uses neither a value captured later nor a secret.
    pub(super) fn describe_condition(&self, cond: &Condition, scope: &RenderScope<'_>) -> String {
        let expr = crate::template::strip_braces(&cond.that);
        let names = self
            .templates
            .expression_names(&cond.that)
            .unwrap_or_default();
        let decided_later = names.iter().any(|n| {
            self.params
                .read()
                .expect("params lock")
                .secrets
                .contains_key(n)
                || scope.ctx.pending().contains(n)
        });
        if decided_later {
            return format!("only when {expr}; decided at run time");
        }
        match self.templates.eval(&cond.that, &scope.ctx) {
            Ok(v) if v.is_true() => format!("only when {expr}; true now"),
            Ok(_) => {
                let reason = self
                    .skip_reason(cond, &scope.ctx)
                    .unwrap_or_else(|e| e.to_string());
                format!("only when {expr}; false now, so it would be skipped: {reason}")
            }
            Err(e) => format!("only when {expr}; cannot evaluate yet ({e})"),
        }
    }

    pub(super) fn skip_reason(
        &self,
        cond: &Condition,
        ctx: &minijinja::Value,
    ) -> Result<String, crate::template::TemplateError> {
        match &cond.reason {
            Some(r) => self.templates.render(r, false, ctx),
            None => Ok(format!(
                "condition is false: {}",
                crate::template::strip_braces(&cond.that)
            )),
        }
    }

    /// Evaluates a leaf's `when:` with the real values: `None` when the action should run,
    /// else why it is skipped.
    pub(super) fn skip_because(
        &self,
        leaf: usize,
        cond: &Condition,
    ) -> Result<Option<String>, String> {
        let ctx = self.context(leaf, true);
        let expr = crate::template::strip_braces(&cond.that);
        let value = self
            .templates
            .eval(&cond.that, &ctx)
            .map_err(|e| format!("when `{expr}`: {e}"))?;
        if value.is_true() {
            return Ok(None);
        }
        self.skip_reason(cond, &ctx)
            .map(Some)
            .map_err(|e| format!("when reason: {e}"))
    }
}
