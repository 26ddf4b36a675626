//! `pause`: a point where the plan waits for the operator. `medic plan resume` stops before it;
//! the operator does the manual step and then executes the pause phase itself to go on.
//!
//! ```yaml
//! pause: "Do the maintenance on {{ node }}, then run medic plan execute --phase=/maintenance"
//! ```

use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::{Action, ActionCtx, ActionError, ActionOutput, RenderScope};
use crate::source::{Reader, TemplateKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PauseSpec {
    pub message: String,
}

impl Action for PauseSpec {
    const KIND: &'static str = "pause";
    const IDEMPOTENT: bool = true;
    const INLINE: bool = true;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let s = reader.scalar(node, "pause")?;
        Some(PauseSpec {
            message: reader.template(s, TemplateKind::Text),
        })
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        Ok(vec![format!(
            "pause for the operator: {}",
            scope.render("pause", &self.message, false)?
        )])
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        // Executing the pause phase is the operator saying the manual step is done.
        let message = ctx.scope.render("pause", &self.message, false)?;
        Ok(ActionOutput {
            result: serde_json::json!({ "acknowledged": true, "message": message }),
            summary: Some("acknowledged by the operator".to_string()),
        })
    }
}
