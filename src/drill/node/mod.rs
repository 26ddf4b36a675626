//! What a drill node's commands do: `systemctl`, `kubeadm`, `apt-get`, `apt-mark`, `kubelet` and
//! `ss` on a drill node are shims (`DIR/bin/…`, first on the node shell's PATH) that run
//! `medic drill node TOOL ARGS…`, which changes the drill as the real command would change a
//! kubeadm cluster:
//!
//! 1. `systemctl stop|start|restart kubelet` → the Node turns NotReady / Ready (at the installed
//!    kubelet's version); a started kubelet restarts the node's etcd member (a static pod).
//! 2. `kubeadm join` (token and CA hash checked) registers the Node; with `--control-plane`
//!    (certificate key checked) it first adds and starts the node's etcd member.
//!    `kubeadm reset` undoes a join (removing the etcd member); `kubeadm upgrade apply|node`
//!    need the kubeadm package at the target version.
//! 3. `systemctl stop|start etcd` stops and starts the node's etcd member (`etcd_unit.rs`).
//!    The node shell gives each session its own mount namespace (as root, with `unshare`) in
//!    which `/var/lib/etcd` is the node's etcd data dir, so `etcdctl snapshot restore
//!    --data-dir /var/lib/etcd/...` or wiping it acts on that node of the drill only.
//! 4. `apt-get install PKG=VERSION` changes package versions from the drill's repository, with
//!    apt's refusals (held packages, downgrades) and the `upgrade-fails` break.
//! 5. `ss -ltn` answers the node's own listening sockets (`ports.rs`), read-only.
//!
//! Procedures stay written for kubeadm; nothing in them knows about the drill.

use std::path::PathBuf;

use super::error::DrillError;
use super::state::{write_file, Drill, DrillLock};
use crate::template::shell_quote;

mod apt;
mod etcd_unit;
pub(crate) mod host;
mod join_config;
mod kubeadm;
mod ports;
mod systemctl;

use apt::{apt_get, apt_mark};
use kubeadm::kubeadm;
use systemctl::{kubelet, systemctl};

/// The commands the drill's node shell runs through medic.
/// (`ss` answers the node's own listening sockets: `ports.rs`.)
pub(crate) const SHIMMED: &[&str] = &[
    "systemctl",
    "kubeadm",
    "apt-get",
    "apt-mark",
    "kubelet",
    "ss",
];

/// What a node command printed and its exit code.
pub(crate) struct Reply {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) code: i32,
}

impl Reply {
    fn ok(stdout: impl Into<String>) -> Reply {
        Reply {
            stdout: stdout.into(),
            stderr: String::new(),
            code: 0,
        }
    }

    fn err(code: i32, stderr: impl Into<String>) -> Reply {
        Reply {
            stdout: String::new(),
            stderr: stderr.into(),
            code,
        }
    }
}

/// Runs `tool args` as node `$MEDIC_DRILL_NODE` of the drill in `$MEDIC_DRILL_DIR`.
pub(crate) async fn run(tool: &str, args: &[String]) -> Reply {
    let (Ok(dir), Ok(node)) = (
        std::env::var("MEDIC_DRILL_DIR"),
        std::env::var("MEDIC_DRILL_NODE"),
    ) else {
        return Reply::err(
            2,
            "medic drill node: run on a drill node (MEDIC_DRILL_DIR and MEDIC_DRILL_NODE are set by its shell)\n",
        );
    };
    let dir = PathBuf::from(dir);
    if tool == "ss" {
        // Read-only: no lock (drill.json is replaced whole, never half-written).
        return match Drill::load(&dir) {
            Ok(drill) => ports::ss(&drill, &node, args),
            Err(e) => Reply::err(1, format!("{e}\n")),
        };
    }
    let lock = match DrillLock::acquire_async(&dir).await {
        Ok(l) => l,
        Err(e) => return Reply::err(1, format!("{e}\n")),
    };
    let mut drill = match Drill::load(&dir) {
        Ok(d) => d,
        Err(e) => return Reply::err(1, format!("{e}\n")),
    };
    if drill.node(&node).is_err() {
        return Reply::err(1, format!("medic drill: unknown node {node}\n"));
    }
    let reply = match tool {
        "systemctl" => systemctl(&mut drill, &node, args).await,
        "kubeadm" => kubeadm(&mut drill, &node, args).await,
        "apt-get" => apt_get(&mut drill, &node, args),
        "apt-mark" => apt_mark(&mut drill, &node, args),
        "kubelet" => kubelet(&drill, &node, args),
        other => Err(Reply::err(127, format!("{other}: command not found\n"))),
    };
    let reply = reply.unwrap_or_else(|r| r);
    if let Err(e) = drill.save() {
        return Reply::err(1, format!("{e}\n"));
    }
    drop(lock);
    reply
}

