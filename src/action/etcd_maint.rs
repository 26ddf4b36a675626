//! The maintenance operations of the `etcd` action (parsed, described and run here so that
//! `etcd.rs` keeps the membership operations):
//!
//! ```yaml
//! etcd: {move_leader: {to: cp-2}}          # a node, a member name, or a member id
//! etcd: {alarm_list: {}}                   # result: alarms (member_id, alarm), count
//! etcd: {alarm_disarm: {}}                 # clears every alarm; result: the ones cleared
//! etcd: {defragment: {member: cp-1}}       # one member at a time (it blocks while it runs)
//! etcd: {snapshot_status: {path: ./etcd-before.db}}   # a file on this machine
//! ```
//!
//! Also here: moving leadership away from a member about to be removed
//! ([`move_leadership_before_removal`]), used by `member_remove`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ActionCtx, ActionError, ActionOutput, RenderScope, Stream};
use crate::etcd::{parse_id, snapshot_status, MemberHealth, MemberInfo, Transport};
use crate::source::{Fields, Reader, TemplateKind};

/// A maintenance operation as written in the plan (templates, not yet rendered).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceOp {
    MoveLeader { to: String },
    AlarmList,
    AlarmDisarm,
    Defragment { member: String },
    SnapshotStatus { path: String },
}

/// The operations this file owns, and the keys each takes.
pub(super) const MAINTENANCE_OPS: &[(&str, &[&str])] = &[
    ("move_leader", &["to"]),
    ("alarm_list", &[]),
    ("alarm_disarm", &[]),
    ("defragment", &["member"]),
    ("snapshot_status", &["path"]),
];

fn required(f: Option<&Fields<'_>>, op: &str, key: &str, reader: &mut Reader) -> Option<String> {
    let f = f?;
    let Some(n) = f.get(key) else {
        reader.error(f.span(), format!("etcd {op} needs `{key}:`"));
        return None;
    };
    let s = reader.scalar(n, &format!("etcd {op} {key}"))?;
    Some(reader.template(s, TemplateKind::Text))
}

/// Parses one maintenance operation; `None` after reporting a problem. `f` is `None` for an
/// empty body (`alarm_list:`).
pub(super) fn parse(
    op: &str,
    f: Option<&Fields<'_>>,
    reader: &mut Reader,
) -> Option<MaintenanceOp> {
    Some(match op {
        "alarm_list" => MaintenanceOp::AlarmList,
        "alarm_disarm" => MaintenanceOp::AlarmDisarm,
        "move_leader" => MaintenanceOp::MoveLeader {
            to: required(f, op, "to", reader)?,
        },
        "defragment" => MaintenanceOp::Defragment {
            member: required(f, op, "member", reader)?,
        },
        "snapshot_status" => MaintenanceOp::SnapshotStatus {
            path: required(f, op, "path", reader)?,
        },
        _ => return None,
    })
}

/// The dry-run lines of a maintenance operation.
pub(super) fn describe(
    op: &MaintenanceOp,
    scope: &RenderScope<'_>,
    how: &str,
) -> Result<Vec<String>, ActionError> {
    let r = |v: &str| scope.render("etcd", v, false);
    Ok(vec![match op {
        MaintenanceOp::MoveLeader { to } => format!(
            "etcd move leader to {} {how} (sent to the current leader; no change if it leads already)",
            r(to)?
        ),
        MaintenanceOp::AlarmList => format!("etcd alarm list {how}"),
        MaintenanceOp::AlarmDisarm => format!("etcd alarm disarm {how}: clears every active alarm"),
        MaintenanceOp::Defragment { member } => format!(
            "etcd defragment member {} {how} (the member blocks reads and writes while it runs)",
            r(member)?
        ),
        MaintenanceOp::SnapshotStatus { path } => format!(
            "etcd snapshot status of {} on this machine (revision, keys, hash)",
            r(path)?
        ),
    }])
}

