//! What `kubeadm join` on a drill node is told: from its command line (`kubeadm join ENDPOINT
//! --token T --discovery-token-ca-cert-hash H [--control-plane --certificate-key K]`) or from
//! a `JoinConfiguration` file (`kubeadm join --config FILE`), which keeps the secrets off the
//! process list.

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;

use super::{flag, option, positional, Reply};

/// The join's endpoint and secrets, as given.
#[derive(Debug, Default, PartialEq)]
pub(super) struct JoinArgs {
    pub(super) endpoint: String,
    pub(super) token: Option<String>,
    pub(super) ca_cert_hash: Option<String>,
    pub(super) control_plane: bool,
    pub(super) certificate_key: Option<String>,
}

impl JoinArgs {
    /// The arguments of `kubeadm join ...`, reading `--config FILE` when given (as kubeadm, a
    /// config file cannot be mixed with the flags it replaces).
    pub(super) fn read(args: &[String]) -> Result<JoinArgs, Reply> {
        let Some(path) = option(args, "--config") else {
            let pos = positional(args);
            return Ok(JoinArgs {
                endpoint: pos.get(1).copied().unwrap_or_default().to_string(),
                token: option(args, "--token"),
                ca_cert_hash: option(args, "--discovery-token-ca-cert-hash"),
                control_plane: flag(args, &["--control-plane"]),
                certificate_key: option(args, "--certificate-key"),
            });
        };
        let mixed = [
            "--token",
            "--discovery-token-ca-cert-hash",
            "--certificate-key",
        ]
        .iter()
        .any(|f| option(args, f).is_some());
        if mixed {
            return Err(Reply::err(
                1,
                "can not mix '--config' with arguments [discovery-token-ca-cert-hash token certificate-key]\n",
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Reply::err(1, format!("unable to read config from {path:?}: {e}\n")))?;
        parse(&text).ok_or_else(|| {
            Reply::err(
                1,
                format!("couldn't read {path:?}: not a kubeadm.k8s.io JoinConfiguration with discovery.bootstrapToken\n"),
            )
        })
    }
}

/// A `JoinConfiguration` document: `discovery.bootstrapToken.{apiServerEndpoint, token,
/// caCertHashes}` and `controlPlane.certificateKey`.
fn parse(text: &str) -> Option<JoinArgs> {
    let doc = marked_yaml::parse_yaml(0, text).ok()?;
    let root = doc.as_mapping()?;
    if root.get_scalar("kind")?.as_str() != "JoinConfiguration" {
        return None;
    }
    let bootstrap = root
        .get_mapping("discovery")?
        .get_mapping("bootstrapToken")?;
    let text_of =
        |m: &MarkedMappingNode, key: &str| m.get_scalar(key).map(|s| s.as_str().to_string());
    let ca_cert_hash = match bootstrap.get_node("caCertHashes") {
        Some(Node::Sequence(s)) => s.get_scalar(0).map(|s| s.as_str().to_string()),
        _ => None,
    };
    let control_plane = root.get_mapping("controlPlane");
    Some(JoinArgs {
        endpoint: text_of(bootstrap, "apiServerEndpoint")?,
        token: text_of(bootstrap, "token"),
        ca_cert_hash,
        control_plane: control_plane.is_some(),
        certificate_key: control_plane.and_then(|c| text_of(c, "certificateKey")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_configuration_gives_the_same_as_the_flags() {
        let doc = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: \"127.0.0.1:6443\"\n    token: \"abcdef.0123456789abcdef\"\n    caCertHashes: [\"sha256:00ff\"]\ncontrolPlane:\n  certificateKey: \"k1\"\n";
        let flags: Vec<String> = "join 127.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00ff --control-plane --certificate-key k1"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(parse(doc), JoinArgs::read(&flags).ok());
        let worker = doc.replace("controlPlane:\n  certificateKey: \"k1\"\n", "");
        let parsed = parse(&worker).expect("parses");
        assert!(!parsed.control_plane && parsed.certificate_key.is_none());
        assert_eq!(parse("kind: InitConfiguration\n"), None);
    }
}
