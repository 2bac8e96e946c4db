//! What librdkafka clients report they run with, read from a process's JSON log.
//!
//! A client created with `debug=conf` logs every property that differs from librdkafka's default,
//! under its canonical name (`linger.ms` is reported as `queue.buffering.max.ms`,
//! `compression.type` as `compression.codec`). The product forwards librdkafka's log lines to
//! `tracing` (target `librdkafka`), so a process started with these [`LOG_FLAGS`] and
//! [`DEBUG_PROPERTY`] in `kafka.properties` shows, in its log, the configuration each of its
//! clients was really created with: a check of the client, not of the config.

use std::collections::BTreeMap;

/// Command-line flags that make a process log librdkafka's debug lines as JSON.
pub const LOG_FLAGS: [&str; 4] = [
    "--log-filter",
    "info,librdkafka=debug",
    "--log-format",
    "json",
];

/// The `kafka.properties` entry that makes every client report its configuration.
pub const DEBUG_PROPERTY: (&str, &str) = ("debug", "conf");

/// The configuration of every client in `log` (JSON lines), in the order they were created.
pub fn reported(log: &str) -> Vec<BTreeMap<String, String>> {
    let mut clients: Vec<BTreeMap<String, String>> = Vec::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["target"] != "librdkafka" || event["facility"] != "CONF" {
            continue;
        }
        let Some(message) = event["message"].as_str() else {
            continue;
        };
        // librdkafka prefixes its thread: `[thrd:app]: ...`.
        let text = message.split_once("]: ").map_or(message, |(_, text)| text);
        if text.trim_end() == "Client configuration:" {
            clients.push(BTreeMap::new());
        } else if let (Some(client), Some((key, value))) =
            (clients.last_mut(), text.split_once(" = "))
            && text.starts_with("  ")
        {
            client.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_configurations_are_read_from_the_json_log() {
        let log = [
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]: Client configuration:"}"#,
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]:   client.id = a"}"#,
            r#"{"level":"INFO","target":"cdc_connector","message":"unrelated = line"}"#,
            "not json",
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]:   queue.buffering.max.ms = 37"}"#,
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]: Default topic configuration:"}"#,
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]:   request.required.acks = -1"}"#,
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]: Client configuration:"}"#,
            r#"{"level":"DEBUG","target":"librdkafka","facility":"CONF","message":"[thrd:app]:   client.id = b"}"#,
        ]
        .join("\n");
        let clients = reported(&log);
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0]["client.id"], "a");
        assert_eq!(clients[0]["queue.buffering.max.ms"], "37");
        assert_eq!(clients[0]["request.required.acks"], "-1");
        assert_eq!(clients[1]["client.id"], "b");
        assert!(!clients[0].contains_key("unrelated"));
    }
}
