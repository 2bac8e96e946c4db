//! The projected collection's IO: unordered multi-statement `update` commands, one round trip for
//! up to `apply.batch_size` statements, with a per-statement outcome; the reads a projection
//! plans ([`Read`]); the rebuild's guard reset and the startup index. Nothing here knows a
//! projection: what to write and what a result means is the projections' ([`crate::projection`]),
//! and [`crate::executor`] runs their steps through a [`Store`].
//!
//! The `update` write command is used directly (not the driver's single-statement helpers, and
//! not the MongoDB 8 `bulkWrite` command) so that a batch costs one round trip on MongoDB 6 and 7.
//! Its reply does not say, per statement, whether it matched; it does say which statements
//! upserted and which failed. So:
//! - for an **upsert** the outcome is exact: upserted, matched (no error, nothing upserted), a
//!   duplicate key (its guard filtered the existing document out: it is already newer), or
//!   rejected;
//! - for a plain update only errors are per statement; the number matched is the reply's total
//!   `n` (every successful upsert counts 1 in it), which callers use.
//!
//! # Errors
//! A failure of the whole command is a [`StoreError`]; [`StoreError::is_retryable`] separates the
//! transient (MongoDB unreachable, stepping down, timing out, a write conflict: retry the batch,
//! every statement is idempotent) from the permanent (the command is wrong or refused: stop).
//! A statement refused for good (a collection validator, a document grown too large, a field of
//! the wrong type in the target document) is an [`OpResult::Rejected`]: only its event is
//! dead-lettered. A statement failing with a transient code fails the whole call as retryable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{Bson, Document, RawArrayBuf, RawDocumentBuf, doc};
use mongodb::error::ErrorKind;

/// A read a projection asks for: `find` with a projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// Which documents.
    pub filter: Document,
    /// Which of their fields.
    pub projection: Document,
}

/// One update statement.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    /// Which document (`q`).
    pub filter: Document,
    /// The update operators (`u`).
    pub update: Document,
    /// Insert when nothing matches.
    pub upsert: bool,
    /// `arrayFilters` for `$[name]` paths.
    pub array_filters: Option<Vec<Document>>,
}

impl WriteOp {
    /// An upsert of `update` into the document selected by `filter`.
    pub fn upsert(filter: Document, update: Document) -> Self {
        Self {
            filter,
            update,
            upsert: true,
            array_filters: None,
        }
    }

    /// An update of the document selected by `filter`; nothing is inserted.
    pub fn update(filter: Document, update: Document) -> Self {
        Self {
            filter,
            update,
            upsert: false,
            array_filters: None,
        }
    }

    /// The same statement with `array_filters`.
    pub fn with_array_filters(mut self, array_filters: Vec<Document>) -> Self {
        self.array_filters = Some(array_filters);
        self
    }

    /// The statement as the `update` command takes it, serialised straight from the parts
    /// (no copy of the documents first: a batch builds thousands). Serialising is done when a
    /// batch is planned, so it overlaps the previous batch's round trip.
    pub fn statement(&self) -> Result<Statement, Unwritable> {
        let raw =
            |document: &Document| RawDocumentBuf::from_document(document).map_err(Unwritable::new);
        let mut statement = RawDocumentBuf::new();
        statement.append("q", raw(&self.filter)?);
        statement.append("u", raw(&self.update)?);
        statement.append("upsert", self.upsert);
        statement.append("multi", false);
        if let Some(filters) = &self.array_filters {
            let mut array = RawArrayBuf::new();
            for filter in filters {
                array.push(raw(filter)?);
            }
            statement.append("arrayFilters", array);
        }
        Ok(Statement {
            raw: statement,
            upsert: self.upsert,
        })
    }
}

/// A [`WriteOp`] serialised for the `update` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    raw: RawDocumentBuf,
    upsert: bool,
}

