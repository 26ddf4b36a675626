//! `kubeadm` on a drill node: `join` (token, CA hash and certificate key checked; a control-plane
//! join adds and starts the node's etcd member), `reset`, `upgrade apply|node|plan`, `version`,
//! `token create --print-join-command`, `init phase upload-certs`.

use std::time::Duration;

use super::join_config::JoinArgs;
use super::{drill_err, flag, parse_version, positional, Reply, Result2};
use crate::drill::etcd::{add_member, etcd_client, wait_etcd_healthy};
use crate::drill::kubelet::{api_nodes, set_kubelet};
use crate::drill::state::{kubelet_version_of, Drill, DrillNode};

pub(super) async fn kubeadm(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    match pos.as_slice() {
        ["join", ..] => kubeadm_join(drill, node, args).await,
        ["reset", ..] => kubeadm_reset(drill, node, args).await,
        ["version", ..] => {
            let v = kubelet_version_of(
                drill
                    .node(node)
                    .map_err(drill_err)?
                    .package_version("kubeadm")
                    .unwrap_or_default(),
            );
            Ok(Reply::ok(format!("{v}\n")))
        }
        ["token", "create", ..] if flag(args, &["--print-join-command"]) => {
            admin_conf(drill, node)?;
            Ok(Reply::ok(format!(
                "kubeadm join {} --token {} --discovery-token-ca-cert-hash {}\n",
                drill.api_endpoint(),
                drill.token,
                drill.ca_cert_hash
            )))
        }
        ["init", "phase", "upload-certs", ..] if flag(args, &["--upload-certs"]) => {
            admin_conf(drill, node)?;
            Ok(Reply::ok(format!(
                "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace\n[upload-certs] Using certificate key:\n{}\n",
                drill.certificate_key
            )))
        }
        ["upgrade", "plan", ..] => Ok(Reply::ok(format!(
            "[upgrade/versions] Cluster version: v{}\n[upgrade/versions] kubeadm version: {}\n",
            drill.cluster_version,
            kubelet_version_of(
                drill
                    .node(node)
                    .map_err(drill_err)?
                    .package_version("kubeadm")
                    .unwrap_or_default()
            )
        ))),
        ["upgrade", "apply", target, ..] => kubeadm_upgrade(drill, node, Some(target)),
        ["upgrade", "node", ..] => kubeadm_upgrade(drill, node, None),
        _ => Err(Reply::err(
            1,
            format!(
                "kubeadm: the drill does not implement `kubeadm {}`\n",
                pos.join(" ")
            ),
        )),
    }
}

/// `token create` and `upload-certs` need the cluster's admin credentials, which only a joined
/// control-plane node has.
fn admin_conf(drill: &Drill, node: &str) -> Result<(), Reply> {
    let n = drill.node(node).map_err(drill_err)?;
    if n.control_plane && n.joined {
        return Ok(());
    }
    Err(Reply::err(
        1,
        "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file or directory\n",
    ))
}

