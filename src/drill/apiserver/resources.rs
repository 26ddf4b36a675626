//! The resources the emulator serves: name, kind, API group and version, scope.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) name: &'static str,
    pub(super) kind: &'static str,
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) namespaced: bool,
}

pub(super) const RESOURCES: &[Resource] = &[
    Resource {
        name: "nodes",
        kind: "Node",
        group: "",
        version: "v1",
        namespaced: false,
    },
    Resource {
        name: "namespaces",
        kind: "Namespace",
        group: "",
        version: "v1",
        namespaced: false,
    },
    Resource {
        name: "pods",
        kind: "Pod",
        group: "",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "daemonsets",
        kind: "DaemonSet",
        group: "apps",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "replicasets",
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        group: "policy",
        version: "v1",
        namespaced: true,
    },
    Resource {
        name: "events",
        kind: "Event",
        group: "",
        version: "v1",
        namespaced: true,
    },
];

impl Resource {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(super) fn by_kind(kind: &str) -> Option<Resource> {
        RESOURCES.iter().copied().find(|r| r.kind == kind)
    }
}