/// A value or statement BSON cannot hold (an integer beyond its range, a key it refuses).
#[derive(Debug, thiserror::Error)]
#[error("cannot be serialised as BSON")]
pub struct Unwritable(#[source] Box<dyn std::error::Error + Send + Sync>);

impl Unwritable {
    /// The serialiser's `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

/// What became of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// No error. For an upsert: it matched and updated (or matched a document already equal).
    Ok,
    /// The upsert inserted a new document.
    Upserted,
    /// An upsert whose filter matched nothing collided with an existing document's `_id`: the
    /// document exists but its guard filtered it out.
    DuplicateId,
    /// MongoDB refused the statement for good.
    Rejected {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
}

/// The outcome of a list of statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// One result per statement, in order.
    pub results: Vec<OpResult>,
    /// Documents matched or upserted, over all statements.
    pub matched: u64,
}

impl WriteReport {
    /// Upserts among `statements` that succeeded: they count 1 each in `matched`.
    pub fn successful_upserts(&self, statements: &[&Statement]) -> u64 {
        statements
            .iter()
            .zip(&self.results)
            .filter(|(statement, result)| {
                statement.upsert && matches!(result, OpResult::Ok | OpResult::Upserted)
            })
            .count() as u64
    }
}

/// Why a write or read of the projected collection failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MongoDB could not be reached or answered with a transient error. Retryable.
    #[error("mongodb unavailable")]
    Unavailable(#[source] Box<mongodb::error::Error>),
    /// A statement failed with a transient error code. Retryable.
    #[error("mongodb write failed transiently: {message} (code {code})")]
    TransientWrite {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
    /// The write did not finish within `apply.write_timeout_ms`. Retryable (it may have been
    /// applied in part; every statement is idempotent).
    #[error("mongodb write did not finish within {0:?}")]
    Timeout(Duration),
    /// MongoDB refused the command itself (authorization, invalid namespace, ...). Not
    /// retryable: an operator must act.
    #[error("mongodb refused the command")]
    Refused(#[source] Box<mongodb::error::Error>),
    /// The reply was not in the expected shape. Not retryable.
    #[error("unexpected reply from mongodb: {0}")]
    InvalidReply(String),
}

impl StoreError {
    /// Whether the write ran out of time (client side, or MongoDB's `maxTimeMS`).
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::TransientWrite { code, .. } => *code == MAX_TIME_EXPIRED,
            Self::Unavailable(error) => matches!(
                error.kind.as_ref(),
                ErrorKind::Command(command) if command.code == MAX_TIME_EXPIRED
            ),
            _ => false,
        }
    }

    /// Whether retrying later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::TransientWrite { .. } | Self::Timeout(_)
        )
    }
}

/// Server error codes that go away by themselves: network and election states (the driver's own
/// lists of retryable and state-change codes), time limits, write conflicts, lock timeouts and
/// write-concern failures.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 24, 46, 50, 63, 64, 89, 91, 112, 133, 134, 150, 189, 262, 9001, 10058, 10107, 11600,
    11601, 11602, 13388, 13435, 13436,
];

/// MongoDB's duplicate key error.
pub const DUPLICATE_KEY: i32 = 11000;

fn classify(error: mongodb::error::Error) -> StoreError {
    let transient = match error.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => true,
        ErrorKind::Command(command) => TRANSIENT_CODES.contains(&command.code),
        _ => false,
    } || error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError");
    if transient {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Refused(Box::new(error))
    }
}

/// The projected collection.
///
/// # Timeouts
/// Each command carries `maxTimeMS` (= `apply.write_timeout_ms`), so MongoDB itself stops a
/// write that runs too long instead of finishing it behind the projector's back while the retry
/// queues up behind it; the client waits a little longer than that for the answer. After a
/// timeout the statements per command are halved (down to one) for the following commands and
/// grow back, doubling, after each command that succeeds: a server too slow for a full batch
/// still makes progress instead of timing out on every retry.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    collection: String,
    max_statements: usize,
    /// Statements per command now (between 1 and `max_statements`), shared by clones.
    statements_per_command: Arc<AtomicUsize>,
    timeout: Duration,
}

/// How much longer than `maxTimeMS` the client waits for the server's answer.
const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// MongoDB's MaxTimeMSExpired.
const MAX_TIME_EXPIRED: i32 = 50;

