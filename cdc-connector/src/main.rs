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
    /// Compare each source collection with its copies (through the connector's mapping and the
    /// projectors' projection) and report missing, extra and mismatched keys; exit 0 without
    /// drift, 1 with drift, 2 on error. `--repair` re-emits the drifted sources through Kafka.
    Reconcile(ReconcileArgs),
    /// Dead letters: list them grouped by reason, or re-emit the current state of the documents
    /// of chosen ones after the cause is fixed (see docs/dead-letters.md).
    DeadLetters {
        #[command(subcommand)]
        command: storefront_plumbing::dead_letters::DeadLettersCommand,
    },
}

/// Options of `reconcile` (its collections, batch size, rate and samples are in `[reconcile]`).
#[derive(Debug, clap::Args)]
struct ReconcileArgs {
    /// Re-emit the current state of each drifted key's source through Kafka, so the projectors
    /// repair the copy (safe while the pipeline runs).
    #[arg(long)]
    repair: bool,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// Also write the drift as Prometheus text to this file (for node_exporter's textfile
    /// collector; written to a temporary file, then renamed).
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<std::path::PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
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
        Command::Reconcile(args) => Ok(reconcile(&config, &args)),
        Command::DeadLetters { command } => {
            storefront_plumbing::telemetry::init_logging(&config.log)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let output =
                runtime.block_on(cdc_connector::dead_letters::command(&config, command))?;
            print!("{output}");
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

/// `reconcile`: 0 without drift, 1 with drift, 2 when it could not finish.
fn reconcile(config: &ConnectorConfig, args: &ReconcileArgs) -> ExitCode {
    let options = cdc_connector::reconcile::Options {
        repair: args.repair,
        progress: !args.quiet,
    };
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime
                .block_on(cdc_connector::reconcile::run(config, &options))
                .map_err(anyhow::Error::from)
        });
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            eprintln!("reconcile failed: {error:#}");
            return ExitCode::from(2);
        }
    };
    match args.format {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", report.json()),
    }
    if let Some(path) = &args.metrics_file {
        let finished = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let temporary = path.with_extension("prom.tmp");
        let written = std::fs::write(&temporary, report.prometheus(finished))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            eprintln!("reconcile: writing {} failed: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