fn kubeadm_upgrade(drill: &mut Drill, node: &str, target: Option<&str>) -> Result2 {
    let n = drill.node(node).map_err(drill_err)?.clone();
    if !n.joined {
        return Err(Reply::err(
            1,
            "[upgrade] couldn't read /etc/kubernetes/kubelet.conf: this node has not joined a cluster\n",
        ));
    }
    let kubeadm = n.package_version("kubeadm").unwrap_or_default().to_string();
    match target {
        Some(target) => {
            if !n.control_plane {
                return Err(Reply::err(
                    1,
                    "[upgrade/apply] FATAL: run `kubeadm upgrade apply` on a control-plane node\n",
                ));
            }
            let Some(t) = parse_version(target) else {
                return Err(Reply::err(
                    1,
                    format!("[upgrade/version] FATAL: invalid version {target:?}\n"),
                ));
            };
            if Some(t) > parse_version(&kubeadm) {
                return Err(Reply::err(
                    1,
                    format!(
                        "[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\t- Specified version to upgrade to {target:?} is higher than the kubeadm version \"{}\". Upgrade kubeadm first using the tool you used to install kubeadm\n",
                        kubelet_version_of(&kubeadm)
                    ),
                ));
            }
            drill.cluster_version = target.trim_start_matches('v').to_string();
            Ok(Reply::ok(format!(
                "[upgrade/successful] SUCCESS! Your cluster was upgraded to \"{target}\". Enjoy!\n"
            )))
        }
        None => {
            if parse_version(&kubeadm) < parse_version(&drill.cluster_version) {
                return Err(Reply::err(
                    1,
                    format!(
                        "[upgrade/node] FATAL: kubeadm {} is older than the cluster (v{})\n",
                        kubelet_version_of(&kubeadm),
                        drill.cluster_version
                    ),
                ));
            }
            Ok(Reply::ok(
                "[upgrade] The configuration for this node was successfully updated!\n[upgrade] Now you should go ahead and upgrade the kubelet package using your package manager.\n",
            ))
        }
    }
}

async fn kubeadm_join(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let control_plane = check_join_secrets(drill, args)?;
    let n = join_preflight(drill, node).await?;
    let mut out = String::from("[preflight] Running pre-flight checks\n");
    if control_plane {
        join_etcd(drill, &n).await?;
        out.push_str("[etcd] Announced new etcd member joining to the existing etcd cluster\n[etcd] Waiting for the new etcd member to join the cluster\n");
        let own = vec![drill.client_url(&n)];
        wait_etcd_healthy(&own, Duration::from_secs(40))
            .await
            .map_err(|e| {
                Reply::err(
                    1,
                    format!("error execution phase control-plane-join/etcd: {e}\n"),
                )
            })?;
    }
    {
        let entry = drill.node_mut(node).map_err(drill_err)?;
        entry.joined = true;
    }
    set_kubelet(drill, node, true).await.map_err(drill_err)?;
    out.push_str(&format!(
        "[kubelet-start] Starting the kubelet\n\nThis node has joined the cluster{}:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.\n",
        if control_plane { " and a new control plane instance was created" } else { "" }
    ));
    Ok(Reply::ok(out))
}

/// The join's endpoint, token, CA hash and (with `--control-plane`) certificate key, from the
/// flags or a `--config` file, refused as kubeadm refuses them; returns whether the join is a
/// control-plane join.
fn check_join_secrets(drill: &Drill, args: &[String]) -> Result<bool, Reply> {
    let given = JoinArgs::read(args)?;
    let endpoint = given.endpoint.as_str();
    if endpoint != drill.api_endpoint() {
        return Err(Reply::err(
            1,
            format!("error execution phase preflight: couldn't validate the identity of the API Server: Get \"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info\": dial tcp {endpoint}: connect: connection refused\n"),
        ));
    }
    if given.token.as_deref() != Some(drill.token.as_str()) {
        return Err(Reply::err(
            1,
            "error execution phase preflight: couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID (the token is wrong or expired)\n",
        ));
    }
    if given.ca_cert_hash.as_deref() != Some(drill.ca_cert_hash.as_str()) {
        return Err(Reply::err(
            1,
            "error execution phase preflight: couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap does not match the --discovery-token-ca-cert-hash\n",
        ));
    }
    let control_plane = given.control_plane;
    if control_plane && given.certificate_key.as_deref() != Some(drill.certificate_key.as_str()) {
        return Err(Reply::err(
            1,
            "error execution phase control-plane-prepare/download-certs: error downloading certs: error decoding certificate key: the certificate key is wrong or the uploaded certificates expired\n",
        ));
    }
    Ok(control_plane)
}

