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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Counter {
        value: u32,
        version: u64,
    }

    impl Versioned for Counter {
        fn version(&self) -> u64 {
            self.version
        }
    }

    /// A record that someone else changes `interference` times before each of our writes lands.
    struct Contended {
        stored: Mutex<Counter>,
        interference: Mutex<u32>,
        writes: Mutex<u32>,
    }

    #[async_trait]
    impl VersionedStore<Counter> for Contended {
        async fn reload(&self, _: &Counter) -> Result<Counter> {
            Ok(self.stored.lock().unwrap().clone())
        }

        async fn write(&self, next: &Counter, expected_version: u64) -> Result<()> {
            *self.writes.lock().unwrap() += 1;
            let mut stored = self.stored.lock().unwrap();
            let mut interference = self.interference.lock().unwrap();
            if *interference > 0 {
                *interference -= 1;
                stored.value += 100;
                stored.version += 1;
            }
            if stored.version != expected_version {
                return Err(Error::Conflict);
            }
            *stored = next.clone();
            Ok(())
        }
    }

    fn contended(interference: u32) -> Contended {
        Contended {
            stored: Mutex::new(Counter { value: 1, version: 1 }),
            interference: Mutex::new(interference),
            writes: Mutex::new(0),
        }
    }

    fn increment(counter: &mut Counter) -> Result<Edit<u32>> {
        counter.value += 1;
        counter.version += 1;
        Ok(Edit::Write(counter.value))
    }

    #[tokio::test]
    async fn a_lost_race_is_read_again_and_the_change_reapplied_on_the_winner() {
        let store = contended(2);
        let mut current = Counter { value: 1, version: 1 };
        let value = update(&store, &mut current, increment).await.unwrap();
        assert_eq!(value, 202, "applied on top of both concurrent changes, not over them");
        assert_eq!(current, *store.stored.lock().unwrap());
        assert_eq!(*store.writes.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_end_in_a_conflict() {
        let store = contended(u32::MAX);
        let mut current = Counter { value: 1, version: 1 };
        let err = update(&store, &mut current, increment).await.unwrap_err();
        assert!(matches!(err, Error::Conflict), "{err}");
        assert_eq!(err.code(), "concurrent_update");
        assert_eq!(*store.writes.lock().unwrap(), ATTEMPTS as u32);
    }

    #[tokio::test]
    async fn keep_writes_nothing_and_an_error_from_the_change_ends_it() {
        let store = contended(0);
        let mut current = Counter { value: 1, version: 1 };
        assert_eq!(update(&store, &mut current, |c| Ok(Edit::Keep(c.value))).await.unwrap(), 1);
        let refused = update(&store, &mut current, |_| Err::<Edit<()>, _>(Error::LeaseLost)).await;
        assert!(matches!(refused, Err(Error::LeaseLost)));
        assert_eq!(*store.writes.lock().unwrap(), 0);
    }
}
