//! The bundle's redaction: every secret value medic knows (through [`Redactor`]) and the
//! patterns secrets take in logs, manifests and kubeconfigs, removed from every file before
//! it is written.

use std::sync::OnceLock;

use regex::Regex;

use crate::engine::Redactor;

/// `(pattern, replacement)`: the text kept around a secret uses `$1`.
const PATTERNS: &[(&str, &str)] = &[
    // PEM private keys, whole (and a block cut at the front by the tail cap).
    (
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
        "<redacted:private-key>",
    ),
    (
        r"(?s)\A.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
        "<redacted:private-key>",
    ),
    // base64 of a PEM block ("-----BEGIN"), as kubeconfigs and secrets hold them.
    (r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]*", "<redacted:pem-base64>"),
    // kubeconfig data fields, in YAML or JSON.
    (
        r#"((?:client-key-data|client-certificate-data|certificate-authority-data)"?\s*[:=]\s*"?)[A-Za-z0-9+/=]+"#,
        "$1<redacted>",
    ),
    // Bearer tokens, HTTP headers and kubeconfig `token:` fields.
    (r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+", "$1<redacted>"),
    (r#"(?m)(^\s*"?token"?\s*:\s*"?)[^\s"]+"#, "$1<redacted>"),
    // kubeadm bootstrap tokens, also inside longer words: no text of that shape stays in a
    // bundle (a false positive costs a few characters of, say, a build's file name).
    (r"[a-z0-9]{6}\.[a-z0-9]{16}", "<redacted:bootstrap-token>"),
    // Command-line arguments.
    (
        r"(--(?:token|certificate-key|discovery-token|password|client-key-data)(?:=|\s+))(?:'[^']*'|\S+)",
        "$1<redacted>",
    ),
    // password=-style values (environment, config files).
    (
        r#"(?i)\b([A-Z0-9_.-]*(?:password|passwd|secret|token|apikey|api_key)[A-Z0-9_]*=)(?:"[^"]*"|'[^']*'|[^\s&;,]+)"#,
        "$1<redacted>",
    ),
];

fn patterns() -> &'static [(Regex, &'static str)] {
    static COMPILED: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        PATTERNS
            .iter()
            .map(|(p, r)| (Regex::new(p).expect("redaction patterns compile"), *r))
            .collect()
    })
}

/// Removes secrets from text bound for the bundle.
pub(crate) struct Scrubber {
    known: Redactor,
}

impl Scrubber {
    pub(crate) fn new(known: Redactor) -> Self {
        Scrubber { known }
    }

    /// The text with known secret values and secret patterns replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = self.known.redact(text);
        for (re, replacement) in patterns() {
            if re.is_match(&out) {
                out = re.replace_all(&out, *replacement).into_owned();
            }
        }
        out
    }

    /// [`Scrubber::scrub`] of bytes (invalid UTF-8 replaced: the bundle holds text).
    pub(crate) fn scrub_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        self.scrub(&String::from_utf8_lossy(bytes)).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str) -> String {
        Scrubber::new(Redactor::new(
            &[("join".to_string(), "known-secret-value-123".to_string())].into(),
        ))
        .scrub(text)
    }

    #[test]
    fn each_pattern_is_removed() {
        let cases = [
            "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:1",
            "token: abcdef.0123456789abcdef",
            "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig",
            "--certificate-key 0123456789abcdef0123456789abcdef",
            "--token=s3cr3t-value",
            "DB_PASSWORD=hunter2-hunter2",
            "    client-key-data: QUJDREVGR0hJSktMTU5PUA==",
            "{\"client-key-data\":\"QUJDREVGR0hJSktMTU5PUA==\"}",
            "data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEA\n-----END PRIVATE KEY-----\nrest",
            "the value known-secret-value-123 leaked",
        ];
        let secrets = [
            "abcdef.0123456789abcdef",
            "eyJhbGciOiJSUzI1NiJ9",
            "0123456789abcdef0123456789abcdef",
            "s3cr3t-value",
            "hunter2",
            "QUJDREVGR0hJSktMTU5PUA",
            "LS0tLS1CRUdJTi",
            "MIIEowIBAAKCAQEA",
            "known-secret-value-123",
        ];
        for case in cases {
            let out = scrub(case);
            for s in secrets {
                assert!(!out.contains(s), "{case:?} -> {out:?}");
            }
            assert!(
                out.contains("<redacted") || out.contains("<secret:"),
                "{out}"
            );
        }
        assert!(scrub("MIIEowIBAAKCAQEA\n-----END PRIVATE KEY-----\nrest").ends_with("rest"));
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "kubelet.service loaded active running",
            "Dec 03 10:00:00 cp-1 kubelet[1]: I1203 node ready",
            "--token-ttl 24h",
            "image: registry.k8s.io/etcd:3.5.9-0",
        ] {
            assert_eq!(scrub(text), text);
        }
    }
}
