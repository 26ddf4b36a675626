//! `check`: a condition over parameters and captured values that must hold before going on.
//!
//! ```yaml
//! check: {that: "{{ members | length >= 2 }}", message: "etcd would lose quorum"}
//! check: "{{ replicas > 0 }}"
//! ```

use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::{Action, ActionCtx, ActionError, ActionOutput, RenderScope};
use crate::source::{Fields, Reader, TemplateKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// A Jinja expression; braces around it are optional.
    pub that: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Action for CheckSpec {
    const KIND: &'static str = "check";
    const IDEMPOTENT: bool = true;
    const INLINE: bool = true;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        if let Node::Scalar(s) = node {
            let that = reader.template(s, TemplateKind::Expression);
            return Some(CheckSpec {
                that,
                message: None,
            });
        }
        let fields = Fields::new(node, "check", &["that", "message"], reader)?;
        let that = match fields.get("that") {
            Some(n) => {
                let s = reader.scalar(n, "check.that")?;
                reader.template(s, TemplateKind::Expression)
            }
            None => {
                reader.error(
                    fields.span(),
                    "check needs `that:`, the condition that must hold",
                );
                return None;
            }
        };
        let message = match fields.get("message") {
            Some(n) => {
                let s = reader.scalar(n, "check.message")?;
                Some(reader.template(s, TemplateKind::Text))
            }
            None => None,
        };
        Some(CheckSpec { that, message })
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        let mut lines = vec![format!(
            "check that {}",
            crate::template::strip_braces(&self.that)
        )];
        if let Some(m) = &self.message {
            let shown = if scope.uses_pending(m) {
                m.trim().to_string()
            } else {
                scope.render("message", m, false)?
            };
            lines.push(format!("otherwise stop: {shown}"));
        }
        Ok(lines)
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let value = ctx.scope.eval("that", &self.that)?;
        if value.is_true() {
            return Ok(ActionOutput {
                result: serde_json::json!({ "that": self.that, "value": true }),
                summary: None,
            });
        }
        let message = match &self.message {
            Some(m) => ctx.scope.render("message", m, false)?,
            None => format!(
                "check `{}` is false",
                crate::template::strip_braces(&self.that)
            ),
        };
        Err(ActionError::CheckFailed { message })
    }
}
