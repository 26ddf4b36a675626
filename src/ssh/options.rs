//! The `ssh` command line of a node's master connection, built in one place, and the key that
//! names its control socket.
//!
//! 1. [`known_hosts_files`] lists the files host keys are checked against: the inventory's, or
//!    the user's own. Another trust source (e.g. a known-hosts file medic writes itself) is
//!    added there, and every master and socket name follows.
//! 2. [`connection_args`] turns a node's settings into ssh options: login, port, identity
//!    (with `IdentitiesOnly=yes`, so an agent full of other keys cannot use up the server's
//!    `MaxAuthTries`), known-hosts files, host-key policy, jump host, timeouts.
//! 3. [`socket_key`] hashes those options, the destination and the known-hosts files' contents:
//!    a master is reused only by a connection that would have been made exactly the same way,
//!    and a changed trust file (a key removed, a new key trusted) makes a new master.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::inventory::{HostKeyChecking, NodeEntry};

/// Probes a master sends while idle: a host that went away (rebooted, reinstalled) ends the
/// master within about 3 × this, so the next connection checks the host key afresh.
pub(crate) const SERVER_ALIVE_SECS: u64 = 5;
pub(crate) const DEFAULT_CONNECT_TIMEOUT_SECS: f64 = 10.0;

/// The name of medic's own known_hosts in the state directory.
pub(crate) const MEDIC_KNOWN_HOSTS: &str = "known_hosts";

/// medic's own known_hosts (`STATE_DIR/known_hosts`). Process-wide, as the state directory
/// is: every node entry carrying it would make each one bigger for one path.
static MEDIC_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every ssh connection of this process read medic's own known_hosts in `state_dir`
/// besides the inventory's (or the user's) own, and `ssh_host_key` trust keys there.
pub(crate) fn use_medic_known_hosts(state_dir: &Path) {
    let _ = MEDIC_FILE.set(state_dir.join(MEDIC_KNOWN_HOSTS));
}

pub(crate) fn medic_file() -> Option<PathBuf> {
    MEDIC_FILE.get().cloned()
}

/// medic's own known_hosts when it exists: ssh reads it besides the node's own files
/// ([`known_hosts_files`]).
pub(crate) fn medic_known_hosts() -> Option<PathBuf> {
    medic_file().filter(|p| p.is_file())
}

/// The known-hosts files ssh checks the node's host key against: the inventory's (or the
/// user's own), and medic's own file of keys trusted by `ssh_host_key` once it exists.
pub(crate) fn known_hosts_files(node: &NodeEntry) -> Vec<PathBuf> {
    files_with(node, medic_known_hosts())
}

fn files_with(node: &NodeEntry, medic: Option<PathBuf>) -> Vec<PathBuf> {
    let mut files = match &node.ssh.known_hosts {
        Some(path) => vec![path.clone()],
        None => std::env::var_os("HOME")
            .map(|home| {
                let ssh = PathBuf::from(home).join(".ssh");
                // ssh's own default when UserKnownHostsFile is not given.
                let mut files = vec![ssh.join("known_hosts")];
                if medic.is_some() {
                    files.push(ssh.join("known_hosts2"));
                }
                files
            })
            .unwrap_or_default(),
    };
    files.extend(medic);
    files
}

/// Whether ssh is told which known-hosts files to read (the inventory names one, or medic's
/// own file exists) rather than left to its defaults and `~/.ssh/config`.
fn known_hosts_configured(node: &NodeEntry) -> bool {
    node.ssh.known_hosts.is_some() || medic_known_hosts().is_some()
}

/// The connect timeout ssh gets, in seconds.
pub(crate) fn connect_timeout(node: &NodeEntry) -> f64 {
    node.ssh
        .connect_timeout_secs
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS)
        .max(1.0)
}

/// Every ssh option that decides where and how the node is reached and trusted (everything but
/// the control socket, its lifetime and the destination).
pub(crate) fn connection_args(node: &NodeEntry) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut opt = |o: String| {
        args.push("-o".into());
        args.push(o.into());
    };
    opt("BatchMode=yes".into());
    opt(match node.ssh.host_key_checking {
        Some(HostKeyChecking::AcceptNew) => "StrictHostKeyChecking=accept-new".into(),
        _ => "StrictHostKeyChecking=yes".into(),
    });
    opt(format!(
        "ConnectTimeout={}",
        connect_timeout(node).ceil() as u64
    ));
    opt(format!("ServerAliveInterval={SERVER_ALIVE_SECS}"));
    if node.ssh.identity_file.is_some() {
        opt("IdentitiesOnly=yes".into());
    }
    if known_hosts_configured(node) {
        let files: Vec<String> = known_hosts_files(node)
            .iter()
            .map(|p| quote_config_word(&p.to_string_lossy()))
            .collect();
        opt(format!("UserKnownHostsFile={}", files.join(" ")));
    }
    if let Some(user) = &node.ssh.user {
        args.extend(["-l".into(), user.into()]);
    }
    if let Some(port) = node.ssh.port {
        args.extend(["-p".into(), port.to_string().into()]);
    }
    if let Some(key) = &node.ssh.identity_file {
        args.extend(["-i".into(), key.into()]);
    }
    if let Some(jump) = &node.ssh.jump_host {
        args.extend(["-J".into(), jump.into()]);
    }
    args
}

