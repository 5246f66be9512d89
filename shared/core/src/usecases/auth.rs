//! Who is calling: an API key as presented in `x-api-key`, looked up by its hash.

use std::sync::Arc;

use crate::domain::{ApiKey, Owner};
use crate::ports::{ApiKeyStore, KeyGrant};
use crate::{Error, Result};

/// Turns a presented API key into its owner; the HTTP API and the WebSocket API both ask here.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<dyn ApiKeyStore>,
}

impl Authenticator {
    /// Looks keys up in `keys`.
    pub fn new(keys: Arc<dyn ApiKeyStore>) -> Self {
        Self { keys }
    }

    /// What the presented key grants; `None` if it is malformed, unknown or revoked.
    pub async fn grant_of(&self, presented: &str) -> Result<Option<KeyGrant>> {
        let Some(key) = ApiKey::from_presented(presented) else { return Ok(None) };
        self.keys.grant_of(&key.hash()).await
    }

    /// The owner of the presented key; `None` if it is malformed, unknown or revoked.
    pub async fn owner_of(&self, presented: &str) -> Result<Option<Owner>> {
        Ok(self.grant_of(presented).await?.map(|grant| grant.owner))
    }

    /// What the presented key grants, or `Error::Unauthorized`.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<KeyGrant> {
        match presented {
            Some(presented) => self.grant_of(presented).await?.ok_or(Error::Unauthorized),
            None => Err(Error::Unauthorized),
        }
    }

    /// Registers a new key for `owner` (the local stack and tests issue keys this way).
    pub async fn register(&self, key: &ApiKey, owner: &Owner, label: &str) -> Result<()> {
        self.keys.register(&key.hash(), owner, label).await
    }
}
