//! The connector's configuration: `cdc-connector.toml`, `CDC_CONNECTOR_*` variables and flags.

use serde::{Deserialize, Serialize};
use storefront_plumbing::config::Validate;
use storefront_plumbing::settings::{HttpSettings, KafkaSettings, LogSettings, MongoSettings};
use storefront_plumbing::topics::NewTopicSettings;
use storefront_schemas::sensitive::{Redaction, SensitiveFields};
use storefront_schemas::topology::{
    Namespace, StorefrontNamespaces, StorefrontTopics, topic_name_problem,
};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "CDC_CONNECTOR_";

/// Default port of the connector's `/health` and `/metrics` endpoint.
pub const DEFAULT_HTTP_PORT: u16 = 9464;

/// Everything the connector can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The MongoDB replica set whose collections are watched.
    #[serde(default)]
    pub mongo: MongoSettings,
    /// The Kafka cluster the events go to.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// The `/health` and `/metrics` endpoint.
    #[serde(default = "default_http")]
    pub http: HttpSettings,
    /// Log output.
    #[serde(default)]
    pub log: LogSettings,
    /// The watched collections.
    #[serde(default)]
    pub sources: StorefrontNamespaces,
    /// The event topics.
    #[serde(default)]
    pub topics: StorefrontTopics,
    /// How topics are created when missing.
    #[serde(default)]
    pub new_topics: NewTopicSettings,
    /// How each change stream starts, resumes and paces itself.
    #[serde(default)]
    pub stream: StreamSettings,
    /// Where resume tokens and the once-per-id ledger are kept.
    #[serde(default)]
    pub checkpoints: CheckpointSettings,
    /// One active process per set of streams, others standing by.
    #[serde(default)]
    pub lease: LeaseSettings,
    /// Fields whose values never leave their source, beyond the contract's (`creditCards` of
    /// `customer.accounts`, always sensitive): dotted paths per source, such as
    /// `accounts = ["contact.email"]`. Their values are replaced by a marker as each document is
    /// read, so no event, dead letter, header, log line or error carries them.
    #[serde(default)]
    pub sensitive: SensitiveFields,
    /// What `cdc-connector reconcile` compares the sources with, and how hard it reads.
    #[serde(default)]
    pub reconcile: ReconcileSettings,
}

/// What `cdc-connector reconcile` compares the sources with, and how hard it reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// The collections the projectors write (the projectors' `[targets]`; the defaults are
    /// theirs): the customer copies and status histories (`orders`), the requests
    /// (`fulfillment`).
    pub targets: projectors::config::ProjectionTargets,
    /// Documents per read batch: what reconcile holds in memory per collection it reads.
    pub batch_size: u32,
    /// At most this many documents read per second, sources and copies together, so a run does
    /// not load the servers (0: no limit).
    pub max_documents_per_second: u64,
    /// Sample keys shown per check and kind of drift.
    pub samples: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            targets: projectors::config::ProjectionTargets::default(),
            batch_size: 500,
            max_documents_per_second: 5_000,
            samples: 5,
        }
    }
}

