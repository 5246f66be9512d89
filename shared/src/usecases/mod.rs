//! Use cases, written against `crate::ports` only.

mod runs;

pub use runs::{DEFAULT_PAGE_SIZE, IDEMPOTENCY_TTL_HOURS, ListQuery, MAX_PAGE_SIZE, RunService, Submitted};
