//! Comparing an expected document with a stored one, field by field.
//!
//! # Guarantees
//! - **Strict on structure and text.** Every field of either side is compared: a field missing,
//!   an extra field, a `null` where a value belongs (or the reverse), a different string, id,
//!   boolean or list length is a [`Difference`]. Only the fields a caller names as ignored (the
//!   projectors' bookkeeping, see [`crate::verify`]) are skipped, and only at the top level.
//! - **Numbers by value.** Int32, int64, double and Decimal128 are equal when they denote the
//!   same decimal (`3.99` as a double equals Decimal128 `3.99` and `3.990`), because the
//!   pipeline legitimately changes a number's BSON type (a projector stores prices as
//!   Decimal128, timestamps as int64). Two stored shapes the domain treats as numbers are also
//!   compared by value, but only where the domain allows them: a decimal string in a `price`
//!   field (Spring's `BigDecimal`), and a BSON date in a `timestamp` field (its epoch
//!   milliseconds).
//! - **Readable paths.** A difference names the dotted path of the field (`orders.2.
//!   orderStatusEvents.3.orderStatusType`, list entries by index), and both values as relaxed
//!   extended JSON, card numbers masked.

use std::str::FromStr;

use mongodb::bson::{Bson, Document};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How an absent value is shown in a [`Difference`].
pub const ABSENT: &str = "(absent)";

/// One way a stored document differs from what the model expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `database.collection`.
    pub collection: String,
    /// The document's key (`_id`, as relaxed extended JSON).
    pub key: String,
    /// Dotted path of the field; empty for the whole document.
    pub path: String,
    /// The expected value (relaxed extended JSON), or [`ABSENT`].
    pub expected: String,
    /// The stored value, or [`ABSENT`].
    pub found: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{} {} {path}: expected {}, found {}",
            self.collection, self.key, self.expected, self.found
        )
    }
}

/// Where differences of one document are collected.
#[derive(Debug)]
pub struct Comparison<'a> {
    collection: &'a str,
    key: String,
    ignored: &'a [&'a str],
    /// The differences found so far.
    pub differences: Vec<Difference>,
}

