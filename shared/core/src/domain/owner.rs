//! Who a caller is: API keys are stored only as hashes, and every run records its owner.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The tenant a key belongs to. Runs, sessions and connections are scoped by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Owner(String);

impl Owner {
    /// An owner with this tenant id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    /// The tenant id, as stored on runs and sessions.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret API key as the caller presents it. Never logged, never stored.
pub struct ApiKey(String);

/// Keys start with this so a leaked one is recognisable in a secret scanner.
pub const API_KEY_PREFIX: &str = "crk_";

impl ApiKey {
    /// 32 random bytes: enough entropy that a plain SHA-256 (no salt, no KDF) is a safe store
    /// format, which keeps the per-request lookup a single key-value read.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{API_KEY_PREFIX}{}", hex::encode(bytes)))
    }

    /// The key a caller sent, trimmed; `None` if empty or over 256 bytes (it cannot be a key).
    pub fn from_presented(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        (!raw.is_empty() && raw.len() <= 256).then(|| Self(raw.to_owned()))
    }

    /// The secret text itself; handle with care, it is the credential.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 form under which the key is stored and looked up.
    pub fn hash(&self) -> KeyHash {
        KeyHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// The stored form of a key: lowercase hex SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHash(String);

impl KeyHash {
    /// The hex digest, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_prefixed_and_hash_stably() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert!(a.expose().starts_with(API_KEY_PREFIX));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), ApiKey::from_presented(a.expose()).unwrap().hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash().as_str().len(), 64);
        assert!(!a.hash().as_str().contains(a.expose()));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let key = ApiKey::generate();
        assert!(!format!("{key:?}").contains(key.expose()));
    }

    #[test]
    fn empty_or_oversized_presented_keys_are_rejected() {
        assert!(ApiKey::from_presented("").is_none());
        assert!(ApiKey::from_presented("   ").is_none());
        assert!(ApiKey::from_presented(&"k".repeat(257)).is_none());
        assert!(ApiKey::from_presented("crk_abc").is_some());
    }
}
