//! Where the simulator writes: MongoDB and the three source collections. The defaults are the
//! connector's (`sources`) and the projectors' (`targets`) defaults, so the simulator works
//! against `dev/run` as it is.
//!
//! Loaded like the other binaries' configurations (`storefront_plumbing::config::load`):
//! defaults, a TOML file, `STOREFRONT_SIM_<SECTION>__<KEY>` variables, then flags.

use serde::{Deserialize, Serialize};
use storefront_plumbing::config::{Validate, key_path};
use storefront_plumbing::settings::{LogSettings, MongoSettings};
use storefront_schemas::topology::StorefrontNamespaces;

/// Prefix of the environment variables that override config keys
/// (`STOREFRONT_SIM_MONGO__URI`, `STOREFRONT_SIM_SOURCES__ACCOUNTS__DATABASE`).
pub const ENV_PREFIX: &str = "STOREFRONT_SIM_";

/// Everything the simulator can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The MongoDB the applications write to.
    #[serde(default)]
    pub mongo: MongoSettings,
    /// The applications' collections (the connector's `sources`).
    #[serde(default)]
    pub sources: StorefrontNamespaces,
    /// Log output of the binary.
    #[serde(default)]
    pub log: LogSettings,
    /// How the applications behave.
    #[serde(default)]
    pub apps: AppSettings,
}

/// How the applications behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSettings {
    /// How long an application waits for a projection it needs (the Orders application for the
    /// customer copy, the Fulfillment application for a request), in milliseconds.
    pub wait_ms: u64,
    /// Customers whose stories run at the same time in scenario mode.
    pub concurrency: usize,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            wait_ms: 120_000,
            concurrency: 16,
        }
    }
}

impl Validate for SimConfig {
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        self.mongo.validate(&key_path(path, "mongo"), problems);
        self.log.validate(&key_path(path, "log"), problems);
        problems.extend(self.sources.problems(&key_path(path, "sources")));
        let apps = key_path(path, "apps");
        if self.apps.wait_ms == 0 {
            problems.push(format!(
                "{} must be greater than 0",
                key_path(&apps, "wait_ms")
            ));
        }
        if self.apps.concurrency == 0 {
            problems.push(format!(
                "{} must be greater than 0",
                key_path(&apps, "concurrency")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_connectors_and_valid() {
        let config = SimConfig::default();
        assert_eq!(config.sources, StorefrontNamespaces::default());
        assert_eq!(config.mongo, MongoSettings::default());
        let mut problems = Vec::new();
        config.validate("", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let bad = SimConfig {
            apps: AppSettings {
                wait_ms: 0,
                concurrency: 0,
            },
            ..SimConfig::default()
        };
        let mut problems = Vec::new();
        bad.validate("", &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
