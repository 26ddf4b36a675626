//! The cluster inventory (`cluster.yaml`): nodes with addresses and roles, SSH settings with
//! per-node overrides, the kubeconfig, and etcd access.
//!
//! 1. [`Inventory::load`] reads the file with positions and reports every problem at once
//!    (unknown keys, duplicate names, missing identity files, host key checking turned off).
//! 2. Relative paths are resolved against the inventory file's directory.
//! 3. [`Inventory::select`] turns an `on:` selector (a node, a list, a role) into nodes.
//! 4. [`Inventory::template_value`] is what procedures see as `inventory`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use marked_yaml::{LoaderOptions, Node as YamlNode};
use serde::Serialize;

use crate::source::{closest, start_span, Diagnostic, Fields, Location, Reader};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("read inventory {path}: {source}; pass --inventory FILE (or set MEDIC_INVENTORY)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    crate::source::render_diagnostics("inventory: ", diags)
}

/// How the SSH client treats host keys. Turning checking off is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    /// The key must already be in known_hosts.
    Strict,
    /// Unknown hosts are added on first contact; a changed key is still refused.
    AcceptNew,
}

/// SSH settings; node entries override the inventory-wide ones field by field.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub jump_host: Option<String>,
    pub sudo: Option<bool>,
    pub host_key_checking: Option<HostKeyChecking>,
    pub connect_timeout_secs: Option<f64>,
    /// How long a master connection outlives the medic process that opened it, for the next
    /// one to reuse (`ssh.persist`); 0 closes it when medic exits.
    pub persist_secs: Option<u16>,
}

