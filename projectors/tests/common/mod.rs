//! Helpers for the projectors' integration tests: per-test configs with unique names, a producer
//! of events with the connector's headers, the projector run in-process ([`start`], an
//! [`InProcess`] of the harness), "caught up" as the group's committed offsets reaching the end
//! of every partition, and collection snapshots. Events carry the shared sample values of
//! [`storefront_schemas::fixtures::sample`]; every step waits at most the harness's
//! [`storefront_tests::DEADLINE`].
#![allow(
    clippy::disallowed_methods,
    reason = "test code: synchronous Kafka calls wait on the local broker only"
)]
#![allow(dead_code)] // each test binary uses a subset

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use projectors::ProjectorError;
use projectors::config::{ApplySettings, ProjectionTargets, Projector, ProjectorsConfig};
use projectors::projection::to_bson;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use storefront_plumbing::kafka::TracingContext;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::documents::{Address, AddressType, CustomerId, Order, OrderStatusEvent};
use storefront_schemas::events::{EventPayload, FulfillmentRequestEvent};
// The shared samples; `status` and `approved_order` by name, as the tests build events with them.
pub use storefront_schemas::fixtures::sample::{self, approved_order, status};
use storefront_schemas::metadata::{
    EventMetadata, EventType, SCHEMA_VERSION, SourcePosition, event_id,
};
use storefront_schemas::topology::{Namespace, StorefrontTopics};
use storefront_tests::{DEADLINE, InProcess, eventually, stack, unique};

pub mod scenario;

/// A config with its own topics, collections, groups and dead-letter topic.
pub fn test_config() -> ProjectorsConfig {
    ProjectorsConfig {
        consumer_group_prefix: unique("projectors"),
        mongo: storefront_plumbing::settings::MongoSettings {
            server_selection_timeout_ms: 2_000,
            ..stack().mongo_settings()
        },
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(0),
        // Parallel tests share stderr: only what needs attention.
        log: storefront_plumbing::settings::LogSettings {
            filter: std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            ..Default::default()
        },
        topics: StorefrontTopics {
            customer_change: unique("customer"),
            fulfillment_request: unique("fulfill"),
            order_status_change: unique("status"),
        },
        targets: ProjectionTargets {
            orders: Namespace::new(unique("orders"), "customer.orders"),
            fulfillment: Namespace::new(unique("fulfillment"), "fulfillment.requests"),
        },
        apply: ApplySettings {
            batch_wait_ms: 5,
            commit_interval_ms: 50,
            retry_initial_ms: 20,
            retry_max_ms: 500,
            lag_interval_ms: 200,
            dead_letter_topic: unique("dead"),
            ..ApplySettings::default()
        },
        ..ProjectorsConfig::default()
    }
}

/// `config` with `batch_size` events per batch.
pub fn with_batch_size(mut config: ProjectorsConfig, batch_size: usize) -> ProjectorsConfig {
    config.apply.batch_size = batch_size;
    config
}

/// Creates the config's topics (as the projectors would at start) so events can be produced
/// before a projector runs.
pub async fn create_topics(config: &ProjectorsConfig) {
    let mismatches = projectors::setup_topics(config).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

/// A source position: `n` seconds after a fixed instant.
pub fn position(n: u32) -> u64 {
    SourcePosition {
        seconds: 1_764_000_000 + n,
        increment: 1,
    }
    .as_u64()
}

/// A record to produce: topic, key, body, headers.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outbound {
    /// The record to produce, to `partition` when given.
    pub fn to_record(&self, partition: Option<i32>) -> FutureRecord<'_, [u8], [u8]> {
        let headers = self
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut out = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &self.key {
            out = out.key(key.as_slice());
        }
        if let Some(body) = &self.body {
            out = out.payload(body.as_slice());
        }
        if let Some(partition) = partition {
            out = out.partition(partition);
        }
        out
    }
}

fn metadata(event_type: EventType, key: &str, position: u64, source: Namespace) -> EventMetadata {
    EventMetadata {
        id: event_id(event_type, &[key, &position.to_string()]),
        event_type,
        schema_version: SCHEMA_VERSION,
        source,
        position: SourcePosition::from_u64(position),
        time_ms: (SourcePosition::from_u64(position).seconds as i64) * 1000,
        subject: key.to_owned(),
    }
}

fn outbound(topic: &str, key: &str, body: Option<Vec<u8>>, metadata: &EventMetadata) -> Outbound {
    Outbound {
        topic: topic.to_owned(),
        key: Some(key.as_bytes().to_vec()),
        body,
        headers: metadata
            .to_headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect(),
    }
}

/// The addresses of a test customer named `first_name`: one SHIPPING address, in a city named
/// like them.
fn addresses(first_name: &str) -> Vec<Address> {
    vec![sample::address(AddressType::Shipping, first_name)]
}

