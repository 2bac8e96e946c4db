//! Command-line flags both binaries share. Each overrides one config key; see [`crate::config`]
//! for the precedence of file, environment and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::Overrides;
use crate::settings::LogFormat;

/// Flags common to every storefront-cdc process.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML config file. Without one, defaults apply, then environment variables and flags.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// MongoDB connection string (overrides `mongo.uri`).
    #[arg(long, value_name = "URI", global = true)]
    pub mongo_uri: Option<String>,
    /// Kafka bootstrap servers, `host:port[,host:port]` (overrides `kafka.bootstrap_servers`).
    #[arg(long, value_name = "SERVERS", global = true)]
    pub kafka_bootstrap_servers: Option<String>,
    /// Address of the `/health` and `/metrics` endpoint (overrides `http.listen`).
    #[arg(long, value_name = "ADDR", global = true)]
    pub http_listen: Option<SocketAddr>,
    /// Log filter such as `info` or `debug,librdkafka=info` (overrides `log.filter`).
    #[arg(long, value_name = "FILTER", global = true)]
    pub log_filter: Option<String>,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum, value_name = "FORMAT", global = true)]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(value: LogFormatArg) -> Self {
        match value {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl CommonArgs {
    /// The config keys these flags override.
    pub fn overrides(&self) -> Overrides {
        Overrides::default()
            .set("mongo.uri", self.mongo_uri.clone())
            .set(
                "kafka.bootstrap_servers",
                self.kafka_bootstrap_servers.clone(),
            )
            .set("http.listen", self.http_listen.map(|addr| addr.to_string()))
            .set("log.filter", self.log_filter.clone())
            .set("log.format", self.log_format.map(LogFormat::from))
    }
}