impl SshSettings {
    fn merged(&self, over: &SshSettings) -> SshSettings {
        SshSettings {
            user: over.user.clone().or_else(|| self.user.clone()),
            port: over.port.or(self.port),
            identity_file: over
                .identity_file
                .clone()
                .or_else(|| self.identity_file.clone()),
            known_hosts: over
                .known_hosts
                .clone()
                .or_else(|| self.known_hosts.clone()),
            jump_host: over.jump_host.clone().or_else(|| self.jump_host.clone()),
            sudo: over.sudo.or(self.sudo),
            host_key_checking: over.host_key_checking.or(self.host_key_checking),
            connect_timeout_secs: over.connect_timeout_secs.or(self.connect_timeout_secs),
            persist_secs: over.persist_secs.or(self.persist_secs),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeEntry {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    /// Effective SSH settings (inventory-wide merged with the node's own).
    pub ssh: SshSettings,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `direct` (default) or `ssh`.
    pub transport: Option<String>,
    /// The node to run `etcdctl` on for the ssh transport.
    pub via: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inventory {
    pub name: String,
    pub path: PathBuf,
    pub nodes: Vec<NodeEntry>,
    pub kubernetes: KubeSettings,
    pub etcd: EtcdSettings,
    /// Where `kubernetes.kubeconfig` is written, for a message when the file is missing.
    #[serde(skip)]
    pub kubeconfig_location: Option<Location>,
    /// `policy: {require_approval: true}`: every operation on this cluster needs an approval.
    #[serde(default)]
    pub require_approval: bool,
    /// `policy: {drift_recheck_after: 30m}`: a resume after a pause longer than this reads
    /// the drift facts again (default [`DEFAULT_DRIFT_RECHECK_SECS`]).
    pub drift_recheck_after_secs: f64,
    /// `notify:` webhooks (`notify/config.rs`).
    pub notify: Vec<crate::notify::config::NotifyTarget>,
}

/// How long a pause may last before `resume` checks the drift facts again, by default.
pub const DEFAULT_DRIFT_RECHECK_SECS: f64 = 30.0 * 60.0;

/// `policy:` of the inventory: `{require_approval: true, drift_recheck_after: 30m}`.
fn read_policy(n: &YamlNode, r: &mut Reader) -> (bool, f64) {
    let Some(f) = Fields::new(n, "policy", &["require_approval", "drift_recheck_after"], r) else {
        return (false, DEFAULT_DRIFT_RECHECK_SECS);
    };
    let require = f
        .get("require_approval")
        .and_then(|v| r.bool(v, "policy.require_approval"))
        .unwrap_or(false);
    let recheck = f
        .get("drift_recheck_after")
        .and_then(|v| r.duration(v, "policy.drift_recheck_after"))
        .unwrap_or(DEFAULT_DRIFT_RECHECK_SECS);
    (require, recheck)
}

/// Which nodes an action runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Nodes(Vec<String>),
    Role(String),
}

impl Selector {
    pub fn describe(&self) -> String {
        match self {
            Selector::Nodes(n) => n.join(","),
            Selector::Role(r) => format!("role={r}"),
        }
    }
}

const SSH_KEYS: &[&str] = &[
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "jump_host",
    "sudo",
    "host_key_checking",
    "connect_timeout",
    "persist",
];

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let bytes = crate::source::read_source(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = crate::source::decode_utf8(&path.display().to_string(), bytes)
            .map_err(|d| InventoryError::Invalid(vec![d]))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
        let label = path.display().to_string();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut r = Reader::new(&label);
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root =
            marked_yaml::parse_yaml_with_options(0, text.trim_start_matches('\u{feff}'), options)
                .map_err(|e| {
                InventoryError::Invalid(vec![Diagnostic {
                    location: None,
                    message: format!("{label}: invalid YAML: {e}"),
                }])
            })?;
        let inventory = read_inventory(&root, &mut r, &base, path);
        if !r.diagnostics.is_empty() {
            let mut diags = r.diagnostics;
            diags.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
            return Err(InventoryError::Invalid(diags));
        }
        Ok(inventory.expect("no diagnostics means it was read"))
    }

    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The nodes a selector names, in inventory order (a list keeps its own order).
    pub fn select(&self, selector: &Selector) -> Result<Vec<&NodeEntry>, String> {
        match selector {
            Selector::Nodes(names) => names
                .iter()
                .map(|n| {
                    self.node(n).ok_or_else(|| {
                        let hint = closest(n, self.nodes.iter().map(|x| x.name.as_str()))
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_else(|| {
                                format!(
                                    "; its nodes are {}",
                                    self.nodes
                                        .iter()
                                        .map(|x| x.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            });
                        format!(
                            "node `{n}` is not in the inventory {}{hint}",
                            self.path.display()
                        )
                    })
                })
                .collect(),
            Selector::Role(role) => {
                let nodes: Vec<&NodeEntry> = self
                    .nodes
                    .iter()
                    .filter(|n| n.roles.iter().any(|r| r == role))
                    .collect();
                if nodes.is_empty() {
                    let roles: BTreeSet<&str> = self
                        .nodes
                        .iter()
                        .flat_map(|n| n.roles.iter().map(|r| r.as_str()))
                        .collect();
                    return Err(format!(
                        "no node in the inventory {} has the role `{role}`; roles there: {}",
                        self.path.display(),
                        roles.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
                Ok(nodes)
            }
        }
    }

    /// What templates see as `inventory`.
    pub fn template_value(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "nodes": self.nodes.iter().map(|n| serde_json::json!({
                "name": n.name,
                "address": n.address,
                "roles": n.roles,
            })).collect::<Vec<_>>(),
            "etcd": {"endpoints": self.etcd.endpoints},
        })
    }
}

fn scalar_string(r: &mut Reader, node: &YamlNode, what: &str) -> Option<String> {
    r.scalar(node, what).map(|s| s.as_str().to_string())
}

fn path_value(r: &mut Reader, node: &YamlNode, what: &str, base: &Path) -> Option<PathBuf> {
    let s = scalar_string(r, node, what)?;
    let expanded = match s.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(&s),
    };
    Some(if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    })
}

/// A node address as ssh and the tools take it: a host name, an IPv4 or an IPv6 address. It
/// never starts with `-` (ssh would read it as an option) and holds no space or shell character.
pub fn check_host(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("it is empty; give a host name or an IP address".into());
    }
    if address.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if address.len() <= 253 && address.trim_end_matches('.').split('.').all(label_ok) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a host name, an IPv4 or an IPv6 address (letters, digits, `-`, `_` and dots; no leading `-`, spaces or shell characters)",
        address.escape_debug()
    ))
}