/// A new customer id, stored as an ObjectId (as most are; [`CustomerId::Text`] for the others).
pub fn new_customer_id() -> CustomerId {
    CustomerId::ObjectId(ObjectId::new())
}

/// A CustomerChangeEvent of customer `id` at `position`, keyed and identified by `id`'s key
/// (ObjectId hex, or the string).
pub fn customer_change(
    config: &ProjectorsConfig,
    id: &CustomerId,
    position: u64,
    first_name: &str,
) -> Outbound {
    let key = id.key();
    let payload = sample::customer_change(&key, first_name, addresses(first_name));
    let metadata = metadata(
        EventType::CustomerChanged,
        &key,
        position,
        Namespace::new("accounts", "customer.accounts"),
    );
    outbound(
        &config.topics.customer_change,
        &key,
        Some(payload.to_json()),
        &metadata,
    )
}

/// The tombstone of customer `id` at `position`.
pub fn customer_deleted(config: &ProjectorsConfig, id: &CustomerId, position: u64) -> Outbound {
    let key = id.key();
    let metadata = metadata(
        EventType::CustomerDeleted,
        &key,
        position,
        Namespace::new("accounts", "customer.accounts"),
    );
    outbound(&config.topics.customer_change, &key, None, &metadata)
}

/// An OrderStatusChangeEvent of order `guid`.
pub fn status_change(
    config: &ProjectorsConfig,
    guid: &str,
    position: u64,
    status: OrderStatusEvent,
) -> Outbound {
    let payload = sample::status_change(guid, status);
    let metadata = metadata(
        EventType::OrderStatusChanged,
        guid,
        position,
        Namespace::new("fulfillment", "fulfillment.requests"),
    );
    outbound(
        &config.topics.order_status_change,
        guid,
        Some(payload.to_json()),
        &metadata,
    )
}

/// A FulfillmentRequestEvent of Ada's [`approved_order`] `guid` (timestamp 2000, its APPROVED
/// status), shipping to `city`, with a new customer id.
pub fn fulfillment_request(
    config: &ProjectorsConfig,
    guid: &str,
    position: u64,
    city: &str,
) -> Outbound {
    let payload = FulfillmentRequestEvent {
        customer_id: Some(new_customer_id().key()),
        ..sample::fulfillment_request(
            approved_order(guid),
            sample::address(AddressType::Shipping, city),
        )
    };
    let metadata = metadata(
        EventType::FulfillmentRequested,
        guid,
        position,
        Namespace::new("orders", "customer.orders"),
    );
    outbound(
        &config.topics.fulfillment_request,
        guid,
        Some(payload.to_json()),
        &metadata,
    )
}

/// A producer of test records.
pub struct Producer {
    producer: FutureProducer<TracingContext>,
}

impl Producer {
    pub fn new() -> Self {
        let producer = storefront_plumbing::kafka::producer_config(
            &stack().kafka_settings(),
            "projectors-tests",
            &[],
        )
        .create_with_context(TracingContext)
        .unwrap();
        Self { producer }
    }

    /// Sends `records` in order (each acknowledged before the next, so a partition receives them
    /// in this order), to `partition` when given.
    pub async fn send_all(&self, records: &[Outbound], partition: Option<i32>) {
        for record in records {
            self.send(record, partition).await;
        }
    }

    pub async fn send(&self, record: &Outbound, partition: Option<i32>) {
        let out = record.to_record(partition);
        self.producer
            .send(out, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
}

/// Starts `projectors` in-process and waits until they are healthy (joined their groups).
pub async fn start(
    config: &ProjectorsConfig,
    projectors: &[Projector],
) -> InProcess<ProjectorError> {
    InProcess::start(|stop| projectors::start(config.clone(), projectors.to_vec(), stop)).await
}

fn admin_consumer(group: &str) -> BaseConsumer<TracingContext> {
    storefront_plumbing::kafka::consumer_config(
        &stack().kafka_settings(),
        "projectors-tests",
        group,
        &[],
    )
    .create_with_context(TracingContext)
    .unwrap()
}

/// Committed offset and high watermark of every partition of `projector`'s topics.
pub fn progress(config: &ProjectorsConfig, projector: Projector) -> Vec<(String, i32, i64, i64)> {
    try_progress(config, projector).unwrap()
}

/// [`progress`], or the broker's error (right after a broker restart, metadata and watermark
/// requests fail for a moment with `NotLeaderForPartition` and the like).
pub fn try_progress(
    config: &ProjectorsConfig,
    projector: Projector,
) -> Result<Vec<(String, i32, i64, i64)>, rdkafka::error::KafkaError> {
    let consumer = admin_consumer(&config.consumer_group(projector));
    let mut list = TopicPartitionList::new();
    let mut highs = BTreeMap::new();
    for topic in config.source_topics(projector) {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        for partition in metadata.topics()[0].partitions() {
            list.add_partition(&topic, partition.id());
            let (_, high) =
                consumer.fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))?;
            highs.insert((topic.clone(), partition.id()), high);
        }
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            let high = highs[&(e.topic().to_owned(), e.partition())];
            (e.topic().to_owned(), e.partition(), offset, high)
        })
        .collect())
}

