//! The demo's report: per flow, what the applications wrote, what the connector published, what
//! the projectors applied, how long it took end to end, what was dead-lettered, and how far the
//! databases are from the expected state.
//!
//! Every figure comes from the processes' own `/metrics` ([`crate::scrape`]), as the difference
//! between a scrape before the run and one after it, so earlier runs of the same processes do
//! not count; the differences come from [`crate::verify`]. Nothing here reads Kafka or MongoDB.

use std::fmt::Write as _;

use storefront_schemas::topology::StorefrontNamespaces;

use crate::progress::{Flow, ProgressSnapshot};
use crate::scrape::{Scrape, bucket_delta, quantile};
use crate::verify::Report as VerifyReport;

/// The projectors' end-to-end latency histogram (source commit to applied projection write).
pub const LATENCY_METRIC: &str = "projector_end_to_end_latency_seconds";

/// One flow's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFigures {
    /// The application (and source collection) of the flow.
    pub flow: Flow,
    /// The source collection, `database.collection`.
    pub source: String,
    /// The topics its events went to (those the connector published to during the run).
    pub topics: Vec<String>,
    /// Source changes the application wrote.
    pub changes: u64,
    /// Events the connector handed to Kafka.
    pub published: u64,
    /// Events the projectors took (applied, or superseded by a newer one: stale or duplicate).
    pub projected: u64,
    /// Of those, applied.
    pub applied: u64,
    /// Dead letters of the connector (this source) and of the projectors (these topics).
    pub dead_letters: u64,
    /// End-to-end latency percentiles in seconds (p50, p99), if any event was applied.
    pub latency: Option<(f64, f64)>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// Per flow, in [`Flow::ALL`] order.
    pub flows: Vec<FlowFigures>,
    /// Differences from the expected state, per collection (every compared collection listed).
    pub differences: Vec<(String, usize)>,
}

/// The scrapes of the connector and the projectors at one moment.
#[derive(Debug, Clone, Default)]
pub struct Scrapes {
    /// The connector's `/metrics`.
    pub connector: Scrape,
    /// The projectors' `/metrics`.
    pub projectors: Scrape,
}

impl Scrapes {
    /// Events the connector published from `source` to `topic` so far.
    fn published(&self, source: &str, topic: &str) -> f64 {
        self.connector.sum(
            "cdc_events_published_total",
            &[("collection", source), ("topic", topic)],
        )
    }

    /// The topics the connector has published to from `source`.
    fn topics(&self, source: &str) -> Vec<String> {
        self.connector.label_values(
            "cdc_events_published_total",
            &[("collection", source)],
            "topic",
        )
    }

    fn projected(&self, topic: &str, outcome: &str) -> f64 {
        self.projectors.sum(
            "projector_events_total",
            &[("topic", topic), ("outcome", outcome)],
        )
    }
}