/// Letters, digits, `-`, `_` and `.`, starting with a character `first` accepts.
fn is_plain_name(s: &str, first: impl Fn(char) -> bool) -> bool {
    s.chars().next().is_some_and(first)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A node name: also used in phase IDs, log prefixes and `on:` selectors.
fn check_node_name(name: &str) -> Result<(), String> {
    if is_plain_name(name, |c| c.is_ascii_alphanumeric()) {
        return Ok(());
    }
    Err(format!(
        "`{}` must start with a letter or digit and hold only letters, digits, `-`, `_` and `.`",
        name.escape_debug()
    ))
}

/// A login name for `ssh -l`: never an option, no space or shell character.
fn check_user(user: &str) -> Result<(), String> {
    if is_plain_name(user, |c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a user name (letters, digits, `-`, `_`, `.`; not starting with `-`)",
        user.escape_debug()
    ))
}

/// `[user@]host[:port]`, as `ssh -J` takes it.
fn check_jump_host(jump: &str) -> Result<(), String> {
    let (user, rest) = match jump.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, jump),
    };
    if let Some(u) = user {
        check_user(u)?;
    }
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => h,
        _ => rest,
    };
    check_host(host.trim_start_matches('[').trim_end_matches(']'))
}

fn read_ssh(node: &YamlNode, r: &mut Reader, base: &Path, what: &str) -> SshSettings {
    let mut ssh = SshSettings::default();
    let Some(f) = Fields::new(node, what, SSH_KEYS, r) else {
        return ssh;
    };
    if let Some(n) = f.get("user") {
        ssh.user = scalar_string(r, n, "ssh.user");
        if let Some(Err(e)) = ssh.user.as_deref().map(check_user) {
            r.error(n.span(), format!("ssh.user: {e}"));
        }
    }
    if let Some(n) = f.get("port") {
        match r.uint(n, "ssh.port") {
            Some(p) if (1..=65535).contains(&p) => ssh.port = Some(p as u16),
            Some(p) => r.error(n.span(), format!("ssh.port must be 1-65535, not {p}")),
            None => {}
        }
    }
    if let Some(n) = f.get("identity_file") {
        if let Some(p) = path_value(r, n, "ssh.identity_file", base) {
            if !p.is_file() {
                r.error(
                    n.span(),
                    format!("ssh.identity_file {} does not exist", p.display()),
                );
            }
            ssh.identity_file = Some(p);
        }
    }
    if let Some(n) = f.get("known_hosts") {
        ssh.known_hosts = path_value(r, n, "ssh.known_hosts", base);
    }
    if let Some(n) = f.get("jump_host") {
        ssh.jump_host = scalar_string(r, n, "ssh.jump_host");
        if let Some(Err(e)) = ssh.jump_host.as_deref().map(check_jump_host) {
            r.error(n.span(), format!("ssh.jump_host: {e}"));
        }
    }
    if let Some(n) = f.get("sudo") {
        ssh.sudo = r.bool(n, "ssh.sudo");
    }
    if let Some(n) = f.get("connect_timeout") {
        ssh.connect_timeout_secs = r.duration(n, "ssh.connect_timeout");
    }
    if let Some(n) = f.get("persist") {
        ssh.persist_secs = read_persist(r, n);
    }
    if let Some(n) = f.get("host_key_checking") {
        if let Some(s) = r.scalar(n, "ssh.host_key_checking") {
            match s.as_str() {
                "strict" | "yes" => ssh.host_key_checking = Some(HostKeyChecking::Strict),
                "accept-new" => ssh.host_key_checking = Some(HostKeyChecking::AcceptNew),
                "no" | "off" | "false" | "accept" => r.error(
                    n.span(),
                    "ssh.host_key_checking cannot be turned off; use `strict` (the default) or `accept-new` to trust hosts on first contact",
                ),
                other => r.error(
                    n.span(),
                    format!("ssh.host_key_checking must be `strict` or `accept-new`, not `{other}`"),
                ),
            }
        }
    }
    ssh
}

