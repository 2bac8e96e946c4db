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
    /// Both: present when the value was left out because the record was too large (the
    /// connector's body is then `{}`; read the document in its source collection).
    pub const VALUE_OMITTED: &str = "dlq_value_omitted";

    /// On a redriven record (and on its dead letter if it fails again): the earlier failed
    /// attempts, oldest first, as a JSON array of [`super::Attempt`]. A projector that refuses a
    /// redriven record copies it into the new dead letter, whose own `dlq_reason` is the newest
    /// attempt.
    pub const HISTORY: &str = "dlq_history";
    /// On a redriven record (and on its dead letter if it fails again): the dead letter it was
    /// sent back from, as `<topic>/<partition>/<offset>` (see [`super::coordinates`]).
    pub const REDRIVEN_FROM: &str = "dlq_redriven_from";

    /// The headers a projector's dead letter describes its own attempt with: a record sent back
    /// for processing carries none of them (earlier attempts live in [`HISTORY`]), and a dead
    /// letter carries each once.
    pub const ATTEMPT: &[&str] = &[
        REASON,
        KIND,
        PROJECTOR,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        VALUE_OMITTED,
    ];
}

/// One failed attempt of a record, an entry of the [`header::HISTORY`] header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// The attempt's `dlq_reason`.
    pub reason: String,
    /// Its `dlq_kind` (projectors), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its `dlq_projector`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<String>,
    /// When its dead letter was written (the record's timestamp, ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// The dead letter: topic, partition and offset.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// A record's place in Kafka as one string, `<topic>/<partition>/<offset>` (a topic name has no
/// `/`), as [`header::REDRIVEN_FROM`] and the redrive ledger write it.
pub fn coordinates(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// Reads a [`header::HISTORY`] value.
pub fn parse_history(value: &[u8]) -> Result<Vec<Attempt>, serde_json::Error> {
    serde_json::from_slice(value)
}

/// Writes a [`header::HISTORY`] value.
pub fn history_value(history: &[Attempt]) -> String {
    // A Vec of plain structs always serialises.
    serde_json::to_string(history).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_and_leaves_out_what_is_unknown() {
        let history = vec![
            Attempt {
                reason: "order g-1 is in no document of o.customer.orders".into(),
                kind: Some("contract".into()),
                projector: Some("orders".into()),
                at_ms: Some(1_764_000_000_000),
                topic: "dead".into(),
                partition: 2,
                offset: 7,
            },
            Attempt {
                reason: "r".into(),
                kind: None,
                projector: None,
                at_ms: None,
                topic: "dead".into(),
                partition: 0,
                offset: 0,
            },
        ];
        let value = history_value(&history);
        assert_eq!(
            value,
            r#"[{"reason":"order g-1 is in no document of o.customer.orders","kind":"contract","projector":"orders","at_ms":1764000000000,"topic":"dead","partition":2,"offset":7},{"reason":"r","topic":"dead","partition":0,"offset":0}]"#
        );
        assert_eq!(parse_history(value.as_bytes()).unwrap(), history);
        assert_eq!(coordinates("dead", 2, 7), "dead/2/7");
    }
}
