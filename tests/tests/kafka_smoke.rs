//! Smoke tests of the local Kafka broker as the product uses it, through rdkafka and the client
//! builders of `storefront-plumbing`: an idempotent producer, a consumer group whose offsets move
//! only on manual commit, and transactions seen correctly by a read_committed consumer.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: synchronous Kafka calls wait on the local broker only"
)]

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use storefront_plumbing::kafka::{
    TopicSpec, TracingContext, consumer_config, ensure_topics, producer_config,
};
use storefront_tests::{DEADLINE, stack, unique};

async fn new_topic(partitions: i32) -> String {
    let name = unique("smoke");
    let spec = TopicSpec {
        name: name.clone(),
        partitions,
        replication_factor: 1,
        configs: Vec::new(),
    };
    ensure_topics(&stack().kafka_settings(), "storefront-tests", &[spec])
        .await
        .unwrap();
    name
}

fn consumer(group: &str, topic: &str) -> StreamConsumer<TracingContext> {
    let consumer: StreamConsumer<TracingContext> =
        consumer_config(&stack().kafka_settings(), "storefront-tests", group, &[])
            .create_with_context(TracingContext)
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Receives the next message as (key, payload), failing the test after the deadline.
async fn receive(consumer: &StreamConsumer<TracingContext>) -> (String, String, i32, i64) {
    let message = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .expect("a message before the deadline")
        .unwrap();
    let text =
        |bytes: Option<&[u8]>| String::from_utf8(bytes.unwrap_or_default().to_vec()).unwrap();
    (
        text(message.key()),
        text(message.payload()),
        message.partition(),
        message.offset(),
    )
}

#[tokio::test]
async fn idempotent_producer_and_manual_commits_resume_where_the_group_stopped() {
    let topic = new_topic(1).await;
    let producer: FutureProducer =
        producer_config(&stack().kafka_settings(), "storefront-tests", &[])
            .create()
            .unwrap();
    for n in 0..6 {
        let payload = format!("event-{n}");
        producer
            .send(
                FutureRecord::to(&topic).key("customer-1").payload(&payload),
                DEADLINE,
            )
            .await
            .unwrap();
    }

    let group = unique("group");
    let first = consumer(&group, &topic);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (key, payload, partition, offset) = receive(&first).await;
        assert_eq!(key, "customer-1");
        seen.push(payload);
        // Commit exactly what was processed: the next offset after this message.
        let mut position = TopicPartitionList::new();
        position
            .add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
            .unwrap();
        first.commit(&position, CommitMode::Sync).unwrap();
    }
    assert_eq!(seen, ["event-0", "event-1", "event-2"]);
    // Reading one more without committing it: a restarted group must see it again.
    let (_, uncommitted, _, _) = receive(&first).await;
    assert_eq!(uncommitted, "event-3");
    drop(first);

    let second = consumer(&group, &topic);
    let rest: Vec<String> = {
        let mut rest = Vec::new();
        for _ in 0..3 {
            rest.push(receive(&second).await.1);
        }
        rest
    };
    assert_eq!(rest, ["event-3", "event-4", "event-5"]);
}

#[tokio::test]
async fn read_committed_consumers_see_committed_transactions_only() {
    let topic = new_topic(1).await;
    let mut config = producer_config(&stack().kafka_settings(), "storefront-tests", &[]);
    config.set("transactional.id", unique("tx"));
    let producer: FutureProducer = config.create().unwrap();
    producer.init_transactions(DEADLINE).unwrap();

    #[allow(clippy::result_large_err)] // rdkafka's send_result returns the record on error
    let send = |payload: &'static str| {
        producer.send_result(FutureRecord::to(&topic).key("k").payload(payload))
    };
    producer.begin_transaction().unwrap();
    let committed = send("committed").unwrap();
    producer.commit_transaction(DEADLINE).unwrap();
    committed.await.unwrap().unwrap();

    producer.begin_transaction().unwrap();
    let aborted = send("aborted").unwrap();
    producer.flush(DEADLINE).unwrap();
    producer.abort_transaction(DEADLINE).unwrap();
    // The aborted record was written to the log before the abort marker.
    let _ = aborted.await;

    producer.begin_transaction().unwrap();
    let last = send("after-abort").unwrap();
    producer.commit_transaction(DEADLINE).unwrap();
    last.await.unwrap().unwrap();

    // The marker committed after the abort bounds the read: no fixed wait for "nothing more".
    let reader = consumer(&unique("group"), &topic);
    let first = receive(&reader).await.1;
    let second = receive(&reader).await.1;
    assert_eq!(
        [first.as_str(), second.as_str()],
        ["committed", "after-abort"]
    );
}
