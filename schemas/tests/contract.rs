//! The checked-in contract files agree with the types.
//!
//! - `schemas/json/*.schema.json` are exactly what [`json_schemas`] generates. After changing an
//!   event type, regenerate them with `UPDATE_SCHEMAS=1 cargo test -p storefront-schemas` and
//!   review the diff: fields may be added, never renamed or removed.
//! - `schemas/fixtures/<collection>.json` (source documents in MongoDB Extended JSON) read as
//!   their typed documents and give exactly the golden `schemas/fixtures/<Event>.json`. Golden
//!   files are reviewed by hand; `UPDATE_FIXTURES=1 cargo test -p storefront-schemas` rewrites
//!   them from the code.
//! - Every golden event validates against its schema.

use std::path::{Path, PathBuf};

use storefront_schemas::documents::{
    Customer, CustomerOrders, Fulfillment, OrderStatusType, document_from_extended_json,
    from_document,
};
use storefront_schemas::events::{
    CustomerChangeEvent, EventPayload, FulfillmentRequestEvent, OrderStatusChangeEvent,
    json_schemas,
};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_path(name: &str) -> PathBuf {
    crate_dir().join("fixtures").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn source<T: serde::de::DeserializeOwned>(collection: &str) -> T {
    let text = read(&fixture_path(&format!("{collection}.json")));
    let document = document_from_extended_json(&text).unwrap();
    from_document(&document).unwrap_or_else(|e| panic!("{collection}: {e}"))
}

/// Compares `event` (pretty-printed) with its golden file, or rewrites the file when asked.
fn check_golden<T: EventPayload>(event: &T) {
    let path = fixture_path(&format!("{}.json", T::NAME));
    let actual = serde_json::to_string_pretty(event).unwrap() + "\n";
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = read(&path);
    assert!(
        actual == expected,
        "{} differs from the code's output.\n--- expected\n{expected}\n--- actual\n{actual}\n\
         If the change is intended, rewrite it with \
         `UPDATE_FIXTURES=1 cargo test -p storefront-schemas` and review the diff.",
        path.display()
    );
}

#[test]
fn json_schemas_match_the_checked_in_files() {
    let dir = crate_dir().join("json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let generated = json_schemas();
    let mut stale = Vec::new();
    for (name, text) in &generated {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_ref() != Some(text) {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "JSON Schemas out of date with the event types: {stale:?}. Regenerate them with \
         `UPDATE_SCHEMAS=1 cargo test -p storefront-schemas` and review the diff (fields may be \
         added, never renamed or removed)."
    );
    // A schema file for an event that no longer exists would mislead consumers.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = generated.into_iter().map(|(name, _)| name).collect();
    expected.sort();
    assert_eq!(on_disk, expected, "unexpected files in {}", dir.display());
}

#[test]
fn customer_fixture_gives_the_golden_customer_change_event() {
    let customer: Customer = source("customer.accounts");
    assert_eq!(
        customer.credit_cards.len(),
        2,
        "the fixture must hold cards"
    );
    check_golden(&CustomerChangeEvent::from_customer(&customer));
}

#[test]
fn customer_orders_fixture_gives_the_golden_fulfillment_request_event() {
    let customer: CustomerOrders = source("customer.orders");
    // The fixture holds one order past APPROVED, one APPROVED and one CREATED: only the
    // APPROVED one is requested.
    let approved: Vec<_> = customer
        .orders
        .iter()
        .filter_map(|order| {
            let status = order.current_status()?;
            (status.order_status_type == OrderStatusType::Approved).then_some((order, status))
        })
        .collect();
    assert_eq!(approved.len(), 1);
    let (order, status) = approved[0];
    let address = customer.shipping_address().unwrap();
    check_golden(&FulfillmentRequestEvent::new(
        &customer, order, status, address,
    ));
}

#[test]
fn fulfillment_fixture_gives_the_golden_order_status_change_event() {
    let fulfillment: Fulfillment = source("fulfillment.requests");
    let event = OrderStatusChangeEvent {
        guid: fulfillment.order.guid.clone(),
        order_status_event: fulfillment.order.current_status().unwrap().clone(),
    };
    check_golden(&event);
}

fn golden_value(name: &str) -> serde_json::Value {
    serde_json::from_str(&read(&fixture_path(&format!("{name}.json")))).unwrap()
}

#[test]
fn golden_events_validate_against_their_schemas() {
    for (file, schema) in json_schemas() {
        let name = file.trim_end_matches(".schema.json");
        let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let event = golden_value(name);
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // And the schema is not vacuous: dropping a required field fails it.
        let mut broken = event.clone();
        let first_required = schema["required"][0].as_str().unwrap();
        broken.as_object_mut().unwrap().remove(first_required);
        assert!(
            !validator.is_valid(&broken),
            "{name} without {first_required}"
        );
    }
}

#[test]
fn golden_events_read_back_to_the_same_bytes() {
    fn round_trip<T: EventPayload + PartialEq + std::fmt::Debug>() {
        let golden = golden_value(T::NAME);
        let compact = serde_json::to_vec(&golden).unwrap();
        let event = T::from_json(&compact).unwrap();
        assert_eq!(event.to_json(), compact, "{}", T::NAME);
        assert_eq!(event.to_json(), event.to_json(), "{}", T::NAME);
    }
    round_trip::<CustomerChangeEvent>();
    round_trip::<FulfillmentRequestEvent>();
    round_trip::<OrderStatusChangeEvent>();
}

#[test]
fn customer_change_events_never_carry_card_data() {
    let customer: Customer = source("customer.accounts");
    let body = String::from_utf8(CustomerChangeEvent::from_customer(&customer).to_json()).unwrap();
    for card in &customer.credit_cards {
        for secret in [&card.number, &card.expiration, &card.name_on_card] {
            assert!(!body.contains(secret.as_str()), "{secret} in {body}");
        }
    }
    for field in ["creditCards", "number", "expiration", "nameOnCard"] {
        assert!(!body.contains(field), "{field} in {body}");
    }
    let (_, schema) = json_schemas()
        .into_iter()
        .find(|(name, _)| name.starts_with(CustomerChangeEvent::NAME))
        .unwrap();
    assert!(!schema.contains("creditCards") && !schema.contains("nameOnCard"));
}

#[test]
fn unknown_fields_in_event_bodies_are_ignored() {
    let mut golden = golden_value(OrderStatusChangeEvent::NAME);
    golden["addedLater"] = serde_json::json!({"any": "thing"});
    let body = serde_json::to_vec(&golden).unwrap();
    assert!(OrderStatusChangeEvent::from_json(&body).is_ok());
    let error = OrderStatusChangeEvent::from_json(b"{\"guid\": 1}").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("not a valid OrderStatusChangeEvent")
    );
}