/// kubeadm's preflight: the node is not joined, and no Ready Node of its name is registered.
async fn join_preflight(drill: &Drill, node: &str) -> Result<DrillNode, Reply> {
    let n = drill.node(node).map_err(drill_err)?.clone();
    if n.joined {
        return Err(Reply::err(
            1,
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists\n(run `kubeadm reset` first)\n",
        ));
    }
    if let Ok(nodes) = api_nodes(drill).await {
        if let Some(existing) = nodes.get(node) {
            let ready = existing["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if ready {
                return Err(Reply::err(
                    1,
                    format!("error execution phase kubelet-start: a Node with name \"{node}\" and status \"Ready\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node\n"),
                ));
            }
        }
    }
    Ok(n)
}

/// A control-plane join's etcd step: adds the node's member to the cluster and starts it
/// (saved at once: the member runs even if what follows fails).
async fn join_etcd(drill: &mut Drill, n: &DrillNode) -> Result<(), Reply> {
    let node = n.name.as_str();
    if drill.etcd_data_dir(node).join("member").exists() {
        return Err(Reply::err(
            1,
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty\n",
        ));
    }
    let endpoints = drill.live_etcd_endpoints(Some(node));
    let mut client = etcd_client(&endpoints).await.map_err(|e| {
        Reply::err(
            1,
            format!("error execution phase control-plane-join/etcd: {e}\n"),
        )
    })?;
    let added = add_member(&mut client, &drill.peer_url(n))
        .await
        .map_err(|e| {
            Reply::err(
                1,
                format!("error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: etcdserver: {e}\n"),
            )
        })?;
    let new_id = added.member().map(|m| m.id()).unwrap_or_default();
    let initial: Vec<String> = added
        .member_list()
        .iter()
        .map(|m| {
            let name = if m.id() == new_id { node } else { m.name() };
            format!("{name}={}", m.peer_urls().join(","))
        })
        .collect();
    drill
        .start_etcd(node, &initial.join(","), "existing")
        .map_err(drill_err)?;
    drill.save().map_err(drill_err)
}

async fn kubeadm_reset(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    if !flag(args, &["-f", "--force"]) {
        return Err(Reply::err(
            1,
            "[reset] Are you sure you want to proceed? [y/N]: aborted (no terminal; pass --force)\n",
        ));
    }
    let n = drill.node(node).map_err(drill_err)?.clone();
    let mut out = String::from("[preflight] Running pre-flight checks\n");
    // The member is looked up in the cluster, not from local traces: a join interrupted
    // between adding the member and starting it leaves an unstarted member and no data.
    if n.control_plane {
        let peer = drill.peer_url(&n);
        match etcd_client(&drill.live_etcd_endpoints(Some(node))).await {
            Ok(mut c) => {
                let members = c.member_list().await.map(|l| l.members().to_vec());
                let found = members.ok().and_then(|ms| {
                    ms.into_iter()
                        .find(|m| m.name() == node || m.peer_urls().contains(&peer))
                });
                if let Some(m) = found {
                    match c.member_remove(m.id()).await {
                        Ok(_) => out.push_str("[reset] Removed the etcd member of this node\n"),
                        Err(e) => out.push_str(&format!(
                            "[reset] Failed to remove etcd member: {e}; please manually remove this etcd member using etcdctl\n"
                        )),
                    }
                }
            }
            Err(e) => out.push_str(&format!(
                "[reset] Failed to remove etcd member: {e}; please manually remove this etcd member using etcdctl\n"
            )),
        }
    }
    drill.stop_etcd_async(node).await.map_err(drill_err)?;
    let _ = std::fs::remove_dir_all(drill.etcd_data_dir(node));
    if n.kubelet {
        // The kubelet is stopped while still joined, so the Node shows NotReady.
        set_kubelet(drill, node, false).await.map_err(drill_err)?;
    }
    drill.node_mut(node).map_err(drill_err)?.joined = false;
    out.push_str("[reset] Stopping the kubelet service\n[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]\n");
    Ok(Reply::ok(out))
}