/// Whether `projector`'s group has committed every record of its topics; not while the broker
/// cannot tell.
pub fn is_caught_up(config: &ProjectorsConfig, projector: Projector) -> bool {
    try_progress(config, projector).is_ok_and(|progress| {
        progress
            .iter()
            .all(|(_, _, committed, high)| committed >= high)
    })
}

/// Waits until `projector`'s group has committed every record of its topics: every record was
/// applied or dead-lettered (offsets are committed only then).
pub async fn caught_up(config: &ProjectorsConfig, projector: Projector) {
    eventually(
        DEADLINE,
        &format!("projector {projector} to commit every record"),
        async || is_caught_up(config, projector).then_some(()),
    )
    .await;
}

pub async fn client() -> Client {
    stack().mongo_client().await
}

pub async fn collection(namespace: &Namespace) -> Collection<Document> {
    client()
        .await
        .database(&namespace.database)
        .collection(&namespace.collection)
}

/// Every document of `namespace`, keys sorted recursively (field order is not state), ordered by
/// `_id`.
pub async fn snapshot(namespace: &Namespace) -> Vec<Document> {
    use futures::TryStreamExt;
    let documents: Vec<Document> = collection(namespace)
        .await
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    documents.into_iter().map(canonical).collect()
}

/// `document` with its keys sorted, recursively; array order kept.
pub fn canonical(document: Document) -> Document {
    let mut entries: Vec<(String, Bson)> = document
        .into_iter()
        .map(|(k, v)| (k, canonical_value(v)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().collect()
}

fn canonical_value(value: Bson) -> Bson {
    match value {
        Bson::Document(d) => Bson::Document(canonical(d)),
        Bson::Array(items) => Bson::Array(items.into_iter().map(canonical_value).collect()),
        other => other,
    }
}

/// A CustomerOrders document as the Orders app would have it: the customer copy and `orders`
/// (prices as Decimal128).
pub fn customer_orders(id: &CustomerId, first_name: &str, orders: &[Order]) -> Document {
    doc! {
        "_id": id,
        "name": to_bson(&sample::name(first_name)).unwrap(),
        "contact": to_bson(&sample::contact(first_name)).unwrap(),
        "addresses": to_bson(&addresses(first_name)).unwrap(),
        "orders": to_bson(orders).unwrap(),
    }
}

/// The order MongoDB sorts customer ids in (strings before ObjectIds), for `sort_by_key` on
/// documents.
pub fn id_order(document: &Document) -> (u8, String) {
    match document.get("_id") {
        Some(Bson::String(text)) => (0, text.clone()),
        Some(Bson::ObjectId(id)) => (1, id.to_hex()),
        other => panic!("not a customer id: {other:?}"),
    }
}

/// Whether `document`'s `_id` is customer `id`.
pub fn has_id(document: &Document, id: &CustomerId) -> bool {
    document.get("_id") == Some(&Bson::from(id))
}

/// The `orderStatusType`s of order `guid` in `document`, in list order.
pub fn status_types(document: &Document, guid: &str) -> Vec<String> {
    let orders = document.get_array("orders").unwrap();
    let order = orders
        .iter()
        .filter_map(Bson::as_document)
        .find(|o| o.get_str("guid") == Ok(guid))
        .unwrap_or_else(|| panic!("order {guid} in {document}"));
    order
        .get_array("orderStatusEvents")
        .unwrap()
        .iter()
        .map(|s| {
            s.as_document()
                .unwrap()
                .get_str("orderStatusType")
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The document with `_id` `id`, if any.
pub async fn find(namespace: &Namespace, id: impl Into<Bson>) -> Option<Document> {
    collection(namespace)
        .await
        .find_one(doc! { "_id": id.into() })
        .await
        .unwrap()
}

/// The sum of `metric`'s samples whose labels include every one of `labels` (`name="value"`),
/// from this test process's metrics recorder.
pub fn metric_sum(metric: &str, labels: &[&str]) -> f64 {
    let text = storefront_plumbing::telemetry::metrics_handle()
        .unwrap()
        .render();
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{metric}{{")) || line.starts_with(&format!("{metric} "))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `GET /metrics` at `addr` mentions every one of `names`.
pub async fn until_metrics_list(addr: std::net::SocketAddr, names: &[&str]) -> String {
    eventually(
        DEADLINE,
        &format!("/metrics to list {names:?}"),
        async || {
            let (status, body) = storefront_tests::http_get(addr, "/metrics").await?;
            (status == 200 && names.iter().all(|name| body.contains(name))).then_some(body)
        },
    )
    .await
}
