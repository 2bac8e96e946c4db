//! `storefront-sim` command line: run a scenario or a load against MongoDB, write the expected
//! state, verify the databases against one.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use storefront_plumbing::config::{self, Overrides};
use storefront_schemas::topology::StorefrontNamespaces;
use storefront_sim::config::ENV_PREFIX;
use storefront_sim::report::{self, Scrapes};
use storefront_sim::scrape::Scrape;
use storefront_sim::{
    ExpectedState, Flow, LoadSpec, Progress, ScenarioSpec, SimConfig, SimError, Simulator,
    VerifyOptions, verify,
};

/// Play the storefront's Accounts, Orders and Fulfillment applications against MongoDB, and
/// check that the connector and the projectors carried every change across.
///
/// Configuration comes from, lowest precedence first: built-in defaults (the connector's
/// collections on the local stack), the TOML file given with --config, environment variables
/// STOREFRONT_SIM_<SECTION>__<KEY> (for example STOREFRONT_SIM_MONGO__URI or
/// STOREFRONT_SIM_SOURCES__ORDERS__DATABASE), and the flags below.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML config file with the sections `mongo`, `sources`, `log`, `apps`.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// MongoDB connection string (overrides `mongo.uri`).
    #[arg(long, value_name = "URI", global = true)]
    mongo_uri: Option<String>,
    /// Database of the Accounts collection (overrides `sources.accounts.database`).
    #[arg(long, value_name = "DB", global = true)]
    accounts_database: Option<String>,
    /// The Accounts collection (overrides `sources.accounts.collection`).
    #[arg(long, value_name = "COLLECTION", global = true)]
    accounts_collection: Option<String>,
    /// Database of the Orders collection (overrides `sources.orders.database`).
    #[arg(long, value_name = "DB", global = true)]
    orders_database: Option<String>,
    /// The Orders collection (overrides `sources.orders.collection`).
    #[arg(long, value_name = "COLLECTION", global = true)]
    orders_collection: Option<String>,
    /// Database of the Fulfillment collection (overrides `sources.fulfillment.database`).
    #[arg(long, value_name = "DB", global = true)]
    fulfillment_database: Option<String>,
    /// The Fulfillment collection (overrides `sources.fulfillment.collection`).
    #[arg(long, value_name = "COLLECTION", global = true)]
    fulfillment_collection: Option<String>,
    /// How long an application waits for a projection, in seconds (overrides `apps.wait_ms`).
    #[arg(long, value_name = "SECS", global = true)]
    app_wait: Option<u64>,
    /// Log filter such as `info` (overrides `log.filter`).
    #[arg(long, value_name = "FILTER", global = true)]
    log_filter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N customers with M orders each, run until every approved order is RECEIVED.
    Scenario {
        /// How many customers.
        #[arg(long)]
        customers: u64,
        /// Orders per customer.
        #[arg(long)]
        orders: u32,
        /// Seed of every random choice: the same seed writes the same documents.
        #[arg(long)]
        seed: u64,
        /// Customers in progress at once (overrides `apps.concurrency`).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Where to write the expected state (JSON) for a later `verify`.
        #[arg(long, value_name = "FILE")]
        expected_out: Option<PathBuf>,
    },
    /// About R source changes per second for SECS seconds, over as many customers as it takes;
    /// then every started customer's story runs to its end.
    Load {
        /// Target source changes per second.
        #[arg(long)]
        rate: f64,
        /// How long to start new customers, in seconds.
        #[arg(long, value_name = "SECS")]
        duration: u64,
        /// Seed of every random choice.
        #[arg(long)]
        seed: u64,
        /// Most orders per customer (1 to this many).
        #[arg(long, default_value_t = 3)]
        max_orders: u32,
        /// Most customers in progress at once.
        #[arg(long, default_value_t = 2_000)]
        max_customers: usize,
        /// Where to write the expected state (JSON) for a later `verify`.
        #[arg(long, value_name = "FILE")]
        expected_out: Option<PathBuf>,
    },
    /// Compare the databases with an expected state; exit 0 when they agree, 1 otherwise. The
    /// collections are the ones the expected state was written for.
    Verify {
        /// The expected state written by `scenario` or `load`.
        #[arg(long, value_name = "FILE")]
        expected: PathBuf,
        /// Keep comparing until they agree or this many seconds have passed.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait: u64,
        /// The run owns the collections: any other document is a difference too.
        #[arg(long)]
        exclusive: bool,
    },
    /// The demo: a scenario through the running connector and projectors with live progress
    /// per flow, then a report: per flow the source changes, events published, events
    /// projected, end-to-end lag and dead letters, and the differences between the projections
    /// and the expected state. Exit 0 when every projection converged and nothing was
    /// dead-lettered.
    Demo {
        /// How many customers.
        #[arg(long, default_value_t = 50)]
        customers: u64,
        /// Orders per customer.
        #[arg(long, default_value_t = 3)]
        orders: u32,
        /// Seed of every random choice (default: from the clock, so that a rerun on the same
        /// collections writes new customers).
        #[arg(long)]
        seed: Option<u64>,
        /// The connector's HTTP address, `host:port` (its /metrics).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9464")]
        connector_http: String,
        /// The projectors' HTTP address, `host:port` (their /metrics).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9465")]
        projectors_http: String,
        /// How long to wait for the projections to converge after the last write, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        wait: u64,
        /// Where to write the expected state (JSON) for a later `verify`.
        #[arg(long, value_name = "FILE")]
        expected_out: Option<PathBuf>,
    },
    /// Load and validate the configuration, print it with the password redacted, and exit.
    CheckConfig,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides::default()
            .set("mongo.uri", self.mongo_uri.clone())
            .set("sources.accounts.database", self.accounts_database.clone())
            .set(
                "sources.accounts.collection",
                self.accounts_collection.clone(),
            )
            .set("sources.orders.database", self.orders_database.clone())
            .set("sources.orders.collection", self.orders_collection.clone())
            .set(
                "sources.fulfillment.database",
                self.fulfillment_database.clone(),
            )
            .set(
                "sources.fulfillment.collection",
                self.fulfillment_collection.clone(),
            )
            .set("apps.wait_ms", self.app_wait.map(|s| s * 1_000))
            .set("log.filter", self.log_filter.clone())
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let mut config: SimConfig = config::load(cli.config.as_deref(), ENV_PREFIX, cli.overrides())?;
    if let Command::CheckConfig = cli.command {
        config.mongo = config.mongo.redacted();
        print!("{}", config::to_toml(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    storefront_plumbing::telemetry::init_logging(&config.log)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Scenario {
                customers,
                orders,
                seed,
                concurrency,
                expected_out,
            } => {
                if let Some(concurrency) = concurrency {
                    config.apps.concurrency = concurrency.max(1);
                }
                let simulator = Simulator::connect(&config).await?;
                let spec = ScenarioSpec {
                    customers,
                    orders,
                    seed,
                };
                tracing::info!(customers, orders, seed, sources = ?config.sources, "scenario starts");
                let result = with_progress(&simulator, simulator.run_scenario(&spec)).await;
                finish(&simulator, result, expected_out.as_deref())
            }
            Command::Load {
                rate,
                duration,
                seed,
                max_orders,
                max_customers,
                expected_out,
            } => {
                let simulator = Simulator::connect(&config).await?;
                let spec = LoadSpec {
                    rate,
                    duration: Duration::from_secs(duration),
                    seed,
                    max_orders,
                    max_customers: max_customers.max(1),
                };
                tracing::info!(rate, duration, seed, sources = ?config.sources, "load starts");
                let started = std::time::Instant::now();
                let result = with_progress(&simulator, simulator.run_load(&spec)).await;
                let written = simulator.progress().snapshot().written();
                println!(
                    "{written} changes in {:.1} s ({:.1} per second)",
                    started.elapsed().as_secs_f64(),
                    written as f64 / started.elapsed().as_secs_f64().max(0.001)
                );
                finish(&simulator, result, expected_out.as_deref())
            }
            Command::Verify {
                expected,
                wait,
                exclusive,
            } => {
                let text = std::fs::read_to_string(&expected)
                    .with_context(|| format!("reading {}", expected.display()))?;
                let expected = ExpectedState::from_json(&text)?;
                let client =
                    storefront_plumbing::mongo::connect(&config.mongo, "storefront-sim").await?;
                let report = verify::verify_until(
                    &client,
                    &expected,
                    VerifyOptions { exclusive },
                    Duration::from_secs(wait),
                )
                .await?;
                for (collection, count) in &report.compared {
                    println!("{collection}: {count} documents expected");
                }
                if report.differences.is_empty() {
                    println!("no differences");
                    return Ok(ExitCode::SUCCESS);
                }
                println!("{} differences", report.differences.len());
                for (collection, count) in report.differences_per_collection() {
                    println!("  {collection}: {count}");
                }
                for difference in report.differences.iter().take(10) {
                    println!("  {difference}");
                }
                Ok(ExitCode::FAILURE)
            }
            Command::Demo {
                customers,
                orders,
                seed,
                connector_http,
                projectors_http,
                wait,
                expected_out,
            } => {
                let seed = seed.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                });
                let endpoints = Endpoints {
                    connector: connector_http,
                    projectors: projectors_http,
                };
                let spec = ScenarioSpec {
                    customers,
                    orders,
                    seed,
                };
                demo(&config, &spec, endpoints, Duration::from_secs(wait), expected_out.as_deref())
                    .await
            }
            Command::CheckConfig => Ok(ExitCode::SUCCESS),
        }
    })
}

