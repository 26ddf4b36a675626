//! `medic schema procedure|inventory`: prints a JSON Schema (see `crate::schema`).

use super::args::Document;
use super::{print_json, CliError};

pub(super) fn print(document: Document) -> Result<i32, CliError> {
    print_json(&match document {
        Document::Procedure => crate::schema::procedure(),
        Document::Inventory => crate::schema::inventory(),
    });
    Ok(0)
}
