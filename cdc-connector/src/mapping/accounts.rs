//! `customer.accounts` → CustomerChangeEvent (and a tombstone on delete).
//!
//! ```text
//! snapshot | insert | update | replace --post-image--> CustomerChangeEvent (key: id hex)
//! update whose post-image is gone      -------------> nothing (the delete follows)
//! delete                               -------------> tombstone           (key: id hex)
//! ```
//!
//! Every change of a customer is its own event: the id covers the namespace, the customer and
//! the change's cluster time, so a re-read change repeats its id while two real changes never
//! share one (`once_per_id` is off; the projection orders them by `metadata.position`). The
//! payload is built field by field from the typed [`Customer`]: credit cards cannot reach it.

use storefront_schemas::documents::Customer;
use storefront_schemas::events::{CustomerChangeEvent, EventPayload};
use storefront_schemas::metadata::{EventType, event_id};

use super::{
    ChangeKind, ChangeMapper, MappingError, OutboundEvent, SourceChange, object_id_hex, outbound,
    post_image, read,
};

/// Maps changes of the Accounts customers collection.
#[derive(Debug, Clone)]
pub struct AccountsMapper {
    topic: String,
}

impl AccountsMapper {
    /// Publishes on `topic` (normally `accounts.customer.change`).
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
        }
    }

    fn id(&self, event_type: EventType, change: &SourceChange, key: &str) -> String {
        event_id(
            event_type,
            &[
                &change.namespace.database,
                &change.namespace.collection,
                key,
                &change.position.as_u64().to_string(),
            ],
        )
    }
}

impl ChangeMapper for AccountsMapper {
    fn map(&self, change: &SourceChange) -> Result<Vec<OutboundEvent>, MappingError> {
        if change.kind == ChangeKind::Delete {
            // Only the key survives a delete; the tombstone tells compaction and the projection
            // that the customer is gone.
            let key = object_id_hex(&change.document_id)?;
            let id = self.id(EventType::CustomerDeleted, change, &key);
            return Ok(vec![outbound(
                change,
                &self.topic,
                key,
                EventType::CustomerDeleted,
                id,
                None,
                false,
            )]);
        }
        let Some(document) = post_image(change)? else {
            return Ok(Vec::new());
        };
        let customer: Customer = read(document)?;
        let payload = CustomerChangeEvent::from_customer(&customer);
        let key = payload.id.clone();
        let id = self.id(CustomerChangeEvent::EVENT_TYPE, change, &key);
        Ok(vec![outbound(
            change,
            &self.topic,
            key,
            CustomerChangeEvent::EVENT_TYPE,
            id,
            Some(payload.to_json()),
            false,
        )])
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, Document, doc};
    use storefront_schemas::documents::DocumentError;
    use storefront_schemas::metadata::SCHEMA_VERSION;

    use super::*;
    use crate::mapping::testing::{
        CUSTOMER_HEX, accounts_namespace, change, customer_document, customer_id, fixture, golden,
        position,
    };

    fn mapper() -> AccountsMapper {
        AccountsMapper::new("accounts.customer.change")
    }

    /// What a change should map to.
    #[derive(Debug)]
    enum Expect {
        /// One CustomerChangeEvent whose payload is this customer's.
        Changed,
        /// One tombstone.
        Deleted,
        /// No events.
        Nothing,
        /// This error.
        Error(MappingError),
    }

    fn without(path: &[&str]) -> Document {
        let mut document = customer_document();
        let (last, parents) = path.split_last().unwrap();
        let mut at = &mut document;
        for parent in parents {
            at = at.get_document_mut(*parent).unwrap();
        }
        at.remove(*last);
        document
    }

    fn with(key: &str, value: impl Into<Bson>) -> Document {
        let mut document = customer_document();
        document.insert(key, value);
        document
    }

    fn missing(field: &str) -> Expect {
        Expect::Error(MappingError::Document(DocumentError::MissingField {
            field: field.into(),
        }))
    }

