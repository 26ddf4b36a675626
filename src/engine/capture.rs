//! `capture:`: evaluating a phase's capture expressions over its result, and deciding when
//! the captured values are secrets (marked `secret: true`, or the phase used or returned one).
//! The output of a phase with `secret: true` captures is held back, from the terminal too,
//! until its values are known and hidden.

use std::collections::{BTreeMap, BTreeSet};

use super::Shared;
use crate::procedure::MIN_SECRET_LEN;

impl Shared {
    /// Evaluates the phase's `capture:` expressions over the action's result.
    ///
    /// When the phase used a secret (in any template of its action or condition) or its result
    /// holds one, every value it captures is a secret too: kept with the operation's secrets,
    /// never in its variables, shown as `<secret:NAME>` and hidden in all later output.
    pub(super) fn capture(
        &self,
        leaf: usize,
        result: &serde_json::Value,
    ) -> Result<Captured, String> {
        let node = self.plan.node(leaf);
        // Parameters and earlier captures are visible too; the result's fields win.
        let phase_ctx = self.context(leaf, true);
        let mut ctx: serde_json::Map<String, serde_json::Value> =
            match serde_json::to_value(&*phase_ctx) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
        if let serde_json::Value::Object(map) = result {
            ctx.extend(map.clone());
        }
        ctx.insert("result".into(), result.clone());
        let ctx = minijinja::Value::from_serialize(&ctx);
        let phase_secret =
            self.uses_secret(leaf) || json_strings(result).any(|s| self.redactor.reveals(s));
        let mut vars = self.vars.lock().expect("vars lock").clone();
        let mut secrets = (phase_secret || !node.secret_capture.is_empty())
            .then(|| self.params.read().expect("params lock").secrets.clone());
        for (name, expr) in &node.capture {
            let secret = phase_secret || node.secret_capture.contains(name);
            let value = self.templates.eval(expr, &ctx).map_err(|e| {
                self.redactor
                    .redact(&format!("capture `{name}` from `{expr}`: {e}"))
            })?;
            if value.is_undefined() || value.is_none() {
                return Err(format!(
                    "capture `{name}`: `{expr}` found nothing in the result"
                ));
            }
            let json =
                serde_json::to_value(&value).map_err(|e| format!("capture `{name}`: {e}"))?;
            match secrets.as_mut().filter(|_| secret) {
                Some(secrets) => {
                    let text = match json {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let len = text.chars().count();
                    if node.secret_capture.contains(name) && len < MIN_SECRET_LEN {
                        return Err(format!(
                            "capture `{name}`: the secret is {len} character(s) long; a secret needs at least {MIN_SECRET_LEN} (a shorter one could not be hidden in output)"
                        ));
                    }
                    self.redactor.add(name, &text);
                    vars.remove(name);
                    secrets.insert(name.clone(), text);
                }
                None => {
                    if let Some(secrets) = &mut secrets {
                        secrets.remove(name);
                    }
                    vars.insert(name.clone(), json);
                }
            }
        }
        Ok(Captured { vars, secrets })
    }

    /// Whether a leaf's action, rollback or condition uses a secret (a secret parameter or a
    /// secret captured earlier).
    pub(super) fn uses_secret(&self, leaf: usize) -> bool {
        let node = self.plan.node(leaf);
        let params = self.params.read().expect("params lock");
        let is_secret = |names: Result<BTreeSet<String>, _>| {
            names.map_or(true, |names: BTreeSet<String>| {
                names.iter().any(|n| params.secrets.contains_key(n))
            })
        };
        let action = serde_json::to_value(&node.action).unwrap_or_default();
        let in_action = json_strings(&action).any(|source| {
            (source.contains("{{") || source.contains("{%"))
                && is_secret(self.templates.template_names(source, false))
        });
        let expressions = node
            .when
            .iter()
            .map(|c| c.that.as_str())
            .chain(node.capture.values().map(|e| e.as_str()));
        in_action
            || expressions
                .into_iter()
                .any(|e| is_secret(self.templates.expression_names(e)))
            || node
                .locals
                .values()
                .any(|v| json_strings(v).any(|s| self.redactor.reveals(s)))
    }

    /// Whether a leaf's output goes to the terminal only once its captures are hidden: it
    /// captures a value marked `secret: true`, which its own output shows.
    pub(super) fn holds_live_output(&self, leaf: usize) -> bool {
        !self.plan.node(leaf).secret_capture.is_empty()
    }

    /// Sends a leaf's held output on (to the log with its next transition, and to the
    /// terminal when [`Shared::holds_live_output`]), hiding the values it captured (its own
    /// output showed them before they were known to be secret). When a leaf with `secret:
    /// true` captures did not capture (it failed), its output is withheld: which part of it is
    /// secret is not known (`failed`).
    pub(super) fn release_held_output(&self, leaf: usize, failed: bool) {
        let held = self.held_logs.lock().expect("held logs lock").remove(&leaf);
        let lines = held.unwrap_or_default();
        let live = self.holds_live_output(leaf);
        let node = self.plan.node(leaf);
        let mut out = Vec::with_capacity(lines.len());
        if live && failed {
            if let Some(first) = lines.first() {
                let names: Vec<&str> = node.secret_capture.iter().map(|s| s.as_str()).collect();
                let mut note = first.clone();
                note.stream = crate::action::Stream::Medic;
                note.text = format!(
                    "{} line(s) of output withheld: this phase captures the secret {} and did not finish",
                    lines.len(),
                    names.join(", ")
                );
                out.push(note);
            }
        } else {
            for mut line in lines {
                line.text = self.redactor.redact(&line.text);
                out.push(line);
            }
        }
        if live {
            for line in &out {
                self.sink.emit(&crate::events::Event::PhaseOutput {
                    id: node.id.clone(),
                    stream: line.stream,
                    line: line.text.clone(),
                });
            }
        }
        self.pending_logs.lock().expect("logs lock").extend(out);
    }
}

/// What a phase captured: the operation's variables, and its secrets when they changed.
pub(super) struct Captured {
    pub(super) vars: serde_json::Map<String, serde_json::Value>,
    pub(super) secrets: Option<BTreeMap<String, String>>,
}

/// Every string inside a JSON value.
pub(super) fn json_strings(value: &serde_json::Value) -> Box<dyn Iterator<Item = &str> + '_> {
    match value {
        serde_json::Value::String(s) => Box::new(std::iter::once(s.as_str())),
        serde_json::Value::Array(a) => Box::new(a.iter().flat_map(json_strings)),
        serde_json::Value::Object(m) => Box::new(m.values().flat_map(json_strings)),
        _ => Box::new(std::iter::empty()),
    }
}
