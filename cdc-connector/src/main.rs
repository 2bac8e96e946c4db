//! `cdc-connector` command line.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The per-event path allocates many small, short-lived buffers (BSON documents, JSON, headers);
// glibc's allocator spent about a third of the connector's CPU on them in profiles, mimalloc a
// fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use storefront_plumbing::cli::CommonArgs;
use storefront_plumbing::config;

use cdc_connector::config::{ConnectorConfig, ENV_PREFIX, SnapshotMode};

/// Streams changes of the storefront's MongoDB collections into domain events on Kafka.
///
/// Configuration comes from, lowest precedence first: built-in defaults, the TOML file given with
/// --config, environment variables CDC_CONNECTOR_<SECTION>__<KEY> (for example
/// CDC_CONNECTOR_KAFKA__BOOTSTRAP_SERVERS), and the flags below.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// When to publish existing documents (overrides `stream.snapshot`): `initial` when a stream
    /// has no checkpoint, `never`, or `always` at every start.
    #[arg(long, value_enum, value_name = "MODE", global = true)]
    snapshot: Option<SnapshotMode>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the connector until SIGTERM or SIGINT (the default).
    Run,
    /// Load and validate the configuration, print it with secrets redacted, and exit.
    CheckConfig,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config: ConnectorConfig = config::load(
        cli.common.config.as_deref(),
        ENV_PREFIX,
        cli.common.overrides().set("stream.snapshot", cli.snapshot),
    )?;
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            print!("{}", config::to_toml(&config.redacted())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                // A failure to start is reported here; once running, the process logs its own
                // fatal error, which is not printed again.
                let running = cdc_connector::start(
                    config,
                    storefront_plumbing::shutdown::termination_signal(),
                )
                .await?;
                Ok(match running.wait().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_logged) => ExitCode::FAILURE,
                })
            })
        }
    }
}
