//! `medic plan stop [--reason TEXT] [--now]`: asks the operation's running executor to stop,
//! from any terminal, and waits until it has.
//!
//! 1. Read the lease: no live executor → nothing to stop (exit 0, says so).
//! 2. Write a stop request for that executor into the store (`store/stop.rs`); the executor
//!    polls for it several times a second, even while it waits on a slow command.
//! 3. Wait until the lease is released or its holder is gone, then say how the run ended.
//!    A stop that does not take effect within [`STOP_WAIT`] fails (exit 1) and says so.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{print_json, CliError, Ctx};
use crate::store::{now_ms, Access, Operation, StopRequest, Store};

/// How long `plan stop` waits for the executor (a stopped command gets 5 s after SIGTERM).
const STOP_WAIT: Duration = Duration::from_secs(60);

pub(super) async fn stop(
    ctx: &Ctx,
    mut store: Store,
    op: &Operation,
    reason: Option<String>,
    now: bool,
) -> Result<i32, CliError> {
    let lease = store.lease(&op.id)?;
    let Some(lease) = lease.filter(|l| l.is_alive()) else {
        store.release();
        if ctx.json() {
            print_json(&json!({"operation": op.id, "stopped": false, "running": false}));
        } else {
            println!("nothing runs in operation {}: no executor to stop", op.id);
        }
        return Ok(0);
    };
    let actor = ctx.actor(|a| a.to_string());
    let request = StopRequest {
        pid: lease.pid,
        host: lease.host.clone(),
        requested_at: now_ms(),
        by: format!("{}@{} (pid {})", actor.user, actor.host, actor.pid),
        reason,
        now,
    };
    store.request_stop(&op.id, &request)?;
    store.release();
    if !ctx.json() {
        println!(
            "asked the executor of operation {} (pid {} on {}) to stop{}; waiting…",
            op.id,
            lease.pid,
            lease.host,
            if now { " at once" } else { "" }
        );
    }
    let asked = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut store = ctx.store(Access::Read)?;
        let current = store.lease(&op.id)?;
        store.release();
        let still = current.is_some_and(|l| l.is_alive() && l.pid == lease.pid);
        if !still {
            break;
        }
        if asked.elapsed() > STOP_WAIT {
            return Err(CliError {
                code: 1,
                message: format!(
                    "the executor (pid {} on {}) has not stopped after {} s; `medic plan stop --now` exits it at once",
                    lease.pid,
                    lease.host,
                    STOP_WAIT.as_secs()
                ),
            });
        }
    }
    let secs = asked.elapsed().as_secs_f64();
    if ctx.json() {
        print_json(&json!({
            "operation": op.id,
            "stopped": true,
            "pid": lease.pid,
            "now": now,
            "seconds": secs,
        }));
    } else {
        println!(
            "{} stopped after {secs:.1} s; `medic plan` shows where it stopped, `medic plan resume` continues",
            console::style("■").yellow()
        );
    }
    Ok(0)
}
