//! JSON Schema types added for secret captures and host keys: `capture:` values (an expression
//! over the result, or `{from, secret}`) and the `ssh_host_key:` action.

use schemars::JsonSchema;

use super::scalars::Flag;

/// An expression over the action's result (`json.id`), or `{from: EXPR, secret: true}`.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Capture {
    Expression(String),
    Detailed(CaptureDetailed),
}

/// A captured value with options.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CaptureDetailed {
    /// The expression over the action's result (`stdout | trim`).
    pub from: String,
    /// Keep the value as a secret: stored with the operation's secrets, shown as
    /// `<secret:NAME>` everywhere, hidden in all output; the phase's own output is shown only
    /// once the value is known and hidden.
    pub secret: Option<Flag>,
}

/// `ssh_host_key:` checks the SSH host key a node offers (as `ssh-keyscan` reads it).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SshHostKey {
    /// The inventory node.
    pub node: String,
    /// The SHA256 fingerprint (`SHA256:…`) a key not trusted yet must have to be trusted (in
    /// medic's own known_hosts); empty: only a key already trusted passes.
    pub expect: Option<String>,
}