/// The longest `ssh.persist`: a master stays authenticated to the host key it checked, so its
/// life is bounded.
pub(crate) const MAX_PERSIST_SECS: f64 = 3600.0;

fn read_persist(r: &mut Reader, n: &YamlNode) -> Option<u16> {
    let secs = r.duration_or_zero(n, "ssh.persist")?;
    if secs > MAX_PERSIST_SECS {
        r.error(
            n.span(),
            format!("ssh.persist must be at most 1h (a reused master does not check the host key again), not {secs}s"),
        );
        return None;
    }
    // Whole seconds, as ControlPersist takes them; a fraction rounds up.
    Some(secs.ceil() as u16)
}

fn read_inventory(root: &YamlNode, r: &mut Reader, base: &Path, path: &Path) -> Option<Inventory> {
    let f = Fields::new(
        root,
        "the inventory",
        &[
            "name",
            "ssh",
            "nodes",
            "kubernetes",
            "etcd",
            "policy",
            "notify",
        ],
        r,
    )?;
    let name = f
        .get("name")
        .and_then(|n| scalar_string(r, n, "name"))
        .unwrap_or_default();
    let defaults = match f.get("ssh") {
        Some(n) => read_ssh(n, r, base, "ssh"),
        None => SshSettings::default(),
    };
    let nodes = match f.get("nodes") {
        Some(YamlNode::Sequence(items)) => read_nodes(items, r, base, &defaults),
        Some(other) => {
            r.error(
                &start_span(other),
                "nodes must be a list of nodes (`- name: cp-1`)",
            );
            Vec::new()
        }
        None => {
            r.error(f.span(), "the inventory needs `nodes:`");
            Vec::new()
        }
    };
    let (kubernetes, kubeconfig_location) = match f.get("kubernetes") {
        Some(n) => read_kubernetes(n, r, base),
        None => (KubeSettings::default(), None),
    };
    let etcd = match f.get("etcd") {
        Some(n) => read_etcd(n, r, base, &nodes),
        None => EtcdSettings::default(),
    };
    let (require_approval, drift_recheck_after_secs) = f
        .get("policy")
        .map(|n| read_policy(n, r))
        .unwrap_or((false, DEFAULT_DRIFT_RECHECK_SECS));
    let notify = f
        .get("notify")
        .map(|n| crate::notify::config::read_targets(n, r))
        .unwrap_or_default();
    Some(Inventory {
        require_approval,
        drift_recheck_after_secs,
        notify,
        name,
        path: path.to_path_buf(),
        nodes,
        kubernetes,
        etcd,
        kubeconfig_location,
    })
}

/// The `nodes:` list: each node with the inventory's SSH defaults merged under its own.
fn read_nodes(
    items: &[YamlNode],
    r: &mut Reader,
    base: &Path,
    defaults: &SshSettings,
) -> Vec<NodeEntry> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    items
        .iter()
        .filter_map(|item| read_node(item, r, base, defaults, &mut seen))
        .collect()
}

