//! The one place that builds MongoDB clients, so every process connects the same way.

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::options::ClientOptions;

use crate::settings::MongoSettings;

/// Why MongoDB could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum MongoConnectError {
    /// The connection string itself is wrong: retrying cannot help.
    #[error("mongo.uri is not a valid connection string")]
    InvalidUri(#[source] mongodb::error::Error),
    /// The server did not answer a ping in time.
    #[error("MongoDB did not answer")]
    Unreachable(#[source] mongodb::error::Error),
}

impl MongoConnectError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// Builds a client named `app_name` (visible in MongoDB's logs and `currentOp`), unless the
/// URI names it (`appName=`): an operator running several instances can tell them apart, and a
/// `failCommand` fail point can be scoped to one of them.
pub async fn client(settings: &MongoSettings, app_name: &str) -> Result<Client, MongoConnectError> {
    Client::with_options(options(settings, app_name).await?).map_err(MongoConnectError::InvalidUri)
}

/// The options [`client`] builds a client with, for a caller that changes some of them.
pub async fn options(
    settings: &MongoSettings,
    app_name: &str,
) -> Result<ClientOptions, MongoConnectError> {
    let mut options = ClientOptions::parse(&settings.uri)
        .await
        .map_err(MongoConnectError::InvalidUri)?;
    options.app_name.get_or_insert_with(|| app_name.to_owned());
    options.server_selection_timeout =
        Some(Duration::from_millis(settings.server_selection_timeout_ms));
    Ok(options)
}

/// Builds a client and checks that the server answers.
pub async fn connect(
    settings: &MongoSettings,
    app_name: &str,
) -> Result<Client, MongoConnectError> {
    let client = client(settings, app_name).await?;
    ping(&client).await?;
    Ok(client)
}

/// One round trip to the server.
pub async fn ping(client: &Client) -> Result<(), MongoConnectError> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map(drop)
        .map_err(MongoConnectError::Unreachable)
}
