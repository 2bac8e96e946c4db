//! Sensitive fields: data that must never leave its source collection.
//!
//! The contract declares, per source, the fields whose values nothing derived from a document may
//! carry: [`SensitiveFields::contract`] (`creditCards` of `customer.accounts`). Operators add
//! their own paths (`contact.email`) in configuration. A [`Redaction`] is applied to every
//! document as it is read, before anything maps, publishes, dead-letters or logs it, so every
//! later step sees only the redacted document: redaction by construction, not by each step
//! remembering to.
//!
//! Guarantees:
//! - **Every value under a sensitive path is replaced** by a marker naming only its BSON type
//!   (`"[redacted string]"`), whatever its type or size, at any depth, in every element of the
//!   lists on the way (MongoDB's dotted-path rule). Documents and lists keep their keys and
//!   lengths, so a defect stays diagnosable.
//! - **A value standing where a sensitive field's parent belongs but of the wrong type** (say
//!   `contact` stored as a string when `contact.email` is sensitive) is replaced whole: it may
//!   hold the sensitive data in a shape nobody expected.
//! - **Nothing is copied for documents without sensitive fields**: [`Redaction::apply`] borrows
//!   them as they are.

use std::borrow::Cow;

use bson::{Bson, RawBson, RawDocument, RawDocumentBuf};
use serde::{Deserialize, Serialize};

use crate::documents::bson_type_name;

/// Sensitive field paths per source, beyond the contract's (configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensitiveFields {
    /// Dotted paths in `customer.accounts` documents.
    pub accounts: Vec<String>,
    /// Dotted paths in `customer.orders` documents.
    pub orders: Vec<String>,
    /// Dotted paths in `fulfillment.requests` documents.
    pub fulfillment: Vec<String>,
}

impl SensitiveFields {
    /// The contract's sensitive fields: a customer's payment cards.
    pub fn contract() -> Self {
        Self {
            accounts: vec!["creditCards".to_owned()],
            orders: Vec::new(),
            fulfillment: Vec::new(),
        }
    }

    /// Problems with the paths, each prefixed with `path` (`sensitive.accounts.0`).
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (source, paths) in [
            ("accounts", &self.accounts),
            ("orders", &self.orders),
            ("fulfillment", &self.fulfillment),
        ] {
            for (index, field) in paths.iter().enumerate() {
                if field.is_empty()
                    || field.split('.').any(str::is_empty)
                    || field.contains(['$', '\0'])
                {
                    problems.push(format!(
                        "{path}.{source}.{index} `{field}` is not a dotted field path"
                    ));
                }
            }
        }
        problems
    }
}

/// The redaction of one source's documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Each path split into its segments.
    paths: Vec<Vec<String>>,
}

/// The marker that replaces a sensitive value of type `value`'s.
pub fn marker(value: &Bson) -> String {
    format!("[redacted {}]", bson_type_name(value))
}

impl Redaction {
    /// The redaction of `paths` (dotted field paths).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a String>) -> Self {
        let mut paths: Vec<Vec<String>> = paths
            .into_iter()
            .map(|path| path.split('.').map(str::to_owned).collect())
            .collect();
        paths.sort();
        paths.dedup();
        Self { paths }
    }

    /// Whether nothing is sensitive.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// `document` with every sensitive value replaced by its marker; `document` itself when no
    /// top-level field is sensitive.
    pub fn apply<'a>(&self, document: &'a RawDocument) -> Cow<'a, RawDocument> {
        let touches = |key: &str| self.paths.iter().any(|path| path[0] == key);
        let sensitive = document
            .iter()
            .any(|element| element.map_or(true, |(key, _)| touches(key)));
        if !sensitive {
            return Cow::Borrowed(document);
        }
        let mut redacted = RawDocumentBuf::new();
        for element in document.iter() {
            let Ok((key, value)) = element else {
                // Bytes that cannot be read any further cannot be checked: they are not kept.
                redacted.append("[unreadable]", "[redacted]");
                break;
            };
            if !touches(key) {
                redacted.append_ref(key, value);
                continue;
            }
            let mut tree = Bson::try_from(value.to_raw_bson())
                .unwrap_or_else(|_| Bson::String("[redacted]".to_owned()));
            for path in self.paths.iter().filter(|path| path[0] == key) {
                redact_at(&mut tree, &path[1..]);
            }
            let raw = RawBson::try_from(tree).unwrap_or_else(|_| RawBson::from("[redacted]"));
            redacted.append(key, raw);
        }
        Cow::Owned(redacted)
    }
}

