//! `projectors` command line.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Decoding, planning and serialising a batch allocates many small, short-lived values (JSON,
// BSON documents); glibc's malloc and free took about a quarter of the projector's CPU in
// profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Re-derive a projection from the retained topics, in place, then leave the projector's
    /// consumer group at the replayed end. Every instance of that projector must be stopped
    /// first; start them again afterwards.
    Rebuild {
        /// The projection to rebuild.
        #[arg(value_enum)]
        projector: Projector,
    },
    /// Create the missing topics with the settings a rebuild needs, and report existing topics
    /// whose settings differ (exit status 1 if any does).
    SetupTopics,
    /// Load and validate the configuration, print it with secrets redacted, and exit.
    CheckConfig,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config: ProjectorsConfig = config::load(
        cli.common.config.as_deref(),
        ENV_PREFIX,
        cli.common.overrides(),
    )?;
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config::to_toml(&config.redacted())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { mut projectors } => {
            if projectors.is_empty() {
                projectors = Projector::ALL.to_vec();
            }
            projectors.sort();
            projectors.dedup();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                // A failure to start is reported here; once running, the process logs its own
                // fatal error (`process::spawn`), which is not printed again.
                let running = projectors::start(
                    config,
                    projectors,
                    storefront_plumbing::shutdown::termination_signal(),
                )
                .await?;
                Ok(match running.wait().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_logged) => ExitCode::FAILURE,
                })
            })
        }
        Command::Rebuild { projector } => {
            storefront_plumbing::telemetry::init_logging(&config.log)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(projectors::rebuild(
                config,
                projector,
                storefront_plumbing::shutdown::termination_signal(),
                std::io::stderr().is_terminal(),
            ))?;
            let replayed = &report.replayed;
            println!(
                "rebuilt {projector}: {} records in {:.1} s ({} applied, {} stale, {} duplicate, \
                 {} dead letters); guards cleared in {} documents",
                replayed.total(),
                report.elapsed.as_secs_f64(),
                replayed.applied,
                replayed.stale,
                replayed.duplicates,
                replayed.dead_letters,
                report.guards_reset,
            );
            for mismatch in &report.mismatches {
                println!("warning: {mismatch}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SetupTopics => {
            storefront_plumbing::telemetry::init_logging(&config.log)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let mismatches = runtime.block_on(projectors::setup_topics(&config))?;
            if mismatches.is_empty() {
                println!("every topic exists with the settings a rebuild needs");
                return Ok(ExitCode::SUCCESS);
            }
            for mismatch in &mismatches {
                println!("{mismatch}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
