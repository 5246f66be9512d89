//! Every failure leaves as `{"error": {"code", "message"}}`; the status is decided here only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runner_core::{Error, ErrorKind};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a refused caller should wait (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match err.kind() {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Dependency details (table names, SDK messages) go to the log, not to the caller.
        let message = match err.kind() {
            ErrorKind::Unavailable | ErrorKind::Internal => {
                tracing::error!(error = %err, "request failed");
                "a backing service failed; the request was not completed, retry later".to_owned()
            }
            _ => err.to_string(),
        };
        let retry_after = match &err {
            Error::Limited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        Self { status, code: err.code(), message, retry_after }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status_and_dependency_details_stay_in_the_log() {
        let cases = [
            (Error::Conflict, 409, "concurrent_update"),
            (Error::Unauthorized, 401, "unauthorized"),
            (Error::RunNotFound("x".into()), 404, "run_not_found"),
            (Error::dependency("dynamodb get runs-table", "ResourceNotFoundException"), 503, "dependency_failed"),
            (Error::Config("X is not set".into()), 500, "internal_error"),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
            assert!(!api.message.contains("runs-table") && !api.message.contains("X is not set"), "{}", api.message);
        }
    }
}