/// Statements of one command are kept below this many bytes; MongoDB refuses commands over 16 MiB
/// (plus a little for the command itself).
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

impl Store {
    /// Writes `collection` of `database`, at most `max_statements` per command.
    pub fn new(
        database: Database,
        collection: &str,
        max_statements: usize,
        timeout: Duration,
    ) -> Self {
        let max_statements = max_statements.max(1);
        Self {
            database,
            collection: collection.to_owned(),
            max_statements,
            statements_per_command: Arc::new(AtomicUsize::new(max_statements)),
            timeout,
        }
    }

    /// Runs `statements` as unordered `update` commands (one unless they exceed a command's
    /// limits).
    pub async fn write(&self, statements: &[&Statement]) -> Result<WriteReport, StoreError> {
        let mut report = WriteReport {
            results: Vec::with_capacity(statements.len()),
            matched: 0,
        };
        let mut start = 0;
        while start < statements.len() {
            let per_command = self.statements_per_command.load(Ordering::Relaxed).max(1);
            let mut array = RawArrayBuf::new();
            let mut bytes = 0;
            let mut end = start;
            while end < statements.len() && end - start < per_command {
                let raw = &statements[end].raw;
                if end > start && bytes + raw.as_bytes().len() > MAX_COMMAND_BYTES {
                    break;
                }
                bytes += raw.as_bytes().len();
                array.push(raw.clone());
                end += 1;
            }
            let chunk = match self.command(array, end - start).await {
                Ok(chunk) => {
                    let grown = (per_command * 2).min(self.max_statements);
                    self.statements_per_command.store(grown, Ordering::Relaxed);
                    chunk
                }
                Err(error) => {
                    if error.is_timeout() {
                        let shrunk = (per_command / 2).max(1);
                        self.statements_per_command.store(shrunk, Ordering::Relaxed);
                        tracing::warn!(
                            collection = %self.collection,
                            statements_per_command = shrunk,
                            "a write timed out; fewer statements per command from now on"
                        );
                    }
                    return Err(error);
                }
            };
            report.matched += chunk.matched;
            report.results.extend(chunk.results);
            start = end;
        }
        Ok(report)
    }

    async fn command(
        &self,
        statements: RawArrayBuf,
        count: usize,
    ) -> Result<WriteReport, StoreError> {
        let mut command = RawDocumentBuf::new();
        command.append("update", self.collection.as_str());
        command.append("updates", statements);
        // Unordered: one statement's failure does not stop the others. Statements of one key are
        // collapsed by the projections, and guarded, so their order does not matter.
        command.append("ordered", false);
        command.append(
            "maxTimeMS",
            i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX),
        );
        let reply = tokio::time::timeout(
            self.timeout + CLIENT_GRACE,
            self.database.run_raw_command(command),
        )
        .await
        .map_err(|_| StoreError::Timeout(self.timeout))?
        .map_err(classify)?;
        parse_reply(&reply, count)
    }

    /// The documents `read` selects, with the fields it projects.
    pub async fn find(&self, read: &Read) -> Result<Vec<Document>, StoreError> {
        use futures::TryStreamExt;
        let collection = self.database.collection::<Document>(&self.collection);
        let find = async {
            collection
                .find(read.filter.clone())
                .projection(read.projection.clone())
                .await?
                .try_collect::<Vec<Document>>()
                .await
        };
        tokio::time::timeout(self.timeout, find)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(classify)
    }

    /// Removes `fields` from every document (rebuild's reset of the guards); returns how many
    /// documents had any of them.
    pub async fn unset_everywhere(&self, fields: &[&str]) -> Result<u64, StoreError> {
        let collection = self.database.collection::<Document>(&self.collection);
        let mut unset = Document::new();
        let mut any = Vec::new();
        for field in fields {
            unset.insert(*field, "");
            any.push(doc! { *field: { "$exists": true } });
        }
        let result = collection
            .update_many(doc! { "$or": any }, doc! { "$unset": unset })
            .await
            .map_err(classify)?;
        Ok(result.modified_count)
    }

    /// Creates an ascending index on `field` unless it exists.
    pub async fn ensure_index(&self, field: &str) -> Result<(), StoreError> {
        let collection = self.database.collection::<Document>(&self.collection);
        let index = mongodb::IndexModel::builder()
            .keys(doc! { field: 1 })
            .build();
        collection.create_index(index).await.map_err(classify)?;
        Ok(())
    }
}

