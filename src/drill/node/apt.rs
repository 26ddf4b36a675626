//! `apt-get` and `apt-mark` on a drill node: package versions from the drill's repository, with
//! apt's refusals (held packages, downgrades) and the `upgrade-fails` break.

use std::collections::BTreeMap;

use super::{drill_err, flag, parse_version, positional, Reply, Result2};
use crate::drill::state::{package_version, Drill, AVAILABLE_VERSIONS, PACKAGES};

pub(super) fn apt_get(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    // `-o Key=Value` takes a value.
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-o" {
            i += 2;
            continue;
        }
        rest.push(args[i].clone());
        i += 1;
    }
    let pos = positional(&rest);
    let Some((&op, specs)) = pos.split_first() else {
        return Err(Reply::err(100, "E: No operation given\n"));
    };
    match op {
        "update" => Ok(Reply::ok(
            "Hit:1 https://pkgs.k8s.io/core:/stable:/v1.31/deb  InRelease\nReading package lists... Done\n",
        )),
        "install" => {
            let allow_held = flag(&rest, &["--allow-change-held-packages"]);
            let allow_down = flag(&rest, &["--allow-downgrades"]);
            let n = drill.node(node).map_err(drill_err)?.clone();
            let mut wanted = BTreeMap::new();
            for spec in specs {
                let (pkg, version) = match spec.split_once('=') {
                    Some((p, v)) => (p, v.to_string()),
                    None => (*spec, package_version(AVAILABLE_VERSIONS.last().expect("versions"))),
                };
                if !PACKAGES.contains(&pkg) {
                    return Err(Reply::err(100, format!("E: Unable to locate package {pkg}\n")));
                }
                let known = AVAILABLE_VERSIONS
                    .iter()
                    .any(|v| package_version(v) == version);
                if !known {
                    return Err(Reply::err(
                        100,
                        format!("E: Version '{version}' for '{pkg}' was not found\n"),
                    ));
                }
                wanted.insert(pkg.to_string(), version);
            }
            let changed: Vec<&String> = wanted
                .iter()
                .filter(|(p, v)| n.package_version(p) != Some(v.as_str()))
                .map(|(p, _)| p)
                .collect();
            if changed.iter().any(|p| n.held.contains(*p)) && !allow_held {
                return Err(Reply::err(
                    100,
                    "E: Held packages were changed and -y was used without --allow-change-held-packages.\n",
                ));
            }
            let older = |p: &str, v: &str| {
                parse_version(v) < n.package_version(p).and_then(parse_version)
            };
            let downgrade = changed.iter().any(|p| older(p, &wanted[*p]));
            if downgrade && !allow_down {
                return Err(Reply::err(
                    100,
                    "E: Packages were downgraded and -y was used without --allow-downgrades.\n",
                ));
            }
            let upgrade = changed.iter().any(|p| !older(p, &wanted[*p]));
            if upgrade && n.upgrade_fails {
                drill.node_mut(node).map_err(drill_err)?.upgrade_fails = false;
                let p = changed.iter().find(|p| !older(p, &wanted[**p])).expect("one");
                return Err(Reply::err(
                    100,
                    format!(
                        "E: Failed to fetch https://pkgs.k8s.io/core:/stable:/v1.31/deb/amd64/{p}_{}_amd64.deb  503  Service Unavailable [IP: 151.101.2.132 443]\nE: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n",
                        wanted[*p]
                    ),
                ));
            }
            let mut out = String::from("Reading package lists... Done\n");
            let entry = drill.node_mut(node).map_err(drill_err)?;
            for (p, v) in &wanted {
                match entry.packages.insert(p.clone(), v.clone()) {
                    Some(old) if &old == v => {
                        out.push_str(&format!("{p} is already the newest version ({v}).\n"))
                    }
                    Some(old) => out.push_str(&format!(
                        "Unpacking {p} ({v}) over ({old}) ...\nSetting up {p} ({v}) ...\n"
                    )),
                    None => out.push_str(&format!("Setting up {p} ({v}) ...\n")),
                }
            }
            Ok(Reply::ok(out))
        }
        other => Err(Reply::err(100, format!("E: Invalid operation {other}\n"))),
    }
}

pub(super) fn apt_mark(drill: &mut Drill, node: &str, args: &[String]) -> Result2 {
    let pos = positional(args);
    let Some((&op, pkgs)) = pos.split_first() else {
        return Err(Reply::err(100, "E: No operation given\n"));
    };
    let entry = drill.node_mut(node).map_err(drill_err)?;
    let mut out = String::new();
    match op {
        "hold" | "unhold" => {
            for p in pkgs {
                if !entry.packages.contains_key(*p) {
                    return Err(Reply::err(
                        100,
                        format!("E: Unable to locate package {p}\n"),
                    ));
                }
                if op == "hold" {
                    entry.held.insert(p.to_string());
                    out.push_str(&format!("{p} set on hold.\n"));
                } else {
                    entry.held.remove(*p);
                    out.push_str(&format!("Canceled hold on {p}.\n"));
                }
            }
        }
        "showhold" => {
            for p in &entry.held {
                out.push_str(&format!("{p}\n"));
            }
        }
        other => return Err(Reply::err(100, format!("E: Invalid operation {other}\n"))),
    }
    Ok(Reply::ok(out))
}
