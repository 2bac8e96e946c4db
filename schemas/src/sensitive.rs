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

use bson::spec::ElementType;
use bson::{RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};
use serde::{Deserialize, Serialize};

use crate::documents::element_type_name;

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

/// The marker that replaces a sensitive value of BSON type `kind`.
fn marker(kind: ElementType) -> String {
    format!("[redacted {}]", element_type_name(kind))
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
    ///
    /// Works on the raw bytes throughout (this runs for every document read): fields off every
    /// sensitive path are copied as they are, and only the values on one are rebuilt.
    pub fn apply<'a>(&self, document: &'a RawDocument) -> Cow<'a, RawDocument> {
        let touches = |key: &str| self.paths.iter().any(|path| path[0] == key);
        let sensitive = document
            .iter()
            .any(|element| element.map_or(true, |(key, _)| touches(key)));
        if !sensitive {
            return Cow::Borrowed(document);
        }
        let paths: Vec<&[String]> = self.paths.iter().map(Vec::as_slice).collect();
        Cow::Owned(redact_document(document, &paths))
    }
}

/// `document` with what `paths` (each the remaining segments, none empty) name redacted.
///
/// The elements off every path are copied as byte runs; only those on one are rewritten.
fn redact_document(document: &RawDocument, paths: &[&[String]]) -> RawDocumentBuf {
    let bytes = document.as_bytes();
    let mut redacted = Vec::with_capacity(bytes.len() + 64);
    redacted.extend_from_slice(&[0; 4]); // the length, written last
    // `bytes[copied..offset]` are elements kept as they are, not yet copied.
    let mut copied = 4;
    let mut offset = 4;
    for element in document.iter_elements() {
        let Ok(element) = element else {
            // Bytes that cannot be read any further cannot be checked: they are not kept.
            redacted.extend_from_slice(&bytes[copied..offset]);
            append_element(&mut redacted, "[unreadable]", RawBson::from("[redacted]"));
            copied = offset;
            break;
        };
        let key = element.key();
        let size = 1 + key.len() + 1 + element.len(); // type, key, NUL, value
        let deeper: Vec<&[String]> = paths
            .iter()
            .filter(|path| path[0] == key)
            .map(|path| &path[1..])
            .collect();
        if !deeper.is_empty() {
            redacted.extend_from_slice(&bytes[copied..offset]);
            let value = element.value().map_or_else(
                |_| RawBson::from("[redacted]"),
                |value| redact_value(value, &deeper),
            );
            append_element(&mut redacted, key, value);
            copied = offset + size;
        }
        offset += size;
    }
    redacted.extend_from_slice(&bytes[copied..offset]);
    redacted.push(0);
    let length = i32::try_from(redacted.len()).unwrap_or(i32::MAX);
    redacted[..4].copy_from_slice(&length.to_le_bytes());
    RawDocumentBuf::from_bytes(redacted)
        .unwrap_or_else(|_| unreachable!("a length prefix, whole elements and a NUL"))
}

/// Writes the element `key: value` at the end of `elements` (a document's element bytes).
fn append_element(elements: &mut Vec<u8>, key: &str, value: RawBson) {
    let mut single = RawDocumentBuf::new();
    single.append(key, value);
    let bytes = single.as_bytes();
    elements.extend_from_slice(&bytes[4..bytes.len() - 1]);
}

/// `value` with what `rest` (the remaining segments of each path reaching it) names redacted.
fn redact_value(value: RawBsonRef<'_>, rest: &[&[String]]) -> RawBson {
    if rest.iter().any(|path| path.is_empty()) {
        return redact_all(value);
    }
    match value {
        RawBsonRef::Document(document) => RawBson::Document(redact_document(document, rest)),
        RawBsonRef::Array(items) => {
            let mut redacted = RawArrayBuf::new();
            for (index, item) in items.into_iter().enumerate() {
                let Ok(item) = item else {
                    redacted.push("[redacted]");
                    break;
                };
                // `cards.0.number` names the element at that index, `cards.number` every one.
                let deeper: Vec<&[String]> = rest
                    .iter()
                    .filter_map(|path| match path[0].parse::<usize>() {
                        Ok(wanted) if wanted == index => Some(&path[1..]),
                        Ok(_) => None,
                        Err(_) => Some(*path),
                    })
                    .collect();
                if deeper.is_empty() {
                    redacted.push(item.to_raw_bson());
                } else {
                    redacted.push(redact_value(item, &deeper));
                }
            }
            RawBson::Array(redacted)
        }
        RawBsonRef::Null => RawBson::Null,
        // A parent of the wrong type may hold the sensitive data in another shape.
        other => RawBson::String(marker(other.element_type())),
    }
}

/// Every leaf under `value` replaced by its marker, keeping keys and list lengths.
fn redact_all(value: RawBsonRef<'_>) -> RawBson {
    match value {
        RawBsonRef::Document(document) => {
            let mut redacted = RawDocumentBuf::new();
            for element in document.iter() {
                let Ok((key, value)) = element else {
                    redacted.append("[unreadable]", "[redacted]");
                    break;
                };
                redacted.append(key, redact_all(value));
            }
            RawBson::Document(redacted)
        }
        RawBsonRef::Array(items) => {
            let mut redacted = RawArrayBuf::new();
            for item in items {
                match item {
                    Ok(item) => redacted.push(redact_all(item)),
                    Err(_) => {
                        redacted.push("[redacted]");
                        break;
                    }
                }
            }
            RawBson::Array(redacted)
        }
        other => RawBson::String(marker(other.element_type())),
    }
}

#[cfg(test)]
mod tests {
    use bson::{Bson, Document, doc};

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
    fn fields_off_the_paths_keep_their_bytes_and_order() {
        let paths = vec!["creditCards".to_owned(), "contact.email".to_owned()];
        let document = doc! {
            "_id": 1, "contact": { "phone": "555", "email": "a@b", "fax": Bson::Null },
            "creditCards": [CARD], "notes": "x", "n": 2_i64,
        };
        let raw = RawDocumentBuf::from_document(&document).unwrap();
        let expected = doc! {
            "_id": 1, "contact": { "phone": "555", "email": "[redacted string]", "fax": Bson::Null },
            "creditCards": ["[redacted string]"], "notes": "x", "n": 2_i64,
        };
        assert_eq!(
            Redaction::new(&paths).apply(&raw).as_bytes(),
            RawDocumentBuf::from_document(&expected).unwrap().as_bytes()
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
