//! `projectors` command line.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The system allocator, not mimalloc as the connector: with mimalloc a projector idled at 33 MB
// and peaked at 100 to 106 MB draining a 100,000-event backlog, with glibc's malloc at 21 MB and
// about 80 MB, while the throughput bench saw no difference (docs/benchmarks.md, "Memory under a
// stalled sink").

use storefront_plumbing::cli::CommonArgs;
use storefront_plumbing::config;
use storefront_plumbing::dead_letters::{self, DeadLettersCommand, Format};

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
    /// Dead letters: list them grouped by reason, or send chosen ones back for processing after
    /// the cause is fixed (see docs/dead-letters.md).
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
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
        Command::DeadLetters { command } => {
            storefront_plumbing::telemetry::init_logging(&config.log)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(dead_letters_command(&config, command))
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

async fn dead_letters_command(
    config: &ProjectorsConfig,
    command: DeadLettersCommand,
) -> anyhow::Result<ExitCode> {
    let client_id = format!("{}.dead-letters", projectors::APP_NAME);
    match command {
        DeadLettersCommand::List(args) => {
            let topics = if args.topics.is_empty() {
                vec![config.apply.dead_letter_topic.clone()]
            } else {
                args.topics.clone()
            };
            let mut redriven = std::collections::HashSet::new();
            for topic in &topics {
                redriven.extend(dead_letters::redriven(&config.kafka, &client_id, topic).await?);
            }
            let listing =
                dead_letters::list(&config.kafka, &client_id, &topics, &args, &redriven).await?;
            match args.format {
                Format::Text => print!("{}", listing.to_text()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&listing)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Redrive(args) => {
            if args.select.is_empty() {
                anyhow::bail!(
                    "choose the dead letters to redrive (--kind, --reason, --group, --key, \
                     --source-topic, --partition, --from-offset, --to-offset or --since)"
                );
            }
            let options = projectors::redrive::RedriveOptions::from_args(
                &args,
                &config.apply.dead_letter_topic,
            );
            let report = projectors::redrive::redrive(config, &options).await?;
            match args.format {
                Format::Text => print!("{}", report.to_text()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
