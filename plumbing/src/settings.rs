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
///
/// Authentication and encryption take the named fields below (`security_protocol`, `sasl_*`,
/// `ssl_key_password`), which can all come from the config file or from environment variables
/// such as `CDC_CONNECTOR_KAFKA__SASL_PASSWORD`; anything else librdkafka knows goes in
/// `properties` (for example `ssl.ca.location`). `docs/authentication.md` has examples.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// librdkafka `security.protocol`: `PLAINTEXT` (librdkafka's default), `SSL`,
    /// `SASL_PLAINTEXT` or `SASL_SSL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<String>,
    /// librdkafka `sasl.mechanism`: `SCRAM-SHA-512`, `SCRAM-SHA-256`, `PLAIN`, `OAUTHBEARER` or
    /// `GSSAPI` (the last needs a librdkafka built with Cyrus SASL, which this one is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// librdkafka `sasl.username`, for SCRAM and PLAIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// librdkafka `sasl.password`, for SCRAM and PLAIN. A secret: give it in a file only readers of
    /// the secret can read, or as `<PREFIX>KAFKA__SASL_PASSWORD` (taken verbatim, never parsed);
    /// `check-config`, `Debug` and errors show `****`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_password: Option<String>,
    /// librdkafka `ssl.key.password`: the passphrase of the client's private key for mutual TLS
    /// (`ssl.key.location` in `properties`). A secret, handled like `sasl_password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_password: Option<String>,
    /// Extra librdkafka client properties (for example `ssl.ca.location`). They are applied last,
    /// except the ones the delivery guarantees depend on, which are refused, and the ones the
    /// fields above set, which must be set there only.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:29092".to_owned(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_key_password: None,
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka properties that the pipeline sets itself because its guarantees rest on them:
/// producers' idempotence and acknowledgements, consumers' manual offsets, their group (named by
/// the config's group prefix), a new group starting at the earliest record, and the end-of-partition
/// events a projection rebuild finds the end of a topic by.
pub const GUARANTEED_KAFKA_PROPERTIES: &[&str] = &[
    "enable.idempotence",
    "acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "bootstrap.servers",
    "group.id",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// `security.protocol` values librdkafka accepts (case-insensitively).
pub const KAFKA_SECURITY_PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// `sasl.mechanism` values librdkafka knows.
pub const KAFKA_SASL_MECHANISMS: &[&str] = &[
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "PLAIN",
    "OAUTHBEARER",
    "GSSAPI",
];

/// What secret values are replaced with when shown.
pub const REDACTED: &str = "****";

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_kafka_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret")
}

impl KafkaSettings {
    /// The named fields with the librdkafka property each one sets.
    fn named_properties(&self) -> [(&'static str, &'static str, Option<&String>); 5] {
        [
            (
                "security_protocol",
                "security.protocol",
                self.security_protocol.as_ref(),
            ),
            (
                "sasl_mechanism",
                "sasl.mechanism",
                self.sasl_mechanism.as_ref(),
            ),
            (
                "sasl_username",
                "sasl.username",
                self.sasl_username.as_ref(),
            ),
            (
                "sasl_password",
                "sasl.password",
                self.sasl_password.as_ref(),
            ),
            (
                "ssl_key_password",
                "ssl.key.password",
                self.ssl_key_password.as_ref(),
            ),
        ]
    }

    /// Every librdkafka property these settings set besides `bootstrap.servers`: the named fields
    /// mapped to their properties, then `properties`.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut all = self.properties.clone();
        for (_, property, value) in self.named_properties() {
            if let Some(value) = value {
                all.insert(property.to_owned(), value.clone());
            }
        }
        all
    }

    /// The effective value of a librdkafka property: from its named field or from `properties`
    /// (`sasl.mechanisms` is librdkafka's other name for `sasl.mechanism`).
    fn effective(&self, property: &str) -> Option<&str> {
        let named = self
            .named_properties()
            .into_iter()
            .find(|(_, name, _)| *name == property)
            .and_then(|(_, _, value)| value);
        named
            .or_else(|| self.properties.get(property))
            .or_else(|| match property {
                "sasl.mechanism" => self.properties.get("sasl.mechanisms"),
                _ => None,
            })
            .map(String::as_str)
    }

    /// The effective `security.protocol`, upper-case (`PLAINTEXT` when unset).
    pub fn effective_security_protocol(&self) -> String {
        self.effective("security.protocol")
            .unwrap_or("PLAINTEXT")
            .to_ascii_uppercase()
    }

    /// The effective `sasl.mechanism`, if any.
    pub fn effective_sasl_mechanism(&self) -> Option<&str> {
        self.effective("sasl.mechanism")
    }

    /// The effective `sasl.username`, if any.
    pub fn effective_sasl_username(&self) -> Option<&str> {
        self.effective("sasl.username")
    }

    /// The secret values these settings hold (SASL and key passwords, secret `properties`), for
    /// scrubbing them out of messages that come from elsewhere.
    pub fn secrets(&self) -> Vec<&str> {
        let named = [
            self.sasl_password.as_deref(),
            self.ssl_key_password.as_deref(),
        ];
        let from_properties = self
            .properties
            .iter()
            .filter(|(key, _)| is_secret_kafka_property(key))
            .map(|(_, value)| Some(value.as_str()));
        named
            .into_iter()
            .chain(from_properties)
            .flatten()
            .filter(|secret| !secret.is_empty())
            .collect()
    }

    /// `text` with every secret of these settings replaced by `****`.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets()
            .into_iter()
            .fold(text.to_owned(), |text, secret| {
                text.replace(secret, REDACTED)
            })
    }

    /// A copy safe to print: passwords, and values of properties that look secret, are replaced.
    pub fn redacted(&self) -> Self {
        let hide = |value: &Option<String>| value.as_ref().map(|_| REDACTED.to_owned());
        let properties = self
            .properties
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_kafka_property(key) {
                    REDACTED.to_owned()
                } else {
                    value.clone()
                };
                (key.clone(), shown)
            })
            .collect();
        Self {
            sasl_password: hide(&self.sasl_password),
            ssl_key_password: hide(&self.ssl_key_password),
            properties,
            ..self.clone()
        }
    }
}