/// Where the connector's and the projectors' `/metrics` are.
#[derive(Debug, Clone)]
struct Endpoints {
    connector: String,
    projectors: String,
}

impl Endpoints {
    async fn scrape(&self) -> anyhow::Result<Scrapes> {
        let hint = "is it running? `dev/run` starts it";
        Ok(Scrapes {
            connector: Scrape::fetch(&self.connector)
                .await
                .with_context(|| format!("the connector's metrics ({hint})"))?,
            projectors: Scrape::fetch(&self.projectors)
                .await
                .with_context(|| format!("the projectors' metrics ({hint})"))?,
        })
    }
}

/// The demo: the scenario with live progress, convergence, the report.
async fn demo(
    config: &SimConfig,
    spec: &ScenarioSpec,
    endpoints: Endpoints,
    wait: Duration,
    expected_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let before = endpoints.scrape().await?;
    let simulator = Simulator::connect(config).await?;
    let progress = simulator.progress();
    let terminal = std::io::stderr().is_terminal();
    println!(
        "demo: {} customers x {} orders (seed {}) through the running connector and projectors",
        spec.customers, spec.orders, spec.seed
    );
    let show = tokio::spawn(show_demo_progress(
        progress.clone(),
        config.sources.clone(),
        before.clone(),
        endpoints.clone(),
        terminal,
    ));
    let cancel = simulator.cancel_token();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping between writes");
            cancel.cancel();
        }
    });
    let outcome = simulator.run_scenario(spec).await;
    let expected = match &outcome {
        Ok(expected) => expected.clone(),
        Err(_) => simulator.expected(),
    };
    if let Some(path) = expected_out {
        std::fs::write(path, expected.to_json()?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Err(error) = outcome {
        show.abort();
        interrupt.abort();
        eprintln!("error: {}", storefront_plumbing::errors::chain(&error));
        return Ok(ExitCode::FAILURE);
    }
    // The applications are done; the pipeline may still be carrying their last changes.
    let client = storefront_plumbing::mongo::connect(&config.mongo, "storefront-sim").await?;
    let verified = verify::verify_until(&client, &expected, VerifyOptions::default(), wait).await?;
    // The projectors count an event once its batch is settled, a moment after its write is
    // visible: wait (briefly) until they have taken every event the connector published.
    let settle = std::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        let after = endpoints.scrape().await?;
        let report = report::build(
            &config.sources,
            &progress.snapshot(),
            &before,
            &after,
            &verified,
        );
        let behind = report
            .flows
            .iter()
            .any(|flow| flow.projected + flow.dead_letters < flow.published);
        if !behind || std::time::Instant::now() >= settle {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    show.abort();
    interrupt.abort();
    let _ = show.await;
    println!();
    print!("{}", report.render());
    for difference in verified.differences.iter().take(10) {
        println!("  {difference}");
    }
    Ok(if report.converged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Live progress of the demo: per flow, source changes written (the bar) and the events the
/// connector published and the projectors took so far (scraped every half second). Bars on a
/// terminal, a log line every five seconds otherwise. Runs until aborted.
async fn show_demo_progress(
    progress: Arc<Progress>,
    sources: StorefrontNamespaces,
    before: Scrapes,
    endpoints: Endpoints,
    terminal: bool,
) {
    let multi = MultiProgress::new();
    let bars: Vec<ProgressBar> = Flow::ALL
        .iter()
        .map(|flow| {
            let bar = if terminal {
                multi.add(ProgressBar::new(0))
            } else {
                ProgressBar::hidden()
            };
            if let Ok(style) = ProgressStyle::with_template(&format!(
                "{:<12} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} changes  {{msg}}",
                flow.name()
            )) {
                bar.set_style(style);
            }
            bar
        })
        .collect();
    let mut last_log = std::time::Instant::now();
    loop {
        let snapshot = progress.snapshot();
        let after = endpoints.scrape().await.unwrap_or_default();
        let figures = report::build(&sources, &snapshot, &before, &after, &Default::default());
        for (flow, bar) in figures.flows.iter().zip(&bars) {
            let counts = snapshot.flow(flow.flow);
            bar.set_length(counts.planned);
            bar.set_position(counts.written);
            bar.set_message(format!(
                "{} published, {} projected",
                flow.published, flow.projected
            ));
        }
        if !terminal && last_log.elapsed() >= Duration::from_secs(5) {
            last_log = std::time::Instant::now();
            for flow in &figures.flows {
                let counts = snapshot.flow(flow.flow);
                tracing::info!(
                    flow = flow.flow.name(),
                    changes = format!("{}/{}", counts.written, counts.planned),
                    published = flow.published,
                    projected = flow.projected,
                    "progress"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the run's outcome, writes the expected state (also after a failure: it holds exactly
/// the writes that were made), and says how the process ends.
fn finish(
    simulator: &Simulator,
    result: Result<ExpectedState, SimError>,
    expected_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let expected = match &result {
        Ok(expected) => expected.clone(),
        Err(_) => simulator.expected(),
    };
    let counts = expected.counts;
    println!(
        "{} customers, {} orders ({} approved), {} fulfillment status changes",
        counts.customers, counts.orders, counts.approved_orders, counts.status_changes
    );
    if let Some(path) = expected_out {
        std::fs::write(path, expected.to_json()?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("expected state written to {}", path.display());
    }
    match result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("error: {}", storefront_plumbing::errors::chain(&error));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs `work` while showing the simulator's progress: bars on a terminal, a log line every
/// five seconds otherwise. Ctrl-C cancels the run between writes.
async fn with_progress<T>(simulator: &Simulator, work: impl Future<Output = T>) -> T {
    let progress = simulator.progress();
    let cancel = simulator.cancel_token();
    let show = tokio::spawn(show_progress(progress, std::io::stderr().is_terminal()));
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping between writes");
            cancel.cancel();
        }
    });
    let result = work.await;
    show.abort();
    interrupt.abort();
    let _ = show.await;
    result
}

async fn show_progress(progress: Arc<Progress>, terminal: bool) {
    if terminal {
        let multi = MultiProgress::new();
        let bars: Vec<ProgressBar> = Flow::ALL
            .iter()
            .map(|flow| {
                let bar = multi.add(ProgressBar::new(0));
                if let Ok(style) = ProgressStyle::with_template(&format!(
                    "{:<12} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} changes ({{per_sec}})",
                    flow.name()
                )) {
                    bar.set_style(style);
                }
                bar
            })
            .collect();
        // Drawn until the task is aborted, which leaves the last state on screen.
        loop {
            let snapshot = progress.snapshot();
            for (flow, bar) in Flow::ALL.iter().zip(&bars) {
                let counts = snapshot.flow(*flow);
                bar.set_length(counts.planned);
                bar.set_position(counts.written);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let snapshot = progress.snapshot();
            let [accounts, orders, fulfillment] = snapshot.flows;
            tracing::info!(
                customers_started = snapshot.customers_started,
                customers_done = snapshot.customers_done,
                accounts = format!("{}/{}", accounts.written, accounts.planned),
                orders = format!("{}/{}", orders.written, orders.planned),
                fulfillment = format!("{}/{}", fulfillment.written, fulfillment.planned),
                "progress"
            );
        }
    }
}
