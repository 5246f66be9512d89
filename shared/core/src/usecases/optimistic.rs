//! Optimistic concurrency, written once: change a record, write it conditionally on the version
//! it was read at, and when a concurrent write wins, read it again and re-apply the change — a
//! bounded number of times.

use async_trait::async_trait;

use crate::domain::{Run, Session};
use crate::ports::{RunStore, SessionStore};
use crate::{Error, Result};

/// Attempts before a change gives up with `Error::Conflict`.
const ATTEMPTS: usize = 5;

/// What a change decided for the copy it was given.
pub(crate) enum Edit<R> {
    /// Write the changed copy, then return the value.
    Write(R),
    /// Nothing to write: return the value as things are.
    Keep(R),
}

/// A record written conditionally on its version.
pub(crate) trait Versioned: Clone + Send + Sync {
    fn version(&self) -> u64;
}

impl Versioned for Run {
    fn version(&self) -> u64 {
        self.version
    }
}

impl Versioned for Session {
    fn version(&self) -> u64 {
        self.version
    }
}

/// Where versioned records are read again and written conditionally.
#[async_trait]
pub(crate) trait VersionedStore<T>: Send + Sync {
    async fn reload(&self, current: &T) -> Result<T>;
    async fn write(&self, next: &T, expected_version: u64) -> Result<()>;
}

#[async_trait]
impl VersionedStore<Run> for dyn RunStore {
    async fn reload(&self, current: &Run) -> Result<Run> {
        self.get(current.run_id).await?.ok_or_else(|| Error::RunNotFound(current.run_id.to_string()))
    }

    async fn write(&self, next: &Run, expected_version: u64) -> Result<()> {
        self.update(next, expected_version).await
    }
}

#[async_trait]
impl VersionedStore<Session> for dyn SessionStore {
    async fn reload(&self, current: &Session) -> Result<Session> {
        let id = current.session_id;
        self.get(id).await?.ok_or_else(|| Error::UnknownSession(id.to_string(), "no longer exists"))
    }

    async fn write(&self, next: &Session, expected_version: u64) -> Result<()> {
        self.update(next, expected_version).await
    }
}

/// Applies `change` to a copy of `current` and writes it if the change says so; on a conflict
/// re-reads `current` and tries again. `current` ends as the stored record. An error from
/// `change` ends the update with nothing written.
pub(crate) async fn update<T, S, R>(
    store: &S,
    current: &mut T,
    mut change: impl FnMut(&mut T) -> Result<Edit<R>>,
) -> Result<R>
where
    T: Versioned,
    S: VersionedStore<T> + ?Sized,
{
    for attempt in 1..=ATTEMPTS {
        let mut next = current.clone();
        let value = match change(&mut next)? {
            Edit::Keep(value) => return Ok(value),
            Edit::Write(value) => value,
        };
        match store.write(&next, current.version()).await {
            Ok(()) => {
                *current = next;
                return Ok(value);
            }
            Err(Error::Conflict) if attempt < ATTEMPTS => *current = store.reload(current).await?,
            Err(err) => return Err(err),
        }
    }
    Err(Error::Conflict)
}
