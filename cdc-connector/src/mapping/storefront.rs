//! The storefront's [`ChangeMapper`]: dispatches each change by its namespace to the mapper of
//! that collection. Namespaces are compared whole (database and collection), so a collection of
//! the same name in another database is not mistaken for a watched one.

use storefront_schemas::documents::DocumentError;
use storefront_schemas::topology::{StorefrontNamespaces, StorefrontTopics};

use super::{
    AccountsMapper, ChangeMapper, Defect, FulfillmentMapper, Mapped, OrdersMapper, SourceChange,
};

/// Maps changes of the three storefront collections to their events.
#[derive(Debug, Clone)]
pub struct StorefrontMapper {
    namespaces: StorefrontNamespaces,
    accounts: AccountsMapper,
    orders: OrdersMapper,
    fulfillment: FulfillmentMapper,
}

impl StorefrontMapper {
    /// A mapper for the collections in `namespaces`, publishing on `topics`.
    pub fn new(namespaces: StorefrontNamespaces, topics: StorefrontTopics) -> Self {
        Self {
            namespaces,
            accounts: AccountsMapper::new(topics.customer_change),
            orders: OrdersMapper::new(topics.fulfillment_request),
            fulfillment: FulfillmentMapper::new(topics.order_status_change),
        }
    }
}

impl ChangeMapper for StorefrontMapper {
    fn map(&self, change: &SourceChange) -> Mapped {
        let namespace = &change.namespace;
        if *namespace == self.namespaces.accounts {
            self.accounts.map(change)
        } else if *namespace == self.namespaces.orders {
            self.orders.map(change)
        } else if *namespace == self.namespaces.fulfillment {
            self.fulfillment.map(change)
        } else {
            // The runtime only feeds watched collections; should another ever arrive, it is
            // dead-lettered, not dropped.
            Mapped::defect(Defect::of_change(
                change,
                DocumentError::InvalidField {
                    field: String::new(),
                    reason: format!("no mapping for collection {namespace}"),
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Bson;
    use storefront_schemas::metadata::EventType;
    use storefront_schemas::topology::Namespace;

    use super::*;
    use crate::mapping::ChangeKind;
    use crate::mapping::testing::{
        change, customer_document, customer_id, customer_orders_document, fulfillment_document,
        order, position,
    };

    #[test]
    fn changes_go_to_the_mapper_of_their_collection() {
        let namespaces = StorefrontNamespaces {
            accounts: Namespace::new("crm", "people"),
            orders: Namespace::new("shop", "history"),
            fulfillment: Namespace::new("warehouse", "jobs"),
        };
        let topics = StorefrontTopics {
            customer_change: "t.customer".into(),
            fulfillment_request: "t.fulfill".into(),
            order_status_change: "t.status".into(),
        };
        let mapper = StorefrontMapper::new(namespaces.clone(), topics);
        let id = Bson::ObjectId(customer_id());
        let cases = [
            (
                namespaces.accounts.clone(),
                customer_document(),
                "t.customer",
                EventType::CustomerChanged,
            ),
            (
                namespaces.orders.clone(),
                customer_orders_document(vec![order("g-1", &[(1, "APPROVED")])]),
                "t.fulfill",
                EventType::FulfillmentRequested,
            ),
            (
                namespaces.fulfillment.clone(),
                fulfillment_document(order("g-1", &[(1, "APPROVED"), (2, "SHIPPED")])),
                "t.status",
                EventType::OrderStatusChanged,
            ),
        ];
        for (namespace, document, topic, event_type) in cases {
            let events = mapper
                .map(&change(
                    namespace.clone(),
                    ChangeKind::Insert,
                    id.clone(),
                    Some(document),
                    position(1),
                ))
                .into_result()
                .unwrap();
            assert_eq!(events.len(), 1, "{namespace}");
            assert_eq!(events[0].topic, topic, "{namespace}");
            assert_eq!(events[0].metadata.event_type, event_type, "{namespace}");
            assert_eq!(events[0].metadata.source, namespace);
        }
    }

    #[test]
    fn other_collections_are_refused_by_name() {
        let mapper =
            StorefrontMapper::new(StorefrontNamespaces::default(), StorefrontTopics::default());
        for namespace in [
            Namespace::new("accounts", "customer.orders"),
            Namespace::new("other", "customer.accounts"),
            Namespace::new("accounts", "customers"),
        ] {
            let result = mapper.map(&change(
                namespace.clone(),
                ChangeKind::Insert,
                Bson::ObjectId(customer_id()),
                Some(customer_document()),
                position(1),
            ));
            assert!(result.events.is_empty());
            assert_eq!(result.defects.len(), 1);
            let reason = &result.defects[0].reason;
            assert!(
                reason.ends_with(&format!("no mapping for collection {namespace}")),
                "{reason}"
            );
        }
    }
}
