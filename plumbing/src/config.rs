//! Layered configuration.
//!
//! Precedence, lowest first: the defaults in the config types, the TOML file (when one is given),
//! environment variables under a per-binary prefix, then command-line flags. Environment keys use
//! `__` between sections, e.g. `CDC_CONNECTOR_KAFKA__BOOTSTRAP_SERVERS` sets
//! `kafka.bootstrap_servers`. Unknown keys are errors in every layer, so a typo never silently
//! falls back to a default. After loading, [`Validate`] collects every problem at once so an
//! operator fixes a config in one pass.
//!
//! Environment values are parsed like TOML values (`10` is a number, `true` a boolean, `[a]` an
//! array, `"x"` loses its quotes), except for keys ending in `password`, such as
//! `CDC_CONNECTOR_KAFKA__SASL_PASSWORD`: a secret is taken exactly as written, so `0123` or
//! `"p@ss"` reach the client unchanged.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist or cannot be read.
    #[error("config file {path} cannot be read")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A layer holds a value of the wrong type, an unknown key, or malformed TOML.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// Every value parsed but some are unusable together or alone.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A config section that can check itself beyond what types express.
pub trait Validate {
    /// Appends one human-readable line per problem; `path` is the dotted key of this section.
    fn validate(&self, path: &str, problems: &mut Vec<String>);
}

/// Command-line flags that override single keys; flags left unset override nothing.
#[derive(Debug, Default)]
pub struct Overrides {
    figment: Figment,
}

impl Overrides {
    /// Sets `key` (a dotted path such as `kafka.bootstrap_servers`) when `value` is present.
    pub fn set<T: Serialize>(mut self, key: &str, value: Option<T>) -> Self {
        if let Some(value) = value {
            self.figment = self.figment.merge(Serialized::global(key, value));
        }
        self
    }
}