/// How each change stream starts, resumes and paces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Which of the `sources` to watch (default: all three). A deployment can split them across
    /// connector instances, each with its own checkpoints.
    pub watch: Vec<WatchedSource>,
    /// When to publish the documents that already exist: `initial` (when a stream has no
    /// checkpoint), `never` (stream from now on), `always` (at every start).
    pub snapshot: SnapshotMode,
    /// What to do when the server no longer accepts a stream's resume token (its oplog has moved
    /// past it): `fail` stops with an error naming the stream; `resnapshot` snapshots that
    /// collection again and streams on from there.
    pub on_lost_history: LostHistoryPolicy,
    /// Events published but not yet acknowledged by Kafka, per stream. When reached, the stream
    /// waits for acknowledgements: backpressure, never dropping. This bounds the connector's
    /// memory while Kafka is down: each record waiting costs about 3 KB (librdkafka's copy,
    /// its in-flight entry), so the default keeps a connector of three streams under 100 MB,
    /// where 10,000 took it to 160 MB (docs/benchmarks.md, "Memory under a stalled sink"). A
    /// higher value did not speed the connector up in its throughput bench (Kafka acknowledges
    /// within milliseconds).
    pub max_in_flight: usize,
    /// How long the server holds an empty `getMore` of a change stream open, waiting for a
    /// change (`maxAwaitTimeMS`), in milliseconds. A change ends the wait at once, so this bounds
    /// only how often an idle stream asks (and how fresh its idle resume token is).
    pub max_await_ms: u64,
    /// Longest pause between polls of an idle change stream, in milliseconds, used only with a
    /// server that answers an empty `getMore` at once instead of waiting `max_await_ms` (MongoDB
    /// waits; the stock mongo-java-server does not).
    pub idle_poll_max_ms: u64,
    /// Largest event payload published, in bytes; a larger one goes to the dead-letter topic.
    /// Keep it at or below the topics' `max.message.bytes` (1 MiB by default).
    pub max_event_bytes: usize,
    /// How long, in milliseconds, the oldest record may wait for Kafka's acknowledgement before
    /// `/health` reports its stream failing (and recovers once Kafka acknowledges again). Records
    /// are never dropped meanwhile; librdkafka keeps retrying them.
    pub delivery_stall_ms: u64,
    /// How long, in milliseconds, a read of the change stream may go unanswered by MongoDB (or
    /// keep failing), and a change the unread-change probe found may stay unread, before
    /// `/health` reports the stream failing. Must exceed `max_await_ms`, which a quiet stream's
    /// read legitimately waits.
    pub read_stall_ms: u64,
    /// How often, in milliseconds, a probe looks for changes after the last one the stream read
    /// (one short `aggregate` per check), so that a stream that reports itself idle while its
    /// collection has newer changes shows as failing; 0 turns the probe off.
    pub unread_check_ms: u64,
    /// Topic for source documents that cannot be mapped or published, with the reason.
    pub dead_letter_topic: String,
    /// Which document an update event carries: `post_image` (the document exactly as that
    /// update left it; needs MongoDB 6.0+ with `changeStreamPreAndPostImages` enabled on the
    /// collection) or `lookup` (the document as it is when the event is read: a later change can
    /// hide an intermediate state, such as a status that lasted a moment).
    pub full_document: FullDocumentMode,
    /// With `post_image`: enable `changeStreamPreAndPostImages` on each watched collection at
    /// start (creating the collection if missing). Needs the `collMod` privilege; turn it off
    /// when an administrator enables the option instead.
    pub enable_post_images: bool,
}

/// Which document an update event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullDocumentMode {
    /// The post-image recorded with the change (`fullDocument: required`).
    PostImage,
    /// The current document, looked up when the event is read (`fullDocument: updateLookup`).
    Lookup,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            watch: WatchedSource::ALL.to_vec(),
            snapshot: SnapshotMode::Initial,
            on_lost_history: LostHistoryPolicy::Fail,
            max_in_flight: 2_000,
            max_await_ms: 1_000,
            idle_poll_max_ms: 500,
            max_event_bytes: 1_000_000,
            delivery_stall_ms: 10_000,
            read_stall_ms: 8_000,
            unread_check_ms: 5_000,
            dead_letter_topic: "storefront-cdc.connector.dead-letter".to_owned(),
            full_document: FullDocumentMode::PostImage,
            enable_post_images: true,
        }
    }
}

