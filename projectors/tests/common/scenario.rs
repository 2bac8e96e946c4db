//! The scenario several tests share: both projections' events for four customers and two orders,
//! with deletes, a re-created customer, a customer never seen before its delete, out-of-order
//! statuses and repeated requests.

use mongodb::bson::{Bson, Document};
use projectors::config::ProjectorsConfig;
use storefront_schemas::documents::CustomerId;

use super::*;

/// The customers of the scenario: A has orders (the Orders app's), B, C and D have none. C's id
/// is a string, the others' ObjectIds.
#[derive(Debug, Clone)]
pub struct Ids {
    pub a: CustomerId,
    pub b: CustomerId,
    pub c: CustomerId,
    pub d: CustomerId,
}

impl Ids {
    pub fn new() -> Self {
        Self {
            a: new_customer_id(),
            b: new_customer_id(),
            c: CustomerId::Text("customer-c".into()),
            d: new_customer_id(),
        }
    }
}

/// Both projections' events, in source order: A changes, is deleted and re-created; B changes
/// and is deleted; C is deleted without ever being seen; D only changes; order g-1 gets four
/// statuses and three requests (the newest ships to Paris), g-2 one of each.
pub fn scenario(config: &ProjectorsConfig, ids: &Ids) -> Vec<Outbound> {
    let Ids { a, b, c, d } = ids;
    vec![
        customer_change(config, a, position(1), "A1"),
        customer_change(config, d, position(1), "D1"),
        status_change(
            config,
            "g-1",
            position(2),
            status(3_000, "PROCESSING", None),
        ),
        customer_change(config, b, position(3), "B1"),
        fulfillment_request(config, "g-1", position(4), "London"),
        customer_change(config, a, position(5), "A2"),
        status_change(config, "g-1", position(6), status(4_000, "SHIPPED", None)),
        customer_deleted(config, a, position(7)),
        customer_change(config, b, position(8), "B2"),
        fulfillment_request(config, "g-2", position(9), "Rome"),
        status_change(
            config,
            "g-1",
            position(10),
            status(5_000, "IN_TRANSIT", None),
        ),
        customer_deleted(config, b, position(11)),
        customer_change(config, a, position(12), "A3"),
        fulfillment_request(config, "g-1", position(13), "Paris"),
        customer_deleted(config, c, position(14)),
        status_change(config, "g-1", position(15), status(6_000, "RECEIVED", None)),
        status_change(
            config,
            "g-2",
            position(16),
            status(3_000, "PROCESSING", None),
        ),
        customer_change(config, d, position(17), "D2"),
    ]
}

/// The Orders application's own document: customer A with orders g-1 and g-2.
pub async fn seed(config: &ProjectorsConfig, ids: &Ids) {
    collection(&config.targets.orders)
        .await
        .insert_one(customer_orders(
            &ids.a,
            "A0",
            &[approved_order("g-1"), approved_order("g-2")],
        ))
        .await
        .unwrap();
}

pub fn first_name(document: &Document) -> &str {
    document
        .get_document("name")
        .unwrap()
        .get_str("firstName")
        .unwrap()
}

/// What the scenario delivered once, in order, must produce.
pub fn assert_expected(ids: &Ids, orders: &[Document], requests: &[Document]) {
    let by_id = |id: &CustomerId| {
        orders
            .iter()
            .find(|d| has_id(d, id))
            .unwrap_or_else(|| panic!("{id} in {orders:?}"))
    };
    let a = by_id(&ids.a);
    assert_eq!(first_name(a), "A3");
    assert!(!a.contains_key("customerDeleted"), "re-created: {a}");
    assert_eq!(
        status_types(a, "g-1"),
        [
            "CREATED",
            "APPROVED",
            "PROCESSING",
            "SHIPPED",
            "IN_TRANSIT",
            "RECEIVED"
        ]
    );
    assert_eq!(
        status_types(a, "g-2"),
        ["CREATED", "APPROVED", "PROCESSING"]
    );
    let b = by_id(&ids.b);
    assert_eq!(first_name(b), "B2");
    assert_eq!(b.get_bool("customerDeleted"), Ok(true));
    assert_eq!(b.get_array("orders").unwrap(), &Vec::<Bson>::new());
    let c = by_id(&ids.c);
    assert_eq!(c.get_bool("customerDeleted"), Ok(true));
    assert!(
        !c.contains_key("name"),
        "a placeholder, not a customer: {c}"
    );
    let d = by_id(&ids.d);
    assert_eq!(first_name(d), "D2", "{d}");
    assert_eq!(orders.len(), 4);
    assert_eq!(requests.len(), 2);
    let city = |request: &Document| {
        request
            .get_document("address")
            .unwrap()
            .get_str("city")
            .unwrap()
            .to_owned()
    };
    assert_eq!(requests[0].get_str("_id"), Ok("g-1"));
    assert_eq!(city(&requests[0]), "Paris");
    assert_eq!(city(&requests[1]), "Rome");
}
