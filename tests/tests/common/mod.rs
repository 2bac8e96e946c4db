//! Helpers shared by the MongoDB smoke tests.

use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use storefront_tests::next_events;

/// The integer `_id` an event is about, from its post-image or its document key.
pub fn id_of(event: &ChangeStreamEvent<Document>) -> i32 {
    let from_full = event
        .full_document
        .as_ref()
        .and_then(|d| d.get_i32("_id").ok());
    let from_key = event
        .document_key
        .as_ref()
        .and_then(|d| d.get_i32("_id").ok());
    from_full.or(from_key).unwrap_or(-1)
}

/// Opens a stream, inserts one document per id, reads their events and returns the stream's
/// resume token after the last one.
pub async fn token_after(
    collection: &mongodb::Collection<Document>,
    ids: std::ops::Range<i32>,
) -> ResumeToken {
    let mut stream = collection.watch().await.unwrap();
    let count = ids.len();
    for id in ids {
        collection.insert_one(doc! { "_id": id }).await.unwrap();
    }
    next_events(&mut stream, count).await;
    stream.resume_token().expect("a token after reading events")
}
