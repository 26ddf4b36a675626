//! `medic plan --tail` and `medic attach`: follow an operation live from any terminal.
//!
//! 1. Read the operation (database released between reads, so the executor is never held
//!    up) and print the plan table when it changed; read again after half a second (sled) or
//!    as soon as the store changed (etcd: a watch from a mark taken before the reads).
//! 2. Print the phase output stored since the last read (the executor writes it to the
//!    store every second), starting with the last few lines already there.
//! 3. When no executor holds the operation any more, exit with the run's code: 1 if a phase
//!    failed or is left interrupted, else 0.

use std::collections::VecDeque;

use super::{json_text_as_output, yaml_output, CliError, Ctx};
use crate::engine::interrupted_phases;
use crate::operation;
use crate::plan::PhaseState;
use crate::render::PlanView;
use crate::store::{format_time, Access, LogLine, OperationState, Store};

/// Output lines already stored that a new follower shows first.
const BACKLOG_LINES: usize = 20;

/// `medic attach [--operation ID]`: the same as `medic plan --tail`.
pub(super) async fn attach(ctx: &Ctx, wanted: Option<&str>) -> Result<i32, CliError> {
    let mut store = ctx.store(Access::Read)?;
    let op = operation::select(&mut store, wanted, true)?;
    store.release();
    tail(ctx, &op.id).await
}

/// Follows operation `op_id` until no executor runs it.
pub(super) async fn tail(ctx: &Ctx, op_id: &str) -> Result<i32, CliError> {
    let mut last = String::new();
    let mut cursor = {
        let mut store = ctx.store(Access::Read)?;
        let (backlog, cursor) = skip_to_end(&mut store, op_id)?;
        store.release();
        print_logs(ctx, backlog.iter());
        cursor
    };
    loop {
        let mut store = ctx.store(Access::Read)?;
        let mark = store.change_mark()?;
        let op = store.operation(op_id)?;
        let plan = store.plan(op_id)?;
        let records = store.records(op_id)?;
        let lease = store.lease(op_id)?;
        let new_lines = read_after(&mut store, op_id, &mut cursor)?;
        let interrupted = interrupted_phases(&plan, &records, lease.as_ref());
        let may_have_done = ctx.may_have_done(&mut store, &op, &plan, &records, &interrupted)?;
        store.release();
        print_logs(ctx, new_lines.iter());
        let view = PlanView {
            operation: &op,
            plan: &plan,
            records: &records,
            lease: lease.as_ref(),
            interrupted: &interrupted,
            may_have_done: &may_have_done,
        };
        // One line of JSON per change, or one YAML document (`---`) per change.
        let rendered = if ctx.json() {
            match json_text_as_output(view.json_string()) {
                yaml if yaml_output() => format!("---\n{}", yaml.trim_end()),
                json => json,
            }
        } else {
            view.to_text(false)
        };
        if rendered != last {
            println!("{rendered}");
            last = rendered;
        }
        let running = lease.as_ref().is_some_and(|l| l.is_alive());
        if !running {
            let states = plan.states(&records);
            let failed = states.contains(&PhaseState::Failed) || !interrupted.is_empty();
            return Ok(if failed || op.state == OperationState::Failed {
                1
            } else {
                0
            });
        }
        store.wait_for_change(mark).await?;
    }
}

/// The last [`BACKLOG_LINES`] stored lines and the key after which new ones will come.
fn skip_to_end(
    store: &mut Store,
    op_id: &str,
) -> Result<(VecDeque<LogLine>, Option<Vec<u8>>), CliError> {
    let mut backlog = VecDeque::with_capacity(BACKLOG_LINES + 1);
    let mut cursor = None;
    loop {
        // One stored chunk per call, so the key of the last one read is known.
        let (lines, next) = store.logs_after(op_id, cursor.as_deref(), 1)?;
        for line in lines {
            if backlog.len() == BACKLOG_LINES {
                backlog.pop_front();
            }
            backlog.push_back(line);
        }
        match next {
            Some(k) => cursor = Some(k),
            None => return Ok((backlog, cursor)),
        }
    }
}

/// The lines stored after `cursor`, moving it on.
fn read_after(
    store: &mut Store,
    op_id: &str,
    cursor: &mut Option<Vec<u8>>,
) -> Result<Vec<LogLine>, CliError> {
    let mut out = Vec::new();
    loop {
        let (lines, next) = store.logs_after(op_id, cursor.as_deref(), 1)?;
        out.extend(lines);
        match next {
            Some(k) => *cursor = Some(k),
            None => return Ok(out),
        }
    }
}

fn print_logs<'a>(ctx: &Ctx, lines: impl Iterator<Item = &'a LogLine>) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let written = if yaml_output() {
            let doc = super::to_yaml(&serde_json::json!({ "log": line }));
            use std::io::Write as _;
            write!(out, "---\n{doc}")
        } else if ctx.json() {
            use std::io::Write as _;
            writeln!(out, "{}", serde_json::json!({ "log": line }))
        } else {
            write_log_line(&mut out, line)
        };
        if written.is_err() {
            return;
        }
    }
}

pub(super) fn write_log_line(out: &mut impl std::io::Write, l: &LogLine) -> std::io::Result<()> {
    let stream = match l.stream {
        crate::action::Stream::Stdout => "out",
        crate::action::Stream::Stderr => "err",
        crate::action::Stream::Medic => "medic",
    };
    writeln!(
        out,
        "{} {} [{stream}] {}",
        &format_time(l.time)[11..19],
        l.phase,
        l.text
    )
}
