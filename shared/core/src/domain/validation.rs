use thiserror::Error;

/// One variant per intake rule, each with its own machine-readable code.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The branch name is one `git check-ref-format --branch` would reject.
    #[error("branch name {reason}")]
    InvalidBranch {
        /// Which ref-format rule the name breaks.
        reason: &'static str,
    },
    /// The branch name exceeds the byte cap that keeps it safe as a path and key part.
    #[error("branch name is longer than {max} bytes")]
    BranchTooLong {
        /// The longest name accepted, in bytes.
        max: usize,
    },
    /// The prompt message is empty or only whitespace.
    #[error("message must not be empty")]
    EmptyMessage,
    /// The prompt message is longer than the deployment's intake limit.
    #[error("message is {actual} bytes; the limit is {max}")]
    MessageTooLarge {
        /// Size of the message sent, in bytes.
        actual: usize,
        /// The deployment's limit, in bytes.
        max: usize,
    },
    /// The prompt message contains a NUL character.
    #[error("message must not contain NUL characters")]
    InvalidMessage,
    /// The requested `max_turns` is outside the allowed range.
    #[error("max_turns must be between {min} and {max}, got {actual}")]
    InvalidMaxTurns {
        /// The value the caller asked for.
        actual: i64,
        /// Fewest turns a run may be given.
        min: u32,
        /// Most turns a run may be given.
        max: u32,
    },
    /// A session id given by the caller does not parse as a UUID.
    #[error("session_id must be a UUID")]
    InvalidSessionId,
    /// The repository URL is not a git URL the runner accepts; carries the reason.
    #[error("repository_url is not a valid git URL: {0}")]
    InvalidRepositoryUrl(String),
    /// The repository URL is valid but not on this deployment's allowlist; carries the URL.
    #[error("repository {0} is not in this deployment's allowlist")]
    RepositoryNotAllowed(String),
    /// The request names no repository and the deployment has no default to fall back on.
    #[error("no repository_url given and this deployment has no default repository")]
    RepositoryRequired,
    /// The request's `metadata` is neither a JSON object nor null.
    #[error("metadata must be a JSON object")]
    InvalidMetadata,
    /// The request's `metadata`, serialized as JSON, exceeds the size limit.
    #[error("metadata is {actual} bytes as JSON; the limit is {max}")]
    MetadataTooLarge {
        /// Size of the serialized metadata, in bytes.
        actual: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// `max_budget_usd` is not a positive amount within the limit.
    #[error("max_budget_usd must be a number of US dollars from 0.0001 to 10000")]
    InvalidBudget,
    /// The `Idempotency-Key` header is empty, too long, or has non-printable-ASCII bytes.
    #[error("Idempotency-Key must be 1-255 printable ASCII characters")]
    InvalidIdempotencyKey,
    /// A listing's query parameter (such as `limit` or `status`) is unacceptable; carries why.
    #[error("{0}")]
    InvalidQuery(String),
    /// A pagination cursor cannot be decoded or belongs to a different listing.
    #[error("cursor is malformed or was not issued for this listing")]
    InvalidCursor,
    /// A run id given by the caller does not parse as a UUID.
    #[error("run id must be a UUID")]
    InvalidRunId,
    /// An epic request or decision broke one of its rules; carries the code and why.
    #[error("{message}")]
    InvalidEpic {
        /// The machine-readable code (`invalid_steps`, `invalid_decision`, …).
        code: &'static str,
        /// What is wrong, for people.
        message: String,
    },
}

impl ValidationError {
    /// The stable machine-readable code clients receive alongside the message.
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
            Self::InvalidBudget => "invalid_budget",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidRunId => "invalid_run_id",
            Self::InvalidEpic { code, .. } => code,
        }
    }
}
