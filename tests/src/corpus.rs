//! The corpus of real-shaped source documents (`schemas/fixtures/corpus/`), each with the events
//! and defects the connector must make of it, written by hand from the domain contract.

use mongodb::bson::Document;
use serde::Deserialize;
use storefront_schemas::documents::document_from_extended_json;

/// One case of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    /// File name.
    pub file: String,
    /// What the case is about.
    pub description: String,
    /// The source collection's default name (`customer.orders`, ...).
    pub collection: String,
    /// The stored document, with its exact BSON types.
    pub document: Document,
    /// The events it maps to, in order.
    pub events: Vec<ExpectedEvent>,
    /// Its defects, in order.
    pub defects: Vec<ExpectedDefect>,
}

/// An event a case maps to.
#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedEvent {
    /// `ce_type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Record key.
    pub key: String,
    /// The exact body.
    pub payload: serde_json::Value,
}

/// A defect a case has.
#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedDefect {
    /// Dotted path of the offending field.
    pub field: String,
    /// Path of the list entry left out, if the defect is confined to one.
    pub entry: Option<String>,
    /// The order guid it concerns, if any.
    pub key: Option<String>,
    /// Text the reason contains.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    description: String,
    collection: String,
    document: serde_json::Value,
    events: Vec<ExpectedEvent>,
    defects: Vec<ExpectedDefect>,
}

/// Every case, in file-name order.
pub fn cases() -> Vec<Case> {
    let dir = crate::repo_root().join("schemas/fixtures/corpus");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let file: File =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Case {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                description: file.description,
                collection: file.collection,
                document: document_from_extended_json(&file.document.to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                events: file.events,
                defects: file.defects,
            }
        })
        .collect()
}
