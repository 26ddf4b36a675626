//! `systemctl` and `kubelet` on a drill node: the kubelet service is the one unit there is.

use super::{drill_err, flag, positional, Reply, Result2};
use crate::drill::kubelet::set_kubelet;
use crate::drill::state::Drill;

fn unit_name(unit: &str) -> &str {
    unit.strip_suffix(".service").unwrap_or(unit)
}

pub(super) async fn systemctl(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    let Some((&verb, units)) = pos.split_first() else {
        return Err(Reply::err(1, "systemctl: too few arguments\n"));
    };
    if verb == "daemon-reload" {
        return Ok(Reply::ok(""));
    }
    if units.is_empty() {
        return Err(Reply::err(
            1,
            format!("systemctl {verb}: too few arguments\n"),
        ));
    }
    let quiet = flag(args, &["-q", "--quiet"]);
    let mut out = Reply::ok("");
    for unit in units {
        let unit = unit_name(unit);
        if unit == "etcd" {
            super::etcd_unit::etcd_unit(drill, node, verb, quiet, &mut out).await?;
            continue;
        }
        if unit == "containerd" {
            out = super::host::containerd(drill, node, verb, quiet)?;
            continue;
        }
        if unit != "kubelet" {
            return Err(Reply::err(
                5,
                format!("Failed to {verb} {unit}.service: Unit {unit}.service not found.\n"),
            ));
        }
        let running = drill.node(node).map_err(drill_err)?.kubelet;
        match verb {
            "start" | "restart" | "try-restart" | "reload-or-restart" => {
                if verb == "try-restart" && !running {
                    continue;
                }
                set_kubelet(drill, node, true).await.map_err(drill_err)?;
            }
            "stop" => set_kubelet(drill, node, false).await.map_err(drill_err)?,
            "enable" | "disable" | "unmask" | "mask" => {}
            "is-enabled" => out.stdout.push_str("enabled\n"),
            "is-active" => {
                if !quiet {
                    out.stdout
                        .push_str(if running { "active\n" } else { "inactive\n" });
                }
                if !running {
                    out.code = 3;
                }
            }
            "status" => {
                let n = drill.node(node).map_err(drill_err)?;
                out.stdout.push_str(&format!(
                    "● kubelet.service - kubelet: The Kubernetes Node Agent\n     Active: {}\n    Version: {}\n",
                    if running { "active (running)" } else { "inactive (dead)" },
                    n.kubelet_version.clone().unwrap_or_else(|| n.installed_kubelet())
                ));
                if !running {
                    out.code = 3;
                }
            }
            other => {
                return Err(Reply::err(
                    1,
                    format!("systemctl: unknown command verb {other}\n"),
                ))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// kubelet --version

pub(super) fn kubelet(drill: &Drill, node: &str, args: &[String]) -> Result2 {
    if flag(args, &["--version"]) {
        let n = drill.node(node).map_err(drill_err)?;
        return Ok(Reply::ok(format!("Kubernetes {}\n", n.installed_kubelet())));
    }
    Err(Reply::err(
        1,
        "kubelet: the drill's kubelet runs as a service; use systemctl\n",
    ))
}
