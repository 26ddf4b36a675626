//! `etcd`: membership and health operations with quorum guards.
//!
//! ```yaml
//! etcd: {member_list: {name: cp-2}}            # result: members, member (the named one)
//! etcd: {health: {}}                           # per member, short timeout each
//! etcd: {status: {}}                           # leader, raft index, db size
//! etcd: {member_remove: {name: cp-2}}          # or {node: cp-2} or {id: 8e9e05c52164694d}
//! etcd: {member_add: {name: cp-4, peer_urls: ["https://10.0.0.4:2380"], learner: true}}
//! etcd: {member_promote: {name: cp-4, timeout: 2m}}
//! etcd: {snapshot: {path: ./etcd-backup.db}}   # on this machine; an empty path skips
//! etcd: {move_leader: {to: cp-2}}  |  {alarm_list: {}}  |  {alarm_disarm: {}}
//! etcd: {defragment: {member: cp-1}}  |  {snapshot_status: {path: ./etcd-backup.db}}
//! transport: ssh, via: cp-1                    # optional, next to the operation
//! ```
//!
//! 1. The transport comes from the inventory (`etcd.transport`), a phase may override it.
//! 2. `member_remove` and `member_add` check quorum first and refuse (exit 3) with the
//!    arithmetic; `--force` overrides and the engine records the override in history.
//! 3. Removing a member that is already gone, or adding one that already exists with the same
//!    peer URL, succeeds and says so: resume relies on this.
//! 4. Removing the leader first moves leadership to a healthy voter (`etcd_maint.rs`, with the
//!    maintenance operations).

use std::time::{Duration, Instant};