/// One node of `nodes:`; `seen` maps the names read so far to their lines.
fn read_node(
    item: &YamlNode,
    r: &mut Reader,
    base: &Path,
    defaults: &SshSettings,
    seen: &mut BTreeMap<String, usize>,
) -> Option<NodeEntry> {
    let nf = Fields::new(item, "a node", &["name", "address", "roles", "ssh"], r)?;
    let Some(name_node) = nf.get("name") else {
        r.error(nf.span(), "every node needs a `name:`");
        return None;
    };
    let name = scalar_string(r, name_node, "node name")?;
    if let Err(e) = check_node_name(&name) {
        r.error(name_node.span(), format!("node name: {e}"));
    }
    let line = r.location(name_node.span()).line;
    if let Some(first) = seen.insert(name.clone(), line) {
        r.error(
            name_node.span(),
            format!("duplicate node name `{name}` (first at line {first})"),
        );
    }
    let address = match nf.get("address") {
        Some(n) => {
            let address = scalar_string(r, n, "address").unwrap_or_default();
            if let Err(e) = check_host(&address) {
                r.error(n.span(), format!("address of node `{name}`: {e}"));
            }
            address
        }
        None => name.clone(),
    };
    let roles = match nf.get("roles") {
        Some(YamlNode::Sequence(rs)) => rs
            .iter()
            .filter_map(|x| scalar_string(r, x, "role"))
            .collect(),
        Some(n) => scalar_string(r, n, "roles")
            .map(|s| vec![s])
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let own = match nf.get("ssh") {
        Some(n) => read_ssh(n, r, base, &format!("ssh of node `{name}`")),
        None => SshSettings::default(),
    };
    Some(NodeEntry {
        name,
        address,
        roles,
        ssh: defaults.merged(&own),
    })
}

/// `kubernetes:` and where its kubeconfig was named (for errors about a missing file).
fn read_kubernetes(n: &YamlNode, r: &mut Reader, base: &Path) -> (KubeSettings, Option<Location>) {
    let mut kubernetes = KubeSettings::default();
    let mut kubeconfig_location = None;
    if let Some(kf) = Fields::new(n, "kubernetes", &["kubeconfig", "context"], r) {
        if let Some(k) = kf.get("kubeconfig") {
            kubernetes.kubeconfig = path_value(r, k, "kubernetes.kubeconfig", base);
            kubeconfig_location = Some(r.location(k.span()));
        }
        if let Some(c) = kf.get("context") {
            kubernetes.context = scalar_string(r, c, "kubernetes.context");
        }
    }
    (kubernetes, kubeconfig_location)
}

/// `etcd:`; `via` must name one of `nodes`.
fn read_etcd(n: &YamlNode, r: &mut Reader, base: &Path, nodes: &[NodeEntry]) -> EtcdSettings {
    let mut etcd = EtcdSettings::default();
    if let Some(ef) = Fields::new(
        n,
        "etcd",
        &["endpoints", "ca", "cert", "key", "transport", "via"],
        r,
    ) {
        if let Some(e) = ef.get("endpoints") {
            etcd.endpoints = match e {
                YamlNode::Sequence(items) => items
                    .iter()
                    .filter_map(|x| scalar_string(r, x, "endpoint"))
                    .collect(),
                other => scalar_string(r, other, "endpoints")
                    .map(|s| vec![s])
                    .unwrap_or_default(),
            };
        }
        for (key, slot) in [
            ("ca", &mut etcd.ca),
            ("cert", &mut etcd.cert),
            ("key", &mut etcd.key),
        ] {
            if let Some(p) = ef.get(key) {
                *slot = path_value(r, p, &format!("etcd.{key}"), base);
            }
        }
        if let Some(t) = ef.get("transport") {
            if let Some(s) = scalar_string(r, t, "etcd.transport") {
                if s != "direct" && s != "ssh" {
                    r.error(
                        t.span(),
                        format!("etcd.transport must be `direct` or `ssh`, not `{s}`"),
                    );
                }
                etcd.transport = Some(s);
            }
        }
        if let Some(v) = ef.get("via") {
            etcd.via = scalar_string(r, v, "etcd.via");
            if let Some(via) = &etcd.via {
                if !nodes.iter().any(|x| &x.name == via) {
                    r.error(
                        v.span(),
                        format!("etcd.via names `{via}`, which is not a node of this inventory"),
                    );
                }
            }
        }
    }
    etcd
}

/// Why the kubeconfig that kube phases would use is missing, if it is: the inventory's
/// `kubernetes.kubeconfig`, else `KUBECONFIG`, else `~/.kube/config` (as the kube client
/// looks for it). Checked when an operation with kube phases is created, not when its first
/// kube phase runs.
pub fn missing_kubeconfig(inventory: Option<&Inventory>) -> Option<String> {
    if let Some(path) = inventory.and_then(|i| i.kubernetes.kubeconfig.as_ref()) {
        if path.is_file() {
            return None;
        }
        let at = inventory
            .and_then(|i| i.kubeconfig_location.as_ref())
            .map(|l| format!("{l}: "))
            .unwrap_or_default();
        return Some(format!(
            "{at}kubernetes.kubeconfig {} does not exist, and this plan has kube phases; fix the path in the inventory",
            path.display()
        ));
    }
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => {
            let paths: Vec<PathBuf> = std::env::split_paths(&list).collect();
            if paths.iter().any(|p| p.is_file()) {
                return None;
            }
            Some(format!(
                "KUBECONFIG names {}, which does not exist, and this plan has kube phases; point KUBECONFIG at a kubeconfig, or set kubernetes.kubeconfig in the inventory",
                paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        }
        None => {
            let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
            if default.as_ref().is_some_and(|p| p.is_file()) {
                return None;
            }
            Some(format!(
                "this plan has kube phases but there is no kubeconfig: the inventory names none (kubernetes.kubeconfig), KUBECONFIG is not set and {} does not exist; set one of them",
                default.map(|p| p.display().to_string()).unwrap_or_else(|| "~/.kube/config".into())
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, Vec<String>> {
        Inventory::parse(Path::new("/tmp/cluster.yaml"), text).map_err(|e| match e {
            InventoryError::Invalid(d) => d.into_iter().map(|d| d.to_string()).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn node_settings_override_the_defaults_and_roles_select() {
        let inv = parse(
            "name: c\nssh: {user: ops, port: 22, host_key_checking: accept-new}\nnodes:\n  - {name: cp-1, address: 10.0.0.1, roles: [control-plane, etcd]}\n  - {name: w-1, address: 10.0.0.2, roles: [worker], ssh: {user: root, port: 2222}}\n",
        )
        .unwrap();
        assert_eq!(inv.nodes[0].ssh.user.as_deref(), Some("ops"));
        assert_eq!(inv.nodes[1].ssh.user.as_deref(), Some("root"));
        assert_eq!(inv.nodes[1].ssh.port, Some(2222));
        assert_eq!(
            inv.nodes[1].ssh.host_key_checking,
            Some(HostKeyChecking::AcceptNew)
        );
        let workers = inv.select(&Selector::Role("worker".into())).unwrap();
        assert_eq!(
            workers.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["w-1"]
        );
        assert!(inv
            .select(&Selector::Nodes(vec!["cp-2".into()]))
            .unwrap_err()
            .contains("did you mean `cp-1`?"));
        assert!(inv
            .select(&Selector::Role("db".into()))
            .unwrap_err()
            .contains("roles there: control-plane, etcd, worker"));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let errs = parse(
            "name: c\nssh:\n  host_key_checking: no\n  identity_file: /nonexistent/key\nnodes:\n  - name: a\n  - name: a\n    adress: x\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].contains("cluster.yaml:3:22: ssh.host_key_checking cannot be turned off"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains(":4:18: ssh.identity_file /nonexistent/key does not exist"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains(":7:11: duplicate node name `a` (first at line 6)"),
            "{errs:?}"
        );
        assert!(
            errs[3].contains(":8:5: unknown key `adress` in a node; did you mean `address`?"),
            "{errs:?}"
        );
    }

    #[test]
    fn ssh_persist_is_a_bounded_duration_a_node_may_override() {
        let inv = parse(
            "name: c\nssh: {persist: 2m}\nnodes:\n  - {name: a, address: 10.0.0.1}\n  - {name: b, address: 10.0.0.2, ssh: {persist: 0}}\n",
        )
        .unwrap();
        assert_eq!(inv.nodes[0].ssh.persist_secs, Some(120));
        assert_eq!(inv.nodes[1].ssh.persist_secs, Some(0));
        let errs = parse("name: c\nssh: {persist: 2h}\nnodes: []\n").unwrap_err();
        assert!(
            errs[0].contains(":2:16: ssh.persist must be at most 1h"),
            "{errs:?}"
        );
    }
}
