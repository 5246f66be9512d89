//! Types and rules: runs and their state machine, requests and their validation, sessions,
//! workflows, frames and the stream's messages, owners and keys, redaction, the artifact
//! store's key layout.

mod branch;
pub mod cloud_event;
pub mod epic;
mod frame;
#[cfg(test)]
pub(crate) mod fuzz_tests;
mod limits;
pub mod memory;
pub mod object_keys;
mod owner;
mod redaction;
pub mod reply;
mod repository;
mod request;
pub(crate) mod run;
mod session;
mod stream;
mod trace;
mod validation;
mod workflow;

pub use branch::{BranchName, MAX_BRANCH_BYTES};
pub use cloud_event::CloudEvent;
pub use frame::{Frame, FrameData};
pub use limits::{BucketLevel, LimitOverrides, TenantLimits, TokenBucket};
pub use owner::{API_KEY_PREFIX, ApiKey, KeyHash, Owner};
pub use redaction::Redactor;
pub use reply::{ReplyPolicy, ReplyRoute};
pub use repository::RepositoryPolicy;
pub use request::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TURNS, IntakeLimits, MAX_MAX_TURNS, MIN_MAX_TURNS, RunRequest,
    ValidRunRequest, validate_idempotency_key,
};
pub use run::{
    CancelOutcome, DiffStats, EpicLink, LAMBDA_RUN_LIMIT_SECONDS, Lane, LostRun, MAX_REQUEUES, QUEUED_GRACE_SECONDS,
    Run, RunError, RunId, RunOutcome, RunStatus, RunTimings, StrandedRun, ToolCall, TransitionError, millis,
};
pub use session::{DEFAULT_SESSION_TTL_DAYS, Session, SessionRefusal, SessionUse};
pub use stream::{MAX_MESSAGE_BYTES, StreamClaims, StreamMessages, StreamTokens};
pub use trace::{TraceContext, TraceId};
pub use validation::ValidationError;
pub use workflow::{
    DEFAULT_TIMEOUT_SECONDS, PermissionMode, Workflow, WorkflowConfig, WorkflowLoadError, WorkflowRegistry,
};

/// The text cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