/// The figures of the run between `before` and `after`.
pub fn build(
    sources: &StorefrontNamespaces,
    progress: &ProgressSnapshot,
    before: &Scrapes,
    after: &Scrapes,
    verified: &VerifyReport,
) -> DemoReport {
    let delta = |f: &dyn Fn(&Scrapes) -> f64| (f(after) - f(before)).max(0.0).round() as u64;
    let flows = Flow::ALL
        .into_iter()
        .map(|flow| {
            let source = flow.source(sources).to_string();
            let topics: Vec<String> = after
                .topics(&source)
                .into_iter()
                .filter(|topic| delta(&|s| s.published(&source, topic)) > 0)
                .collect();
            let per_topic = |f: &dyn Fn(&Scrapes, &str) -> f64| -> u64 {
                topics.iter().map(|topic| delta(&|s| f(s, topic))).sum()
            };
            let applied = per_topic(&|s, t| s.projected(t, "applied"));
            let superseded =
                per_topic(&|s, t| s.projected(t, "stale") + s.projected(t, "duplicate"));
            let dead_letters = delta(&|s| {
                s.connector
                    .sum("cdc_dead_letters_total", &[("collection", &source)])
            }) + per_topic(&|s, t| {
                s.projectors
                    .sum("projector_dead_letters_total", &[("topic", t)])
            });
            let mut buckets: Vec<(f64, f64)> = Vec::new();
            for topic in &topics {
                let run = bucket_delta(
                    &before
                        .projectors
                        .buckets(LATENCY_METRIC, &[("topic", topic)]),
                    &after
                        .projectors
                        .buckets(LATENCY_METRIC, &[("topic", topic)]),
                );
                buckets = if buckets.is_empty() {
                    run
                } else {
                    buckets
                        .iter()
                        .zip(&run)
                        .map(|((bound, a), (_, b))| (*bound, a + b))
                        .collect()
                };
            }
            let latency = quantile(0.5, &buckets).zip(quantile(0.99, &buckets));
            FlowFigures {
                flow,
                changes: progress.flow(flow).written,
                published: per_topic(&|s, t| s.published(&source, t)),
                projected: applied + superseded,
                applied,
                dead_letters,
                latency,
                source,
                topics,
            }
        })
        .collect();
    let per_collection = verified.differences_per_collection();
    let differences = verified
        .compared
        .keys()
        .map(|collection| {
            let count = per_collection
                .get(collection.as_str())
                .copied()
                .unwrap_or(0);
            (collection.clone(), count)
        })
        .collect();
    DemoReport { flows, differences }
}

impl DemoReport {
    /// Differences in every collection.
    pub fn total_differences(&self) -> usize {
        self.differences.iter().map(|(_, count)| count).sum()
    }

    /// Dead letters of every flow.
    pub fn total_dead_letters(&self) -> u64 {
        self.flows.iter().map(|flow| flow.dead_letters).sum()
    }

    /// All is well: the databases equal the expected state and nothing was dead-lettered.
    pub fn converged(&self) -> bool {
        self.total_differences() == 0 && self.total_dead_letters() == 0
    }

