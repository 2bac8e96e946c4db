//! What a reconcile found: per check and kind of drift a count and a few samples (keys and the
//! names of the fields that differ, never values), rendered as text for people, JSON for tools,
//! and Prometheus text for node_exporter's textfile collector.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Customer fields in `customer.orders` against `customer.accounts`.
    CustomerCopy,
    /// One fulfillment request per approved order, and none for another.
    FulfillmentRequest,
    /// Each published fulfillment status in its order's history.
    OrderStatus,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 3] = [
        Check::CustomerCopy,
        Check::FulfillmentRequest,
        Check::OrderStatus,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::CustomerCopy => "customer_copy",
            Check::FulfillmentRequest => "fulfillment_request",
            Check::OrderStatus => "order_status",
        }
    }
}

/// How a key drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The source has it, the copy does not.
    Missing,
    /// The copy has it, the source does not.
    Extra,
    /// Both have it and they differ.
    Mismatched,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 3] = [Kind::Missing, Kind::Extra, Kind::Mismatched];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Mismatched => "mismatched",
        }
    }
}

/// One drifted key, as shown in samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// The key (customer id, order guid).
    pub key: String,
    /// Names of the fields that differ (empty for missing and extra keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// Count and samples of one check and kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Found {
    /// How many keys.
    pub count: u64,
    /// The first few.
    pub samples: Vec<Sample>,
}

/// What one run found (and repaired).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Drift per check and kind; every pair is present, zero or not.
    pub drift: BTreeMap<Check, BTreeMap<Kind, Found>>,
    /// Keys compared per check.
    pub compared: BTreeMap<Check, u64>,
    /// Source documents the connector cannot map (its dead letters; not drift).
    pub source_defects: u64,
    /// Documents read, sources and copies.
    pub documents_read: u64,
    /// How long the run took.
    pub seconds: f64,
    /// Each pass: its name, documents read and seconds.
    pub passes: Vec<Pass>,
    /// With `--repair`: keys re-emitted, and drifted keys that re-emitting cannot repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairSummary>,
    #[serde(skip)]
    samples: usize,
}

/// One pass of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pass {
    /// What it compares.
    pub name: &'static str,
    /// Documents it read, both sides.
    pub documents: u64,
    /// How long it took.
    pub seconds: f64,
}

/// What `--repair` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairSummary {
    /// Source documents re-emitted.
    pub documents: u64,
    /// Events acknowledged by Kafka.
    pub events: u64,
    /// Drifted keys re-emitting cannot repair (extra requests: the Fulfillment application
    /// owns a request once created; a person decides), with samples.
    pub not_repairable: Found,
}

impl Report {
    /// An empty report keeping `samples` samples per check and kind.
    pub fn new(samples: usize) -> Self {
        Self {
            drift: Check::ALL
                .into_iter()
                .map(|check| {
                    (
                        check,
                        Kind::ALL
                            .into_iter()
                            .map(|kind| (kind, Found::default()))
                            .collect(),
                    )
                })
                .collect(),
            compared: Check::ALL.into_iter().map(|check| (check, 0)).collect(),
            samples,
            ..Self::default()
        }
    }

    /// Counts one drifted key.
    pub fn found(&mut self, check: Check, kind: Kind, key: &str, fields: Vec<String>) {
        let found = self
            .drift
            .entry(check)
            .or_default()
            .entry(kind)
            .or_default();
        found.count += 1;
        if found.samples.len() < self.samples {
            found.samples.push(Sample {
                key: key.to_owned(),
                fields,
            });
        }
    }

    /// Counts a key that was compared.
    pub fn compared(&mut self, check: Check) {
        *self.compared.entry(check).or_default() += 1;
    }

    /// The count of one check and kind.
    pub fn count(&self, check: Check, kind: Kind) -> u64 {
        self.drift
            .get(&check)
            .and_then(|kinds| kinds.get(&kind))
            .map_or(0, |found| found.count)
    }

    /// Every drifted key, all checks and kinds.
    pub fn total(&self) -> u64 {
        self.drift
            .values()
            .flat_map(BTreeMap::values)
            .map(|found| found.count)
            .sum()
    }

    /// Notes a drifted key `--repair` cannot fix.
    pub fn not_repairable(&mut self, key: &str) {
        let samples = self.samples;
        let repair = self.repair.get_or_insert_with(RepairSummary::default);
        repair.not_repairable.count += 1;
        if repair.not_repairable.samples.len() < samples {
            repair.not_repairable.samples.push(Sample {
                key: key.to_owned(),
                fields: Vec::new(),
            });
        }
    }

