//! `wait`: run a command until it succeeds, or give up after a timeout.
//!
//! ```yaml
//! wait: {run: "curl -fsk https://cp-1:6443/healthz", timeout: 5m, interval: 5s}
//! ```

use std::time::{Duration, Instant};

use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::run::run_shell;
use super::{
    sleep_unless_cancelled, Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream,
};
use crate::source::{Fields, Reader, TemplateKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitSpec {
    pub run: String,
    pub timeout_secs: f64,
    pub interval_secs: f64,
}

impl Action for WaitSpec {
    const KIND: &'static str = "wait";
    const IDEMPOTENT: bool = true;
    const INLINE: bool = false;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let fields = Fields::new(node, "wait", &["run", "timeout", "interval"], reader)?;
        let run = match fields.get("run") {
            Some(n) => {
                let s = reader.scalar(n, "wait.run")?;
                reader.template(s, TemplateKind::Shell)
            }
            None => {
                reader.error(
                    fields.span(),
                    "wait needs `run:`, the command that must succeed",
                );
                return None;
            }
        };
        let timeout_secs = match fields.get("timeout") {
            Some(n) => reader.duration(n, "wait.timeout")?,
            None => 300.0,
        };
        let interval_secs = match fields.get("interval") {
            Some(n) => reader.duration(n, "wait.interval")?,
            None => 5.0,
        };
        Some(WaitSpec {
            run,
            timeout_secs,
            interval_secs,
        })
    }

    fn target(&self) -> Option<String> {
        Some("local".to_string())
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        Ok(vec![format!(
            "wait up to {} (every {}) until this succeeds locally: {}",
            human_secs(self.timeout_secs),
            human_secs(self.interval_secs),
            scope.render("wait.run", &self.run, true)?
        )])
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let command = ctx.scope.render("wait.run", &self.run, true)?;
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(self.timeout_secs);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let out = run_shell(&command, ctx, false).await?;
            if out.success() {
                let mut result = out.to_json();
                result["attempts"] = attempts.into();
                return Ok(ActionOutput {
                    result,
                    summary: Some(format!("succeeded after {attempts} attempt(s)")),
                });
            }
            let last = out.tail();
            ctx.emit(
                Stream::Medic,
                &format!(
                    "attempt {attempts}: exit {}{}",
                    out.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or("by signal".into()),
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ),
            );
            let now = Instant::now();
            if now >= deadline {
                return Err(ActionError::WaitTimedOut {
                    waited_secs: started.elapsed().as_secs_f64(),
                    attempts,
                    last,
                });
            }
            let pause = Duration::from_secs_f64(self.interval_secs).min(deadline - now);
            sleep_unless_cancelled(&ctx.cancel, pause).await?;
        }
    }
}

pub(crate) fn human_secs(secs: f64) -> String {
    if secs < 1.0 {
        format!("{}ms", (secs * 1000.0).round())
    } else {
        humantime::format_duration(Duration::from_secs(secs.round() as u64)).to_string()
    }
}
