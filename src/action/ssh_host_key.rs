//! `ssh_host_key`: the SSH host key a node offers, checked before medic connects to it — for a
//! machine reinstalled in place, which comes back with a new key that strict checking refuses.
//!
//! ```yaml
//! ssh_host_key: {node: "{{ replacement or node }}", expect: "{{ replacement_host_key }}"}
//! ```
//!
//! 1. The node's keys are read as `ssh-keyscan` reads them, and their SHA256 fingerprints
//!    compared with what the known_hosts files ssh uses already trust for its address: the
//!    inventory's (or the user's `~/.ssh/known_hosts`, read only) and medic's own.
//! 2. A key already trusted passes. A key that is not passes only when `expect` names its
//!    fingerprint (got out of band): it is then written to medic's own known_hosts file
//!    (`STATE_DIR/known_hosts`, which every ssh connection of medic also reads) and the result
//!    and history name the old and new fingerprints. Anything else fails (exit 1) with the
//!    offered fingerprints and what to do. Never `accept-new` silently; the user's
//!    known_hosts is never written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::{Action, ActionCtx, ActionError, ActionOutput, RenderScope, Stream};
use crate::inventory::{HostKeyChecking, NodeEntry};
use crate::source::{Fields, Reader, TemplateKind};

/// The file name of medic's own known_hosts in the state directory.
const KEYSCAN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SshHostKeySpec {
    pub node: String,
    /// The SHA256 fingerprint the operator expects (`SHA256:…`); empty: only keys already
    /// trusted pass.
    pub expect: String,
}

/// One host key: its type, its SHA256 fingerprint, and its known_hosts line.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct HostKey {
    kind: String,
    fingerprint: String,
    #[serde(skip)]
    line: String,
}

/// How known_hosts names the node: `ADDRESS`, or `[ADDRESS]:PORT` off port 22.
fn host_pattern(node: &NodeEntry) -> String {
    match node.ssh.port {
        Some(p) if p != 22 => format!("[{}]:{p}", node.address),
        _ => node.address.clone(),
    }
}

/// The known_hosts files ssh consults for the node (those that exist).
fn consulted_files(node: &NodeEntry) -> Vec<PathBuf> {
    let user =
        node.ssh.known_hosts.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
        });
    user.into_iter()
        .chain(crate::ssh::medic_file())
        .filter(|p| p.is_file())
        .collect()
}

/// `expect` as a fingerprint: `SHA256:` prefixed, base64 without padding.
fn normalize(expect: &str) -> String {
    let e = expect.trim().trim_end_matches('=');
    if e.starts_with("SHA256:") {
        e.to_string()
    } else {
        format!("SHA256:{e}")
    }
}

async fn output_of(cmd: &mut tokio::process::Command, what: &str) -> Result<String, ActionError> {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(KEYSCAN_TIMEOUT, cmd.output())
        .await
        .map_err(|_| ActionError::Failed {
            message: format!("{what}: no answer within {}s", KEYSCAN_TIMEOUT.as_secs()),
        })?
        .map_err(|e| ActionError::Failed {
            message: format!("{what}: {e} (install openssh-client)"),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fingerprints of known_hosts-format `lines` (`HOST TYPE BASE64`), through `ssh-keygen -lf -`.
async fn fingerprints(lines: &[String]) -> Result<Vec<HostKey>, ActionError> {
    let mut keys = Vec::new();
    for line in lines {
        let mut cmd = tokio::process::Command::new("ssh-keygen");
        cmd.args(["-l", "-E", "sha256", "-f", "/dev/stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| ActionError::Failed {
            message: format!("ssh-keygen: {e} (install openssh-client)"),
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| ActionError::Failed {
                message: format!("ssh-keygen: {e}"),
            })?;
        // `256 SHA256:… HOST (ED25519)`
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if let (Some(fp), Some(kind)) = (fields.get(1), fields.last()) {
            keys.push(HostKey {
                kind: kind.trim_matches(|c| c == '(' || c == ')').to_lowercase(),
                fingerprint: fp.to_string(),
                line: line.clone(),
            });
        }
    }
    Ok(keys)
}

/// The keys the node offers now, as `ssh-keyscan` reads them.
async fn offered_keys(node: &NodeEntry) -> Result<Vec<HostKey>, ActionError> {
    let port = node.ssh.port.unwrap_or(22).to_string();
    let text = output_of(
        tokio::process::Command::new("ssh-keyscan")
            .args(["-T", "5", "-p", &port])
            .arg(&node.address)
            .stderr(std::process::Stdio::null()),
        "ssh-keyscan",
    )
    .await?;
    let host = host_pattern(node);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, key) = (f.next()?, f.next()?, f.next()?);
            Some(format!("{host} {kind} {key}"))
        })
        .collect();
    fingerprints(&lines).await
}

/// The keys the consulted known_hosts files hold for the node (`ssh-keygen -F`, which also
/// finds hashed entries), with the file each is in.
async fn known_keys(node: &NodeEntry) -> Result<Vec<(HostKey, PathBuf)>, ActionError> {
    let mut out = Vec::new();
    for file in consulted_files(node) {
        let text = output_of(
            tokio::process::Command::new("ssh-keygen")
                .arg("-F")
                .arg(host_pattern(node))
                .arg("-f")
                .arg(&file)
                .stderr(std::process::Stdio::null()),
            "ssh-keygen -F",
        )
        .await?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(String::from)
            .collect();
        for key in fingerprints(&lines).await? {
            out.push((key, file.clone()));
        }
    }
    Ok(out)
}

/// Appends a trusted key to medic's own known_hosts (created 0600).
fn trust(file: &Path, key: &HostKey) -> Result<(), ActionError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| {
            writeln!(f, "{}", key.line)?;
            f.sync_all()
        })
        .map_err(|e| ActionError::Failed {
            message: format!("write medic's known_hosts {}: {e}", file.display()),
        })
}

