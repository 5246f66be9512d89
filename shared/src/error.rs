//! The crate's one error type. Each variant knows its machine-readable code and its kind; the
//! HTTP layer turns a kind into a status in exactly one place.

use crate::domain::{TransitionError, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("session {0} {1}")]
    UnknownSession(String, &'static str),
    #[error("{0}")]
    SessionConflict(String),
    #[error("a valid API key is required in the x-api-key header")]
    Unauthorized,
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("the run was changed concurrently; retry")]
    Conflict,
    #[error("the run queue is unavailable: {0}")]
    QueueUnavailable(String),
    #[error("{what} failed: {detail}")]
    Dependency { what: &'static str, detail: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("the run's lease passed to another executor")]
    LeaseLost,
    /// The run cannot go on, for a reason its caller should see (`branch_not_found`, …).
    #[error("{}: {}", .0.code, .0.message)]
    RunFailed(crate::domain::RunError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidInput,
    Unauthorized,
    NotFound,
    Conflict,
    Unavailable,
    Internal,
}

impl Error {
    pub fn dependency(what: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Dependency { what, detail: err.to_string() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(v) => v.code(),
            Self::UnknownWorkflow(_) => "unknown_workflow",
            Self::RunNotFound(_) => "run_not_found",
            Self::UnknownSession(..) => "unknown_session",
            Self::SessionConflict(_) => "session_conflict",
            Self::Unauthorized => "unauthorized",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Conflict => "concurrent_update",
            Self::QueueUnavailable(_) => "queue_unavailable",
            Self::Dependency { .. } => "dependency_failed",
            Self::Config(_) | Self::RunFailed(_) | Self::LeaseLost => "internal_error",
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Unauthorized => ErrorKind::Unauthorized,
            Self::UnknownWorkflow(_) | Self::RunNotFound(_) | Self::UnknownSession(..) => ErrorKind::NotFound,
            Self::InvalidTransition(_) | Self::IdempotencyKeyReused | Self::Conflict | Self::SessionConflict(_) => {
                ErrorKind::Conflict
            }
            Self::QueueUnavailable(_) | Self::Dependency { .. } => ErrorKind::Unavailable,
            Self::Config(_) | Self::RunFailed(_) | Self::LeaseLost => ErrorKind::Internal,
        }
    }
}

impl Error {
    pub fn run_failed(code: &str, message: impl Into<String>) -> Self {
        Self::RunFailed(crate::domain::RunError::new(code, message))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
