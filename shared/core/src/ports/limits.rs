//! Where rate limits keep their buckets.

use async_trait::async_trait;

use crate::Result;
use crate::domain::BucketLevel;

/// A bucket's level as stored, with the version a write must match.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoredBucket {
    /// Its level.
    pub level: BucketLevel,
    /// Bumped by every write.
    pub version: u64,
}

/// Token-bucket levels, by bucket name, shared by every instance of every function.
#[async_trait]
pub trait BucketStore: Send + Sync {
    /// The bucket's level; `None` for one never taken from (or expired: full again).
    async fn get(&self, bucket: &str) -> Result<Option<StoredBucket>>;
    /// Writes `level` as version `expected + 1` (or 1 when `expected` is `None`) unless another
    /// write got there first; whether it was written.
    async fn put(&self, bucket: &str, level: BucketLevel, expected: Option<u64>) -> Result<bool>;
}
