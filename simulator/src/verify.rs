//! The databases compared with an expected state.
//!
//! # Guarantees
//! - **Every expected document is compared** field by field ([`crate::compare`]): one missing
//!   is a difference, and so is any field that differs, is missing or is extra.
//! - **No document is left out that should not exist.** A request for an order of the run that
//!   was never approved is a difference; with [`VerifyOptions::exclusive`] (the run owns the
//!   collections, as in a test with unique names) so is any document the model does not know.
//! - **Only the projectors' bookkeeping is ignored:** the top-level `_cdc` of `customer.orders`
//!   and `fulfillment.requests`, which holds the stale-write guards (`_cdc.customerPosition`,
//!   `_cdc.customerDeletedPosition`, `_cdc.requestPosition` in `projectors::projection`).
//!   Nothing in `customer.accounts` is ignored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use serde::{Deserialize, Serialize};
use storefront_schemas::topology::Namespace;

use crate::SimError;
use crate::compare::{Comparison, Difference};
use crate::model::ExpectedState;

/// Top-level fields of the projection collections that the projectors keep for themselves.
pub const PROJECTOR_BOOKKEEPING: &[&str] = &["_cdc"];

/// How strict a verification is beyond the expected documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The run owns the collections: any document the model does not know is a difference.
    pub exclusive: bool,
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Documents compared, per collection (`database.collection`).
    pub compared: BTreeMap<String, u64>,
    /// Every difference.
    pub differences: Vec<Difference>,
}

impl Report {
    /// Differences per collection.
    pub fn differences_per_collection(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for difference in &self.differences {
            *counts.entry(difference.collection.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// One collection to check: where it is, the documents expected there, the top-level fields
/// ignored, and further keys that must not be there unless expected.
type CollectionCheck<'a> = (&'a Namespace, &'a [Document], &'a [&'a str], Vec<Bson>);

/// Compares the collections `expected` names, through `client`, with `expected`.
pub async fn verify(
    client: &Client,
    expected: &ExpectedState,
    options: VerifyOptions,
) -> Result<Report, SimError> {
    let namespaces = &expected.namespaces;
    let mut report = Report::default();
    let collection = |ns: &Namespace| -> Collection<Document> {
        client.database(&ns.database).collection(&ns.collection)
    };
    let order_guids: Vec<Bson> = expected
        .order_guids
        .iter()
        .map(|g| Bson::String(g.clone()))
        .collect();
    let sets: [CollectionCheck<'_>; 3] = [
        (&namespaces.accounts, &expected.accounts, &[], Vec::new()),
        (
            &namespaces.orders,
            &expected.orders,
            PROJECTOR_BOOKKEEPING,
            Vec::new(),
        ),
        (
            &namespaces.fulfillment,
            &expected.requests,
            PROJECTOR_BOOKKEEPING,
            order_guids,
        ),
    ];
    for (namespace, documents, ignored, also_forbidden) in sets {
        let name = namespace.to_string();
        let mut keys: Vec<Bson> = documents
            .iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        keys.extend(also_forbidden);
        let filter = if options.exclusive {
            doc! {}
        } else {
            doc! { "_id": { "$in": keys } }
        };
        let found: Vec<Document> = collection(namespace)
            .find(filter)
            .await
            .map_err(SimError::mongo(format!("read of {name}")))?
            .try_collect()
            .await
            .map_err(SimError::mongo(format!("read of {name}")))?;
        report
            .differences
            .extend(compare_collection(&name, documents, &found, ignored));
        report.compared.insert(name, documents.len() as u64);
    }
    Ok(report)
}

/// Compares the documents of one collection by `_id`: each expected one with the stored one,
/// and every stored one not expected as unexpected.
pub fn compare_collection(
    collection: &str,
    expected: &[Document],
    found: &[Document],
    ignored: &[&str],
) -> Vec<Difference> {
    let key = |d: &Document| {
        d.get("_id")
            .cloned()
            .unwrap_or(Bson::Null)
            .into_canonical_extjson()
            .to_string()
    };
    let mut stored: BTreeMap<String, &Document> = BTreeMap::new();
    let mut differences = Vec::new();
    // A stored document nothing expects, whole.
    let unexpected = |document: &Document| {
        let mut comparison = Comparison::new(
            collection,
            document.get("_id").unwrap_or(&Bson::Null),
            ignored,
        );
        comparison.whole(None, Some(document));
        comparison.differences
    };
    for document in found {
        if stored.insert(key(document), document).is_some() {
            // Two documents with one `_id` cannot exist in MongoDB; a server that allowed it
            // would be worth hearing about.
            differences.extend(unexpected(document));
        }
    }
    for document in expected {
        let id = document.get("_id").unwrap_or(&Bson::Null);
        let mut comparison = Comparison::new(collection, id, ignored);
        match stored.remove(&key(document)) {
            Some(found) => comparison.documents(document, found),
            None => comparison.whole(Some(document), None),
        }
        differences.extend(comparison.differences);
    }
    for (_, document) in stored {
        differences.extend(unexpected(document));
    }
    differences
}

/// Verifies until there is no difference or `wait` has passed (polling with a pause growing
/// from 50 ms to 1 s), and returns the last report.
pub async fn verify_until(
    client: &Client,
    expected: &ExpectedState,
    options: VerifyOptions,
    wait: Duration,
) -> Result<Report, SimError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let report = verify(client, expected, options).await?;
        if report.differences.is_empty() || started.elapsed() >= wait {
            return Ok(report);
        }
        tokio::time::sleep(pause.min(wait.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_extra_and_changed_documents_are_reported() {
        let expected = vec![doc! { "_id": "a", "n": 1 }, doc! { "_id": "b", "n": 2 }];
        let found = vec![
            doc! { "_id": "a", "n": 1.0, "_cdc": { "requestPosition": 5_i64 } },
            doc! { "_id": "c", "n": 3 },
        ];
        let differences = compare_collection("db.c", &expected, &found, PROJECTOR_BOOKKEEPING);
        let summary: Vec<(String, String, String)> = differences
            .iter()
            .map(|d| (d.key.clone(), d.expected.clone(), d.found.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "\"b\"".to_owned(),
                    r#"{"_id":"b","n":2}"#.to_owned(),
                    "(absent)".to_owned()
                ),
                (
                    "\"c\"".to_owned(),
                    "(absent)".to_owned(),
                    r#"{"_id":"c","n":3}"#.to_owned()
                ),
            ]
        );
        // Bookkeeping is ignored in projections only.
        assert_eq!(
            compare_collection("db.c", &expected[..1], &found[..1], &[]).len(),
            1
        );
    }
}
