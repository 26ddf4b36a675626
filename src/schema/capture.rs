//! The JSON Schema of `capture:` values: an expression over the result, or `{from, secret}`.

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