    /// For people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = self.documents_read as f64 / self.seconds.max(0.001);
        let _ = writeln!(
            out,
            "reconcile: {} drifted keys; {} documents read in {:.1} s ({:.0} documents/s)",
            self.total(),
            self.documents_read,
            self.seconds,
            rate
        );
        for pass in &self.passes {
            let _ = writeln!(
                out,
                "  pass {:<24} {:>9} documents in {:>6.1} s",
                pass.name, pass.documents, pass.seconds
            );
        }
        for check in Check::ALL {
            let compared = self.compared.get(&check).copied().unwrap_or_default();
            let _ = writeln!(out, "{:<20} {compared:>9} compared", check.as_str());
            for kind in Kind::ALL {
                let Some(found) = self.drift.get(&check).and_then(|k| k.get(&kind)) else {
                    continue;
                };
                if found.count == 0 {
                    continue;
                }
                let _ = writeln!(out, "  {:<11} {:>9}", kind.as_str(), found.count);
                for sample in &found.samples {
                    if sample.fields.is_empty() {
                        let _ = writeln!(out, "    {}", sample.key);
                    } else {
                        let _ = writeln!(
                            out,
                            "    {} (fields: {})",
                            sample.key,
                            sample.fields.join(", ")
                        );
                    }
                }
            }
        }
        if self.source_defects > 0 {
            let _ = writeln!(
                out,
                "source documents the connector cannot map (see its dead letters): {}",
                self.source_defects
            );
        }
        if let Some(repair) = &self.repair {
            let _ = writeln!(
                out,
                "repair: {} source documents re-emitted, {} events acknowledged by Kafka",
                repair.documents, repair.events
            );
            if repair.not_repairable.count > 0 {
                let _ = writeln!(
                    out,
                    "not repairable by re-emitting (extra requests; decide by hand): {}",
                    repair.not_repairable.count
                );
                for sample in &repair.not_repairable.samples {
                    let _ = writeln!(out, "    {}", sample.key);
                }
            }
        }
        out
    }

    /// For tools.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Prometheus text format, for node_exporter's textfile collector.
    pub fn prometheus(&self, finished_unix_seconds: f64) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP cdc_reconcile_drift Keys whose copy differs from its source, at the last reconcile.\n\
             # TYPE cdc_reconcile_drift gauge\n",
        );
        for check in Check::ALL {
            for kind in Kind::ALL {
                let _ = writeln!(
                    out,
                    "cdc_reconcile_drift{{check=\"{}\",kind=\"{}\"}} {}",
                    check.as_str(),
                    kind.as_str(),
                    self.count(check, kind)
                );
            }
        }
        out.push_str(
            "# HELP cdc_reconcile_compared Keys compared at the last reconcile.\n\
             # TYPE cdc_reconcile_compared gauge\n",
        );
        for check in Check::ALL {
            let _ = writeln!(
                out,
                "cdc_reconcile_compared{{check=\"{}\"}} {}",
                check.as_str(),
                self.compared.get(&check).copied().unwrap_or_default()
            );
        }
        let _ = write!(
            out,
            "# HELP cdc_reconcile_source_defects Source documents the connector cannot map, at the last reconcile.\n\
             # TYPE cdc_reconcile_source_defects gauge\n\
             cdc_reconcile_source_defects {}\n\
             # HELP cdc_reconcile_duration_seconds How long the last reconcile took.\n\
             # TYPE cdc_reconcile_duration_seconds gauge\n\
             cdc_reconcile_duration_seconds {:.3}\n\
             # HELP cdc_reconcile_last_run_timestamp_seconds When the last reconcile finished.\n\
             # TYPE cdc_reconcile_last_run_timestamp_seconds gauge\n\
             cdc_reconcile_last_run_timestamp_seconds {:.3}\n",
            self.source_defects, self.seconds, finished_unix_seconds
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_key_and_keeps_a_few_samples() {
        let mut report = Report::new(2);
        for key in ["a", "b", "c"] {
            report.found(
                Check::CustomerCopy,
                Kind::Mismatched,
                key,
                vec!["name".into()],
            );
        }
        report.found(Check::FulfillmentRequest, Kind::Missing, "g", Vec::new());
        assert_eq!(report.count(Check::CustomerCopy, Kind::Mismatched), 3);
        assert_eq!(report.total(), 4);
        let text = report.text();
        assert!(
            text.contains("    a (fields: name)\n    b (fields: name)\n"),
            "{text}"
        );
        assert!(!text.contains("    c "), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["drift"]["customer_copy"]["mismatched"]["count"], 3);
        assert_eq!(
            json["drift"]["fulfillment_request"]["missing"]["samples"][0]["key"],
            "g"
        );
        assert_eq!(json["drift"]["order_status"]["extra"]["count"], 0);
    }

    #[test]
    fn the_metric_has_every_check_and_kind() {
        let mut report = Report::new(1);
        report.found(Check::OrderStatus, Kind::Missing, "g", Vec::new());
        let text = report.prometheus(1.0);
        assert_eq!(text.matches("cdc_reconcile_drift{").count(), 9);
        assert!(text.contains("cdc_reconcile_drift{check=\"order_status\",kind=\"missing\"} 1\n"));
        assert!(text.contains("cdc_reconcile_drift{check=\"customer_copy\",kind=\"extra\"} 0\n"));
    }
}
