//! `medic schema procedure|inventory`: prints a JSON Schema (see `crate::schema`).

use clap::ValueEnum;

use super::{print_json, CliError};

/// Which document's schema to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Document {
    /// A procedure file (plans/NAME.yaml).
    Procedure,
    /// The inventory (cluster.yaml).
    Inventory,
}

pub(super) fn print(document: Document) -> Result<i32, CliError> {
    print_json(&match document {
        Document::Procedure => crate::schema::procedure(),
        Document::Inventory => crate::schema::inventory(),
    });
    Ok(0)
}