/// Reads an `update` reply into per-statement results.
pub fn parse_reply(reply: &Document, count: usize) -> Result<WriteReport, StoreError> {
    // Without `n` the status appends' outcomes could not be told apart: refuse the reply rather
    // than read it as nothing matched.
    let matched = number(reply.get("n"))
        .ok_or_else(|| StoreError::InvalidReply("no `n` (documents matched)".into()))?
        .max(0) as u64;
    let mut results = vec![OpResult::Ok; count];
    if let Ok(upserted) = reply.get_array("upserted") {
        for entry in upserted {
            let index = entry
                .as_document()
                .and_then(|e| number(e.get("index")))
                .ok_or_else(|| StoreError::InvalidReply("upserted entry without index".into()))?;
            *slot(&mut results, index)? = OpResult::Upserted;
        }
    }
    if let Ok(errors) = reply.get_array("writeErrors") {
        for entry in errors {
            let entry = entry
                .as_document()
                .ok_or_else(|| StoreError::InvalidReply("writeErrors entry".into()))?;
            let index = number(entry.get("index"))
                .ok_or_else(|| StoreError::InvalidReply("writeError without index".into()))?;
            let code = number(entry.get("code")).unwrap_or(0) as i32;
            let message = entry.get_str("errmsg").unwrap_or_default().to_owned();
            if TRANSIENT_CODES.contains(&code) {
                return Err(StoreError::TransientWrite { code, message });
            }
            *slot(&mut results, index)? = if code == DUPLICATE_KEY && duplicate_on_id(entry) {
                OpResult::DuplicateId
            } else {
                OpResult::Rejected { code, message }
            };
        }
    }
    if let Ok(concern) = reply.get_document("writeConcernError") {
        // The statements were applied on the primary but not confirmed as asked: retry them all
        // (idempotent) rather than commit offsets for writes that may roll back.
        return Err(StoreError::TransientWrite {
            code: number(concern.get("code")).unwrap_or(64) as i32,
            message: concern.get_str("errmsg").unwrap_or_default().to_owned(),
        });
    }
    Ok(WriteReport { results, matched })
}

fn slot(results: &mut [OpResult], index: i64) -> Result<&mut OpResult, StoreError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| results.get_mut(i))
        .ok_or_else(|| StoreError::InvalidReply(format!("statement index {index} out of range")))
}

/// Whether a duplicate key error is on `_id` (a guarded upsert meeting a newer document) rather
/// than on another unique index (a conflict the projector cannot resolve: rejected). MongoDB
/// names the index in `keyPattern` (4.4+) and in the message.
fn duplicate_on_id(error: &Document) -> bool {
    match error.get_document("keyPattern") {
        Ok(pattern) => pattern.len() == 1 && pattern.contains_key("_id"),
        Err(_) => error
            .get_str("errmsg")
            .map(|message| message.contains("index: _id_ "))
            .unwrap_or(true),
    }
}

