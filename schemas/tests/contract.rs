//! The checked-in contract files agree with the types.
//!
//! - `schemas/json/*.schema.json` are exactly what [`json_schemas`] generates. After changing an
//!   event type, regenerate them with `UPDATE_SCHEMAS=1 cargo test -p storefront-schemas` and
//!   review the diff: fields may be added, never renamed or removed.
//! - `schemas/fixtures/<collection>.json` (source documents in MongoDB Extended JSON, the
//!   original services' example customer) read as their typed documents and give exactly the
//!   golden `schemas/fixtures/<Event>.json`.
//! - Every golden event validates against its schema, and reads back to its own bytes.
//!
//! The golden events are specifications, written by hand from `docs/domain.md` and
//! `docs/mapping.md` (which order is requested, which address, which status is current, how a
//! price is written), with fields in the order the original services write them. No test writes
//! them: when the code disagrees, either the code is wrong or the specification changes, and then
//! the golden file is edited by hand like any other specification. They are compared byte for
//! byte once the whitespace between tokens is removed, so a number written differently (`12.0`
//! for `12`, `3.990` for `3.99`) is a difference.

use std::path::{Path, PathBuf};

use storefront_schemas::documents::{
    Customer, CustomerOrders, Fulfillment, OrderStatusType, document_from_extended_json,
    from_document,
};
use storefront_schemas::events::{
    CustomerChangeEvent, EventPayload, FulfillmentRequestEvent, OrderStatusChangeEvent,
    json_schemas,
};
use storefront_schemas::fixtures;

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

/// The golden event `name`, minified: the exact body the contract specifies.
fn golden_body(name: &str) -> String {
    let body = fixtures::golden_body(name).unwrap_or_else(|| panic!("no golden event {name}"));
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap_or_else(|e| panic!("{name}.json is not JSON: {e}"));
    body
}

/// Asserts that `event`'s body is exactly its golden file's.
fn check_golden<T: EventPayload>(event: &T) {
    let actual = String::from_utf8(event.to_json()).unwrap();
    let expected = golden_body(T::NAME);
    if actual == expected {
        return;
    }
    let same_values = serde_json::from_str::<serde_json::Value>(&actual).ok()
        == serde_json::from_str::<serde_json::Value>(&expected).ok();
    panic!(
        "{} differs from the golden schemas/fixtures/{}.json{}\n--- expected\n{expected}\n--- actual\n{actual}",
        T::NAME,
        T::NAME,
        if same_values {
            " (same values: field order or the text of a number differs)"
        } else {
            ""
        }
    );
}

#[test]
fn minified_keeps_strings_and_drops_only_whitespace_between_tokens() {
    assert_eq!(
        fixtures::minified("{ \"a b\": [ 1, 2.50 ],\n  \"c\": \"x \\\" y\" }"),
        "{\"a b\":[1,2.50],\"c\":\"x \\\" y\"}"
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
    serde_json::from_str(&golden_body(name)).unwrap()
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
    /// Read by the code and written again, a golden body is the same text: nothing is dropped,
    /// added, reordered or reformatted on the way through.
    fn round_trip<T: EventPayload>() {
        let golden = golden_body(T::NAME);
        let event = T::from_json(golden.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            golden,
            "{}",
            T::NAME
        );
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
