//! The quorum arithmetic behind the etcd guards, as plain functions: how many voting members
//! a change leaves, and why removing or adding one would cost quorum (the refusal, with the
//! arithmetic, that `--force` overrides).

use serde::Serialize;

use super::{MemberHealth, MemberInfo};

/// Size of a voting membership and what it can survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Quorum {
    pub members: usize,
    pub quorum: usize,
    pub tolerates: usize,
}

impl Quorum {
    pub(crate) fn of(members: usize) -> Quorum {
        let quorum = members / 2 + 1;
        Quorum {
            members,
            quorum,
            tolerates: members.saturating_sub(quorum),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} member{} (quorum {}, tolerates {} failure{})",
            self.members,
            if self.members == 1 { "" } else { "s" },
            self.quorum,
            self.tolerates,
            if self.tolerates == 1 { "" } else { "s" }
        )
    }
}

/// Why removing `target` would be unsafe, if it would. `health` covers every member.
pub(crate) fn removal_refusal(target: &MemberInfo, health: &[MemberHealth]) -> Option<String> {
    if target.is_learner {
        return None;
    }
    let voting: Vec<&MemberHealth> = health.iter().filter(|h| !h.is_learner).collect();
    let before = Quorum::of(voting.len());
    let after = Quorum::of(voting.len().saturating_sub(1));
    let survivors: Vec<&&MemberHealth> = voting.iter().filter(|h| h.id != target.id).collect();
    let healthy: Vec<String> = survivors
        .iter()
        .filter(|h| h.healthy && h.started)
        .map(|h| h.name.clone())
        .collect();
    let unhealthy: Vec<String> = survivors
        .iter()
        .filter(|h| !(h.healthy && h.started))
        .map(|h| {
            format!(
                "{} ({})",
                if h.name.is_empty() {
                    h.id.clone()
                } else {
                    h.name.clone()
                },
                h.error.clone().unwrap_or_else(|| "not started".into())
            )
        })
        .collect();
    if before.members <= 2 {
        return Some(format!(
            "removing {} from a cluster of {} leaves {}; a cluster of two or fewer members cannot lose one safely. Add a replacement first, or pass --force (recorded in history)",
            target.label(),
            before.describe(),
            after.describe()
        ));
    }
    if healthy.len() < after.quorum {
        return Some(format!(
            "removing {} changes the cluster from {} to {}, but only {} of the remaining members {} started and healthy ({}){}; that is below the quorum of {}, so etcd would stop serving. Bring members back first, or pass --force (recorded in history)",
            target.label(),
            before.describe(),
            after.describe(),
            healthy.len(),
            if healthy.len() == 1 { "is" } else { "are" },
            if healthy.is_empty() { "none".to_string() } else { healthy.join(", ") },
            if unhealthy.is_empty() { String::new() } else { format!("; not healthy: {}", unhealthy.join(", ")) },
            after.quorum
        ));
    }
    None
}

/// Why adding a member would be unsafe, if it would.
pub(crate) fn addition_refusal(
    peer_urls: &[String],
    learner: bool,
    health: &[MemberHealth],
    members: &[MemberInfo],
) -> Option<String> {
    let pending: Vec<&MemberInfo> = members
        .iter()
        .filter(|m| !m.started && !m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        .collect();
    if let Some(p) = pending.first() {
        return Some(format!(
            "member {} ({}) was added but never started; adding another before it starts can cost quorum (the add-before-remove trap). Start it or remove it first, or pass --force (recorded in history)",
            p.id,
            p.peer_urls.join(",")
        ));
    }
    if learner {
        return None;
    }
    let voting: Vec<&MemberHealth> = health.iter().filter(|h| !h.is_learner).collect();
    let before = Quorum::of(voting.len());
    let after = Quorum::of(voting.len() + 1);
    let healthy = voting.iter().filter(|h| h.healthy && h.started).count();
    if healthy < after.quorum {
        return Some(format!(
            "adding a voting member changes the cluster from {} to {}, but only {healthy} member{} healthy, below the new quorum of {}; the cluster would stop serving until the new member starts. Add it as a learner (learner: true), or pass --force (recorded in history)",
            before.describe(),
            after.describe(),
            if healthy == 1 { " is" } else { "s are" },
            after.quorum
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, healthy: bool) -> MemberHealth {
        MemberHealth {
            id: name.to_string(),
            name: name.to_string(),
            endpoint: None,
            healthy,
            is_learner: false,
            started: true,
            error: (!healthy).then(|| "connection refused".to_string()),
        }
    }

    fn m(name: &str) -> MemberInfo {
        MemberInfo {
            id: name.to_string(),
            name: name.to_string(),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![],
            is_learner: false,
            started: true,
        }
    }

    #[test]
    fn quorum_arithmetic() {
        assert_eq!(
            Quorum::of(3),
            Quorum {
                members: 3,
                quorum: 2,
                tolerates: 1
            }
        );
        assert_eq!(
            Quorum::of(5),
            Quorum {
                members: 5,
                quorum: 3,
                tolerates: 2
            }
        );
        assert_eq!(
            Quorum::of(2),
            Quorum {
                members: 2,
                quorum: 2,
                tolerates: 0
            }
        );
        assert_eq!(Quorum::of(1).tolerates, 0);
    }

    #[test]
    fn removal_guard_table() {
        // Removing the dead one of three: fine.
        assert!(removal_refusal(&m("c"), &[h("a", true), h("b", true), h("c", false)]).is_none());
        // Removing a healthy one while another is down: refused, with the arithmetic.
        let r = removal_refusal(&m("c"), &[h("a", true), h("b", false), h("c", true)]).unwrap();
        assert!(r.contains("from 3 members (quorum 2, tolerates 1 failure) to 2 members (quorum 2, tolerates 0 failures)"), "{r}");
        assert!(r.contains("only 1 of the remaining members is started and healthy (a); not healthy: b (connection refused)"), "{r}");
        // Two members: always refused.
        assert!(removal_refusal(&m("b"), &[h("a", true), h("b", false)])
            .unwrap()
            .contains("two or fewer"));
        // Five with one down: removing it is fine; removing a healthy one is fine too (3 of 4 healthy).
        let five = [
            h("a", true),
            h("b", true),
            h("c", true),
            h("d", true),
            h("e", false),
        ];
        assert!(removal_refusal(&m("e"), &five).is_none());
        assert!(removal_refusal(&m("a"), &five).is_none());
    }

    #[test]
    fn addition_guard_table() {
        let healthy3 = [h("a", true), h("b", true), h("c", true)];
        let members3 = [m("a"), m("b"), m("c")];
        assert!(addition_refusal(&["http://d:2380".into()], false, &healthy3, &members3).is_none());
        let mut pending = members3.to_vec();
        pending.push(MemberInfo {
            name: String::new(),
            started: false,
            ..m("x")
        });
        let r = addition_refusal(&["http://d:2380".into()], true, &healthy3, &pending).unwrap();
        assert!(r.contains("add-before-remove"), "{r}");
        // The pending member is the one being added again: not a trap (idempotent retry).
        assert!(addition_refusal(&["http://x:2380".into()], true, &healthy3, &pending).is_none());
        // Two of three healthy: a fourth voter needs 3 healthy → refused; a learner is fine.
        let degraded = [h("a", true), h("b", true), h("c", false)];
        assert!(
            addition_refusal(&["http://d:2380".into()], false, &degraded, &members3)
                .unwrap()
                .contains("new quorum of 3")
        );
        assert!(addition_refusal(&["http://d:2380".into()], true, &degraded, &members3).is_none());
    }
}
