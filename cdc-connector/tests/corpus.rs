//! The corpus of real-shaped source documents (`schemas/fixtures/corpus/`) through the
//! storefront mapping, with no server: each document, mapped as an insert, gives exactly the
//! events (type, key, body) and defects (field, entry, key, reason) its file specifies.

use cdc_connector::mapping::{ChangeKind, ChangeMapper, SourceChange, StorefrontMapper};
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::topology::{StorefrontNamespaces, StorefrontTopics};
use storefront_tests::corpus;

#[test]
fn every_corpus_document_maps_to_its_specified_events_and_defects() {
    let namespaces = StorefrontNamespaces::default();
    let mapper = StorefrontMapper::new(namespaces.clone(), StorefrontTopics::default());
    let cases = corpus::cases();
    assert!(cases.len() >= 12, "the corpus is missing: {}", cases.len());
    for case in cases {
        let name = &case.file;
        let namespace = [
            &namespaces.accounts,
            &namespaces.orders,
            &namespaces.fulfillment,
        ]
        .into_iter()
        .find(|ns| ns.collection == case.collection)
        .unwrap_or_else(|| panic!("{name}: unknown collection {}", case.collection))
        .clone();
        let change = SourceChange {
            namespace,
            kind: ChangeKind::Insert,
            document_id: case.document.get("_id").cloned().unwrap(),
            full_document: Some(
                mongodb::bson::RawDocumentBuf::from_document(&case.document).unwrap(),
            ),
            position: SourcePosition {
                seconds: 1_764_000_000,
                increment: 1,
            },
            time_ms: 1_764_000_000_000,
        };
        let mapped = mapper.map(&change);

        let actual: Vec<(&str, &str, serde_json::Value)> = mapped
            .events
            .iter()
            .map(|event| {
                let body = serde_json::from_slice(event.payload.as_deref().unwrap())
                    .unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
                (
                    event.metadata.event_type.ce_type(),
                    event.key.as_str(),
                    body,
                )
            })
            .collect();
        let expected: Vec<(&str, &str, serde_json::Value)> = case
            .events
            .iter()
            .map(|e| (e.event_type.as_str(), e.key.as_str(), e.payload.clone()))
            .collect();
        assert_eq!(actual, expected, "{name}: {}", case.description);
        // Bodies are compared as JSON values: `3.99` and `3.9900000000000002` are different
        // numbers there, so a price that lost its digits fails above.

        assert_eq!(
            mapped.defects.len(),
            case.defects.len(),
            "{name}: {:#?}",
            mapped.defects
        );
        for (defect, expected) in mapped.defects.iter().zip(&case.defects) {
            assert_eq!(defect.field, expected.field, "{name}: {defect:?}");
            assert_eq!(
                defect.entry.as_ref().map(|e| e.path.as_str()),
                expected.entry.as_deref(),
                "{name}: {defect:?}"
            );
            assert_eq!(defect.order_guid, expected.key, "{name}: {defect:?}");
            assert!(
                defect.reason.contains(&expected.reason),
                "{name}: reason {:?} lacks {:?}",
                defect.reason,
                expected.reason
            );
        }
    }
}
