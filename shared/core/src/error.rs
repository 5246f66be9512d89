//! The crate's one error type. Each variant knows its machine-readable code and its kind; the
//! HTTP layer turns a kind into a status in exactly one place.

use crate::domain::{TransitionError, ValidationError};

/// Everything that can go wrong in the core, each with its code and kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke a validation rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No workflow by this name is deployed.
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    /// No such run, or another owner's.
    #[error("run {0} not found")]
    RunNotFound(String),
    /// No such memory entry, or another owner's.
    #[error("memory entry {0} not found")]
    MemoryNotFound(String),
    /// No such epic, or another owner's.
    #[error("epic {0} not found")]
    EpicNotFound(String),
    /// The epic is not in a state that allows this; the code says which (`approval_not_pending`,
    /// `epic_running`, `epic_ended`, `branch_moved`).
    #[error("{message}")]
    EpicConflict {
        /// The machine-readable code.
        code: &'static str,
        /// Why, for people.
        message: String,
    },
    /// No such session (or expired, or another owner's); the second field says which.
    #[error("session {0} {1}")]
    UnknownSession(String, &'static str),
    /// The session cannot take this run (another workflow or repository, an id taken).
    #[error("{0}")]
    SessionConflict(String),
    /// No valid API key (or stream token) was presented.
    #[error("a valid API key is required in the x-api-key header")]
    Unauthorized,
    /// The run's state machine does not allow this change now.
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// The `Idempotency-Key` names an earlier, different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// A conditional write lost to a concurrent one (after bounded retries).
    #[error("the run was changed concurrently; retry")]
    Conflict,
    /// The run has not ended, so its complete output is not there yet.
    #[error("run {0} has not ended; its output is complete once it has")]
    OutputNotReady(String),
    /// The runs queue refused the message.
    #[error("the run queue is unavailable: {0}")]
    QueueUnavailable(String),
    /// A backing service (or the file system, or git) failed.
    #[error("{what} failed: {detail}")]
    Dependency {
        /// What was being done.
        what: &'static str,
        /// What the dependency said.
        detail: String,
    },
    /// The deployment's configuration is incomplete or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The run passed to another executor while this one worked on it.
    #[error("the run's lease passed to another executor")]
    LeaseLost,
    /// The run cannot go on, for a reason its caller should see (`branch_not_found`, …).
    #[error("{}: {}", .0.code, .0.message)]
    RunFailed(crate::domain::RunError),
    /// The tenant is going faster than its limits allow (`rate_limited`), or has as many runs in
    /// flight as it may (`quota_exceeded`); retrying after `retry_after` seconds may succeed.
    #[error("{message}")]
    Limited {
        /// `rate_limited` or `quota_exceeded`.
        code: &'static str,
        /// Why, for people.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
}

/// The class of an error, which decides its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller sent something wrong (400).
    InvalidInput,
    /// The caller is not authenticated (401).
    Unauthorized,
    /// The thing asked for does not exist for this caller (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The caller is over a limit; retrying later may help (429).
    TooMany,
    /// A backing service failed; retrying may help (503).
    Unavailable,
    /// Our fault (500).
    Internal,
}

impl Error {
    /// A failure of a backing service, with what was being done.
    pub fn dependency(what: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Dependency { what, detail: err.to_string() }
    }

    /// The machine-readable code callers see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(v) => v.code(),
            Self::UnknownWorkflow(_) => "unknown_workflow",
            Self::RunNotFound(_) => "run_not_found",
            Self::EpicNotFound(_) => "epic_not_found",
            Self::MemoryNotFound(_) => "memory_not_found",
            Self::EpicConflict { code, .. } => code,
            Self::UnknownSession(..) => "unknown_session",
            Self::SessionConflict(_) => "session_conflict",
            Self::Unauthorized => "unauthorized",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Conflict => "concurrent_update",
            Self::QueueUnavailable(_) => "queue_unavailable",
            Self::OutputNotReady(_) => "output_not_ready",
            Self::Dependency { .. } => "dependency_failed",
            Self::Config(_) | Self::RunFailed(_) | Self::LeaseLost => "internal_error",
            Self::Limited { code, .. } => code,
        }
    }

    /// The error's class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Unauthorized => ErrorKind::Unauthorized,
            Self::UnknownWorkflow(_)
            | Self::RunNotFound(_)
            | Self::EpicNotFound(_)
            | Self::MemoryNotFound(_)
            | Self::UnknownSession(..) => ErrorKind::NotFound,
            Self::InvalidTransition(_)
            | Self::IdempotencyKeyReused
            | Self::Conflict
            | Self::SessionConflict(_)
            | Self::EpicConflict { .. }
            | Self::OutputNotReady(_) => ErrorKind::Conflict,
            Self::QueueUnavailable(_) | Self::Dependency { .. } => ErrorKind::Unavailable,
            Self::Limited { .. } => ErrorKind::TooMany,
            Self::Config(_) | Self::RunFailed(_) | Self::LeaseLost => ErrorKind::Internal,
        }
    }
}

impl Error {
    /// The run cannot go on, for this reason (`code`) its caller will see.
    pub fn run_failed(code: &str, message: impl Into<String>) -> Self {
        Self::RunFailed(crate::domain::RunError::new(code, message))
    }

    /// The reason a run ends with: its own for `RunFailed`, else `code` with this error's text.
    pub fn into_run_error(self, code: &str) -> crate::domain::RunError {
        match self {
            Self::RunFailed(error) => error,
            other => crate::domain::RunError::new(code, other.to_string()),
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
