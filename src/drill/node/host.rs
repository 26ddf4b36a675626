//! The host a probe looks at, per drill node: the drill's nodes share this machine, so
//! `sysctl`, `lsmod`, `modprobe`, `swapon`, `df` and `date` on a node are shell shims that read
//! the node's own view (`nodes/NODE/host/…`, written by the triage break scenarios in
//! `drill/triage.rs`) and otherwise answer as a healthy kubeadm node would: the sysctls
//! Kubernetes needs set to 1, br_netfilter and overlay loaded, no swap, disks at 40%, the
//! clock right. `systemctl … containerd` is answered here too (the runtime is up unless
//! `runtime-down` broke it). They are shell scripts, not `medic drill node`, because probes
//! call them often and timing matters for the clock.

use super::{Reply, Result2};
use crate::drill::error::DrillError;
use crate::drill::state::{write_file, Drill};
use crate::template::shell_quote;

/// The directory of node `node`'s host view.
pub(crate) fn view_dir(drill: &Drill, node: &str) -> std::path::PathBuf {
    drill.node_dir(node).join("host")
}

/// The real program `name` on this machine (the shims must not call themselves).
pub(super) fn real(name: &str) -> String {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| format!("/usr/bin/{name}"))
}

/// Writes the host shims into `DIR/bin`.
pub(crate) fn write_host_shims(drill: &Drill) -> Result<(), DrillError> {
    let view = "view=\"$MEDIC_DRILL_DIR/nodes/$MEDIC_DRILL_NODE/host\"\n";
    let sysctl = format!(
        "#!/bin/sh\n{view}mkdir -p \"$view/sysctl\"\nvalues=0\n\
         for a in \"$@\"; do\n\
         \x20 case \"$a\" in\n\
         \x20   -n) values=1 ;;\n\
         \x20   -*) ;;\n\
         \x20   *=*) key=${{a%%=*}}; printf '%s\\n' \"${{a#*=}}\" > \"$view/sysctl/$key\"; echo \"$key = ${{a#*=}}\" ;;\n\
         \x20   *) key=$a\n\
         \x20      if [ -f \"$view/sysctl/$key\" ]; then v=$(cat \"$view/sysctl/$key\")\n\
         \x20      else case \"$key\" in\n\
         \x20        net.ipv4.ip_forward|net.bridge.bridge-nf-call-iptables|net.bridge.bridge-nf-call-ip6tables) v=1 ;;\n\
         \x20        *) exec {real} \"$@\" ;;\n\
         \x20      esac; fi\n\
         \x20      if [ \"$values\" = 1 ]; then echo \"$v\"; else echo \"$key = $v\"; fi ;;\n\
         \x20 esac\n\
         done\n",
        real = shell_quote(&real("sysctl"))
    );
    let lsmod = format!(
        "#!/bin/sh\n{view}echo 'Module                  Size  Used by'\n\
         for m in br_netfilter overlay; do [ -e \"$view/unloaded-$m\" ] || echo \"$m 32768 0\"; done\n"
    );
    let modprobe = format!(
        "#!/bin/sh\n{view}for m in \"$@\"; do case \"$m\" in -*) ;; *) rm -f \"$view/unloaded-$m\" ;; esac; done\n"
    );
    let swapon = format!("#!/bin/sh\n{view}[ -f \"$view/swap\" ] && cat \"$view/swap\"\nexit 0\n");
    let df = format!(
        "#!/bin/sh\n{view}inodes=0\nfor a in \"$@\"; do case \"$a\" in -*i*) inodes=1 ;; esac; done\n\
         use=$(cat \"$view/disk-use\" 2>/dev/null || echo 40)\n\
         iuse=$(cat \"$view/inode-use\" 2>/dev/null || echo 10)\n\
         if [ \"$inodes\" = 1 ]; then echo 'Filesystem Inodes IUsed IFree IUse% Mounted on'; u=$iuse; else echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; u=$use; fi\n\
         for a in \"$@\"; do case \"$a\" in -*) ;; *) echo \"/dev/drill 1000000 $((u * 10000)) $(((100 - u) * 10000)) $u% $a\" ;; esac; done\n"
    );
    let date = format!(
        "#!/bin/sh\n{view}if [ ! -f \"$view/clock-offset\" ]; then exec {real} \"$@\"; fi\n\
         now=$({real} +%s.%N)\n\
         at=$(awk -v a=\"$now\" -v b=\"$(cat \"$view/clock-offset\")\" 'BEGIN {{ printf \"%.3f\", a + b }}')\n\
         exec {real} -d \"@$at\" \"$@\"\n",
        real = shell_quote(&real("date"))
    );
    for (name, text) in [
        ("sysctl", sysctl),
        ("lsmod", lsmod),
        ("modprobe", modprobe),
        ("swapon", swapon),
        ("df", df),
        ("date", date),
    ] {
        write_file(&drill.dir.join("bin").join(name), &text, 0o755)?;
    }
    Ok(())
}

/// `systemctl VERB containerd` on node `node`: active unless `runtime-down` broke it.
pub(super) fn containerd(drill: &Drill, node: &str, verb: &str, quiet: bool) -> Result2 {
    let down = view_dir(drill, node).join("runtime-down");
    match verb {
        "start" | "restart" | "try-restart" | "reload-or-restart" => {
            let _ = std::fs::remove_file(&down);
            Ok(Reply::ok(""))
        }
        "stop" => {
            std::fs::create_dir_all(view_dir(drill, node))
                .and_then(|_| std::fs::write(&down, "stopped\n"))
                .map_err(|e| Reply::err(1, format!("systemctl stop containerd: {e}\n")))?;
            Ok(Reply::ok(""))
        }
        "enable" | "disable" | "unmask" | "mask" => Ok(Reply::ok("")),
        "is-enabled" => Ok(Reply::ok("enabled\n")),
        "is-active" | "status" => {
            let active = !down.exists();
            let mut out = Reply::ok(if quiet {
                ""
            } else if active {
                "active\n"
            } else {
                "inactive\n"
            });
            if !active {
                out.code = 3;
            }
            Ok(out)
        }
        other => Err(Reply::err(
            1,
            format!("systemctl: unknown command {other}\n"),
        )),
    }
}
