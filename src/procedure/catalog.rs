//! The catalog: which procedures exist (built in, or from a plans directory that adds or
//! overrides by name), loading each once, and naming include cycles.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{walk, Procedure, ProcedureError, DEFAULT_MAX_PHASES};
use crate::source::{self, closest, Diagnostic};

/// The procedures in `plans/`, compiled in so `medic` works from any directory. A test checks
/// that every file there is listed.
pub(super) mod builtin {
    pub(crate) const BUILTIN_PLANS: &[(&str, &str)] = &[
        (
            "cluster-health",
            include_str!("../../plans/cluster-health.yaml"),
        ),
        (
            "etcd-clear-alarms",
            include_str!("../../plans/etcd-clear-alarms.yaml"),
        ),
        ("etcd-health", include_str!("../../plans/etcd-health.yaml")),
        (
            "etcd-remove-member",
            include_str!("../../plans/etcd-remove-member.yaml"),
        ),
        (
            "etcd-restore-snapshot",
            include_str!("../../plans/etcd-restore-snapshot.yaml"),
        ),
        (
            "kubernetes-health",
            include_str!("../../plans/kubernetes-health.yaml"),
        ),
        (
            "local-preflight",
            include_str!("../../plans/local-preflight.yaml"),
        ),
        ("node-health", include_str!("../../plans/node-health.yaml")),
        (
            "node-maintenance",
            include_str!("../../plans/node-maintenance.yaml"),
        ),
        (
            "replace-control-plane-node",
            include_str!("../../plans/replace-control-plane-node.yaml"),
        ),
        (
            "replace-worker-node",
            include_str!("../../plans/replace-worker-node.yaml"),
        ),
        (
            "restart-kubelet",
            include_str!("../../plans/restart-kubelet.yaml"),
        ),
        (
            "upgrade-kubernetes",
            include_str!("../../plans/upgrade-kubernetes.yaml"),
        ),
        (
            "upgrade-kubernetes-node",
            include_str!("../../plans/upgrade-kubernetes-node.yaml"),
        ),
    ];
}

/// Where procedures come from: built in, overridden or added by a plans directory.
///
/// Files are only read when their procedure is asked for, so one broken file does not stop
/// the others from being used.
pub(crate) struct Catalog {
    entries: BTreeMap<String, Vec<CatalogSource>>,
    max_phases: usize,
    /// Each procedure loaded so far, so an include fan-out (`a` includes `b` twice, `b`
    /// includes `c` twice, ...) or a listing parses each file once.
    loaded: std::cell::RefCell<HashMap<String, Result<Procedure, ProcedureError>>>,
}

/// One [`Catalog::get`]: the procedures being loaded around the current one, to name an
/// include cycle.
#[derive(Default)]
struct Loading {
    stack: Vec<String>,
}

fn builtin_label(name: &str) -> String {
    format!("plans/{name}.yaml (built in)")
}

enum CatalogSource {
    Builtin(&'static str),
    File(PathBuf),
}

impl Catalog {
    pub(crate) fn load(plans_dir: Option<&Path>) -> Result<Catalog, ProcedureError> {
        let mut entries: BTreeMap<String, Vec<CatalogSource>> = BTreeMap::new();
        for (name, text) in builtin::BUILTIN_PLANS {
            entries.insert(name.to_string(), vec![CatalogSource::Builtin(text)]);
        }
        if let Some(dir) = plans_dir {
            let read = std::fs::read_dir(dir).map_err(|source| ProcedureError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let mut files: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".yaml").or_else(|| n.strip_suffix(".yml")))
                else {
                    continue;
                };
                let list = entries.entry(name.to_string()).or_default();
                // A file overrides the built-in procedure of the same name.
                list.retain(|s| matches!(s, CatalogSource::File(_)));
                list.push(CatalogSource::File(path.clone()));
            }
        }
        Ok(Catalog {
            entries,
            max_phases: DEFAULT_MAX_PHASES,
            loaded: Default::default(),
        })
    }

    /// Refuses procedures whose phases (includes inlined) exceed `max_phases`.
    pub(crate) fn with_max_phases(mut self, max_phases: usize) -> Self {
        self.max_phases = max_phases;
        self.loaded.get_mut().clear();
        self
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    /// The procedures defined by files of the plans directory (not the built-in ones).
    pub(crate) fn file_names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(_, sources)| sources.iter().any(|s| matches!(s, CatalogSource::File(_))))
            .map(|(name, _)| name.as_str())
    }

    /// The file a procedure comes from, as messages name it.
    pub(crate) fn label(&self, name: &str) -> String {
        match self.entries.get(name).map(|s| s.as_slice()) {
            Some([CatalogSource::File(path)]) => path.display().to_string(),
            _ => builtin_label(name),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Result<Procedure, ProcedureError> {
        self.load_procedure(name, &mut Loading::default())
    }

    /// Loads `name` once per [`Loading`], resolving its includes through this catalog.
    fn load_procedure(
        &self,
        name: &str,
        loading: &mut Loading,
    ) -> Result<Procedure, ProcedureError> {
        if let Some(done) = self.loaded.borrow().get(name) {
            return match done {
                Ok(p) => Ok(p.clone()),
                Err(e) => Err(e.duplicate()),
            };
        }
        let result = self.parse_procedure(name, loading).and_then(|p| {
            // Includes are inlined, so this counts every phase the plan will have before any
            // `foreach` expands; the plan builder checks again while expanding.
            let mut phases = 0;
            walk(&p.phases, &mut |_| phases += 1);
            if phases > self.max_phases {
                Err(ProcedureError::TooManyPhases {
                    procedure: name.to_string(),
                    limit: self.max_phases,
                })
            } else {
                Ok(p)
            }
        });
        let copy = match &result {
            Ok(p) => Ok(p.clone()),
            Err(e) => Err(e.duplicate()),
        };
        self.loaded.borrow_mut().insert(name.to_string(), copy);
        result
    }

    fn parse_procedure(
        &self,
        name: &str,
        loading: &mut Loading,
    ) -> Result<Procedure, ProcedureError> {
        let Some(sources) = self.entries.get(name) else {
            let hint = closest(name, self.names())
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(ProcedureError::Unknown {
                name: name.to_string(),
                hint,
            });
        };
        let (file, text) = match sources.as_slice() {
            [CatalogSource::Builtin(text)] => (builtin_label(name), text.to_string()),
            [CatalogSource::File(path)] => {
                let bytes = source::read_source(path).map_err(|source| ProcedureError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = path.display().to_string();
                let text = source::decode_utf8(&file, bytes)
                    .map_err(|d| ProcedureError::Invalid(vec![d]))?;
                (file, text)
            }
            many => {
                let files: Vec<String> = many
                    .iter()
                    .filter_map(|s| match s {
                        CatalogSource::File(p) => Some(p.display().to_string()),
                        CatalogSource::Builtin(_) => None,
                    })
                    .collect();
                return Err(ProcedureError::Invalid(vec![Diagnostic {
                    location: None,
                    message: format!(
                        "procedure `{name}` is defined by more than one file: {}; keep one",
                        files.join(" and ")
                    ),
                }]));
            }
        };
        loading.stack.push(name.to_string());
        let result = Procedure::parse_with(&file, &text, Some(name), &mut |included| {
            if let Some(pos) = loading.stack.iter().position(|l| l == included) {
                let mut chain = loading.stack[pos..].to_vec();
                chain.push(included.to_string());
                return Err(ProcedureError::IncludeCycle(chain));
            }
            self.load_procedure(included, loading)
        });
        loading.stack.pop();
        result
    }
}
