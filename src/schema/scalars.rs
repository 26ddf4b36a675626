//! Values the loader reads from a scalar with its own rules (durations, flags, any scalar),
//! described as the JSON a YAML editor sees: a plain `30` is a number, `30s` a string.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

/// Matches what `source::parse_duration` accepts: seconds (`30`, `0.5`) or humantime
/// (`30s`, `10m`, `1h30m`, `500ms`).
const DURATION_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*([a-zµ]+(\s*[0-9]+\s*[a-zµ]+)*)?\s*$";

macro_rules! scalar {
    ($(#[$doc:meta])* $name:ident => $schema:tt) => {
        $(#[$doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

scalar! {
    /// A duration such as `30s`, `10m`, `1h30m`, or a number of seconds.
    Duration => {
        "description": "a duration such as 30s, 10m or 1h30m, or a number of seconds",
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": DURATION_PATTERN}
        ]
    }
}

scalar! {
    /// A duration, or a template that renders to one when the phase runs.
    DurationOrTemplate => {
        "description": "a duration such as 30s, 10m or 1h, or a template such as \"{{ timeout }}\"",
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": DURATION_PATTERN},
            {"type": "string", "pattern": r"\{\{"}
        ]
    }
}

scalar! {
    /// true or false (`yes`/`no`/`on`/`off` are read too).
    Flag => {
        "description": "true or false",
        "anyOf": [
            {"type": "boolean"},
            {"enum": ["true", "false", "yes", "no", "on", "off"]}
        ]
    }
}

scalar! {
    /// true or false, or a template that renders to one when the phase runs.
    FlagOrTemplate => {
        "description": "true or false, or a template such as \"{{ force }}\"",
        "anyOf": [
            {"type": "boolean"},
            {"enum": ["true", "false", "yes", "no", "on", "off"]},
            {"type": "string", "pattern": r"\{\{"}
        ]
    }
}

scalar! {
    /// One value: text, a number or a boolean (read as its text).
    Scalar => {
        "description": "a single value (text, a number or a boolean)",
        "type": ["string", "number", "boolean"]
    }
}

scalar! {
    /// No settings: nothing, or an empty mapping.
    Nothing => {
        "description": "no settings",
        "anyOf": [
            {"const": null},
            {"type": "string", "maxLength": 0},
            {"type": "object", "maxProperties": 0}
        ]
    }
}