/// Loads `T` from its defaults, the optional TOML file, `<env_prefix>*` variables and `overrides`,
/// then validates it.
pub fn load<T>(
    file: Option<&Path>,
    env_prefix: &str,
    overrides: Overrides,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let mut figment = Figment::new();
    if let Some(path) = file {
        // Figment ignores a missing file; an operator who named one wants to hear about it.
        std::fs::metadata(path).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    // `<PREFIX>CONFIG` names the file itself (read by the CLI), not a key.
    let env = Env::prefixed(env_prefix).split("__").ignore(&["config"]);
    let verbatim: Vec<(String, String)> = env
        .clone()
        .filter(|key| is_verbatim_key(key.as_str()))
        .iter()
        .map(|(key, value)| (key.as_str().to_owned(), value))
        .collect();
    figment = figment.merge(env.filter(|key| !is_verbatim_key(key.as_str())));
    for (key, value) in verbatim {
        figment = figment.merge(Serialized::global(&key, value));
    }
    figment = figment.merge(overrides.figment);
    let config: T = figment
        .extract()
        .map_err(|error| ConfigError::Parse(describe(error)))?;
    let mut problems = Vec::new();
    config.validate("", &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Whether the environment value of `key` (dotted, any case) is taken verbatim rather than parsed:
/// secrets, whose every character counts.
fn is_verbatim_key(key: &str) -> bool {
    key.rsplit('.')
        .next()
        .is_some_and(|last| last.to_ascii_lowercase().ends_with("password"))
}

/// Joins a section path and a key for messages: `("kafka", "acks")` -> `kafka.acks`.
pub fn key_path(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

/// Renders every error figment collected, each with where the bad value came from.
fn describe(error: figment::Error) -> String {
    let lines: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
    lines.join("; ")
}

/// Renders a config as TOML for `check-config`; secrets must be redacted by the caller first.
pub fn to_toml<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    toml::to_string_pretty(config).map_err(|e| ConfigError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        name: String,
        count: u32,
    }

    impl Default for Inner {
        fn default() -> Self {
            Self {
                name: "default".into(),
                count: 1,
            }
        }
    }

    impl Validate for Sample {
        fn validate(&self, _path: &str, problems: &mut Vec<String>) {
            if self.inner.count == 0 {
                problems.push("inner.count must be at least 1".into());
            }
        }
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[inner]\nname = \"file\"\ncount = 5\n");
        let from_file: Sample =
            load(Some(&path), "PLUMBING_TEST_A_", Overrides::default()).unwrap();
        assert_eq!(from_file.inner.name, "file");
        assert_eq!(from_file.inner.count, 5);

        let flagged: Sample = load(
            Some(&path),
            "PLUMBING_TEST_A_",
            Overrides::default().set("inner.name", Some("flag")),
        )
        .unwrap();
        assert_eq!(flagged.inner.name, "flag");
        assert_eq!(flagged.inner.count, 5);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[inner]\nname = \"file\"\ncount = 5\n")?;
            jail.set_env("PLUMBING_TEST_G_INNER__NAME", "env");
            jail.set_env("PLUMBING_TEST_G_CONFIG", "config.toml");
            let path = Path::new("config.toml");
            let from_env: Sample = load(Some(path), "PLUMBING_TEST_G_", Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(from_env.inner.name, "env");
            assert_eq!(from_env.inner.count, 5);
            let flagged: Sample = load(
                Some(path),
                "PLUMBING_TEST_G_",
                Overrides::default().set("inner.name", Some("flag")),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(flagged.inner.name, "flag");
            Ok(())
        });
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WithKafka {
        #[serde(default)]
        kafka: crate::settings::KafkaSettings,
    }

    impl Validate for WithKafka {
        fn validate(&self, _path: &str, problems: &mut Vec<String>) {
            self.kafka.validate("kafka", problems);
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
    fn kafka_credentials_come_from_the_environment_with_passwords_verbatim() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[kafka]\nbootstrap_servers = \"broker:9094\"\nsasl_password = \"from-file\"\n",
            )?;
            jail.set_env("PLUMBING_TEST_H_KAFKA__SECURITY_PROTOCOL", "SASL_SSL");
            jail.set_env("PLUMBING_TEST_H_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512");
            jail.set_env("PLUMBING_TEST_H_KAFKA__SASL_USERNAME", "storefront");
            let path = Path::new("config.toml");
            let load_kafka = || {
                load::<WithKafka>(Some(path), "PLUMBING_TEST_H_", Overrides::default())
                    .map(|loaded| loaded.kafka)
                    .map_err(|e| e.to_string())
            };
            // The file's password, unless the environment has one.
            let kafka = load_kafka()?;
            assert_eq!(kafka.sasl_password.as_deref(), Some("from-file"));
            assert_eq!(kafka.sasl_username.as_deref(), Some("storefront"));
            assert_eq!(kafka.client_properties()["security.protocol"], "SASL_SSL");
            // Values a TOML-like parse would turn into a number, a boolean, an array or an
            // unquoted string arrive exactly as written.
            for password in [
                "0123",
                "true",
                "[x, y]",
                "\"quoted\"",
                " spaced ",
                "1.50",
                "a=b;c",
            ] {
                jail.set_env("PLUMBING_TEST_H_KAFKA__SASL_PASSWORD", password);
                jail.set_env("PLUMBING_TEST_H_KAFKA__SSL_KEY_PASSWORD", password);
                let kafka = load_kafka()?;
                assert_eq!(kafka.sasl_password.as_deref(), Some(password));
                assert_eq!(kafka.ssl_key_password.as_deref(), Some(password));
                assert_eq!(kafka.client_properties()["sasl.password"], password);
            }
            Ok(())
        });
    }

    #[test]
    fn only_password_keys_are_taken_verbatim() {
        assert!(is_verbatim_key("kafka.sasl_password"));
        assert!(is_verbatim_key("KAFKA.SSL_KEY_PASSWORD"));
        assert!(!is_verbatim_key("kafka.sasl_username"));
        assert!(!is_verbatim_key("password.section.port"));
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let sample: Sample = load(None, "PLUMBING_TEST_B_", Overrides::default()).unwrap();
        assert_eq!(sample.inner.name, "default");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[inner]\nnmae = \"typo\"\n");
        let error = load::<Sample>(Some(&path), "PLUMBING_TEST_C_", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("nmae"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = load::<Sample>(
            Some(Path::new("/nonexistent/storefront.toml")),
            "PLUMBING_TEST_D_",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("/nonexistent/storefront.toml"), "{error}");
    }

    #[test]
    fn validation_problems_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[inner]\ncount = 0\n");
        let error = load::<Sample>(Some(&path), "PLUMBING_TEST_E_", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("inner.count must be at least 1"), "{error}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[inner]\ncount = \"many\"\n");
        let error = load::<Sample>(Some(&path), "PLUMBING_TEST_F_", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("count"), "{error}");
    }
}