/// A path as one word of an ssh option value (which ssh splits at spaces).
fn quote_config_word(path: &str) -> String {
    if path.contains(char::is_whitespace) || path.contains('"') {
        format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        path.to_string()
    }
}

/// A short hex name for the node's control socket: the same only for the same options,
/// destination and known-hosts contents.
pub(crate) fn socket_key(node: &NodeEntry) -> String {
    let mut h = Sha256::new();
    for arg in connection_args(node) {
        h.update(arg.as_encoded_bytes());
        h.update([0]);
    }
    h.update(node.address.as_bytes());
    h.update([0]);
    for file in known_hosts_files(node) {
        h.update(file.as_os_str().as_encoded_bytes());
        h.update([0]);
        // A missing file hashes as empty: creating it (accept-new) changes the key.
        h.update(std::fs::read(&file).unwrap_or_default());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::SshSettings;

    fn node(ssh: SshSettings) -> NodeEntry {
        NodeEntry {
            name: "n1".into(),
            address: "10.0.0.1".into(),
            roles: vec![],
            ssh,
        }
    }

    #[test]
    fn an_identity_file_comes_with_identities_only() {
        let with = connection_args(&node(SshSettings {
            identity_file: Some("/k".into()),
            ..Default::default()
        }));
        assert!(with.contains(&OsString::from("IdentitiesOnly=yes")));
        let without = connection_args(&node(SshSettings::default()));
        assert!(!without.contains(&OsString::from("IdentitiesOnly=yes")));
    }

    #[test]
    fn the_socket_key_changes_with_every_setting_and_the_known_hosts_contents() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("kh");
        std::fs::write(&kh, "a\n").unwrap();
        let base = SshSettings {
            user: Some("ops".into()),
            port: Some(22),
            identity_file: Some("/k".into()),
            known_hosts: Some(kh.clone()),
            ..Default::default()
        };
        let key = socket_key(&node(base.clone()));
        assert_eq!(key.len(), 20);
        assert_eq!(key, socket_key(&node(base.clone())));
        let variants = [
            SshSettings {
                user: Some("root".into()),
                ..base.clone()
            },
            SshSettings {
                port: Some(2222),
                ..base.clone()
            },
            SshSettings {
                identity_file: Some("/other".into()),
                ..base.clone()
            },
            SshSettings {
                jump_host: Some("bastion".into()),
                ..base.clone()
            },
            SshSettings {
                known_hosts: Some(dir.path().join("other")),
                ..base.clone()
            },
            SshSettings {
                host_key_checking: Some(HostKeyChecking::AcceptNew),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(key, socket_key(&node(v.clone())), "{v:?}");
        }
        let mut other_address = node(base.clone());
        other_address.address = "10.0.0.2".into();
        assert_ne!(key, socket_key(&other_address));
        std::fs::write(&kh, "b\n").unwrap();
        assert_ne!(key, socket_key(&node(base)), "known_hosts contents changed");
    }

    #[test]
    fn medics_own_file_is_read_besides_the_inventorys_or_the_users() {
        let medic = PathBuf::from("/state/known_hosts");
        let mut n = NodeEntry {
            name: "n".into(),
            address: "10.0.0.1".into(),
            roles: vec![],
            ssh: Default::default(),
        };
        n.ssh.known_hosts = Some(PathBuf::from("/inv/kh"));
        assert_eq!(files_with(&n, None), [PathBuf::from("/inv/kh")]);
        assert_eq!(
            files_with(&n, Some(medic.clone())),
            [PathBuf::from("/inv/kh"), medic.clone()]
        );
        n.ssh.known_hosts = None;
        let files = files_with(&n, Some(medic.clone()));
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files[0].ends_with(".ssh/known_hosts"));
        assert!(files[1].ends_with(".ssh/known_hosts2"));
        assert_eq!(files[2], medic);
    }

    #[test]
    fn a_known_hosts_path_with_a_space_is_one_word() {
        assert_eq!(quote_config_word("/a b/kh"), "\"/a b/kh\"");
        assert_eq!(quote_config_word("/a/kh"), "/a/kh");
    }
}
