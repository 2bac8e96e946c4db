//! The golden events of `schemas/fixtures/`: hand-written specifications of each payload's exact
//! body, kept with the contract so every crate's tests compare against the same text; and the
//! sample domain values tests build their events from ([`sample`]). Pure data, no I/O.

/// The golden body of event `event_name` (`CustomerChangeEvent`, ...), minified: the exact record
/// body the contract specifies. `None` for a name without a golden file.
pub fn golden_body(event_name: &str) -> Option<String> {
    let text = match event_name {
        "CustomerChangeEvent" => include_str!("../fixtures/CustomerChangeEvent.json"),
        "FulfillmentRequestEvent" => include_str!("../fixtures/FulfillmentRequestEvent.json"),
        "OrderStatusChangeEvent" => include_str!("../fixtures/OrderStatusChangeEvent.json"),
        _ => return None,
    };
    Some(minified(text))
}

/// `json` without the whitespace between its tokens; strings (which may hold spaces) and the
/// text of numbers are kept as written.
pub fn minified(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Sample domain values for tests: one set of builders every crate's tests share, so no test
/// module builds its own copy of a customer, an order or an event. Each takes what tests vary and
/// fixes the rest (Ms ... Lovelace, phone 555-0100, 1 Main St, LDN N1, product `p-1` "Lamp"); a
/// test relying on a value passes it or sets the field itself.
pub mod sample {
    use crate::documents::{
        Address, AddressType, Contact, Name, Order, OrderItem, OrderStatusEvent, OrderStatusType,
        Price, Product,
    };
    use crate::events::{CustomerChangeEvent, FulfillmentRequestEvent, OrderStatusChangeEvent};

    /// Ms `first_name` Lovelace.
    pub fn name(first_name: &str) -> Name {
        Name {
            title: "Ms".into(),
            first_name: first_name.into(),
            middle_name: None,
            last_name: "Lovelace".into(),
            suffix: None,
        }
    }

    /// Phone 555-0100 and the email `<first_name in lower case>@example.com`.
    pub fn contact(first_name: &str) -> Contact {
        Contact {
            primary_phone: "555-0100".into(),
            secondary_phone: None,
            email: format!("{}@example.com", first_name.to_lowercase()),
        }
    }

    /// A `home` address of `address_type`: 1 Main St, `city`, LDN N1.
    pub fn address(address_type: AddressType, city: &str) -> Address {
        Address {
            address_type,
            description: "home".into(),
            address1: "1 Main St".into(),
            address2: None,
            city: city.into(),
            state: "LDN".into(),
            postal_code: "N1".into(),
        }
    }

    /// Status `kind` (`SHIPPED`, ...; unknown texts are kept) at `timestamp`, with `note`.
    pub fn status(timestamp: i64, kind: &str, note: Option<&str>) -> OrderStatusEvent {
        OrderStatusEvent {
            timestamp,
            order_status_type: OrderStatusType::parse(kind),
            note: note.map(str::to_owned),
        }
    }

    /// `quantity` of product `p-1`, a lamp at `price`.
    pub fn order_item(price: Price, quantity: i64) -> OrderItem {
        OrderItem {
            product: Product {
                guid: "p-1".into(),
                title: "Lamp".into(),
                description: "A lamp".into(),
                price,
            },
            quantity,
        }
    }

    /// Order `guid` with the status history `statuses` (`(timestamp, kind)`, without notes) and
    /// `items`.
    pub fn order(guid: &str, statuses: &[(i64, &str)], items: Vec<OrderItem>) -> Order {
        Order {
            guid: guid.into(),
            order_status_events: statuses
                .iter()
                .map(|(timestamp, kind)| status(*timestamp, kind, None))
                .collect(),
            order_items: items,
        }
    }

    /// Order `guid`, CREATED at 1000 and APPROVED at 2000, of two lamps at 3.99 (events carry the
    /// price as the JSON number `3.99`, MongoDB as Decimal128 `3.99`).
    pub fn approved_order(guid: &str) -> Order {
        let price = Price::parse("3.99").expect("3.99 is a price");
        order(
            guid,
            &[(1_000, "CREATED"), (2_000, "APPROVED")],
            vec![order_item(price, 2)],
        )
    }

    /// The change of customer `id` (its key: ObjectId hex or the string) named `first_name`
    /// ([`name`], [`contact`] of `first_name`), with `addresses`.
    pub fn customer_change(
        id: &str,
        first_name: &str,
        addresses: Vec<Address>,
    ) -> CustomerChangeEvent {
        CustomerChangeEvent {
            id: id.into(),
            name: name(first_name),
            contact: contact(first_name),
            addresses,
        }
    }

    /// Ada's request to fulfill `order`, shipping to `address`, without a customer id; its
    /// timestamp is the order's (last) APPROVED status's, as the connector writes it (0 for an
    /// order never approved).
    pub fn fulfillment_request(order: Order, address: Address) -> FulfillmentRequestEvent {
        let timestamp = order
            .order_status_events
            .iter()
            .rev()
            .find(|s| s.order_status_type == OrderStatusType::Approved)
            .map_or(0, |s| s.timestamp);
        FulfillmentRequestEvent {
            timestamp,
            name: name("Ada"),
            contact: contact("Ada"),
            address,
            order,
            customer_id: None,
        }
    }

    /// Order `guid`'s status changed to `status`.
    pub fn status_change(guid: &str, status: OrderStatusEvent) -> OrderStatusChangeEvent {
        OrderStatusChangeEvent {
            guid: guid.into(),
            order_status_event: status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sample;
    use crate::documents::{AddressType, OrderStatusType, Price};
    use crate::events::EventPayload;

    #[test]
    fn a_sample_request_is_dated_by_its_orders_approval() {
        let shipping = || sample::address(AddressType::Shipping, "London");
        let approved = sample::fulfillment_request(sample::approved_order("g-1"), shipping());
        assert_eq!(approved.timestamp, 2_000);
        assert_eq!(approved.customer_id, None);
        assert_eq!(approved.contact.email, "ada@example.com");
        let moved_on = sample::order("g-2", &[(2, "APPROVED"), (3, "PROCESSING")], vec![]);
        assert_eq!(
            sample::fulfillment_request(moved_on, shipping()).timestamp,
            2
        );
        let never = sample::order("g-3", &[(1, "CREATED")], vec![]);
        assert_eq!(sample::fulfillment_request(never, shipping()).timestamp, 0);
    }

    #[test]
    fn the_sample_approved_order_is_two_lamps_at_3_99() {
        let order = sample::approved_order("g-1");
        assert_eq!(
            order.current_status().map(|s| &s.order_status_type),
            Some(&OrderStatusType::Approved)
        );
        assert_eq!(order.order_items[0].quantity, 2);
        assert_eq!(
            order.order_items[0].product.price,
            Price::parse("3.99").unwrap()
        );
        let body =
            sample::fulfillment_request(order, sample::address(AddressType::Shipping, "London"))
                .to_json();
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains(r#""price":3.99}"#)
        );
    }
}
