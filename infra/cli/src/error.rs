//! What can go wrong in a command, with a machine-readable code for `--output json`.
//!
//! Commands return this error; `main` alone turns it into a message (text) or an
//! `{"error": {"code", "message"}}` object (json) and an exit status.

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error body (`{"error": {"code", "message"}}`) or a bare status.
    /// Shown as `409 Conflict: invalid_transition: …`: callers may rely on the leading status.
    #[error("{status}: {code}: {message}")]
    Api { status: reqwest::StatusCode, code: String, message: String },
    /// The API or the WebSocket endpoint could not be reached, or its answer was cut off.
    #[error("{0}")]
    Unreachable(String),
    /// The server sent something this client does not understand.
    #[error("{0}")]
    InvalidResponse(String),
    /// The WebSocket server reported an error for the subscription.
    #[error("{code}: {message}")]
    Stream { code: String, message: String },
    /// Missing endpoint or key, a bad argument value.
    #[error("{message}")]
    Config { code: &'static str, message: String },
    /// Refused by this client before asking the API (e.g. an epic with no pending approval).
    #[error("{0}")]
    Refused(String),
    /// Gave up waiting (e.g. `epic watch --timeout`).
    #[error("{0}")]
    TimedOut(String),
    /// Writing to stdout or stderr failed.
    #[error("writing the output failed: {0}")]
    Io(#[from] std::io::Error),
    /// The command did what it was asked, but the run (or epic) it followed did not complete:
    /// it already printed the end, so nothing more is said; the exit status is 1.
    #[error("it ended {0}")]
    Unsuccessful(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(code: &'static str, message: impl Into<String>) -> Self {
        Self::Config { code, message: message.into() }
    }

    /// The machine-readable code: the API's own code for API errors.
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } | Self::Stream { code, .. } => code,
            Self::Unreachable(_) => "unreachable",
            Self::InvalidResponse(_) => "invalid_response",
            Self::Config { code, .. } => code,
            Self::Refused(_) => "refused",
            Self::TimedOut(_) => "timed_out",
            Self::Io(_) => "io",
            Self::Unsuccessful(_) => "unsuccessful",
        }
    }

    /// The message without the code (the API's message for API errors).
    pub fn message(&self) -> String {
        match self {
            Self::Api { message, .. } | Self::Stream { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the API refused the request as a client error (4xx): asking again will not help.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Api { status, .. } if status.is_client_error())
    }

    /// `{"error": {"code", "message"}}`, with `http_status` for an API error.
    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code(), "message": self.message()});
        if let Self::Api { status, .. } = self {
            error["http_status"] = json!(status.as_u16());
        }
        json!({ "error": error })
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::InvalidResponse(format!("not the JSON expected: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_keeps_its_code_and_status() {
        let err = Error::Api {
            status: reqwest::StatusCode::CONFLICT,
            code: "output_not_ready".into(),
            message: "the run has not ended".into(),
        };
        assert_eq!(err.to_string(), "409 Conflict: output_not_ready: the run has not ended");
        assert!(err.is_client_error());
        assert_eq!(
            err.to_json(),
            json!({"error": {"code": "output_not_ready", "message": "the run has not ended", "http_status": 409}})
        );
    }

    #[test]
    fn other_errors_have_a_code_of_their_own() {
        let err = Error::config("no_endpoint", "no endpoint");
        assert_eq!(err.to_json(), json!({"error": {"code": "no_endpoint", "message": "no endpoint"}}));
        assert!(!err.is_client_error());
    }
}
