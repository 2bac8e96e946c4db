//! `customer.accounts` → CustomerChangeEvent (and a tombstone on delete).
//!
//! ```text
//! snapshot | insert | update | replace --post-image--> CustomerChangeEvent (key: customer id)
//! update whose post-image is gone      -------------> nothing (the delete follows)
//! delete                               -------------> tombstone           (key: customer id)
//! ```
//!
//! Every change of a customer is its own event: the id covers the namespace, the customer and
//! the change's cluster time, so a re-read change repeats its id while two real changes never
//! share one (`once_per_id` is off; the projection orders them by `metadata.position`). The
//! payload is built field by field: credit cards are never read, so no card (well-formed or not)
//! can reach an event or stop one.
//!
//! # Defects, per field
//! | field | defect | effect |
//! |---|---|---|
//! | `_id` | not an ObjectId or a non-empty string | the change is not published |
//! | `name`, `contact` | missing, or a required field in it missing or mistyped | the change is not published |
//! | `addresses` | not a list | the change is not published |
//! | `addresses.N` | not an object, or a required field missing or mistyped | that address is left out; the event carries the others |
//! | `creditCards`, unknown fields | anything | never read |
//!
//! The key (and payload `id`) is the ObjectId's hex or the string id.

use storefront_schemas::documents::{Address, Contact, CustomerId, DocumentError, Name};
use storefront_schemas::events::{CustomerChangeEvent, EventPayload};
use storefront_schemas::metadata::{EventType, event_id};

use super::{
    ChangeKind, ChangeMapper, Defect, Mapped, OutboundEvent, SourceChange, customer_id, entries,
    or_change_defect, outbound, post_image, read_entry, required,
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

    fn event(
        &self,
        change: &SourceChange,
        event_type: EventType,
        key: String,
        payload: Option<Vec<u8>>,
    ) -> OutboundEvent {
        let id = event_id(
            event_type,
            &[
                &change.namespace.database,
                &change.namespace.collection,
                &key,
                &change.position.as_u64().to_string(),
            ],
        );
        outbound(change, &self.topic, key, event_type, id, payload, false)
    }
}

impl ChangeMapper for AccountsMapper {
    fn map(&self, change: &SourceChange) -> Mapped {
        or_change_defect(change, self.map_customer(change))
    }
}