/// One active connector process per set of streams: a lease in MongoDB (see the `lease` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSettings {
    /// Take the lease before streaming. Turn it off only where one process is guaranteed (it
    /// saves the wait of `ttl_ms` when a crashed process is restarted).
    pub enabled: bool,
    /// The lease's name; processes with the same name share it. Default: derived from the
    /// watched namespaces, so instances that split the sources (`stream.watch`) do not compete.
    pub name: Option<String>,
    /// How long a lease stays valid after its holder's last renewal, in milliseconds: a standby
    /// takes over this long after the holder stopped renewing.
    pub ttl_ms: u64,
    /// How often the holder renews, in milliseconds (at most a third of `ttl_ms`).
    pub renew_interval_ms: u64,
    /// Collection of lease documents, in `checkpoints.database`.
    pub collection: String,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            name: None,
            ttl_ms: 10_000,
            renew_interval_ms: 2_000,
            collection: "leases".to_owned(),
        }
    }
}

/// One of the storefront's source collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchedSource {
    /// `sources.accounts`.
    Accounts,
    /// `sources.orders`.
    Orders,
    /// `sources.fulfillment`.
    Fulfillment,
}

impl WatchedSource {
    /// Every source.
    pub const ALL: [WatchedSource; 3] = [
        WatchedSource::Accounts,
        WatchedSource::Orders,
        WatchedSource::Fulfillment,
    ];

    /// The redaction of this source's documents: the contract's sensitive fields and `extra`.
    pub fn redaction(self, extra: &SensitiveFields) -> Redaction {
        let contract = SensitiveFields::contract();
        let pick = |fields: &SensitiveFields| match self {
            WatchedSource::Accounts => fields.accounts.clone(),
            WatchedSource::Orders => fields.orders.clone(),
            WatchedSource::Fulfillment => fields.fulfillment.clone(),
        };
        Redaction::new(pick(&contract).iter().chain(pick(extra).iter()))
    }

    /// The namespace of this source in `sources`.
    pub fn namespace(self, sources: &StorefrontNamespaces) -> &Namespace {
        match self {
            WatchedSource::Accounts => &sources.accounts,
            WatchedSource::Orders => &sources.orders,
            WatchedSource::Fulfillment => &sources.fulfillment,
        }
    }
}

/// When existing documents are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Snapshot a collection whose stream has no checkpoint yet.
    Initial,
    /// Never snapshot; a stream without a checkpoint starts at the current time.
    Never,
    /// Snapshot every collection at every start.
    Always,
}

/// What to do when a resume token is no longer accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostHistoryPolicy {
    /// Stop with an error naming the stream and the remedy.
    Fail,
    /// Snapshot that collection again, then stream on.
    Resnapshot,
}

/// Where the connector keeps its own state, in the source MongoDB deployment: it is as available
/// as the data it describes, needs no other store, and an upsert per checkpoint is atomic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSettings {
    /// Database of the connector's state (never one of the watched ones).
    pub database: String,
    /// Collection of resume tokens, one document per stream.
    pub collection: String,
    /// Collection of ids of once-per-id events already published.
    pub ledger_collection: String,
    /// How often a stream saves its latest fully acknowledged resume token, in milliseconds.
    pub interval_ms: u64,
    /// How often a stream whose token only moved while it was idle (its server's post-batch
    /// token, which other collections' writes advance) saves it, in milliseconds. Each save is
    /// a write to the source deployment that advances every stream's token again; saving idle
    /// tokens often only keeps an idle connector writing.
    pub idle_interval_ms: u64,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            database: "storefront_cdc".to_owned(),
            collection: "checkpoints".to_owned(),
            ledger_collection: "published_once".to_owned(),
            interval_ms: 1_000,
            idle_interval_ms: 60_000,
        }
    }
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(DEFAULT_HTTP_PORT)
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            mongo: MongoSettings::default(),
            kafka: KafkaSettings::default(),
            http: default_http(),
            log: LogSettings::default(),
            sources: StorefrontNamespaces::default(),
            topics: StorefrontTopics::default(),
            new_topics: NewTopicSettings::default(),
            stream: StreamSettings::default(),
            checkpoints: CheckpointSettings::default(),
            lease: LeaseSettings::default(),
            sensitive: SensitiveFields::default(),
            reconcile: ReconcileSettings::default(),
        }
    }
}

