//! The config sections every storefront-cdc process has.
//!
//! Each field is documented here because these comments are the reference for the TOML keys;
//! defaults are named functions so `check-config` and the docs agree with the code.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{Validate, key_path};

/// How to reach MongoDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoSettings {
    /// Connection string. Change streams need a replica set or sharded cluster.
    pub uri: String,
    /// How long to wait for a usable server before an operation fails, in milliseconds.
    pub server_selection_timeout_ms: u64,
}

fn default_mongo_uri() -> String {
    "mongodb://127.0.0.1:27027/?directConnection=true".to_owned()
}

impl Default for MongoSettings {
    fn default() -> Self {
        Self {
            uri: default_mongo_uri(),
            server_selection_timeout_ms: 10_000,
        }
    }
}

impl MongoSettings {
    /// A copy safe to print: the password in the URI is replaced.
    pub fn redacted(&self) -> Self {
        Self {
            uri: redact_uri_password(&self.uri),
            ..self.clone()
        }
    }
}

impl Validate for MongoSettings {
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(self.uri.starts_with("mongodb://") || self.uri.starts_with("mongodb+srv://")) {
            problems.push(format!(
                "{} must start with mongodb:// or mongodb+srv://",
                key_path(path, "uri")
            ));
        }
        if self.server_selection_timeout_ms == 0 {
            problems.push(format!(
                "{} must be greater than 0",
                key_path(path, "server_selection_timeout_ms")
            ));
        }
    }
}

/// How to reach Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Extra librdkafka client properties (for example `security.protocol`, `sasl.*`). They are
    /// applied last, except the ones the delivery guarantees depend on, which are refused.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:29092".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka properties that the pipeline sets itself because its guarantees rest on them.
pub const GUARANTEED_KAFKA_PROPERTIES: &[&str] = &[
    "enable.idempotence",
    "acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "bootstrap.servers",
];

impl KafkaSettings {
    /// A copy safe to print: values of properties that look secret are replaced.
    pub fn redacted(&self) -> Self {
        let properties = self
            .properties
            .iter()
            .map(|(key, value)| {
                let secret = key.contains("password") || key.contains("secret");
                let shown = if secret {
                    "****".to_owned()
                } else {
                    value.clone()
                };
                (key.clone(), shown)
            })
            .collect();
        Self {
            properties,
            ..self.clone()
        }
    }
}

impl Validate for KafkaSettings {
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        let servers: Vec<&str> = self
            .bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            problems.push(format!(
                "{} must name at least one broker as host:port",
                key_path(path, "bootstrap_servers")
            ));
        }
        for server in servers {
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                problems.push(format!(
                    "{}: `{server}` is not host:port",
                    key_path(path, "bootstrap_servers")
                ));
            }
        }
        for key in self.properties.keys() {
            if GUARANTEED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                problems.push(format!(
                    "{}: `{key}` is set by storefront-cdc itself and cannot be overridden",
                    key_path(path, "properties")
                ));
            }
        }
    }
}

/// The HTTP endpoint serving `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free port (used by tests).
    pub listen: SocketAddr,
}

impl HttpSettings {
    /// The default listen address of a process; each binary has its own port so both can run on
    /// one host.
    pub fn on_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Validate for HttpSettings {
    fn validate(&self, _path: &str, _problems: &mut Vec<String>) {}
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `info,cdc_connector=debug`.
    pub filter: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Validate for LogSettings {
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            problems.push(format!("{}: {error}", key_path(path, "filter")));
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Replaces the password of `scheme://user:password@host` with `****`.
fn redact_uri_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return uri.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:****{}", &rest[at..]),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_passwords_are_redacted() {
        assert_eq!(
            redact_uri_password("mongodb://app:s3cr%40t@db1:27017,db2/?replicaSet=rs0"),
            "mongodb://app:****@db1:27017,db2/?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri_password("mongodb://db1:27017/?replicaSet=rs0"),
            "mongodb://db1:27017/?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri_password("mongodb://user@db1"),
            "mongodb://user@db1"
        );
    }

    #[test]
    fn kafka_secrets_are_redacted() {
        let mut settings = KafkaSettings::default();
        settings
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        settings
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let shown = settings.redacted();
        assert_eq!(shown.properties["sasl.password"], "****");
        assert_eq!(shown.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn bad_bootstrap_servers_and_guarded_properties_are_reported() {
        let mut settings = KafkaSettings {
            bootstrap_servers: "broker-without-port, ok:9092".into(),
            ..KafkaSettings::default()
        };
        settings.properties.insert("acks".into(), "1".into());
        let mut problems = Vec::new();
        settings.validate("kafka", &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("broker-without-port"));
        assert!(problems[1].contains("`acks`"));
    }

    #[test]
    fn mongo_uri_scheme_is_checked() {
        let settings = MongoSettings {
            uri: "http://localhost".into(),
            ..MongoSettings::default()
        };
        let mut problems = Vec::new();
        settings.validate("mongo", &mut problems);
        assert_eq!(
            problems,
            vec!["mongo.uri must start with mongodb:// or mongodb+srv://"]
        );
    }

    #[test]
    fn log_filter_is_checked() {
        let settings = LogSettings {
            filter: "info,=[".into(),
            ..LogSettings::default()
        };
        let mut problems = Vec::new();
        settings.validate("log", &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
