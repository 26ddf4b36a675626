//! Building the plan of one operation: `foreach` expanded, included parameters bound,
//! `requires` resolved to phase IDs, descriptions rendered (secrets redacted, captured values
//! shown as pending).

use std::collections::{BTreeMap, BTreeSet};

use super::params::{json_text, pattern_mismatches, split_list, ParamKind, Params};
use super::{Foreach, Include, PhaseSpec, Procedure, ProcedureError};
use crate::action::{Plan, PlanNode};
use crate::plan::{requires, valid_phase_segment, PhaseId};
use crate::source::Diagnostic;
use crate::template::{Pending, Templates};

impl Procedure {
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
                serde_json::Value::String(Pending::placeholder(&c)),
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
            secret_capture: Default::default(),
            timeout_secs: None,
            retries: 0,
            retry_delay_secs: 1.0,
            idempotent: true,
            when: None,
            may_fail: false,
            probe: None,
            confirm: false,
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
                (ParamKind::List, serde_json::Value::String(s)) => split_list(&s),
                (ParamKind::String, v @ serde_json::Value::Array(_)) | (ParamKind::List, v) => v,
                (ParamKind::String, v) => serde_json::Value::String(json_text(&v)),
            };
            if let (Some(pattern), Some((_, _, loc))) = (&param.pattern, given) {
                for item in pattern_mismatches(pattern, &value) {
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
            let group = &self.nodes[parent].id;
            spec.requires
                .iter()
                .map(|(req, _)| requires::resolve(group, req))
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
            secret_capture: if carries_action {
                spec.secret_capture.clone()
            } else {
                Default::default()
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
            may_fail: carries_action && spec.may_fail,
            confirm: carries_action && spec.confirm,
            probe: if carries_action {
                spec.probe.clone()
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
