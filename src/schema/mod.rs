//! JSON Schema for procedure files and the inventory, for editors (`yaml-language-server`) and
//! CI. The document shape is described once as types deriving [`schemars::JsonSchema`], with
//! their doc comments as descriptions; the loader (`procedure/read/`, `action/`,
//! `inventory.rs`) stays the authority on values.
//!
//! 1. `procedure.rs` and `inventory.rs` hold the document types, one per mapping the loader
//!    reads with `source::Fields` and the same keys.
//! 2. [`procedure`] and [`inventory`] generate the schema (draft 2020-12).
//! 3. `tests.rs` asks the loader itself, for every mapping, which keys it accepts and checks
//!    that the schema has exactly those properties, so the two cannot drift apart silently.

pub mod capture;
pub mod inventory;
pub mod probe;
pub mod procedure;
pub mod scalars;
#[cfg(test)]
mod tests;

use schemars::{generate::SchemaSettings, transform::RecursiveTransform, JsonSchema, Schema};
use serde_json::Value;

/// The JSON Schema of a procedure file.
pub fn procedure() -> serde_json::Value {
    generate::<procedure::Procedure>("medic procedure")
}

/// The JSON Schema of an inventory (`cluster.yaml`).
pub fn inventory() -> serde_json::Value {
    generate::<inventory::Inventory>("medic inventory")
}

fn generate<T: JsonSchema>(title: &str) -> serde_json::Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings
        .transforms
        .push(Box::new(RecursiveTransform(optional_is_not_null)));
    let generator = settings.into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    schema["title"] = title.into();
    schema
}

/// An optional key is one left out: `key:` with nothing (null) is refused by the loader, so
/// the `null` schemars adds for an `Option` field is taken out again. (A value that may be
/// empty says so with `scalars::Nothing`, which is not touched.)
fn optional_is_not_null(schema: &mut Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for property in properties.values_mut() {
        if let Some(types) = property.get_mut("type").and_then(Value::as_array_mut) {
            types.retain(|t| t != "null");
            if let [single] = types.as_slice() {
                property["type"] = single.clone();
            }
        }
        if let Some(any_of) = property.get_mut("anyOf").and_then(Value::as_array_mut) {
            any_of.retain(|a| *a != serde_json::json!({"type": "null"}));
            if let [single] = any_of.as_slice() {
                let single = single.clone();
                property.as_object_mut().expect("an object").remove("anyOf");
                if let (Some(target), Some(single)) = (property.as_object_mut(), single.as_object())
                {
                    target.extend(single.clone());
                }
            }
        }
    }
}