/// Shows the settings with their secrets redacted, so a logged or panicking config leaks nothing.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.redacted();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &shown.bootstrap_servers)
            .field("security_protocol", &shown.security_protocol)
            .field("sasl_mechanism", &shown.sasl_mechanism)
            .field("sasl_username", &shown.sasl_username)
            .field("sasl_password", &shown.sasl_password)
            .field("ssl_key_password", &shown.ssl_key_password)
            .field("properties", &shown.properties)
            .finish()
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
        for (field, property, value) in self.named_properties() {
            let aliases: &[&str] = match property {
                "sasl.mechanism" => &["sasl.mechanism", "sasl.mechanisms"],
                _ => &[property],
            };
            for alias in aliases {
                if value.is_some() && self.properties.contains_key(*alias) {
                    problems.push(format!(
                        "{}: `{alias}` is also set by {}; set it in one place",
                        key_path(path, "properties"),
                        key_path(path, field)
                    ));
                }
            }
        }
        self.validate_security(path, problems);
    }
}

impl KafkaSettings {
    /// Checks the security settings together, so a half-configured SASL setup is reported at
    /// start instead of as a connection that never authenticates.
    fn validate_security(&self, path: &str, problems: &mut Vec<String>) {
        let protocol = self.effective_security_protocol();
        if !KAFKA_SECURITY_PROTOCOLS.contains(&protocol.as_str()) {
            problems.push(format!(
                "{}: `{protocol}` is not one of {}",
                key_path(path, "security_protocol"),
                KAFKA_SECURITY_PROTOCOLS.join(", ")
            ));
            return;
        }
        let mechanism = self.effective_sasl_mechanism();
        if let Some(mechanism) = mechanism
            && !KAFKA_SASL_MECHANISMS.contains(&mechanism)
        {
            problems.push(format!(
                "{}: `{mechanism}` is not one of {}",
                key_path(path, "sasl_mechanism"),
                KAFKA_SASL_MECHANISMS.join(", ")
            ));
        }
        let username = self.effective_sasl_username();
        let password = self.effective("sasl.password");
        let sasl = protocol.starts_with("SASL_");
        if !sasl {
            if username.is_some() || password.is_some() || mechanism.is_some() {
                problems.push(format!(
                    "{}: SASL settings are given but the protocol is {protocol}, which does not \
                     authenticate with them; use SASL_SSL (or SASL_PLAINTEXT on a trusted network)",
                    key_path(path, "security_protocol")
                ));
            }
            return;
        }
        let Some(mechanism) = mechanism else {
            problems.push(format!(
                "{} must be set with security protocol {protocol} (SCRAM-SHA-512, SCRAM-SHA-256 \
                 or PLAIN with a username and password)",
                key_path(path, "sasl_mechanism")
            ));
            return;
        };
        if mechanism.starts_with("SCRAM-") || mechanism == "PLAIN" {
            if username.is_none_or(str::is_empty) {
                problems.push(format!(
                    "{} must be set for SASL mechanism {mechanism}",
                    key_path(path, "sasl_username")
                ));
            }
            if password.is_none_or(str::is_empty) {
                problems.push(format!(
                    "{} must be set for SASL mechanism {mechanism} (in the config file or the \
                     environment)",
                    key_path(path, "sasl_password")
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

    fn sasl_settings() -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: "broker:9094".into(),
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("storefront".into()),
            sasl_password: Some("hunter2-sasl".into()),
            ssl_key_password: Some("hunter2-key".into()),
            properties: BTreeMap::from([
                ("ssl.ca.location".into(), "/etc/ssl/kafka-ca.pem".into()),
                (
                    "sasl.oauthbearer.client.secret".into(),
                    "hunter2-oauth".into(),
                ),
            ]),
        }
    }

    #[test]
    fn named_security_fields_map_onto_librdkafka_properties() {
        let properties = sasl_settings().client_properties();
        let expected: BTreeMap<String, String> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "storefront"),
            ("sasl.password", "hunter2-sasl"),
            ("ssl.key.password", "hunter2-key"),
            ("ssl.ca.location", "/etc/ssl/kafka-ca.pem"),
            ("sasl.oauthbearer.client.secret", "hunter2-oauth"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(properties, expected);
        // Unset fields set nothing: librdkafka's defaults apply.
        assert!(KafkaSettings::default().client_properties().is_empty());
        let mut problems = Vec::new();
        sasl_settings().validate("kafka", &mut problems);
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn sasl_given_only_through_properties_is_understood_too() {
        let mut settings = KafkaSettings::default();
        for (key, value) in [
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "app"),
            ("sasl.password", "pw"),
        ] {
            settings.properties.insert(key.into(), value.into());
        }
        assert_eq!(settings.effective_security_protocol(), "SASL_PLAINTEXT");
        assert_eq!(settings.effective_sasl_mechanism(), Some("PLAIN"));
        assert_eq!(settings.effective_sasl_username(), Some("app"));
        assert_eq!(settings.secrets(), vec!["pw"]);
        let mut problems = Vec::new();
        settings.validate("kafka", &mut problems);
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn half_configured_sasl_is_reported() {
        let validate = |settings: KafkaSettings| {
            let mut problems = Vec::new();
            settings.validate("kafka", &mut problems);
            problems
        };
        // Credentials without a SASL protocol would be ignored by librdkafka.
        let problems = validate(KafkaSettings {
            sasl_username: Some("storefront".into()),
            sasl_password: Some("pw".into()),
            ..KafkaSettings::default()
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("kafka.security_protocol"),
            "{problems:?}"
        );
        // A SASL protocol without a mechanism (librdkafka would pick GSSAPI).
        let problems = validate(KafkaSettings {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            ..KafkaSettings::default()
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("kafka.sasl_mechanism"), "{problems:?}");
        // SCRAM without a password, with an unknown mechanism name, and an unknown protocol.
        let problems = validate(KafkaSettings {
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("storefront".into()),
            ..KafkaSettings::default()
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("kafka.sasl_password"), "{problems:?}");
        let problems = validate(KafkaSettings {
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("scram-sha-512".into()),
            sasl_username: Some("storefront".into()),
            sasl_password: Some("pw".into()),
            ..KafkaSettings::default()
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`scram-sha-512`"), "{problems:?}");
        let problems = validate(KafkaSettings {
            security_protocol: Some("TLS".into()),
            ..KafkaSettings::default()
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`TLS`"), "{problems:?}");
    }

    #[test]
    fn a_property_set_by_a_named_field_cannot_be_set_twice() {
        let mut settings = sasl_settings();
        settings
            .properties
            .insert("sasl.password".into(), "other".into());
        settings
            .properties
            .insert("sasl.mechanisms".into(), "PLAIN".into());
        let mut problems = Vec::new();
        settings.validate("kafka", &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`sasl.password`") && p.contains("kafka.sasl_password"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`sasl.mechanisms`") && p.contains("kafka.sasl_mechanism"))
        );
    }

    #[test]
    fn kafka_passwords_never_show() {
        let settings = sasl_settings();
        let shown = settings.redacted();
        assert_eq!(shown.sasl_password.as_deref(), Some(REDACTED));
        assert_eq!(shown.ssl_key_password.as_deref(), Some(REDACTED));
        assert_eq!(shown.properties["sasl.oauthbearer.client.secret"], REDACTED);
        assert_eq!(shown.sasl_username.as_deref(), Some("storefront"));
        assert_eq!(shown.properties["ssl.ca.location"], "/etc/ssl/kafka-ca.pem");
        // check-config prints the redacted copy as TOML; Debug redacts by itself.
        let toml = crate::config::to_toml(&shown).unwrap();
        let debug = format!("{settings:?}");
        for text in [&toml, &debug] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("storefront"), "{text}");
        }
        assert!(toml.contains("sasl_password = \"****\""), "{toml}");
        // Messages from elsewhere (librdkafka's) get every secret scrubbed.
        assert_eq!(
            settings.scrub("login hunter2-sasl / hunter2-key / hunter2-oauth refused"),
            "login **** / **** / **** refused"
        );
        // Unset secrets stay unset, and print as nothing.
        let plain = KafkaSettings::default().redacted();
        assert_eq!(plain.sasl_password, None);
        assert!(!crate::config::to_toml(&plain).unwrap().contains("sasl"));
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