impl Validate for ConnectorConfig {
    fn validate(&self, _path: &str, problems: &mut Vec<String>) {
        self.mongo.validate("mongo", problems);
        self.kafka.validate("kafka", problems);
        self.http.validate("http", problems);
        self.log.validate("log", problems);
        problems.extend(self.sources.problems("sources"));
        problems.extend(self.topics.problems("topics"));
        problems.extend(self.sensitive.problems("sensitive"));
        self.new_topics.validate("new_topics", problems);
        if self.stream.watch.is_empty() {
            problems.push("stream.watch must name at least one source".into());
        }
        let mut watched = self.stream.watch.clone();
        watched.sort();
        watched.dedup();
        if watched.len() != self.stream.watch.len() {
            problems.push("stream.watch names a source twice".into());
        }
        if self.stream.max_in_flight == 0 {
            problems.push("stream.max_in_flight must be at least 1".into());
        }
        if self.stream.delivery_stall_ms == 0 {
            problems.push("stream.delivery_stall_ms must be at least 1".into());
        }
        if self.lease.ttl_ms < 500 {
            problems.push("lease.ttl_ms must be at least 500".into());
        }
        if self.lease.renew_interval_ms == 0 || self.lease.renew_interval_ms * 3 > self.lease.ttl_ms
        {
            problems.push(format!(
                "lease.renew_interval_ms ({}) must be at least 1 and at most a third of \
                 lease.ttl_ms ({}), so one late renewal does not expire the lease",
                self.lease.renew_interval_ms, self.lease.ttl_ms
            ));
        }
        if self.lease.name.as_deref().is_some_and(str::is_empty) {
            problems.push("lease.name must not be empty".into());
        }
        if self.stream.read_stall_ms <= self.stream.max_await_ms {
            problems.push(format!(
                "stream.read_stall_ms ({}) must exceed stream.max_await_ms ({}), which a quiet \
                 stream's read waits",
                self.stream.read_stall_ms, self.stream.max_await_ms
            ));
        }
        // Shorter waits would make idle streams ask the server tens of times a second, and blur
        // a server that waits with one that answers at once (the reader tells them apart by how
        // long an empty poll took).
        if self.stream.max_await_ms < 100 {
            problems.push("stream.max_await_ms must be at least 100".into());
        }
        if self.stream.idle_poll_max_ms == 0 {
            problems.push("stream.idle_poll_max_ms must be at least 1".into());
        }
        if self.stream.max_event_bytes < 1024 {
            problems.push("stream.max_event_bytes must be at least 1024".into());
        }
        if let Some(problem) = topic_name_problem(&self.stream.dead_letter_topic) {
            problems.push(format!("stream.dead_letter_topic: {problem}"));
        }
        if self
            .topics
            .all()
            .contains(&self.stream.dead_letter_topic.as_str())
        {
            problems.push("stream.dead_letter_topic must differ from the event topics".into());
        }
        for (key, name) in [
            ("checkpoints.collection", &self.checkpoints.collection),
            (
                "checkpoints.ledger_collection",
                &self.checkpoints.ledger_collection,
            ),
        ] {
            problems.extend(
                Namespace::new(self.checkpoints.database.clone(), name.clone())
                    .problems(key)
                    .into_iter()
                    .map(|p| p.replace(&format!("{key}."), "checkpoints.")),
            );
        }
        problems.extend(
            Namespace::new(
                self.checkpoints.database.clone(),
                self.lease.collection.clone(),
            )
            .problems("lease.collection")
            .into_iter()
            .map(|p| p.replace("lease.collection.", "lease.")),
        );
        if [
            &self.checkpoints.collection,
            &self.checkpoints.ledger_collection,
        ]
        .contains(&&self.lease.collection)
        {
            problems.push("lease.collection must differ from the checkpoint collections".into());
        }
        if self.checkpoints.collection == self.checkpoints.ledger_collection {
            problems.push(
                "checkpoints.collection and checkpoints.ledger_collection must differ".into(),
            );
        }
        let watched = [
            &self.sources.accounts,
            &self.sources.orders,
            &self.sources.fulfillment,
        ];
        if watched
            .iter()
            .any(|ns| ns.database == self.checkpoints.database)
        {
            problems.push(format!(
                "checkpoints.database `{}` must not be a watched database",
                self.checkpoints.database
            ));
        }
        if self.checkpoints.idle_interval_ms < self.checkpoints.interval_ms {
            problems.push(
                "checkpoints.idle_interval_ms must be at least checkpoints.interval_ms".into(),
            );
        }
        if self.reconcile.batch_size == 0 {
            problems.push("reconcile.batch_size must be at least 1".into());
        }
        if self.checkpoints.interval_ms == 0 {
            problems.push("checkpoints.interval_ms must be at least 1".into());
        }
    }
}

