use thiserror::Error;

/// One variant per intake rule, each with its own machine-readable code.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("branch name {reason}")]
    InvalidBranch { reason: &'static str },
    #[error("branch name is longer than {max} bytes")]
    BranchTooLong { max: usize },
    #[error("message must not be empty")]
    EmptyMessage,
    #[error("message is {actual} bytes; the limit is {max}")]
    MessageTooLarge { actual: usize, max: usize },
    #[error("message must not contain NUL characters")]
    InvalidMessage,
    #[error("max_turns must be between {min} and {max}, got {actual}")]
    InvalidMaxTurns { actual: i64, min: u32, max: u32 },
    #[error("session_id must be a UUID")]
    InvalidSessionId,
    #[error("repository_url is not a valid git URL: {0}")]
    InvalidRepositoryUrl(String),
    #[error("repository {0} is not in this deployment's allowlist")]
    RepositoryNotAllowed(String),
    #[error("no repository_url given and this deployment has no default repository")]
    RepositoryRequired,
    #[error("metadata must be a JSON object")]
    InvalidMetadata,
    #[error("metadata is {actual} bytes as JSON; the limit is {max}")]
    MetadataTooLarge { actual: usize, max: usize },
    #[error("Idempotency-Key must be 1-255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("{0}")]
    InvalidQuery(String),
    #[error("cursor is malformed or was not issued for this listing")]
    InvalidCursor,
    #[error("run id must be a UUID")]
    InvalidRunId,
}

impl ValidationError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidBranch { .. } => "invalid_branch",
            Self::BranchTooLong { .. } => "branch_too_long",
            Self::EmptyMessage => "empty_message",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::InvalidMessage => "invalid_message",
            Self::InvalidMaxTurns { .. } => "invalid_max_turns",
            Self::InvalidSessionId => "invalid_session_id",
            Self::InvalidRepositoryUrl(_) => "invalid_repository_url",
            Self::RepositoryNotAllowed(_) => "repository_not_allowed",
            Self::RepositoryRequired => "repository_required",
            Self::InvalidMetadata => "invalid_metadata",
            Self::MetadataTooLarge { .. } => "metadata_too_large",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidRunId => "invalid_run_id",
        }
    }
}