impl<'a> Comparison<'a> {
    /// Compares documents of `collection` with key `key`, skipping the top-level fields
    /// `ignored`.
    pub fn new(collection: &'a str, key: &Bson, ignored: &'a [&'a str]) -> Self {
        Self {
            collection,
            key: render(key, ""),
            ignored,
            differences: Vec::new(),
        }
    }

    /// Records every difference between `expected` and `found`.
    pub fn documents(&mut self, expected: &Document, found: &Document) {
        self.fields("", expected, found, true);
    }

    /// Records a document that should exist and does not (`expected`), or one that should not
    /// and does (`found`).
    pub fn whole(&mut self, expected: Option<&Document>, found: Option<&Document>) {
        let show = |d: Option<&Document>| {
            d.map_or_else(
                || ABSENT.to_owned(),
                |d| render(&Bson::Document(d.clone()), ""),
            )
        };
        self.push("", show(expected), show(found));
    }

    fn push(&mut self, path: &str, expected: String, found: String) {
        self.differences.push(Difference {
            collection: self.collection.to_owned(),
            key: self.key.clone(),
            path: path.to_owned(),
            expected,
            found,
        });
    }

    fn fields(&mut self, path: &str, expected: &Document, found: &Document, top: bool) {
        let skip = |name: &str| top && self.ignored.contains(&name);
        for (name, value) in expected {
            if skip(name) {
                continue;
            }
            let child = join(path, name);
            match found.get(name) {
                Some(other) => self.values(&child, value, other),
                None => self.push(&child, render(value, &child), ABSENT.to_owned()),
            }
        }
        for (name, value) in found {
            if skip(name) || expected.contains_key(name) {
                continue;
            }
            let child = join(path, name);
            self.push(&child, ABSENT.to_owned(), render(value, &child));
        }
    }

    fn values(&mut self, path: &str, expected: &Bson, found: &Bson) {
        match (expected, found) {
            (Bson::Document(e), Bson::Document(f)) => self.fields(path, e, f, false),
            (Bson::Array(e), Bson::Array(f)) => {
                for index in 0..e.len().max(f.len()) {
                    let child = join(path, &index.to_string());
                    match (e.get(index), f.get(index)) {
                        (Some(e), Some(f)) => self.values(&child, e, f),
                        (Some(e), None) => self.push(&child, render(e, &child), ABSENT.to_owned()),
                        (None, Some(f)) => self.push(&child, ABSENT.to_owned(), render(f, &child)),
                        (None, None) => {}
                    }
                }
            }
            _ if same_value(path, expected, found) => {}
            _ => self.push(path, render(expected, path), render(found, path)),
        }
    }
}

/// Whether two scalars are equal under the rules of the module doc.
pub fn same_value(path: &str, expected: &Bson, found: &Bson) -> bool {
    let field = path.rsplit('.').next().unwrap_or(path);
    let as_number = |value: &Bson| match value {
        Bson::String(text) if field == "price" => decimal_text(text),
        Bson::DateTime(date) if field == "timestamp" => {
            Some(Decimal::from(date.timestamp_millis()))
        }
        other => number(other),
    };
    match (as_number(expected), as_number(found)) {
        (Some(e), Some(f)) => e == f,
        _ => expected == found,
    }
}

/// The exact decimal a numeric BSON value denotes: int32, int64, double (its shortest
/// round-trip digits) or Decimal128. `None` for anything else, and for values no decimal of 28
/// digits holds.
pub fn number(value: &Bson) -> Option<Decimal> {
    match value {
        Bson::Int32(n) => Some(Decimal::from(*n)),
        Bson::Int64(n) => Some(Decimal::from(*n)),
        // `Display` of an f64 prints the shortest digits that read back as it, without exponent.
        Bson::Double(d) if d.is_finite() => decimal_text(&d.to_string()),
        Bson::Decimal128(d) => decimal_text(&d.to_string()),
        _ => None,
    }
}

/// Decimal text (`12.50`, `-3`, `1.05E+3`) as a normalised decimal.
fn decimal_text(text: &str) -> Option<Decimal> {
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str(text).ok()
    };
    parsed.map(|d| d.normalize())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A value as relaxed extended JSON, shortened, with card data masked: anything under a
/// `creditCards` path shows only the last four digits of its numbers. The simulator's cards are
/// test numbers, but a report is still no place for them.
pub fn render(value: &Bson, path: &str) -> String {
    let mut text = value.clone().into_relaxed_extjson().to_string();
    if path.split('.').any(|segment| segment == "creditCards") || text.contains("creditCards") {
        text = mask_digit_runs(&text);
    }
    const MAX: usize = 300;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Replaces every run of 12 or more digits by `****` and its last four digits.
fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 12 {
            out.push_str("****");
            out.push_str(&run[run.len() - 4..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{DateTime, Decimal128, doc};

    use super::*;

    fn differences(expected: &Document, found: &Document, ignored: &[&str]) -> Vec<String> {
        let mut comparison = Comparison::new("db.c", &Bson::String("k".into()), ignored);
        comparison.documents(expected, found);
        comparison
            .differences
            .iter()
            .map(|d| format!("{} {} {}", d.path, d.expected, d.found))
            .collect()
    }

    fn dec(text: &str) -> Bson {
        Bson::Decimal128(Decimal128::from_str(text).unwrap())
    }

    #[test]
    fn numbers_compare_by_value_across_types() {
        let same = [
            (Bson::Double(3.99), dec("3.99")),
            (dec("3.990"), dec("3.99")),
            (Bson::Int32(5), Bson::Int64(5)),
            (Bson::Double(5.0), dec("5")),
            (dec("1.05E+3"), Bson::Int64(1050)),
            (Bson::Double(12.5), dec("12.50")),
        ];
        for (e, f) in same {
            assert!(same_value("orders.0.x", &e, &f), "{e} vs {f}");
        }
        assert!(!same_value(
            "x",
            &Bson::Double(3.99),
            &dec("3.9900000000000002")
        ));
        assert!(!same_value("x", &Bson::Int64(5), &Bson::Int64(6)));
    }

    #[test]
    fn a_decimal_string_is_a_number_only_in_a_price() {
        let price = "orders.0.orderItems.0.product.price";
        assert!(same_value(
            price,
            &Bson::String("3.99".into()),
            &dec("3.99")
        ));
        assert!(same_value(
            price,
            &Bson::String("12.50".into()),
            &Bson::Double(12.5)
        ));
        assert!(!same_value(
            price,
            &Bson::String("3.99".into()),
            &dec("3.98")
        ));
        assert!(!same_value(
            "name.title",
            &Bson::String("5".into()),
            &Bson::Int32(5)
        ));
    }

    #[test]
    fn a_date_is_its_milliseconds_only_in_a_timestamp() {
        let date = Bson::DateTime(DateTime::from_millis(1_700_000_000_123));
        assert!(same_value(
            "a.timestamp",
            &date,
            &Bson::Int64(1_700_000_000_123)
        ));
        assert!(!same_value(
            "a.timestamp",
            &date,
            &Bson::Int64(1_700_000_000_124)
        ));
        assert!(!same_value(
            "a.when",
            &date,
            &Bson::Int64(1_700_000_000_123)
        ));
    }

    #[test]
    fn structure_and_text_are_strict() {
        let expected = doc! {
            "_id": "k", "name": { "first": "Ada", "middle": Bson::Null },
            "list": [1, 2], "n": 3,
        };
        assert!(differences(&expected, &expected.clone(), &[]).is_empty());
        let found = doc! {
            "_id": "k", "name": { "first": "Ada" },
            "list": [1, 2, 3], "n": "3", "extra": true, "_cdc": { "p": 1 },
        };
        assert_eq!(
            differences(&expected, &found, &["_cdc"]),
            vec![
                "name.middle null (absent)".to_owned(),
                "list.2 (absent) 3".to_owned(),
                "n 3 \"3\"".to_owned(),
                "extra (absent) true".to_owned(),
            ]
        );
        // Ignored only at the top level.
        let nested = doc! { "a": { "_cdc": 1 } };
        assert_eq!(differences(&doc! { "a": {} }, &nested, &["_cdc"]).len(), 1);
    }

    #[test]
    fn card_numbers_are_masked_in_reports() {
        let card = Bson::Document(doc! { "number": "4111111111111111" });
        assert_eq!(render(&card, "creditCards.0"), r#"{"number":"****1111"}"#);
        assert_eq!(
            render(&Bson::Int64(1_700_000_000_000), "timestamp"),
            "1700000000000"
        );
    }
}