impl AccountsMapper {
    fn map_customer(&self, change: &SourceChange) -> Result<Mapped, DocumentError> {
        if change.kind == ChangeKind::Delete {
            // Only the key survives a delete; the tombstone tells compaction and the projection
            // that the customer is gone.
            let id = CustomerId::from_bson(&change.document_id).map_err(|reason| {
                DocumentError::InvalidField {
                    field: "_id".to_owned(),
                    reason,
                }
            })?;
            return Ok(Mapped {
                events: vec![self.event(change, EventType::CustomerDeleted, id.key(), None)],
                defects: Vec::new(),
            });
        }
        let Some(document) = post_image(change)? else {
            return Ok(Mapped::default());
        };
        let mut defects = Vec::new();
        // Defects that stop the change; entry defects only leave their entry out.
        let mut stopping = Vec::new();
        let mut addresses = Vec::new();
        match entries(document, "", "addresses") {
            Ok(list) => {
                for (path, entry) in list {
                    match read_entry::<Address>(&path, entry) {
                        Ok(address) => addresses.push(address),
                        Err(error) => defects.push(Defect::of_entry(
                            change, &path, entry, None, "address", error,
                        )),
                    }
                }
            }
            Err(error) => stopping.push(error),
        }
        let parts = (
            customer_id(document),
            required::<Name>(document, "", "name"),
            required::<Contact>(document, "", "contact"),
        );
        let (id, name, contact) = match parts {
            (Ok(id), Ok(name), Ok(contact)) if stopping.is_empty() => (id, name, contact),
            (id, name, contact) => {
                stopping.extend([id.err(), name.err(), contact.err()].into_iter().flatten());
                defects.extend(
                    stopping
                        .into_iter()
                        .map(|error| Defect::of_change(change, error)),
                );
                return Ok(Mapped {
                    events: Vec::new(),
                    defects,
                });
            }
        };
        let payload = CustomerChangeEvent {
            id: id.key(),
            name,
            contact,
            addresses,
        };
        Ok(Mapped {
            events: vec![self.event(
                change,
                CustomerChangeEvent::EVENT_TYPE,
                payload.id.clone(),
                Some(payload.to_json()),
            )],
            defects,
        })
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, Document, doc};
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
        /// One CustomerChangeEvent with this many addresses.
        ChangedWithAddresses(usize),
        /// One tombstone.
        Deleted,
        /// No events.
        Nothing,
        /// No events; one defect of the change, on this field.
        Defect(&'static str),
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

    fn missing(field: &'static str) -> Expect {
        Expect::Defect(field)
    }

    fn invalid(field: &'static str) -> Expect {
        // The reason text comes from the reader; the field path is the contract.
        Expect::Defect(field)
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
                "_id is a string (of hex digits)",
                Insert,
                id.clone(),
                Some(with("_id", CUSTOMER_HEX)),
                Expect::Changed,
            ),
            (
                "_id is an empty string",
                Insert,
                id.clone(),
                Some(with("_id", "")),
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
                "delete of a string _id",
                Delete,
                Bson::String(CUSTOMER_HEX.into()),
                None,
                Expect::Deleted,
            ),
            (
                "delete of an int _id",
                Delete,
                Bson::Int32(7),
                None,
                invalid("_id"),
            ),
            (
                "addresses null",
                Insert,
                id.clone(),
                Some(with("addresses", Bson::Null)),
                Expect::ChangedWithAddresses(0),
            ),
            (
                "no addresses",
                Insert,
                id.clone(),
                Some(without(&["addresses"])),
                Expect::ChangedWithAddresses(0),
            ),
            (
                "credit cards malformed",
                Insert,
                id.clone(),
                Some(with("creditCards", vec![Bson::Int32(4111)])),
                Expect::Changed,
            ),
            (
                "credit cards not a list",
                Insert,
                id.clone(),
                Some(with("creditCards", "4111111111111111")),
                Expect::Changed,
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
            let result = mapper().map(&change).into_result();
            match (&expect, result) {
                (Expect::Changed | Expect::ChangedWithAddresses(_), Ok(events)) => {
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
                    let addresses = match expect {
                        Expect::ChangedWithAddresses(count) => count,
                        _ => 2,
                    };
                    assert_eq!(payload.addresses.len(), addresses, "{name}");
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
                (Expect::Defect(field), Err(defects)) => {
                    assert_eq!(defects.len(), 1, "{name}: {defects:?}");
                    assert_eq!(defects[0].field, *field, "{name}: {defects:?}");
                    assert!(defects[0].entry.is_none(), "{name}");
                    assert!(
                        defects[0].reason.starts_with("change not published"),
                        "{name}: {}",
                        defects[0].reason
                    );
                }
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
        let events = mapper().map(&change).into_result().unwrap();
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
        let events = mapper().map(&change).into_result().unwrap();
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
        let first = mapper().map(&at(5)).into_result().unwrap();
        let again = mapper().map(&at(5)).into_result().unwrap();
        assert_eq!(first, again);
        assert_eq!(first[0].payload, again[0].payload);
        let later = mapper().map(&at(6)).into_result().unwrap();
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
            mapper().map(&delete).into_result().unwrap()[0].metadata.id,
            first[0].metadata.id
        );
    }

    #[test]
    fn a_bad_address_is_left_out_and_reported_once_while_it_stays_the_same() {
        let with_bad_address = |city: Bson, first_name: &str| {
            let mut document = customer_document();
            let mut addresses = document.get_array("addresses").unwrap().clone();
            addresses[0].as_document_mut().unwrap().insert("city", city);
            document.insert("addresses", addresses);
            document
                .get_document_mut("name")
                .unwrap()
                .insert("firstName", first_name);
            document
        };
        let map = |document: Document, increment: u32| {
            mapper().map(&change(
                accounts_namespace(),
                ChangeKind::Update,
                Bson::ObjectId(customer_id()),
                Some(document),
                position(increment),
            ))
        };
        let first = map(with_bad_address(Bson::Int32(12), "Ada"), 1);
        assert_eq!(first.events.len(), 1);
        let payload =
            CustomerChangeEvent::from_json(first.events[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(payload.addresses.len(), 1);
        assert_eq!(payload.addresses[0].description, "home");
        assert_eq!(first.defects.len(), 1);
        let defect = &first.defects[0];
        assert_eq!(defect.field, "addresses.0.city");
        assert_eq!(defect.entry.as_ref().unwrap().path, "addresses.0");
        assert!(
            defect.reason.starts_with("address at addresses.0 left out"),
            "{}",
            defect.reason
        );
        assert_eq!(defect.order_guid, None);
        // A later change that leaves the address as it was repeats the defect's id (the
        // runtime sends it once); a change to the bad address is a new defect.
        let unchanged = map(with_bad_address(Bson::Int32(12), "Augusta"), 2);
        assert_eq!(unchanged.defects[0].id, defect.id);
        assert_ne!(unchanged.events[0].metadata.id, first.events[0].metadata.id);
        let changed = map(with_bad_address(Bson::Int32(13), "Ada"), 3);
        assert_ne!(changed.defects[0].id, defect.id);
        // Repaired: every address flows.
        let repaired = map(with_bad_address(Bson::String("Bath".into()), "Ada"), 4);
        assert!(repaired.defects.is_empty());
        let payload =
            CustomerChangeEvent::from_json(repaired.events[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(payload.addresses.len(), 2);
    }
}
