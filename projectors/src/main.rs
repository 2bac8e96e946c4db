//! `projectors` command line.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

use clap::{Parser, Subcommand};
use storefront_plumbing::cli::CommonArgs;
use storefront_plumbing::config;

use projectors::config::{ENV_PREFIX, Projector, ProjectorsConfig};

/// Consume the storefront's domain events and maintain the denormalized copies in MongoDB.
///
/// Configuration comes from, lowest precedence first: built-in defaults, the TOML file given with
/// --config, environment variables PROJECTORS_<SECTION>__<KEY> (for example
/// PROJECTORS_MONGO__URI), and the flags below.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run projectors until SIGTERM or SIGINT.
    Run {
        /// Which projectors to run in this process; all when none is named.
        #[arg(value_enum)]
        projectors: Vec<Projector>,
    },
    /// Load and validate the configuration, print it with secrets redacted, and exit.
    CheckConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: ProjectorsConfig = config::load(
        cli.common.config.as_deref(),
        ENV_PREFIX,
        cli.common.overrides(),
    )?;
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config::to_toml(&config.redacted())?);
            Ok(())
        }
        Command::Run { mut projectors } => {
            if projectors.is_empty() {
                projectors = Projector::ALL.to_vec();
            }
            projectors.sort();
            projectors.dedup();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(projectors::run(
                config,
                projectors,
                storefront_plumbing::shutdown::termination_signal(),
            ))?;
            Ok(())
        }
    }
}
