//! One error policy for every crate of the project.
//!
//! - An error's `Display` says what failed at its own layer only; its cause is reachable through
//!   `source()` and never also written into the message, so no cause is printed twice.
//! - The whole chain is printed once, where the error is reported: [`chain`] for a log line or
//!   `/health`, `anyhow`'s report at the end of a `main`.
//! - A fatal error is logged once: by the process frame (`process::spawn`) when the work fails,
//!   or by `main` when the process could not start.

use std::error::Error;

/// `error` and its causes, outermost first, joined by ": ". A cause whose message its outer
/// error already ends with (a third-party error that prints its own cause) is not repeated.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = message(error);
    let mut cause = error.source();
    while let Some(current) = cause {
        let message = message(current);
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = current.source();
    }
    text
}

/// One layer's message. The MongoDB driver's own `Display` writes its whole error struct
/// (`Kind: ..., labels: {}, source: ..., server response: Some(RawDocumentBuf { data: "<hex>" })`):
/// the reply in hex and the cause again, which the chain prints next anyway. For a person, the
/// kind says it (for a server error its code, code name and message) and the labels say whether
/// it can be retried or resumed.
fn message(error: &(dyn Error + 'static)) -> String {
    let Some(mongo) = error.downcast_ref::<mongodb::error::Error>() else {
        return error.to_string();
    };
    let mut text = mongo.kind.to_string();
    let mut labels: Vec<&str> = mongo.labels().iter().map(String::as_str).collect();
    if !labels.is_empty() {
        labels.sort_unstable();
        text.push_str(&format!(" (labels: {})", labels.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("stream customer.accounts")]
    struct Outer {
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("kafka refused a record for topic events")]
    struct Middle {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn the_chain_names_every_layer_once() {
        let error = Outer {
            source: Middle {
                source: std::io::Error::other("broker gone"),
            },
        };
        assert_eq!(
            chain(&error),
            "stream customer.accounts: kafka refused a record for topic events: broker gone"
        );
        assert_eq!(error.to_string(), "stream customer.accounts");
    }

    #[test]
    fn a_cause_already_in_its_outer_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: inner")]
        struct SaysItsCause(#[source] std::io::Error);
        let error = SaysItsCause(std::io::Error::other("inner"));
        assert_eq!(chain(&error), "wrapped: inner");
    }

    #[test]
    fn a_mongodb_error_shows_its_kind_not_its_struct() {
        #[derive(Debug, thiserror::Error)]
        #[error("checkpoint of stream customer.accounts")]
        struct Save(#[source] mongodb::error::Error);
        let error = Save(std::io::Error::other("connection refused").into());
        assert_eq!(
            chain(&error),
            "checkpoint of stream customer.accounts: I/O error: connection refused"
        );
    }
}