/// What a dry-run shows of a snapshot: its age and revision, i.e. what a restore would lose.
pub(super) fn preview_snapshot(scope: &RenderScope<'_>, path: &str) -> Vec<String> {
    if scope.uses_pending(path) {
        return Vec::new();
    }
    let Ok(p) = scope.render("etcd", path, false) else {
        return Vec::new();
    };
    vec![match snapshot_status(Path::new(&p)) {
        Ok(s) => format!(
            "snapshot now: revision {}, {} keys, hash {}, taken {} ago: a restore loses every change made after it",
            s.revision,
            s.total_keys,
            s.hash,
            super::wait::human_secs(s.age_secs as f64)
        ),
        Err(e) => format!("snapshot now: {e}"),
    }]
}

/// What a dry-run shows of a removal: whether the member leads now (direct transport only: a
/// dry-run opens no SSH connection).
pub(super) async fn preview_leader(
    scope: &RenderScope<'_>,
    transport: &Transport,
    who: &str,
) -> Vec<String> {
    if !matches!(transport, Transport::Direct(_)) {
        return Vec::new();
    }
    let Ok(who) = scope.render("etcd", who, false) else {
        return Vec::new();
    };
    let pool = crate::ssh::SshPool::new();
    let Ok(members) = transport.member_list(&pool).await else {
        return Vec::new();
    };
    let Some(target) = resolve(scope, &members, &who) else {
        return Vec::new();
    };
    match transport.leader(&pool, &members).await {
        Some(l) if l == target.id_u64() => vec![format!(
            "leader now: {}; leadership moves to a healthy voter before the removal",
            target.label()
        )],
        Some(l) => vec![format!(
            "leader now: {} (not the member removed)",
            label_of(&members, l)
        )],
        None => Vec::new(),
    }
}

/// A member by name, by node (name or address in its peer URL), or by id.
pub(super) fn resolve<'m>(
    scope: &RenderScope<'_>,
    members: &'m [MemberInfo],
    who: &str,
) -> Option<&'m MemberInfo> {
    let address = scope
        .inventory
        .and_then(|i| i.node(who))
        .map(|n| format!("//{}:", n.address));
    members
        .iter()
        .find(|m| m.name == who)
        .or_else(|| {
            address.as_ref().and_then(|a| {
                members
                    .iter()
                    .find(|m| m.peer_urls.iter().any(|u| u.contains(a.as_str())))
            })
        })
        .or_else(|| parse_id(who).and_then(|id| members.iter().find(|m| m.id_u64() == id)))
}

fn label_of(members: &[MemberInfo], id: u64) -> String {
    members
        .iter()
        .find(|m| m.id_u64() == id)
        .map(|m| m.label())
        .unwrap_or_else(|| crate::etcd::hex_id(id))
}

/// Runs a maintenance operation.
pub(super) async fn execute(
    op: &MaintenanceOp,
    ctx: &ActionCtx<'_>,
    transport: &Transport,
    members: &[MemberInfo],
) -> Result<ActionOutput, ActionError> {
    let pool = &ctx.ssh;
    let render = |v: &str| ctx.scope.render("etcd", v, false);
    match op {
        MaintenanceOp::MoveLeader { to } => {
            let to = render(to)?;
            let target = resolve(ctx.scope, members, &to).ok_or_else(|| ActionError::Failed {
                message: format!("no etcd member {to} to move leadership to"),
            })?;
            if target.is_learner {
                return Err(ActionError::Failed {
                    message: format!(
                        "{} is a learner; only a voting member can lead",
                        target.label()
                    ),
                });
            }
            let from = transport
                .move_leader(pool, members, target.id_u64())
                .await?;
            let moved = from != target.id_u64();
            Ok(ActionOutput {
                result: json!({"from": crate::etcd::hex_id(from), "from_name": label_of(members, from), "to": target.id, "to_name": target.label(), "moved": moved}),
                summary: Some(if moved {
                    format!(
                        "leadership moved from {} to {}",
                        label_of(members, from),
                        target.label()
                    )
                } else {
                    format!("{} leads already", target.label())
                }),
            })
        }
        MaintenanceOp::AlarmList => {
            let alarms = transport.alarm_list(pool).await?;
            Ok(ActionOutput {
                summary: Some(alarm_summary(&alarms, "active")),
                result: json!({"alarms": alarms, "count": alarms.len()}),
            })
        }
        MaintenanceOp::AlarmDisarm => {
            let alarms = transport.alarm_disarm(pool).await?;
            Ok(ActionOutput {
                summary: Some(alarm_summary(&alarms, "disarmed")),
                result: json!({"disarmed": alarms, "count": alarms.len()}),
            })
        }
        MaintenanceOp::Defragment { member } => {
            let who = render(member)?;
            let target = resolve(ctx.scope, members, &who).ok_or_else(|| ActionError::Failed {
                message: format!("no etcd member {who} to defragment"),
            })?;
            let before = db_size(transport, ctx, target).await;
            transport.defragment(pool, target).await?;
            let after = db_size(transport, ctx, target).await;
            Ok(ActionOutput {
                result: json!({"member": target, "db_size_before": before, "db_size_after": after}),
                summary: Some(format!(
                    "defragmented {}{}",
                    target.label(),
                    match (before, after) {
                        (Some(b), Some(a)) => format!(": {b} → {a} bytes"),
                        _ => String::new(),
                    }
                )),
            })
        }
        // Needs no cluster: the engine runs it before listing the members.
        MaintenanceOp::SnapshotStatus { path } => execute_snapshot_status(ctx, path),
    }
}

