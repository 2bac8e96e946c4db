//! Checkpoints: the resume token of each stream, and the ledger of once-per-id events.
//!
//! Both live in the source MongoDB deployment (database `checkpoints.database`), so the
//! connector's state is exactly as available and as durable as the data it describes, with no
//! other store to run. A checkpoint is one upserted document per stream: atomic, and overwritten
//! only with a token whose every earlier event Kafka has acknowledged (the pipeline's job).
//!
//! **One writer per stream.** Each process claims a stream's checkpoint when it starts (it writes
//! its own owner id into the document, atomically with reading the token) and saves only while the
//! document still names it. A save by a process whose checkpoint another one has claimed since is
//! refused (`CheckpointError::Claimed`) and that process stops. So a second connector started by
//! mistake, a process cut off from MongoDB that comes back, or a killed process's last write that
//! reaches the server after its successor started can never move the checkpoint under the
//! process that owns it.
//!
//! The ledger records the ids of events that must be published once per business fact (an order's
//! fulfillment request, one status change). It is written with the checkpoint, after Kafka
//! acknowledged those events: a crash before that write re-publishes them with the same id (a
//! recognisable duplicate), never loses them.

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{InsertManyOptions, ReturnDocument};
use mongodb::{Client, Collection};
use storefront_schemas::metadata::SourcePosition;

use crate::config::CheckpointSettings;

/// The saved state of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Resume after this token.
    pub resume_token: ResumeToken,
    /// Cluster time of the last change covered, when known.
    pub position: Option<SourcePosition>,
    /// The process that claimed it last (see the module doc), when one did.
    pub owner: Option<String>,
}

/// Why the connector's state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// MongoDB refused or could not be reached.
    #[error("checkpoint store failed")]
    Mongo(#[from] mongodb::error::Error),
    /// A stored checkpoint is not in the expected shape (edited by hand?).
    #[error("checkpoint of stream {stream} is unreadable: {reason}")]
    Corrupt {
        /// The stream's name.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process claimed the stream's checkpoint after this one did.
    #[error(
        "the checkpoint was claimed by another connector process ({owner}); this one stops so \
         that only one process publishes the stream"
    )]
    Claimed {
        /// The stream's name.
        stream: String,
        /// The owner now named in the checkpoint.
        owner: String,
    },
}

/// Reads and writes checkpoints and the ledger.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    checkpoints: Collection<Document>,
    ledger: Collection<Document>,
    /// This store's owner id: unique per `CheckpointStore::new`, so per process.
    owner: String,
}

impl CheckpointStore {
    /// The store described by `settings` on `client`.
    pub fn new(client: &Client, settings: &CheckpointSettings) -> Self {
        let database = client.database(&settings.database);
        Self {
            checkpoints: database.collection(&settings.collection),
            ledger: database.collection(&settings.ledger_collection),
            owner: format!(
                "pid {} instance {}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// The owner id this store claims checkpoints with.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The checkpoint of `stream`, if one was saved (a read only; see `claim`).
    pub async fn load(&self, stream: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let found = self.checkpoints.find_one(doc! { "_id": stream }).await?;
        Ok(match found {
            Some(found) => parse(stream, &found)?,
            None => None,
        })
    }

    /// Makes this store the owner of `stream`'s checkpoint and returns it, if one was saved. From
    /// then on a save by any earlier owner is refused. Reading and claiming are one atomic
    /// update, so the token returned is the last one any earlier owner saved. With no checkpoint
    /// yet, the claim is a document naming the owner only, so that even a first save by an
    /// earlier process is refused.
    pub async fn claim(&self, stream: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let found = self
            .checkpoints
            .find_one_and_update(
                doc! { "_id": stream },
                doc! { "$set": { "owner": &self.owner } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        Ok(match found {
            Some(found) => parse(stream, &found)?,
            None => None,
        })
    }
    /// Saves `token` as `stream`'s checkpoint, after recording `published_once` in the ledger,
    /// unless another process claimed the checkpoint since this store did. The ledger goes first: if the process dies between the two writes, the re-read changes find
    /// their ids in the ledger instead of publishing them again.
    pub async fn save(
        &self,
        stream: &str,
        token: &ResumeToken,
        position: Option<SourcePosition>,
        published_once: &[String],
    ) -> Result<(), CheckpointError> {
        self.record_published(published_once).await?;
        let token = mongodb::bson::to_bson(token).map_err(|e| CheckpointError::Corrupt {
            stream: stream.to_owned(),
            reason: e.to_string(),
        })?;
        let mut fields = doc! {
            "resume_token": token,
            "saved_at": DateTime::now(),
            "owner": &self.owner,
        };
        if let Some(position) = position {
            fields.insert(
                "position",
                mongodb::bson::Timestamp {
                    time: position.seconds,
                    increment: position.increment,
                },
            );
        }
        // Matches only a checkpoint this store owns. Another owner's document does not match, so
        // the upsert tries to insert a second document with the same `_id` and is refused.
        let saved = self
            .checkpoints
            .update_one(
                doc! { "_id": stream, "owner": &self.owner },
                doc! { "$set": fields },
            )
            .upsert(true)
            .await;
        match saved {
            Ok(_) => Ok(()),
            Err(error) if only_duplicate_keys(&error) => {
                let found = self.checkpoints.find_one(doc! { "_id": stream }).await?;
                let owner = found
                    .as_ref()
                    .and_then(|found| found.get_str("owner").ok())
                    .unwrap_or("unknown")
                    .to_owned();
                Err(CheckpointError::Claimed {
                    stream: stream.to_owned(),
                    owner,
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Whether an event with `id` was published before (and its checkpoint saved).
    pub async fn was_published(&self, id: &str) -> Result<bool, CheckpointError> {
        Ok(self.ledger.find_one(doc! { "_id": id }).await?.is_some())
    }

    async fn record_published(&self, ids: &[String]) -> Result<(), CheckpointError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = DateTime::now();
        let entries = ids.iter().map(|id| doc! { "_id": id, "published_at": now });
        let unordered = InsertManyOptions::builder().ordered(false).build();
        match self
            .ledger
            .insert_many(entries)
            .with_options(unordered)
            .await
        {
            Ok(_) => Ok(()),
            // Ids already in the ledger (a repeat after a crash) are fine; anything else is not.
            Err(error) if only_duplicate_keys(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// A stored checkpoint document, read: `None` for a claim with nothing saved yet.
fn parse(stream: &str, found: &Document) -> Result<Option<Checkpoint>, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        stream: stream.to_owned(),
        reason,
    };
    if !found.contains_key("resume_token") && !found.contains_key("saved_at") {
        return Ok(None);
    }
    let token = found
        .get("resume_token")
        .cloned()
        .ok_or_else(|| corrupt("no resume_token".into()))?;
    let resume_token: ResumeToken =
        mongodb::bson::from_bson(token).map_err(|e| corrupt(e.to_string()))?;
    let position = match found.get("position") {
        Some(Bson::Timestamp(ts)) => Some(SourcePosition {
            seconds: ts.time,
            increment: ts.increment,
        }),
        _ => None,
    };
    Ok(Some(Checkpoint {
        resume_token,
        position,
        owner: found.get_str("owner").ok().map(str::to_owned),
    }))
}

fn only_duplicate_keys(error: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match error.kind.as_ref() {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}