fn number(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) if n.fract() == 0.0 => Some(*n as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_per_statement_results() {
        // (what, reply, statements, per-statement results and matched | error text)
        type Case = (
            &'static str,
            Document,
            usize,
            Result<(Vec<OpResult>, u64), &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "all matched",
                doc! { "n": 2, "nModified": 2, "ok": 1.0 },
                2,
                Ok((vec![OpResult::Ok, OpResult::Ok], 2)),
            ),
            (
                "upserted and stale",
                doc! {
                    "n": 1, "nModified": 0, "ok": 1.0,
                    "upserted": [{ "index": 1, "_id": 7 }],
                    "writeErrors": [{
                        "index": 0, "code": 11000, "keyPattern": { "_id": 1 },
                        "errmsg": "E11000 duplicate key error collection: a.b index: _id_ dup key: { _id: 7 }",
                    }],
                },
                2,
                Ok((vec![OpResult::DuplicateId, OpResult::Upserted], 1)),
            ),
            (
                "duplicate on another unique index, named in the message only",
                doc! {
                    "n": 0, "ok": 1.0,
                    "writeErrors": [{
                        "index": 0, "code": 11000,
                        "errmsg": "E11000 duplicate key error collection: a.b index: order.guid_1 dup key: { order.guid: \"g\" }",
                    }],
                },
                1,
                Ok((
                    vec![OpResult::Rejected {
                        code: 11000,
                        message: "E11000 duplicate key error collection: a.b index: order.guid_1 dup key: { order.guid: \"g\" }".into(),
                    }],
                    0,
                )),
            ),
            (
                "path not viable is refused for good",
                doc! {
                    "n": 0, "ok": 1,
                    "writeErrors": [{ "index": 0, "code": 28, "errmsg": "Cannot create field" }],
                },
                1,
                Ok((
                    vec![OpResult::Rejected {
                        code: 28,
                        message: "Cannot create field".into(),
                    }],
                    0,
                )),
            ),
            (
                "a transient statement error fails the call",
                doc! {
                    "n": 0, "ok": 1,
                    "writeErrors": [{ "index": 0, "code": 112, "errmsg": "WriteConflict" }],
                },
                1,
                Err("WriteConflict"),
            ),
            (
                "a write concern error fails the call",
                doc! {
                    "n": 1, "ok": 1,
                    "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" },
                },
                1,
                Err("replication"),
            ),
            (
                "a reply without `n` is invalid",
                doc! { "nModified": 0, "ok": 1 },
                1,
                Err("no `n`"),
            ),
            (
                "an index out of range is an invalid reply",
                doc! { "n": 1, "ok": 1, "upserted": [{ "index": 5, "_id": 1 }] },
                1,
                Err("out of range"),
            ),
        ];
        for (what, reply, count, expected) in cases {
            match (parse_reply(&reply, count), expected) {
                (Ok(report), Ok((results, matched))) => {
                    assert_eq!(report.results, results, "{what}");
                    assert_eq!(report.matched, matched, "{what}");
                }
                (Err(error), Err(text)) => {
                    assert!(error.to_string().contains(text), "{what}: {error}");
                }
                (got, _) => panic!("{what}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn transient_failures_are_retryable_and_refusals_are_not() {
        assert!(StoreError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(
            StoreError::TransientWrite {
                code: 112,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(!StoreError::InvalidReply("x".into()).is_retryable());
    }

    #[test]
    fn timeouts_are_told_apart_from_other_transient_failures() {
        assert!(StoreError::Timeout(Duration::from_secs(30)).is_timeout());
        let expired = StoreError::TransientWrite {
            code: MAX_TIME_EXPIRED,
            message: "operation exceeded time limit".into(),
        };
        assert!(expired.is_timeout() && expired.is_retryable());
        let conflict = StoreError::TransientWrite {
            code: 112,
            message: "WriteConflict".into(),
        };
        assert!(!conflict.is_timeout() && conflict.is_retryable());
    }

    #[test]
    fn successful_upserts_count_once_each() {
        let ops = [
            WriteOp::upsert(doc! { "_id": 1 }, doc! { "$set": { "a": 1 } }),
            WriteOp::upsert(doc! { "_id": 2 }, doc! { "$set": { "a": 1 } }),
            WriteOp::upsert(doc! { "_id": 3 }, doc! { "$set": { "a": 1 } }),
            WriteOp::update(doc! { "_id": 4 }, doc! { "$set": { "a": 1 } }),
        ];
        let report = WriteReport {
            results: vec![
                OpResult::Ok,
                OpResult::Upserted,
                OpResult::DuplicateId,
                OpResult::Ok,
            ],
            matched: 3,
        };
        let statements: Vec<Statement> = ops.iter().map(|op| op.statement().unwrap()).collect();
        let refs: Vec<&Statement> = statements.iter().collect();
        assert_eq!(report.successful_upserts(&refs), 2);
    }
}