use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::etcd_maint::{self, MaintenanceOp, MAINTENANCE_OPS};
use super::{Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream};
use crate::etcd::{
    addition_refusal, parse_id, removal_refusal, EtcdError, MemberInfo, Quorum, Refusal, Transport,
};
use crate::source::{start_span, Fields, Reader, TemplateKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdOp {
    MemberList {
        name: Option<String>,
    },
    Health,
    Status,
    MemberRemove {
        name: Option<String>,
        node: Option<String>,
        id: Option<String>,
    },
    MemberAdd {
        name: String,
        peer_urls: Vec<String>,
        learner: bool,
    },
    MemberPromote {
        name: Option<String>,
        id: Option<String>,
        timeout_secs: f64,
    },
    Snapshot {
        path: String,
    },
    /// move_leader, alarm_list, alarm_disarm, defragment, snapshot_status (`etcd_maint.rs`).
    Maintenance(MaintenanceOp),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EtcdSpec {
    pub op: EtcdOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

const OPS: &[&str] = &[
    "member_list",
    "health",
    "status",
    "member_remove",
    "member_add",
    "member_promote",
    "snapshot",
];

fn text_field(f: &Fields<'_>, key: &str, reader: &mut Reader) -> Option<String> {
    let n = f.get(key)?;
    let s = reader.scalar(n, &format!("etcd {key}"))?;
    Some(reader.template(s, TemplateKind::Text))
}

fn parse_member_add(f: &Fields<'_>, reader: &mut Reader) -> Option<EtcdOp> {
    let Some(name) = text_field(f, "name", reader) else {
        reader.error(f.span(), "etcd member_add needs `name:`");
        return None;
    };
    let peer_urls = match f.get("peer_urls") {
        Some(Node::Sequence(items)) => items
            .iter()
            .filter_map(|i| reader.scalar(i, "peer url"))
            .map(|s| s.as_str().to_string())
            .collect(),
        Some(n) => match reader.scalar(n, "peer_urls") {
            Some(s) => vec![reader.template(s, TemplateKind::Text)],
            None => return None,
        },
        None => {
            reader.error(f.span(), "etcd member_add needs `peer_urls:`");
            return None;
        }
    };
    let learner = f
        .get("learner")
        .and_then(|n| reader.bool(n, "learner"))
        .unwrap_or(false);
    Some(EtcdOp::MemberAdd {
        name,
        peer_urls,
        learner,
    })
}

fn parse_member_promote(f: &Fields<'_>, reader: &mut Reader) -> Option<EtcdOp> {
    let name = text_field(f, "name", reader);
    let id = text_field(f, "id", reader);
    if name.is_none() && id.is_none() {
        reader.error(f.span(), "etcd member_promote needs name or id");
        return None;
    }
    let timeout_secs = f
        .get("timeout")
        .and_then(|n| reader.duration(n, "timeout"))
        .unwrap_or(120.0);
    Some(EtcdOp::MemberPromote {
        name,
        id,
        timeout_secs,
    })
}

/// `transport:` and `via:`, next to the operation.
fn parse_transport(fields: &Fields<'_>, reader: &mut Reader) -> (Option<String>, Option<String>) {
    let transport = fields
        .get("transport")
        .and_then(|n| reader.scalar(n, "transport"))
        .map(|s| s.as_str().to_string());
    if let Some(t) = &transport {
        if t != "direct" && t != "ssh" {
            reader.error(
                &start_span(fields.get("transport").expect("present")),
                format!("etcd transport must be direct or ssh, not `{t}`"),
            );
        }
    }
    let via = fields
        .get("via")
        .and_then(|n| reader.scalar(n, "via"))
        .map(|s| s.as_str().to_string());
    (transport, via)
}

impl EtcdSpec {
    fn transport(&self, scope: &RenderScope<'_>) -> Result<Transport, ActionError> {
        let inventory = scope.inventory.ok_or_else(|| ActionError::Failed {
            message: "etcd needs an inventory with etcd endpoints; pass --inventory FILE (or set MEDIC_INVENTORY)".into(),
        })?;
        Transport::choose(inventory, self.transport.as_deref(), self.via.as_deref())
            .map_err(ActionError::from)
    }

    fn render(
        &self,
        scope: &RenderScope<'_>,
        v: &Option<String>,
    ) -> Result<Option<String>, ActionError> {
        v.as_ref()
            .map(|s| scope.render("etcd", s, false))
            .transpose()
    }

    /// Voting members the inventory expects (nodes with the etcd role, else endpoints).
    fn expected_members(scope: &RenderScope<'_>) -> Option<usize> {
        let inv = scope.inventory?;
        let by_role = inv
            .nodes
            .iter()
            .filter(|n| n.roles.iter().any(|r| r == "etcd"))
            .count();
        Some(if by_role > 0 {
            by_role
        } else {
            inv.etcd.endpoints.len()
        })
        .filter(|n| *n > 0)
    }

    fn find(
        &self,
        ctx: &ActionCtx<'_>,
        members: &[MemberInfo],
        name: Option<String>,
        node: Option<String>,
        id: Option<String>,
    ) -> Result<Option<MemberInfo>, ActionError> {
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            let wanted = parse_id(&id).ok_or_else(|| ActionError::Failed {
                message: format!("`{id}` is not an etcd member id (hex as etcdctl prints it)"),
            })?;
            return Ok(members.iter().find(|m| m.id_u64() == wanted).cloned());
        }
        if let Some(name) = name {
            return Ok(members.iter().find(|m| m.name == name).cloned());
        }
        if let Some(node) = node {
            let address = ctx
                .scope
                .inventory
                .and_then(|i| i.node(&node))
                .map(|n| n.address.clone());
            return Ok(members
                .iter()
                .find(|m| {
                    m.name == node
                        || address.as_ref().is_some_and(|a| {
                            m.peer_urls.iter().any(|u| u.contains(&format!("//{a}:")))
                        })
                })
                .cloned());
        }
        Err(ActionError::Failed {
            message: "say which member: name, node or id".into(),
        })
    }
}

impl Action for EtcdSpec {
    const KIND: &'static str = "etcd";
    const IDEMPOTENT: bool = true;
    const INLINE: bool = false;
    const NEEDS_INVENTORY: bool = true;
    const PREVIEWS: bool = true;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let mut all_ops: Vec<&str> = OPS.to_vec();
        all_ops.extend(MAINTENANCE_OPS.iter().map(|(op, _)| *op));
        let mut known = all_ops.clone();
        known.extend(["transport", "via"]);
        let fields = Fields::new(node, "etcd", &known, reader)?;
        let ops: Vec<&str> = fields
            .keys()
            .map(|k| k.as_str())
            .filter(|k| all_ops.contains(k))
            .collect();
        let [op_name] = ops.as_slice() else {
            reader.error(
                fields.span(),
                format!("etcd needs exactly one operation: {}", all_ops.join(", ")),
            );
            return None;
        };
        let body = fields.get(op_name).expect("listed");
        let empty = matches!(body, Node::Scalar(s) if s.as_str().is_empty());
        let keys: &[&str] = match *op_name {
            "member_list" => &["name"],
            "member_remove" => &["name", "node", "id"],
            "member_add" => &["name", "peer_urls", "learner"],
            "member_promote" => &["name", "id", "timeout"],
            "snapshot" => &["path"],
            other => MAINTENANCE_OPS
                .iter()
                .find(|(op, _)| *op == other)
                .map(|(_, keys)| *keys)
                .unwrap_or(&[]),
        };
        let maintenance = MAINTENANCE_OPS.iter().any(|(op, _)| op == op_name);
        let f = if empty {
            None
        } else {
            Some(Fields::new(body, &format!("etcd {op_name}"), keys, reader)?)
        };
        let op = match (*op_name, f) {
            ("health", _) => EtcdOp::Health,
            ("status", _) => EtcdOp::Status,
            ("member_list", f) => EtcdOp::MemberList {
                name: f.and_then(|f| text_field(&f, "name", reader)),
            },
            ("member_remove", Some(f)) => {
                let name = text_field(&f, "name", reader);
                let nd = text_field(&f, "node", reader);
                let id = text_field(&f, "id", reader);
                if [&name, &nd, &id].iter().filter(|x| x.is_some()).count() != 1 {
                    reader.error(
                        f.span(),
                        "etcd member_remove needs exactly one of name, node or id",
                    );
                    return None;
                }
                EtcdOp::MemberRemove { name, node: nd, id }
            }
            ("member_add", Some(f)) => parse_member_add(&f, reader)?,
            ("member_promote", Some(f)) => parse_member_promote(&f, reader)?,
            ("snapshot", Some(f)) => EtcdOp::Snapshot {
                path: text_field(&f, "path", reader).unwrap_or_default(),
            },
            (op, f) if maintenance && (f.is_some() || keys.is_empty()) => {
                EtcdOp::Maintenance(etcd_maint::parse(op, f.as_ref(), reader)?)
            }
            (other, None) => {
                reader.error(
                    &start_span(body),
                    format!("etcd {other} needs its settings, e.g. {{name: cp-2}}"),
                );
                return None;
            }
            _ => return None,
        };
        let (transport, via) = parse_transport(&fields, reader);
        Some(EtcdSpec { op, transport, via })
    }

    fn touches(&self, _scope: &RenderScope<'_>) -> Vec<super::Touch> {
        match self.op {
            EtcdOp::MemberRemove { .. }
            | EtcdOp::MemberAdd { .. }
            | EtcdOp::MemberPromote { .. } => {
                vec![super::Touch::EtcdMembership]
            }
            _ => Vec::new(),
        }
    }

    fn target(&self) -> Option<String> {
        Some(format!(
            "etcd{}",
            self.via
                .as_ref()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default()
        ))
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        let how = self
            .transport(scope)
            .map(|t| t.describe())
            .unwrap_or_else(|e| format!("({e})"));
        let expected = Self::expected_members(scope);
        let quorum_line = |delta: isize| {
            expected.map(|n| {
                let after = (n as isize + delta).max(0) as usize;
                format!(
                    "quorum: {} → {} (as the inventory expects)",
                    Quorum::of(n).describe(),
                    Quorum::of(after).describe()
                )
            })
        };
        let r = |v: &Option<String>| -> Result<String, ActionError> {
            Ok(self.render(scope, v)?.unwrap_or_default())
        };
        let mut lines = match &self.op {
            EtcdOp::MemberList { name } => vec![format!(
                "etcd member list{} {how}",
                name.as_ref()
                    .map(|_| r(name))
                    .transpose()?
                    .map(|n| format!(", find {n}"))
                    .unwrap_or_default()
            )],
            EtcdOp::Health => vec![format!("etcd health of every member {how}")],
            EtcdOp::Status => vec![format!("etcd status of every member {how}")],
            EtcdOp::MemberRemove { name, node, id } => {
                let who = [("name", name), ("node", node), ("id", id)]
                    .iter()
                    .find_map(|(k, v)| v.as_ref().map(|_| (k, v)))
                    .map(|(k, v)| Ok::<_, ActionError>(format!("{k} {}", r(v)?)))
                    .transpose()?
                    .unwrap_or_default();
                let mut l = vec![format!(
                    "etcd member remove ({who}) {how}; refused unless the survivors keep quorum; if it leads, leadership moves to a healthy voter first"
                )];
                l.extend(quorum_line(-1));
                l
            }
            EtcdOp::MemberAdd {
                name,
                peer_urls,
                learner,
            } => {
                let urls: Vec<String> = peer_urls
                    .iter()
                    .map(|u| scope.render("etcd", u, false))
                    .collect::<Result<_, _>>()?;
                let mut l = vec![format!(
                    "etcd member add {} peer {}{} {how}; refused while another added member has not started",
                    scope.render("etcd", name, false)?,
                    urls.join(","),
                    if *learner { " as a learner" } else { "" }
                )];
                if !learner {
                    l.extend(quorum_line(1));
                } else {
                    l.push("quorum: unchanged (a learner does not vote until promoted)".into());
                }
                l
            }
            EtcdOp::MemberPromote {
                name,
                id,
                timeout_secs,
            } => {
                let mut l = vec![format!(
                    "etcd member promote {} {how}, retrying until it is in sync (up to {})",
                    if name.is_some() { r(name)? } else { r(id)? },
                    super::wait::human_secs(*timeout_secs)
                )];
                l.extend(quorum_line(1));
                l
            }
            EtcdOp::Snapshot { path } => {
                let p = scope.render("etcd", path, false)?;
                vec![if p.is_empty() {
                    "etcd snapshot: skipped (no path given)".to_string()
                } else {
                    format!("etcd snapshot {how}, saved to {p} on this machine")
                }]
            }
            EtcdOp::Maintenance(op) => etcd_maint::describe(op, scope, &how)?,
        };
        if lines.is_empty() {
            lines.push("etcd".into());
        }
        Ok(lines)
    }

    async fn preview(&self, scope: &RenderScope<'_>) -> Vec<String> {
        match &self.op {
            EtcdOp::Maintenance(MaintenanceOp::SnapshotStatus { path }) => {
                etcd_maint::preview_snapshot(scope, path)
            }
            EtcdOp::MemberRemove { name, node, id } => {
                let who = [name, node, id].into_iter().flatten().next();
                match (self.transport(scope), who) {
                    (Ok(t), Some(who)) if !scope.uses_pending(who) => {
                        etcd_maint::preview_leader(scope, &t, who).await
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        if let EtcdOp::Maintenance(MaintenanceOp::SnapshotStatus { path }) = &self.op {
            return etcd_maint::execute_snapshot_status(ctx, path);
        }
        let transport = self.transport(ctx.scope)?;
        if let EtcdOp::Snapshot { path } = &self.op {
            return snapshot(ctx, &transport, path).await;
        }
        let members = transport.member_list(&ctx.ssh).await?;
        let run = Run {
            spec: self,
            ctx,
            transport: &transport,
            voting: members.iter().filter(|m| !m.is_learner).count(),
            members,
        };
        match &self.op {
            EtcdOp::MemberList { name } => run.member_list(name),
            EtcdOp::Health => Ok(run.health().await),
            EtcdOp::Status => Ok(run.status().await),
            EtcdOp::MemberRemove { name, node, id } => run.member_remove(name, node, id).await,
            EtcdOp::MemberAdd {
                name,
                peer_urls,
                learner,
            } => run.member_add(name, peer_urls, *learner).await,
            EtcdOp::MemberPromote {
                name,
                id,
                timeout_secs,
            } => run.member_promote(name, id, *timeout_secs).await,
            EtcdOp::Snapshot { .. } => unreachable!("handled above"),
            EtcdOp::Maintenance(op) => etcd_maint::execute(op, ctx, &transport, &run.members).await,
        }
    }
}

impl From<EtcdError> for ActionError {
    fn from(e: EtcdError) -> Self {
        ActionError::Failed {
            message: e.to_string(),
        }
    }
}

async fn snapshot(
    ctx: &ActionCtx<'_>,
    transport: &Transport,
    path: &str,
) -> Result<ActionOutput, ActionError> {
    let p = ctx.scope.render("etcd.snapshot.path", path, false)?;
    if p.is_empty() {
        return Ok(ActionOutput {
            result: serde_json::json!({"skipped": true}),
            summary: Some("skipped: no snapshot path given".into()),
        });
    }
    let size = transport
        .snapshot(&ctx.ssh, std::path::Path::new(&p))
        .await?;
    Ok(ActionOutput {
        result: serde_json::json!({"path": p, "size": size}),
        summary: Some(format!("saved {size} bytes to {p}")),
    })
}

/// One execution of a membership operation: the members as listed when it started.
struct Run<'a> {
    spec: &'a EtcdSpec,
    ctx: &'a ActionCtx<'a>,
    transport: &'a Transport,
    members: Vec<MemberInfo>,
    voting: usize,
}

impl Run<'_> {
    fn render(&self, v: &Option<String>) -> Result<Option<String>, ActionError> {
        self.spec.render(self.ctx.scope, v)
    }

    fn member_list(&self, name: &Option<String>) -> Result<ActionOutput, ActionError> {
        let members = &self.members;
        let name = self.render(name)?;
        let found = name
            .as_ref()
            .and_then(|n| members.iter().find(|m| &m.name == n));
        Ok(ActionOutput {
            result: serde_json::json!({
                "members": members,
                "count": members.len(),
                "voting": self.voting,
                "names": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                "member": found,
                "quorum": Quorum::of(self.voting),
            }),
            summary: Some(format!(
                "{} members{}",
                members.len(),
                name.map(|n| if found.is_some() {
                    format!(", {n} found")
                } else {
                    format!(", {n} not a member")
                })
                .unwrap_or_default()
            )),
        })
    }

    async fn health(&self) -> ActionOutput {
        let health = self.transport.health(&self.ctx.ssh, &self.members).await;
        let healthy = health.iter().filter(|h| h.healthy).count();
        for h in &health {
            self.ctx.emit(
                Stream::Medic,
                &format!(
                    "{} {}{}",
                    if h.healthy { "healthy  " } else { "UNHEALTHY" },
                    if h.name.is_empty() { &h.id } else { &h.name },
                    h.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            );
        }
        ActionOutput {
            result: serde_json::json!({"members": health, "healthy": healthy, "total": health.len(), "quorum": Quorum::of(self.voting)}),
            summary: Some(format!("{healthy} of {} members healthy", health.len())),
        }
    }

    async fn status(&self) -> ActionOutput {
        let status = self.transport.status(&self.ctx.ssh, &self.members).await;
        let ok: Vec<_> = status.iter().filter_map(|s| s.as_ref().ok()).collect();
        let leader = ok.iter().find(|s| s.is_leader).map(|s| s.endpoint.clone());
        let revision = ok.iter().map(|s| s.revision).max();
        ActionOutput {
            result: serde_json::json!({"revision": revision, "members": ok, "errors": status.iter().filter_map(|s| s.as_ref().err()).collect::<Vec<_>>(), "leader": leader}),
            summary: Some(format!(
                "{} of {} members answered; leader {}",
                ok.len(),
                self.members.len(),
                leader.unwrap_or_else(|| "unknown".into())
            )),
        }
    }

    async fn member_remove(
        &self,
        name: &Option<String>,
        node: &Option<String>,
        id: &Option<String>,
    ) -> Result<ActionOutput, ActionError> {
        let (ctx, members, pool) = (self.ctx, &self.members, &self.ctx.ssh);
        let target = self.spec.find(
            ctx,
            members,
            self.render(name)?,
            self.render(node)?,
            self.render(id)?,
        )?;
        let Some(target) = target else {
            return Ok(ActionOutput {
                result: serde_json::json!({"removed": false, "already_gone": true, "members": members}),
                summary: Some("already gone: no such member, nothing to remove".into()),
            });
        };
        let health = self.transport.health(pool, members).await;
        ctx.guard(removal_refusal(&target, &health))?;
        let target_healthy = health.iter().any(|h| h.id == target.id && h.healthy);
        let moved = if target_healthy && !target.is_learner {
            etcd_maint::move_leadership_before_removal(
                ctx,
                self.transport,
                members,
                &health,
                &target,
            )
            .await?
        } else {
            None
        };
        let before = Quorum::of(self.voting);
        retry_unhealthy(ctx, || {
            self.transport
                .member_remove(pool, target.id_u64(), target_healthy)
        })
        .await?;
        let after = Quorum::of(if target.is_learner {
            self.voting
        } else {
            self.voting - 1
        });
        Ok(ActionOutput {
            result: serde_json::json!({"removed": true, "already_gone": false, "member": target, "before": before, "after": after, "leader_moved_to": moved.as_ref().map(|m| &m.1)}),
            summary: Some(format!(
                "{}removed {} ({}); now {}",
                moved
                    .map(|(from, to)| format!("moved leadership from {from} to {to}, then "))
                    .unwrap_or_default(),
                target.label(),
                target.id,
                after.describe()
            )),
        })
    }

    async fn member_add(
        &self,
        name: &str,
        peer_urls: &[String],
        learner: bool,
    ) -> Result<ActionOutput, ActionError> {
        let (ctx, members, pool) = (self.ctx, &self.members, &self.ctx.ssh);
        let scope = ctx.scope;
        let name = scope.render("etcd.member_add.name", name, false)?;
        let urls: Vec<String> = peer_urls
            .iter()
            .map(|u| scope.render("etcd.member_add.peer_urls", u, false))
            .collect::<Result<_, _>>()?;
        if let Some(existing) = members
            .iter()
            .find(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
        {
            return Ok(ActionOutput {
                result: serde_json::json!({"added": false, "already_member": true, "member": existing, "initial_cluster": initial_cluster(members, None)}),
                summary: Some(format!(
                    "already a member with peer URL {}: {}",
                    urls.join(","),
                    existing.id
                )),
            });
        }
        let health = self.transport.health(pool, members).await;
        ctx.guard(addition_refusal(&urls, learner, &health, members))?;
        let added = retry_unhealthy(ctx, || {
            self.transport.member_add(pool, &name, &urls, learner)
        })
        .await?;
        let cluster = initial_cluster(members, Some((&name, &urls)));
        ctx.emit(Stream::Medic, &format!("start the new member with --initial-cluster={cluster} --initial-cluster-state=existing"));
        Ok(ActionOutput {
            result: serde_json::json!({"added": true, "already_member": false, "member": added, "initial_cluster": cluster}),
            summary: Some(format!(
                "added {name} ({}){}",
                added.id,
                if learner { " as a learner" } else { "" }
            )),
        })
    }

    async fn member_promote(
        &self,
        name: &Option<String>,
        id: &Option<String>,
        timeout_secs: f64,
    ) -> Result<ActionOutput, ActionError> {
        let ctx = self.ctx;
        let target = self.spec.find(
            ctx,
            &self.members,
            self.render(name)?,
            None,
            self.render(id)?,
        )?;
        let Some(target) = target else {
            return Err(ActionError::Failed {
                message: format!(
                    "no etcd member {} to promote",
                    self.render(name)?.or(self.render(id)?).unwrap_or_default()
                ),
            });
        };
        if !target.is_learner {
            return Ok(ActionOutput {
                result: serde_json::json!({"promoted": false, "already_voting": true, "member": target}),
                summary: Some(format!("{} is already a voting member", target.label())),
            });
        }
        let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .transport
                .member_promote(&ctx.ssh, target.id_u64())
                .await
            {
                Ok(()) => break,
                // A learner is promoted once it has caught up with the leader.
                Err(e) if e.refusal() == Refusal::LearnerNotReady && Instant::now() < deadline => {
                    ctx.emit(Stream::Medic, &format!("attempt {attempts}: {e}; retrying"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    return Err(ActionError::Failed {
                        message: format!("promote {}: {e}", target.label()),
                    })
                }
            }
        }
        Ok(ActionOutput {
            result: serde_json::json!({"promoted": true, "member": target, "attempts": attempts}),
            summary: Some(format!(
                "promoted {} after {attempts} attempt(s)",
                target.label()
            )),
        })
    }
}

/// etcd refuses membership changes for a few seconds after a member (re)connects ("unhealthy
/// cluster"); that passes, so retry for a while before giving up.
async fn retry_unhealthy<T, F, Fut>(ctx: &ActionCtx<'_>, mut call: F) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EtcdError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Err(e) if e.refusal() == Refusal::UnhealthyCluster && Instant::now() < deadline => {
                ctx.emit(
                    Stream::Medic,
                    "etcd reports an unhealthy cluster (members still connecting); retrying",
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// `name=peer,...` for starting a new member with `--initial-cluster`.
fn initial_cluster(members: &[MemberInfo], new: Option<(&str, &[String])>) -> String {
    let mut parts: Vec<String> = members
        .iter()
        .filter(|m| m.started)
        .flat_map(|m| m.peer_urls.iter().map(move |u| format!("{}={u}", m.name)))
        .collect();
    if let Some((name, urls)) = new {
        parts.extend(urls.iter().map(|u| format!("{name}={u}")));
    }
    parts.join(",")
}