    /// The report as a person reads it: a table per flow, the differences, a verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>14} {:>16} {:>17} {:>10} {:>10} {:>12}",
            "flow",
            "source changes",
            "events published",
            "events projected",
            "lag p50",
            "lag p99",
            "dead letters"
        );
        for flow in &self.flows {
            let (p50, p99) = match flow.latency {
                Some((p50, p99)) => (format_ms(p50), format_ms(p99)),
                None => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:<12} {:>14} {:>16} {:>17} {:>10} {:>10} {:>12}",
                flow.flow.name(),
                flow.changes,
                flow.published,
                flow.projected,
                p50,
                p99,
                flow.dead_letters
            );
        }
        let _ = writeln!(
            out,
            "(lag: source commit to applied projection write, from the projectors' {LATENCY_METRIC})"
        );
        let _ = writeln!(out);
        let listed: Vec<String> = self
            .differences
            .iter()
            .map(|(collection, count)| format!("{collection} {count}"))
            .collect();
        let _ = writeln!(
            out,
            "differences from the expected state: {} ({})",
            self.total_differences(),
            listed.join(", ")
        );
        let verdict = if self.converged() {
            "converged: every projection equals the expected state, nothing dead-lettered"
        } else if self.total_differences() > 0 {
            "NOT converged: the projections differ from the expected state"
        } else {
            "converged, but dead letters were sent: see the dead-letter topics"
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

fn format_ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use storefront_schemas::topology::Namespace;

    use crate::compare::Difference;
    use crate::progress::Progress;

    fn scrape(connector: &str, projectors: &str) -> Scrapes {
        Scrapes {
            connector: Scrape::parse(connector),
            projectors: Scrape::parse(projectors),
        }
    }

    const BEFORE_CONNECTOR: &str = r#"
cdc_events_published_total{collection="customer.accounts",topic="c"} 10
cdc_dead_letters_total{collection="customer.accounts"} 1
"#;
    const AFTER_CONNECTOR: &str = r#"
cdc_events_published_total{collection="customer.accounts",topic="c"} 14
cdc_events_published_total{collection="customer.orders",topic="f"} 2
cdc_events_published_total{collection="customer.orders",topic="g"} 5
cdc_dead_letters_total{collection="customer.accounts"} 1
cdc_dead_letters_total{collection="customer.orders"} 1
"#;
    const BEFORE_PROJECTORS: &str = r#"
projector_events_total{projector="orders",topic="c",outcome="applied"} 10
projector_end_to_end_latency_seconds_bucket{projector="orders",topic="c",le="0.01"} 10
projector_end_to_end_latency_seconds_bucket{projector="orders",topic="c",le="0.02"} 10
projector_end_to_end_latency_seconds_bucket{projector="orders",topic="c",le="+Inf"} 10
"#;
    const AFTER_PROJECTORS: &str = r#"
projector_events_total{projector="orders",topic="c",outcome="applied"} 13
projector_events_total{projector="orders",topic="c",outcome="stale"} 1
projector_events_total{projector="fulfillment",topic="f",outcome="applied"} 2
projector_end_to_end_latency_seconds_bucket{projector="orders",topic="c",le="0.01"} 10
projector_end_to_end_latency_seconds_bucket{projector="orders",topic="c",le="0.02"} 13
projector_end_to_end_latency_seconds_bucket{projector="orders",topic="c",le="+Inf"} 13
"#;

    fn report(differences: Vec<Difference>) -> DemoReport {
        let sources = StorefrontNamespaces {
            accounts: Namespace::new("customer", "accounts"),
            orders: Namespace::new("customer", "orders"),
            fulfillment: Namespace::new("fulfillment", "requests"),
        };
        let progress = Progress::new();
        for _ in 0..4 {
            progress.wrote(Flow::Accounts);
        }
        progress.wrote(Flow::Orders);
        let verified = VerifyReport {
            compared: [
                ("customer.orders".to_owned(), 3),
                ("fulfillment.requests".to_owned(), 2),
            ]
            .into(),
            differences,
        };
        build(
            &sources,
            &progress.snapshot(),
            &scrape(BEFORE_CONNECTOR, BEFORE_PROJECTORS),
            &scrape(AFTER_CONNECTOR, AFTER_PROJECTORS),
            &verified,
        )
    }

    #[test]
    fn figures_are_what_happened_between_the_scrapes() {
        let report = report(Vec::new());
        let accounts = &report.flows[0];
        assert_eq!(accounts.topics, ["c"]);
        assert_eq!(accounts.changes, 4);
        assert_eq!(accounts.published, 4, "14 - 10");
        assert_eq!(accounts.applied, 3);
        assert_eq!(accounts.projected, 4, "3 applied + 1 stale");
        assert_eq!(
            accounts.dead_letters, 0,
            "the earlier dead letter is not this run's"
        );
        // The 3 applied this run all lie in (10 ms, 20 ms]: p50 is halfway through it.
        let (p50, p99) = accounts.latency.unwrap();
        assert!((p50 - 0.015).abs() < 1e-9, "{p50}");
        assert!((0.019..=0.02).contains(&p99), "{p99}");

        let orders = &report.flows[1];
        assert_eq!(orders.topics, ["f", "g"]);
        assert_eq!(orders.published, 7);
        assert_eq!(orders.applied, 2);
        assert_eq!(orders.dead_letters, 1);
        assert_eq!(orders.latency, None, "no latency recorded for f");
        assert!(report.flows[2].topics.is_empty());
        assert_eq!(report.total_dead_letters(), 1);
        assert!(!report.converged(), "a dead letter is not all well");
    }

    #[test]
    fn differences_are_counted_per_collection_and_decide_the_verdict() {
        let difference = Difference {
            collection: "fulfillment.requests".into(),
            key: "k".into(),
            path: "order".into(),
            expected: "1".into(),
            found: "2".into(),
        };
        let report = report(vec![difference.clone(), difference]);
        assert_eq!(
            report.differences,
            [
                ("customer.orders".to_owned(), 0),
                ("fulfillment.requests".to_owned(), 2)
            ]
        );
        let text = report.render();
        assert!(
            text.contains("differences from the expected state: 2"),
            "{text}"
        );
        assert!(text.contains("NOT converged"), "{text}");
        assert!(text.contains("15.0 ms"), "{text}");
    }
}