impl ConnectorConfig {
    /// The lease's name: `lease.name`, or one derived from the watched namespaces (sorted), so
    /// that instances splitting the sources hold separate leases.
    pub fn lease_name(&self) -> String {
        if let Some(name) = &self.lease.name {
            return name.clone();
        }
        let mut watched: Vec<String> = self
            .stream
            .watch
            .iter()
            .map(|source| source.namespace(&self.sources).to_string())
            .collect();
        watched.sort();
        format!("streams {}", watched.join(","))
    }

    /// A copy safe to print or log: passwords replaced.
    pub fn redacted(&self) -> Self {
        Self {
            mongo: self.mongo.redacted(),
            kafka: self.kafka.redacted(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storefront_plumbing::config::{Overrides, load};

    #[test]
    fn defaults_are_valid() {
        let mut problems = Vec::new();
        ConnectorConfig::default().validate("", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_file_sets_sections_and_keeps_other_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sources.accounts]\ndatabase = \"acc\"\ncollection = \"people\"\n[new_topics]\npartitions = 6\n",
        )
        .unwrap();
        let config: ConnectorConfig =
            load(Some(&path), "CDC_CONNECTOR_TEST_", Overrides::default()).unwrap();
        assert_eq!(config.sources.accounts.to_string(), "acc.people");
        assert_eq!(config.sources.orders.collection, "customer.orders");
        assert_eq!(config.new_topics.partitions, 6);
        assert_eq!(config.new_topics.replication_factor, 1);
    }

    #[test]
    fn watch_selects_sources_and_refuses_none_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[stream]\nwatch = [\"orders\"]\n").unwrap();
        let config: ConnectorConfig =
            load(Some(&path), "CDC_CONNECTOR_TEST_", Overrides::default()).unwrap();
        assert_eq!(config.stream.watch, [WatchedSource::Orders]);
        assert_eq!(
            WatchedSource::Orders.namespace(&config.sources).collection,
            "customer.orders"
        );
        for bad in ["[]", "[\"orders\", \"orders\"]"] {
            std::fs::write(&path, format!("[stream]\nwatch = {bad}\n")).unwrap();
            let error =
                load::<ConnectorConfig>(Some(&path), "CDC_CONNECTOR_TEST_", Overrides::default())
                    .unwrap_err()
                    .to_string();
            assert!(error.contains("stream.watch"), "{bad}: {error}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[new_topics]\npartitions = 0\n[topics]\ncustomer_change = \"bad topic\"\n[mongo]\nuri = \"localhost\"\n[stream]\nmax_await_ms = 10\ndelivery_stall_ms = 0\nread_stall_ms = 5\n",
        )
        .unwrap();
        let error =
            load::<ConnectorConfig>(Some(&path), "CDC_CONNECTOR_TEST_", Overrides::default())
                .unwrap_err()
                .to_string();
        for expected in [
            "new_topics.partitions",
            "topics.customer_change",
            "mongo.uri",
            "stream.max_await_ms",
            "stream.delivery_stall_ms",
            "stream.read_stall_ms (5) must exceed stream.max_await_ms (10)",
        ] {
            assert!(error.contains(expected), "{expected} missing in: {error}");
        }
    }
}
