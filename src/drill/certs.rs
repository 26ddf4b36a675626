//! `medic drill break cert-expiring NODE`: real certificates issued with `openssl` into the
//! node's own `/etc/kubernetes/pki` (`nodes/NODE/kubernetes/pki`, which the node shell mounts
//! at `/etc/kubernetes` in the session's mount namespace): a CA valid for ten years and an API
//! server certificate that expires in two days, which `node/cert-expiring` must find.

use std::path::Path;
use std::process::Command;

use super::error::{setup, DrillError, Failure};
use super::state::Drill;

/// How long the short-lived certificate is valid (a warning: within 30 days).
pub(crate) const EXPIRING_DAYS: u32 = 2;

/// Issues the node's short-lived API server certificate; refused when it is already there.
pub(crate) fn issue_expiring(drill: &Drill, name: &str) -> Result<String, DrillError> {
    let pki = drill.node_dir(name).join("kubernetes/pki");
    let cert = pki.join("apiserver.crt");
    if cert.exists() {
        return Err(DrillError::Usage(format!(
            "{name} already has a short-lived {}; nothing was changed",
            cert.display()
        )));
    }
    std::fs::create_dir_all(&pki).map_err(setup("create the node's pki directory"))?;
    if !pki.join("ca.crt").exists() {
        self_signed(&pki, "ca", "kubernetes", 3650)?;
    }
    self_signed(&pki, "apiserver", "kube-apiserver", EXPIRING_DAYS)?;
    Ok(format!(
        "issued /etc/kubernetes/pki/apiserver.crt on {name}: it expires in {EXPIRING_DAYS} days"
    ))
}

/// `openssl req -x509`: `DIR/NAME.crt` and its key `DIR/NAME.key` (mode 0600), valid `days`.
fn self_signed(dir: &Path, name: &str, cn: &str, days: u32) -> Result<(), DrillError> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .args(["-days", &days.to_string(), "-subj", &format!("/CN={cn}")])
        .output()
        .map_err(|source| Failure::Start {
            what: "run openssl (install openssl)",
            source,
        })?;
    if !out.status.success() {
        return Err(Failure::Tool {
            what: "issue a certificate with openssl",
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        .into());
    }
    Ok(())
}
