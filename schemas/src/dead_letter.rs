//! Header names of dead-letter records, for both binaries (one definition, so a tool reading
//! dead letters reads both topics the same way).
//!
//! Every dead letter carries [`header::REASON`]. The connector's (a source change it could not
//! publish as an event) also say where in the source it came from; the projectors' (an event
//! they could not apply) carry the event's record unchanged and say where in Kafka it came from.

/// The header names.
pub mod header {
    /// Why the record could not be published (connector) or applied (projectors).
    pub const REASON: &str = "dlq_reason";

    /// Connector: the source collection, `/mongodb/<database>/<collection>`.
    pub const SOURCE: &str = "dlq_source";
    /// Connector: the source operation (`insert`, `update`, `replace`, `delete`, `snapshot`).
    pub const OPERATION: &str = "dlq_operation";
    /// Connector: the source change's cluster time as one integer (as `ce_clustertime`).
    pub const CLUSTER_TIME: &str = "dlq_clustertime";
    /// Connector: the source document's `_id`, as relaxed extended JSON (the key, unless the
    /// dead letter concerns one order).
    pub const DOCUMENT_ID: &str = "dlq_document_id";
    /// Connector: dotted path of the offending field, when there is one.
    pub const FIELD: &str = "dlq_field";
    /// Connector: dotted path of the list entry the body holds (`orders.2`), when the dead letter
    /// is one entry left out of what was published.
    pub const ENTRY: &str = "dlq_entry";

    /// Projectors: the class of the reason (a metric label too).
    pub const KIND: &str = "dlq_kind";
    /// Projectors: the projector that refused the record.
    pub const PROJECTOR: &str = "dlq_projector";
    /// Projectors: the topic the record was consumed from.
    pub const SOURCE_TOPIC: &str = "dlq_source_topic";
    /// Projectors: its partition.
    pub const SOURCE_PARTITION: &str = "dlq_source_partition";
    /// Projectors: its offset.
    pub const SOURCE_OFFSET: &str = "dlq_source_offset";
    /// Projectors: present when the value was left out because the record was too large.
    pub const VALUE_OMITTED: &str = "dlq_value_omitted";
}