type Result2 = Result<Reply, Reply>;

fn drill_err(e: DrillError) -> Reply {
    Reply::err(1, format!("{e}\n"))
}

/// Options (`-x`, `--xx`, `--xx=v`) dropped; the rest in order.
fn positional(args: &[String]) -> Vec<&str> {
    args.iter()
        .map(|s| s.as_str())
        .filter(|a| !a.starts_with('-'))
        .collect()
}

fn flag(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| names.contains(&a.as_str()))
}

/// The value of `--name VALUE` or `--name=VALUE` (the last one wins, as with pflag).
fn option(args: &[String], name: &str) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == name {
            found = args.get(i + 1).cloned();
            i += 1;
        } else if let Some(v) = args[i].strip_prefix(&format!("{name}=")) {
            found = Some(v.to_string());
        }
        i += 1;
    }
    found
}

/// The node shell (sshd's ForceCommand per node address) and the command shims it puts first
/// on PATH.
pub(super) fn write_shims(drill: &Drill) -> Result<(), DrillError> {
    let dir = shell_quote(&drill.dir.display().to_string());
    let shell = format!(
        "#!/bin/sh\n\
         # The login shell of a medic drill node (sshd's ForceCommand): kubeadm-style commands\n\
         # (systemctl, kubeadm, apt-get, apt-mark, kubelet) act on the drill's state for node $1.\n\
         node=\"$1\"\n\
         dir={dir}\n\
         if [ -e \"$dir/nodes/$node/lost\" ]; then\n\
         \x20 echo \"medic drill: node $node is lost (medic drill break node-lost); it cannot be reached\" >&2\n\
         \x20 exit 255\n\
         fi\n\
         if [ -z \"${{MEDIC_DRILL_NS:-}}\" ] && [ \"$(id -u)\" = 0 ] && command -v unshare >/dev/null 2>&1; then\n\
         \x20 # This node's /var/lib/etcd (its etcd data dir) and /etc/kubernetes, in a mount\n\
         \x20 # namespace of the session.\n\
         \x20 mkdir -p \"$dir/nodes/$node/etcd\" /var/lib/etcd \"$dir/nodes/$node/kubernetes\" /etc/kubernetes\n\
         \x20 export MEDIC_DRILL_NS=1\n\
         \x20 exec unshare --mount --propagation private /bin/sh -c 'mount --bind \"$1\" /var/lib/etcd && mount --bind \"$3\" /etc/kubernetes && exec \"$0\" \"$2\"' \"$0\" \"$dir/nodes/$node/etcd\" \"$node\" \"$dir/nodes/$node/kubernetes\"\n\
         fi\n\
         export MEDIC_DRILL_DIR=\"$dir\" MEDIC_DRILL_NODE=\"$node\" KUBECONFIG=\"$dir/kubeconfig\"\n\
         export PATH=\"$dir/bin:$PATH\"\n\
         if [ -z \"${{SSH_ORIGINAL_COMMAND:-}}\" ]; then exec /bin/sh -i; fi\n\
         exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n"
    );
    write_file(&drill.dir.join("bin/node-shell"), &shell, 0o755)?;
    let medic = shell_quote(&drill.medic.display().to_string());
    for tool in SHIMMED {
        write_file(
            &drill.dir.join("bin").join(tool),
            &format!("#!/bin/sh\nexec {medic} drill node {tool} \"$@\"\n"),
            0o755,
        )?;
    }
    host::write_host_shims(drill)?;
    Ok(())
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim_start_matches('v').split(['.', '-']);
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_take_values_in_both_spellings_and_the_last_wins() {
        let a = s(&["join", "x", "--token", "a", "--token=b", "--control-plane"]);
        assert_eq!(option(&a, "--token").as_deref(), Some("b"));
        assert_eq!(option(&a, "--certificate-key"), None);
        assert!(flag(&a, &["--control-plane"]));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("1.30.10-1.1") > parse_version("1.30.9-1.1"));
        assert!(parse_version("v1.31.0") > parse_version("1.30.4"));
        assert_eq!(parse_version("x"), None);
    }
}
