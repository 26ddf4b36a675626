//! The Kubernetes client and its failures: one [`KubeError`] variant per step that talks to the
//! API server, each carrying the `kube` crate's error as its source. The retry decisions of the
//! drain (429 from a disruption budget, 404 for a pod already gone) match on those sources'
//! status codes, never on message text.

use std::time::Duration;

use kube::Client;

use super::super::{ActionError, RenderScope};

/// A failed call to the API server (or building the client), named after the step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    #[error("read kubeconfig {}: {source}", .path.display())]
    ReadKubeconfig {
        path: std::path::PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {}: {source}", .path.display())]
    Kubeconfig {
        path: std::path::PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig (KUBECONFIG or ~/.kube/config): {source}")]
    DefaultKubeconfig {
        source: kube::config::KubeconfigError,
    },
    #[error("kubernetes client: {source}")]
    Client { source: kube::Error },
    #[error("cordon {node}: {}", api_text(.source))]
    Cordon { node: String, source: kube::Error },
    #[error("uncordon {node}: {}", api_text(.source))]
    Uncordon { node: String, source: kube::Error },
    #[error("delete node {node}: {}", api_text(.source))]
    DeleteNode { node: String, source: kube::Error },
    #[error("list nodes: {}", api_text(.source))]
    ListNodes { source: kube::Error },
    #[error("get node {node}: {}", api_text(.source))]
    GetNode { node: String, source: kube::Error },
    /// A merge patch of a node (`label`, `unlabel`, `taint`, `untaint`).
    #[error("{what} {node}: {}", api_text(.source))]
    PatchNode {
        what: &'static str,
        node: String,
        source: kube::Error,
    },
    #[error("list pods on {node}: {}", api_text(.source))]
    ListPods { node: String, source: kube::Error },
    /// `pod` is `namespace/name`.
    #[error("evict {pod}: {}", api_text(.source))]
    Evict { pod: String, source: kube::Error },
    #[error("get {pod}: {}", api_text(.source))]
    GetPod { pod: String, source: kube::Error },
    #[error("list pods in namespace {namespace}: {}", api_text(.source))]
    ListNamespacePods {
        namespace: String,
        source: kube::Error,
    },
}

impl From<KubeError> for ActionError {
    fn from(e: KubeError) -> Self {
        ActionError::Failed {
            message: e.to_string(),
        }
    }
}

/// The API server's own message and code when it answered, else the transport error.
fn api_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// The API server answered 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A client for the inventory's kubeconfig and context (else `KUBECONFIG` / `~/.kube/config`).
pub(crate) async fn client(scope: &RenderScope<'_>) -> Result<Client, KubeError> {
    let settings = scope
        .inventory
        .map(|i| i.kubernetes.clone())
        .unwrap_or_default();
    connect(&settings).await
}

/// [`connect`] with the failure as text, for the drill (which reports text).
pub(crate) async fn client_for(
    settings: &crate::inventory::KubeSettings,
) -> Result<Client, String> {
    connect(settings).await.map_err(|e| e.to_string())
}

/// A client for a kubeconfig and context, with the client's own retry of HTTP 429 turned off
/// so the drain controls it.
pub(crate) async fn connect(
    settings: &crate::inventory::KubeSettings,
) -> Result<Client, KubeError> {
    let options = kube::config::KubeConfigOptions {
        context: settings.context.clone(),
        ..Default::default()
    };
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|source| KubeError::DefaultKubeconfig { source })?,
    };
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).map_err(|source| KubeError::Client { source })
}