    fn invalid(field: &str) -> Expect {
        // The reason text comes from the reader; the field path is the contract.
        Expect::Error(MappingError::Document(DocumentError::InvalidField {
            field: field.into(),
            reason: String::new(),
        }))
    }

    #[test]
    fn changes_map_by_kind_and_content() {
        use ChangeKind::*;
        let id = Bson::ObjectId(customer_id());
        let cases: Vec<(&str, ChangeKind, Bson, Option<Document>, Expect)> = vec![
            (
                "snapshot",
                Snapshot,
                id.clone(),
                Some(customer_document()),
                Expect::Changed,
            ),
            (
                "insert",
                Insert,
                id.clone(),
                Some(customer_document()),
                Expect::Changed,
            ),
            (
                "update post-image",
                Update,
                id.clone(),
                Some(customer_document()),
                Expect::Changed,
            ),
            (
                "replace",
                Replace,
                id.clone(),
                Some(customer_document()),
                Expect::Changed,
            ),
            ("delete", Delete, id.clone(), None, Expect::Deleted),
            (
                "update, deleted before lookup",
                Update,
                id.clone(),
                None,
                Expect::Nothing,
            ),
            (
                "insert without document",
                Insert,
                id.clone(),
                None,
                missing("fullDocument"),
            ),
            (
                "replace without document",
                Replace,
                id.clone(),
                None,
                missing("fullDocument"),
            ),
            (
                "snapshot without document",
                Snapshot,
                id.clone(),
                None,
                missing("fullDocument"),
            ),
            (
                "no name",
                Insert,
                id.clone(),
                Some(without(&["name"])),
                missing("name"),
            ),
            (
                "no email",
                Update,
                id.clone(),
                Some(without(&["contact", "email"])),
                missing("contact.email"),
            ),
            (
                "no _id",
                Insert,
                id.clone(),
                Some(without(&["_id"])),
                missing("_id"),
            ),
            (
                "name is a string",
                Insert,
                id.clone(),
                Some(with("name", "Ada")),
                invalid("name"),
            ),
            (
                "addresses is an object",
                Insert,
                id.clone(),
                Some(with("addresses", doc! {})),
                invalid("addresses"),
            ),
            (
                "_id is a hex string",
                Insert,
                id.clone(),
                Some(with("_id", CUSTOMER_HEX)),
                invalid("_id"),
            ),
            (
                "_id is an int",
                Insert,
                id.clone(),
                Some(with("_id", 7)),
                invalid("_id"),
            ),
            (
                "delete of a non-ObjectId _id",
                Delete,
                Bson::String(CUSTOMER_HEX.into()),
                None,
                invalid("_id"),
            ),
        ];
        for (name, kind, document_id, document, expect) in cases {
            let change = change(
                accounts_namespace(),
                kind,
                document_id,
                document,
                position(7),
            );
            let result = mapper().map(&change);
            match (&expect, result) {
                (Expect::Changed, Ok(events)) => {
                    assert_eq!(events.len(), 1, "{name}");
                    let event = &events[0];
                    assert_eq!(event.topic, "accounts.customer.change", "{name}");
                    assert_eq!(event.key, CUSTOMER_HEX, "{name}");
                    assert!(!event.once_per_id, "{name}");
                    let metadata = &event.metadata;
                    assert_eq!(metadata.event_type, EventType::CustomerChanged, "{name}");
                    assert_eq!(
                        metadata.id,
                        event_id(
                            EventType::CustomerChanged,
                            &[
                                "accounts",
                                "customer.accounts",
                                CUSTOMER_HEX,
                                &position(7).as_u64().to_string()
                            ]
                        ),
                        "{name}"
                    );
                    assert_eq!(metadata.subject, CUSTOMER_HEX, "{name}");
                    assert_eq!(metadata.source, accounts_namespace(), "{name}");
                    assert_eq!(metadata.position, position(7), "{name}");
                    assert_eq!(metadata.time_ms, change.time_ms, "{name}");
                    assert_eq!(metadata.schema_version, SCHEMA_VERSION, "{name}");
                    let payload =
                        CustomerChangeEvent::from_json(event.payload.as_deref().unwrap()).unwrap();
                    assert_eq!(payload.id, CUSTOMER_HEX, "{name}");
                    assert_eq!(payload.name.first_name, "Ada", "{name}");
                    assert_eq!(payload.addresses.len(), 2, "{name}");
                }
                (Expect::Deleted, Ok(events)) => {
                    assert_eq!(events.len(), 1, "{name}");
                    let event = &events[0];
                    assert_eq!(event.payload, None, "{name}");
                    assert_eq!(event.key, CUSTOMER_HEX, "{name}");
                    assert_eq!(event.topic, "accounts.customer.change", "{name}");
                    assert_eq!(
                        event.metadata.event_type,
                        EventType::CustomerDeleted,
                        "{name}"
                    );
                    assert_eq!(event.metadata.subject, CUSTOMER_HEX, "{name}");
                    assert!(!event.once_per_id, "{name}");
                }
                (Expect::Nothing, Ok(events)) => assert!(events.is_empty(), "{name}: {events:?}"),
                (Expect::Error(expected), Err(error)) => match (expected, &error) {
                    (
                        MappingError::Document(DocumentError::InvalidField { field, .. }),
                        MappingError::Document(DocumentError::InvalidField {
                            field: actual, ..
                        }),
                    ) => assert_eq!(field, actual, "{name}: {error}"),
                    _ => assert_eq!(expected, &error, "{name}"),
                },
                (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
            }
        }
    }

    #[test]
    fn credit_cards_never_reach_the_payload() {
        let document = customer_document();
        assert!(!document.get_array("creditCards").unwrap().is_empty());
        let change = change(
            accounts_namespace(),
            ChangeKind::Insert,
            Bson::ObjectId(customer_id()),
            Some(document),
            position(1),
        );
        let events = mapper().map(&change).unwrap();
        let body = String::from_utf8(events[0].payload.clone().unwrap()).unwrap();
        for forbidden in [
            "creditCards",
            "number",
            "nameOnCard",
            "expiration",
            "4111111111111111",
            "12/28",
        ] {
            assert!(!body.contains(forbidden), "{forbidden} in {body}");
        }
    }

    #[test]
    fn the_fixture_maps_to_the_golden_event() {
        let document = fixture("customer.accounts");
        let id = document.get("_id").unwrap().clone();
        let change = change(
            accounts_namespace(),
            ChangeKind::Replace,
            id,
            Some(document),
            position(3),
        );
        let events = mapper().map(&change).unwrap();
        let expected = golden::<CustomerChangeEvent>();
        assert_eq!(
            events[0].payload.as_deref(),
            Some(expected.to_json().as_slice())
        );
    }

    #[test]
    fn mapping_is_deterministic_and_each_change_has_its_own_id() {
        let at = |seconds_increment| {
            change(
                accounts_namespace(),
                ChangeKind::Update,
                Bson::ObjectId(customer_id()),
                Some(customer_document()),
                position(seconds_increment),
            )
        };
        let first = mapper().map(&at(5)).unwrap();
        let again = mapper().map(&at(5)).unwrap();
        assert_eq!(first, again);
        assert_eq!(first[0].payload, again[0].payload);
        let later = mapper().map(&at(6)).unwrap();
        assert_ne!(first[0].metadata.id, later[0].metadata.id);
        assert_eq!(first[0].payload, later[0].payload);
        // A delete at the same position is a different fact from a change there.
        let delete = change(
            accounts_namespace(),
            ChangeKind::Delete,
            Bson::ObjectId(customer_id()),
            None,
            position(5),
        );
        assert_ne!(
            mapper().map(&delete).unwrap()[0].metadata.id,
            first[0].metadata.id
        );
    }
}
