//! The artifact store (S3): frame logs, workspace archives, session transcripts, repository
//! bundles. Where each lives is `crate::domain::object_keys`.

use std::path::Path;

use async_trait::async_trait;

use crate::Result;

/// Objects by key. Paths name local files the adapter streams from or to.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores `body` under `key`.
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()>;
    /// Uploads a file without reading it into memory.
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<()>;
    /// Downloads to a file without holding it in memory; `false` if there is no such object.
    async fn get_file(&self, key: &str, path: &Path) -> Result<bool>;
    /// The object's bytes, if it exists.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Removes the object (no error if it is already gone).
    async fn delete(&self, key: &str) -> Result<()>;
    /// Every key under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// At most `max` keys under `prefix`, in key order.
    async fn list_up_to(&self, prefix: &str, max: usize) -> Result<Vec<String>>;
}
