//! `medic drill break cert-expiring NODE`: real certificates issued with `openssl` into the
//! node's own `/etc/kubernetes/pki` (`nodes/NODE/kubernetes/pki`, which the node shell mounts
//! at `/etc/kubernetes` in the session's mount namespace): a CA valid for ten years and an API
//! server certificate that expires in two days, which `node/cert-expiring` must find; and for
//! `break cert-expired NODE`, a client certificate signed by that CA with `openssl ca` and
//! dates in the past (`-startdate`/`-enddate`), which `node/cert-expired` must find.

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

/// The certificate `cert-expired` issues, in the node's pki directory (kubeadm's name for the
/// API server's client certificate to the kubelets).
pub(crate) const EXPIRED_CERT: &str = "apiserver-kubelet-client.crt";
/// Its validity: a year that ended before this drill was written.
const EXPIRED_START: &str = "20240101000000Z";
const EXPIRED_END: &str = "20250101000000Z";

/// Issues the node's expired certificate, signed by its CA (created when missing); refused
/// when it is already there.
pub(crate) fn issue_expired(drill: &Drill, name: &str) -> Result<String, DrillError> {
    let pki = drill.node_dir(name).join("kubernetes/pki");
    let cert = pki.join(EXPIRED_CERT);
    if cert.exists() {
        return Err(DrillError::Usage(format!(
            "{name} already has an expired {}; nothing was changed",
            cert.display()
        )));
    }
    std::fs::create_dir_all(&pki).map_err(setup("create the node's pki directory"))?;
    if !pki.join("ca.crt").exists() {
        self_signed(&pki, "ca", "kubernetes", 3650)?;
    }
    // `openssl ca` keeps a database and a serial: in a scratch directory, removed after.
    let work = drill.node_dir(name).join("openssl-ca");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(setup("create the openssl ca directory"))?;
    let issued = sign_expired(&pki, &work);
    let _ = std::fs::remove_dir_all(&work);
    issued?;
    Ok(format!(
        "issued /etc/kubernetes/pki/{EXPIRED_CERT} on {name}: signed by its CA, valid {EXPIRED_START} to {EXPIRED_END} (expired)"
    ))
}

/// A key and request for the API server's kubelet client, signed by `pki/ca.*` with dates in
/// the past.
fn sign_expired(pki: &Path, work: &Path) -> Result<(), DrillError> {
    let config = format!(
        "[ca]\ndefault_ca = drill\n[drill]\ndatabase = {w}/index.txt\nnew_certs_dir = {w}\n\
         serial = {w}/serial\ncertificate = {p}/ca.crt\nprivate_key = {p}/ca.key\n\
         default_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n\
         [any]\ncommonName = supplied\norganizationName = optional\n",
        w = work.display(),
        p = pki.display()
    );
    let write = |file: &str, text: &str| {
        std::fs::write(work.join(file), text).map_err(setup("write the openssl ca files"))
    };
    write("openssl.cnf", &config)?;
    write("index.txt", "")?;
    write("serial", "1000\n")?;
    let stem = EXPIRED_CERT.trim_end_matches(".crt");
    let csr = work.join("request.csr");
    openssl(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-keyout"])
            .arg(pki.join(format!("{stem}.key")))
            .arg("-out")
            .arg(&csr)
            .args([
                "-subj",
                "/O=system:masters/CN=kube-apiserver-kubelet-client",
            ]),
        "make a certificate request with openssl",
    )?;
    openssl(
        Command::new("openssl")
            .args(["ca", "-batch", "-notext", "-config"])
            .arg(work.join("openssl.cnf"))
            .args(["-startdate", EXPIRED_START, "-enddate", EXPIRED_END, "-in"])
            .arg(&csr)
            .arg("-out")
            .arg(pki.join(EXPIRED_CERT)),
        "sign a certificate with openssl ca",
    )
}

/// Runs an openssl command; its stderr in the error.
fn openssl(command: &mut Command, what: &'static str) -> Result<(), DrillError> {
    let out = command.output().map_err(|source| Failure::Start {
        what: "run openssl (install openssl)",
        source,
    })?;
    if !out.status.success() {
        return Err(Failure::Tool {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        .into());
    }
    Ok(())
}

/// `openssl req -x509`: `DIR/NAME.crt` and its key `DIR/NAME.key` (mode 0600), valid `days`.
fn self_signed(dir: &Path, name: &str, cn: &str, days: u32) -> Result<(), DrillError> {
    openssl(
        Command::new("openssl")
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
            .args(["-days", &days.to_string(), "-subj", &format!("/CN={cn}")]),
        "issue a certificate with openssl",
    )
}