fn list(keys: &[HostKey]) -> String {
    keys.iter()
        .map(|k| format!("{} ({})", k.fingerprint, k.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SshHostKeySpec {
    fn node_entry(&self, scope: &RenderScope<'_>) -> Result<NodeEntry, ActionError> {
        let name = scope.render("ssh_host_key.node", &self.node, false)?;
        let Some(inventory) = scope.inventory else {
            return Err(ActionError::Failed {
                message: "ssh_host_key needs an inventory; pass --inventory FILE (or set MEDIC_INVENTORY)".into(),
            });
        };
        inventory
            .node(&name)
            .cloned()
            .ok_or_else(|| ActionError::Failed {
                message: format!("ssh_host_key: node `{name}` is not in the inventory"),
            })
    }

    /// The failure when the offered key is not trusted and not the expected one.
    fn untrusted(
        node: &NodeEntry,
        offered: &[HostKey],
        known: &[(HostKey, PathBuf)],
        expect: Option<&str>,
    ) -> ActionError {
        let was = if known.is_empty() {
            "no key was known for it".to_string()
        } else {
            let old: Vec<HostKey> = known.iter().map(|(k, _)| k.clone()).collect();
            format!("it was known with {}", list(&old))
        };
        let problem = match expect {
            Some(e) => format!(
                "which is not the expected {e}: do not go on. The machine may not be the one that was provisioned, or someone intercepts the connection; compare the fingerprint on the machine's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)"
            ),
            None => "which is not trusted. If the machine was reinstalled, read its fingerprint on its console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and, if it is this one, start the operation again with --set replacement_host_key=SHA256:…".to_string(),
        };
        ActionError::Failed {
            message: format!(
                "node {} ({}) offers the SSH host key {} ({was}), {problem}",
                node.name,
                host_pattern(node),
                list(offered)
            ),
        }
    }
}

impl Action for SshHostKeySpec {
    const KIND: &'static str = "ssh_host_key";
    const IDEMPOTENT: bool = true;
    const INLINE: bool = false;
    const NEEDS_INVENTORY: bool = true;

    fn parse(node: &Node, reader: &mut Reader) -> Option<Self> {
        let fields = Fields::new(node, "ssh_host_key", &["node", "expect"], reader)?;
        let node = match fields.get("node") {
            Some(n) => {
                let s = reader.scalar(n, "ssh_host_key.node")?;
                reader.template(s, TemplateKind::Text)
            }
            None => {
                reader.error(
                    fields.span(),
                    "ssh_host_key needs `node:`, the inventory node whose host key is checked",
                );
                return None;
            }
        };
        let expect = match fields.get("expect") {
            Some(n) => {
                let s = reader.scalar(n, "ssh_host_key.expect")?;
                reader.template(s, TemplateKind::Text)
            }
            None => String::new(),
        };
        Some(SshHostKeySpec { node, expect })
    }

    fn target(&self) -> Option<String> {
        Some(self.node.clone())
    }

    fn check_targets(&self, scope: &RenderScope<'_>) -> Result<(), ActionError> {
        if scope.uses_pending(&self.node) {
            return Ok(());
        }
        self.node_entry(scope).map(|_| ())
    }

    fn describe(&self, scope: &RenderScope<'_>) -> Result<Vec<String>, ActionError> {
        let expect = scope.render("ssh_host_key.expect", &self.expect, false)?;
        let (name, at, file) = match self.node_entry(scope) {
            Ok(n) => (
                n.name.clone(),
                host_pattern(&n),
                crate::ssh::medic_file()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| crate::ssh::MEDIC_KNOWN_HOSTS.to_string()),
            ),
            Err(_) => (
                scope.render("ssh_host_key.node", &self.node, false)?,
                "its address".to_string(),
                crate::ssh::MEDIC_KNOWN_HOSTS.to_string(),
            ),
        };
        let then = if expect.trim().is_empty() {
            "it must already be trusted (no expected fingerprint given)".to_string()
        } else {
            format!(
                "a key not trusted yet must be {}, and is then trusted in {file}",
                normalize(&expect)
            )
        };
        Ok(vec![format!(
            "read the SSH host key {name} offers at {at} (as ssh-keyscan does): {then}"
        )])
    }

    async fn execute(&self, ctx: &ActionCtx<'_>) -> Result<ActionOutput, ActionError> {
        let node = self.node_entry(ctx.scope)?;
        let expect = ctx
            .scope
            .render("ssh_host_key.expect", &self.expect, false)?;
        let expect = (!expect.trim().is_empty()).then(|| normalize(&expect));
        if let Some(jump) = &node.ssh.jump_host {
            return Err(ActionError::Failed {
                message: format!("ssh_host_key cannot read the host key of {} through the jump host {jump}; compare the fingerprint on the machine's console and add it to the inventory's known_hosts", node.name),
            });
        }
        let offered = offered_keys(&node).await?;
        if offered.is_empty() {
            return Err(ActionError::Failed {
                message: format!(
                    "node {} ({}) offered no SSH host key (is sshd running there?)",
                    node.name,
                    host_pattern(&node)
                ),
            });
        }
        ctx.emit(
            Stream::Medic,
            &format!("{} offers {}", node.name, list(&offered)),
        );
        let known = known_keys(&node).await?;
        let trusted = offered
            .iter()
            .find(|o| known.iter().any(|(k, _)| k.fingerprint == o.fingerprint));
        let old: Vec<HostKey> = known.iter().map(|(k, _)| k.clone()).collect();
        let mut result = serde_json::json!({
            "node": node.name,
            "host": host_pattern(&node),
            "offered": offered,
            "known": old,
        });
        if let Some(key) = trusted.filter(|k| expect.as_ref().is_none_or(|e| *e == k.fingerprint)) {
            result["trusted"] = key.fingerprint.clone().into();
            return Ok(ActionOutput {
                result,
                summary: Some(format!(
                    "{} offers {} ({}), already trusted",
                    node.name, key.fingerprint, key.kind
                )),
            });
        }
        let unknown_host = known.is_empty()
            && node.ssh.host_key_checking == Some(HostKeyChecking::AcceptNew)
            && expect.is_none();
        if unknown_host {
            return Ok(ActionOutput {
                result,
                summary: Some(format!(
                    "{} offers {}; no key is known for it, and the inventory accepts a new host on first contact",
                    node.name,
                    list(&offered)
                )),
            });
        }
        let Some(key) = offered
            .iter()
            .find(|o| expect.as_ref().is_some_and(|e| *e == o.fingerprint))
        else {
            return Err(Self::untrusted(&node, &offered, &known, expect.as_deref()));
        };
        let Some(file) = crate::ssh::medic_file() else {
            return Err(ActionError::Failed {
                message: "ssh_host_key: medic's own known_hosts is not set (no state directory)"
                    .into(),
            });
        };
        trust(&file, key)?;
        result["trusted"] = key.fingerprint.clone().into();
        result["file"] = file.display().to_string().into();
        let was = if old.is_empty() {
            "no key was known before".to_string()
        } else {
            format!("replaces {}", list(&old))
        };
        Ok(ActionOutput {
            result,
            summary: Some(format!(
                "trusted the new SSH host key of {} ({}): {} ({}), as replacement_host_key said; {was}; written to {}",
                node.name,
                host_pattern(&node),
                key.fingerprint,
                key.kind,
                file.display()
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_accepted_with_or_without_its_prefix_and_padding() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(normalize(fp), fp);
        assert_eq!(normalize(&fp["SHA256:".len()..]), fp);
        assert_eq!(normalize(&format!(" {fp}= ")), fp);
    }
}
