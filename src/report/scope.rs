//! What a report covers: the nodes, the time window, the operations and the secrets to
//! remove. `--operation ID` narrows it to what that operation touched (the nodes its plan
//! acts on, `operation::targets`) and its time (start − 15 min … end + 5 min); `--since` and
//! `--node` override either part.

use std::collections::BTreeMap;

use super::{nodes_named, operations_in, ReportError, ReportOptions, Window};
use crate::inventory::NodeEntry;
use crate::operation::targets;
use crate::store::{now_ms, Access, Operation, Store};

/// How far before an operation's start its window opens.
const BEFORE_SECS: u64 = 15 * 60;
/// How far after its end the window closes.
const AFTER_SECS: u64 = 5 * 60;

/// The nodes, window, operations and secrets of one report.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    pub(crate) nodes: Vec<NodeEntry>,
    pub(crate) window: Window,
    pub(crate) operations: Vec<Operation>,
    /// Secret values of the operations included (their secret captures), to remove.
    pub(crate) secrets: BTreeMap<String, String>,
    /// What the manifest says about the scope.
    pub(crate) notes: Vec<String>,
}

/// `--since`: a duration back from now (`2h`, `30m`) or a time (`2026-12-03 10:00:00`,
/// RFC 3339); seconds since the epoch, or `None` if it is neither.
pub(crate) fn parse_since(text: &str) -> Option<u64> {
    let now = now_ms() / 1000;
    if let Some(secs) = crate::source::parse_duration(text).filter(|s| *s > 0.0) {
        return Some(now.saturating_sub(secs as u64));
    }
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Decides the scope of a report (reads the store; writes nothing).
pub(crate) fn plan(opts: &ReportOptions) -> Result<Scope, ReportError> {
    let mut scope = Scope {
        window: Window {
            since: opts.since,
            until: None,
        },
        ..Default::default()
    };
    let inventory = opts.inventory.as_deref();
    scope.nodes = nodes_named(inventory, &opts.nodes)?;
    let mut store = match Store::open_with(&opts.state_dir, Access::Read) {
        Ok(s) => Some(s),
        Err(e) if opts.operation.is_some() => {
            return Err(ReportError::State {
                dir: opts.state_dir.clone(),
                source: e,
            })
        }
        Err(e) => {
            scope
                .notes
                .push(format!("no medic operations included: {e}"));
            None
        }
    };
    let Some(store) = store.as_mut() else {
        return Ok(scope);
    };
    let state_err = |source| ReportError::State {
        dir: opts.state_dir.clone(),
        source,
    };
    if let Some(wanted) = &opts.operation {
        let op = crate::operation::select(store, Some(wanted), true)?;
        let start = op.created_at / 1000;
        let end = op.finished_at.unwrap_or_else(now_ms) / 1000;
        if opts.since.is_none() {
            scope.window = Window {
                since: Some(start.saturating_sub(BEFORE_SECS)),
                until: Some(end + AFTER_SECS),
            };
        }
        if opts.nodes.is_empty() {
            let plan = store.plan(&op.id).map_err(state_err)?;
            let (params, vars) = targets::shown_values(store, &op)?;
            let targets = targets::plan_targets(&op, &plan, &params, &vars, inventory);
            scope.nodes.retain(|n| targets.nodes.contains(&n.name));
            scope.notes.push(format!(
                "nodes limited to those operation {} touched: {}",
                op.id,
                if targets.nodes.is_empty() {
                    "none".to_string()
                } else {
                    targets.nodes.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            ));
        }
        scope.operations = vec![op];
    } else {
        let ops = store.operations().map_err(state_err)?;
        scope.operations = operations_in(ops, &scope.window);
    }
    for op in &scope.operations {
        for (k, v) in store.secrets(&op.id).map_err(state_err)? {
            scope.secrets.insert(format!("{}/{k}", op.id), v);
        }
    }
    store.release();
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_is_a_duration_back_or_a_time() {
        let now = crate::store::now_ms() / 1000;
        let back = parse_since("2h").unwrap();
        assert!((now - 7200..=now - 7199).contains(&back), "{back}");
        assert_eq!(parse_since("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(parse_since("2026-01-01 00:00:00"), Some(1_767_225_600));
        assert_eq!(parse_since("yesterday-ish"), None);
    }
}
