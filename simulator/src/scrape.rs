//! Reading the processes' `/metrics`: the Prometheus text format, the sums of counters and the
//! percentiles of bucketed histograms between two scrapes.
//!
//! A percentile comes from cumulative bucket counts as Prometheus' `histogram_quantile` does
//! (linear within the bucket that holds it), so it is exact to the bucket's width: the
//! projectors' latency buckets are 1 to 10 ms wide below 100 ms.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The endpoint could not be reached or answered badly.
    #[error("GET http://{addr}/metrics: {reason}")]
    Http {
        /// The process's HTTP address (`host:port`).
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (with `_bucket`, `_count`, `_sum` for histograms).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A scrape of one process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the Prometheus text format; lines that are not samples are skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text.lines().filter_map(parse_line).collect();
        Self { samples }
    }

    /// Fetches `GET /metrics` from `addr` (`host:port`).
    pub async fn fetch(addr: &str) -> Result<Self, ScrapeError> {
        let failed = |reason: String| ScrapeError::Http {
            addr: addr.to_owned(),
            reason,
        };
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| failed("no HTTP response".into()))?;
        if head.split_whitespace().nth(1) != Some("200") {
            return Err(failed(head.lines().next().unwrap_or_default().to_owned()));
        }
        Ok(Self::parse(body))
    }

    /// The sum of `name`'s samples whose labels include every `(label, value)` of `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.matching(name, filter).map(|s| s.value).sum()
    }

    /// The distinct values of `label` among `name`'s samples that match `filter`, sorted.
    pub fn label_values(&self, name: &str, filter: &[(&str, &str)], label: &str) -> Vec<String> {
        let values: std::collections::BTreeSet<String> = self
            .matching(name, filter)
            .filter_map(|sample| sample.labels.get(label).cloned())
            .collect();
        values.into_iter().collect()
    }

    /// The cumulative bucket counts of histogram `name` (summed over the samples that match
    /// `filter`), by upper bound, `+Inf` last.
    pub fn buckets(&self, name: &str, filter: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for sample in self.matching(&format!("{name}_bucket"), filter) {
            let Some(bound) = sample.labels.get("le").and_then(|le| parse_bound(le)) else {
                continue;
            };
            // f64 bounds as ordered keys: all are non-negative, so their bits order them.
            by_bound.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += sample.value;
        }
        by_bound.into_values().collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && filter.iter().all(|(label, value)| {
                    sample.labels.get(*label).map(String::as_str) == Some(value)
                })
        })
    }
}

/// The bucket counts observed between two scrapes (`after` minus `before`, bound by bound).
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect()
}

/// The `q` quantile (0..=1) of cumulative `buckets` (upper bound, count; `+Inf` last), as
/// Prometheus' `histogram_quantile` computes it; `None` without observations. A quantile in the
/// `+Inf` bucket is reported as the largest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for (bound, count) in buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            if in_bucket <= 0.0 {
                return Some(*bound);
            }
            return Some(lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket);
        }
        lower_bound = *bound;
        lower_count = *count;
    }
    Some(lower_bound)
}

fn parse_bound(le: &str) -> Option<f64> {
    if le == "+Inf" {
        Some(f64::INFINITY)
    } else {
        le.parse().ok()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = parse_bound(value).or_else(|| value.parse().ok())?;
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => (name.to_owned(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y"` with `\"`, `\\` and `\n` escapes inside values.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (index, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break index,
                other => value.push(other),
            }
        };
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE projector_events_total counter
projector_events_total{projector="orders",topic="a",outcome="applied"} 7
projector_events_total{projector="orders",topic="b",outcome="applied"} 3
projector_events_total{projector="orders",topic="b",outcome="stale"} 1
lat_bucket{topic="a",le="0.01"} 2
lat_bucket{topic="a",le="0.02"} 8
lat_bucket{topic="a",le="+Inf"} 10
lat_count{topic="a"} 10
plain 4.5
odd{v="x\"y,z=\"w"} 1
"#;

    #[test]
    fn sums_counters_by_labels() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.sum("projector_events_total", &[]), 11.0);
        assert_eq!(
            scrape.sum(
                "projector_events_total",
                &[("topic", "b"), ("outcome", "applied")]
            ),
            3.0
        );
        assert_eq!(scrape.sum("plain", &[]), 4.5);
        assert_eq!(scrape.sum("odd", &[("v", "x\"y,z=\"w")]), 1.0);
        assert_eq!(scrape.sum("missing", &[]), 0.0);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let buckets = Scrape::parse(TEXT).buckets("lat", &[("topic", "a")]);
        assert_eq!(buckets.len(), 3);
        // rank 5 of 10 lies in (0.01, 0.02], which holds ranks 3..=8: halfway.
        let p50 = quantile(0.5, &buckets).unwrap();
        assert!((p50 - 0.015).abs() < 1e-9, "{p50}");
        // rank 1 lies in the first bucket, from 0.
        assert!((quantile(0.1, &buckets).unwrap() - 0.005).abs() < 1e-9);
        // rank 9.9 is past the last finite bound: reported as that bound.
        assert_eq!(quantile(0.99, &buckets), Some(0.02));
        assert_eq!(quantile(0.5, &[(0.01, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn deltas_count_only_what_happened_between_scrapes() {
        let before = [(0.01, 2.0), (0.02, 8.0), (f64::INFINITY, 10.0)];
        let after = [(0.01, 2.0), (0.02, 18.0), (f64::INFINITY, 20.0)];
        let delta = bucket_delta(&before, &after);
        assert_eq!(delta, [(0.01, 0.0), (0.02, 10.0), (f64::INFINITY, 10.0)]);
        let p50 = quantile(0.5, &delta).unwrap();
        assert!((p50 - 0.015).abs() < 1e-9, "{p50}");
    }
}