/// Redacts what `rest` (the remaining path segments) names under `value`.
fn redact_at(value: &mut Bson, rest: &[String]) {
    let Some((segment, deeper)) = rest.split_first() else {
        redact_all(value);
        return;
    };
    match value {
        Bson::Document(document) => {
            if let Some(child) = document.get_mut(segment) {
                redact_at(child, deeper);
            }
        }
        Bson::Array(items) => match segment.parse::<usize>() {
            // `cards.0.number`: the element at that index.
            Ok(index) => {
                if let Some(item) = items.get_mut(index) {
                    redact_at(item, deeper);
                }
            }
            // `cards.number`: in every element.
            Err(_) => items.iter_mut().for_each(|item| redact_at(item, rest)),
        },
        // A parent of the wrong type may hold the sensitive data in another shape.
        Bson::Null => {}
        other => *other = Bson::String(marker(other)),
    }
}

/// Replaces every leaf under `value` by its marker, keeping keys and list lengths.
fn redact_all(value: &mut Bson) {
    match value {
        Bson::Document(document) => document.iter_mut().for_each(|(_, v)| redact_all(v)),
        Bson::Array(items) => items.iter_mut().for_each(redact_all),
        other => *other = Bson::String(marker(other)),
    }
}

#[cfg(test)]
mod tests {
    use bson::{Document, doc};

    use super::*;

    const CARD: &str = "4111111111111111";

    fn redact(paths: &[&str], document: Document) -> Document {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        let raw = RawDocumentBuf::from_document(&document).unwrap();
        let redacted = Redaction::new(&paths).apply(&raw).into_owned();
        Document::try_from(redacted.as_ref()).unwrap()
    }

    #[test]
    fn documents_without_sensitive_fields_are_borrowed_unchanged() {
        let raw = RawDocumentBuf::from_document(&doc! { "_id": 1, "name": "Ada" }).unwrap();
        let paths = vec!["creditCards".to_owned()];
        assert!(matches!(
            Redaction::new(&paths).apply(&raw),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn every_value_under_a_sensitive_path_becomes_a_marker_keeping_the_shape() {
        let document = doc! {
            "_id": 7,
            "name": { "firstName": "Ada" },
            "creditCards": [
                { "type": "PRIMARY", "number": CARD, "expiration": "12/28" },
                { "number": 4_111_111_111_111_111_i64, "pan": CARD, "nested": { "deep": [CARD] } },
                CARD,
                { "expiration": { "number": CARD } },
            ],
            "notes": "x",
        };
        let redacted = redact(&["creditCards"], document);
        assert_eq!(
            redacted,
            doc! {
                "_id": 7,
                "name": { "firstName": "Ada" },
                "creditCards": [
                    { "type": "[redacted string]", "number": "[redacted string]",
                      "expiration": "[redacted string]" },
                    { "number": "[redacted long]", "pan": "[redacted string]",
                      "nested": { "deep": ["[redacted string]"] } },
                    "[redacted string]",
                    { "expiration": { "number": "[redacted string]" } },
                ],
                "notes": "x",
            }
        );
        let huge = doc! { "creditCards": CARD.repeat(100_000) };
        assert_eq!(
            redact(&["creditCards"], huge),
            doc! { "creditCards": "[redacted string]" }
        );
    }

    #[test]
    fn nested_paths_follow_lists_and_wrong_typed_parents_are_redacted_whole() {
        let paths = ["contact.email", "addresses.postalCode"];
        let document = doc! {
            "contact": { "email": "ada@example.com", "primaryPhone": "555" },
            "addresses": [ { "postalCode": "N1", "city": "London" }, { "city": "Bath" } ],
        };
        assert_eq!(
            redact(&paths, document),
            doc! {
                "contact": { "email": "[redacted string]", "primaryPhone": "555" },
                "addresses": [
                    { "postalCode": "[redacted string]", "city": "London" },
                    { "city": "Bath" },
                ],
            }
        );
        let wrong_parent = doc! { "contact": "ada@example.com", "addresses": Bson::Null };
        assert_eq!(
            redact(&paths, wrong_parent),
            doc! { "contact": "[redacted string]", "addresses": Bson::Null }
        );
        let by_index = doc! { "addresses": [ { "postalCode": "N1" }, { "postalCode": "BA1" } ] };
        assert_eq!(
            redact(&["addresses.1.postalCode"], by_index),
            doc! { "addresses": [ { "postalCode": "N1" }, { "postalCode": "[redacted string]" } ] }
        );
    }

    #[test]
    fn paths_are_checked() {
        let fields = SensitiveFields {
            accounts: vec!["contact.email".into(), "".into(), "a..b".into()],
            orders: vec!["$where".into()],
            fulfillment: Vec::new(),
        };
        assert_eq!(
            fields.problems("sensitive"),
            [
                "sensitive.accounts.1 `` is not a dotted field path",
                "sensitive.accounts.2 `a..b` is not a dotted field path",
                "sensitive.orders.0 `$where` is not a dotted field path",
            ]
        );
        assert!(SensitiveFields::contract().problems("sensitive").is_empty());
    }
}