async fn db_size(transport: &Transport, ctx: &ActionCtx<'_>, m: &MemberInfo) -> Option<i64> {
    transport
        .status(&ctx.ssh, std::slice::from_ref(m))
        .await
        .into_iter()
        .flatten()
        .next()
        .map(|s| s.db_size)
}

fn alarm_summary(alarms: &[crate::etcd::Alarm], what: &str) -> String {
    if alarms.is_empty() {
        format!("no alarm {what}")
    } else {
        format!(
            "{} alarm(s) {what}: {}",
            alarms.len(),
            alarms
                .iter()
                .map(|a| format!("{} on {}", a.alarm, a.member_id))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `snapshot_status`: needs no cluster, the file is on this machine.
pub(super) fn execute_snapshot_status(
    ctx: &ActionCtx<'_>,
    path: &str,
) -> Result<ActionOutput, ActionError> {
    let p = ctx.scope.render("etcd.snapshot_status.path", path, false)?;
    let s = snapshot_status(Path::new(&p))?;
    Ok(ActionOutput {
        summary: Some(format!(
            "{}: revision {}, {} keys, hash {}, taken {} ago",
            s.path,
            s.revision,
            s.total_keys,
            s.hash,
            super::wait::human_secs(s.age_secs as f64)
        )),
        result: serde_json::to_value(&s).unwrap_or_default(),
    })
}

/// Before removing the leader, hands leadership to a healthy voter, so the removal does not
/// cost the cluster an election while it is one member short. Returns what moved, for the
/// phase's result and summary; `None` when the target does not lead.
pub(super) async fn move_leadership_before_removal(
    ctx: &ActionCtx<'_>,
    transport: &Transport,
    members: &[MemberInfo],
    health: &[MemberHealth],
    target: &MemberInfo,
) -> Result<Option<(String, String)>, ActionError> {
    if transport.leader(&ctx.ssh, members).await != Some(target.id_u64()) {
        return Ok(None);
    }
    let successor = members.iter().find(|m| {
        m.id != target.id && !m.is_learner && health.iter().any(|h| h.id == m.id && h.healthy)
    });
    let Some(successor) = successor else {
        return Err(ActionError::Failed {
            message: format!(
                "{} leads the cluster and no other healthy voting member can take over; bring one back first",
                target.label()
            ),
        });
    };
    ctx.emit(
        Stream::Medic,
        &format!(
            "{} is the leader: moving leadership to {} before removing it",
            target.label(),
            successor.label()
        ),
    );
    transport
        .move_leader(&ctx.ssh, members, successor.id_u64())
        .await?;
    ctx.emit(
        Stream::Medic,
        &format!(
            "leadership moved from {} to {}",
            target.label(),
            successor.label()
        ),
    );
    Ok(Some((target.label(), successor.label())))
}
