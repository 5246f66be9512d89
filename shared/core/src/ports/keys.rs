//! API keys: who a key belongs to, and the limits it carries.

use async_trait::async_trait;

use crate::Result;
use crate::domain::{KeyHash, LimitOverrides, Owner};

/// What a valid key grants: whose it is, and its own limits (over the deployment's).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyGrant {
    /// The key, as stored (its hash): what connections and stream tokens made with it name.
    pub key: KeyHash,
    /// The tenant.
    pub owner: Owner,
    /// The key's own limits.
    pub limits: LimitOverrides,
    /// The repositories runs of this key may use, replacing the deployment's allowlist (the
    /// deployment's default repository stays allowed).
    pub repository_allowlist: Option<Vec<String>>,
}

/// The registered API keys, stored hashed.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// What a key grants, if it exists and is not revoked.
    async fn grant_of(&self, key: &KeyHash) -> Result<Option<KeyGrant>>;
    /// Registers a key for `owner`; `label` says what it is for.
    async fn register(&self, key: &KeyHash, owner: &Owner, label: &str) -> Result<()>;
}
