//! API keys: who a key belongs to.

use async_trait::async_trait;

use crate::Result;
use crate::domain::{KeyHash, Owner};

/// The registered API keys, stored hashed.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// The owner of a key, if it exists and is not revoked.
    async fn owner_of(&self, key: &KeyHash) -> Result<Option<Owner>>;
    /// Registers a key for `owner`; `label` says what it is for.
    async fn register(&self, key: &KeyHash, owner: &Owner, label: &str) -> Result<()>;
}
