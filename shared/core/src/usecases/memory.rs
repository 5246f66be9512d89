//! The memory API: what earlier runs of a repository taught, searched, added, accepted, retired
//! and deleted by its owner. Entries of another owner do not exist for the caller.

use std::sync::Arc;

use serde::Deserialize;
use uuid::Uuid;

use super::runs::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_limit};
use crate::domain::memory::{MAX_MEMORY_TEXT_BYTES, MemoryKind, MemoryStatus, NewMemory};
use crate::domain::{Owner, RepositoryPolicy, ValidationError};
use crate::ports::{MemoryChange, MemoryEntry, MemoryQuery, MemorySource, MemoryStore};
use crate::{Error, Result};

/// `GET /memory` query parameters as received.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySearch {
    /// One repository.
    pub repository: Option<String>,
    /// One kind.
    pub kind: Option<String>,
    /// One status.
    pub status: Option<String>,
    /// Similar to this first.
    pub q: Option<String>,
    /// Page size.
    pub limit: Option<String>,
}

/// `POST /memory`: a person's own note.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryNote {
    /// The note.
    pub text: String,
    /// Its repository; the deployment's default when absent.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// What it records; a learning when absent.
    #[serde(default)]
    pub kind: Option<MemoryKind>,
    /// Structured fields to keep with it.
    #[serde(default)]
    pub fields: Option<serde_json::Value>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid(ValidationError::InvalidEpic { code, message: message.into() })
}

fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() || text.len() > MAX_MEMORY_TEXT_BYTES || text.contains('\0') {
        return Err(invalid("invalid_memory", format!("text must be 1 to {MAX_MEMORY_TEXT_BYTES} bytes, without NUL")));
    }
    Ok(())
}

/// The owner's memory.
pub struct MemoryService {
    store: Arc<dyn MemoryStore>,
    repositories: RepositoryPolicy,
}

impl MemoryService {
    /// The service over `store`; notes' repositories go through `repositories`.
    pub fn new(store: Arc<dyn MemoryStore>, repositories: RepositoryPolicy) -> Self {
        Self { store, repositories }
    }

    /// The owner's entries, narrowed by `search`; similar first when it has `q`.
    pub async fn search(&self, owner: &Owner, search: MemorySearch) -> Result<Vec<MemoryEntry>> {
        let kind = search
            .kind
            .map(|k| k.parse::<MemoryKind>())
            .transpose()
            .map_err(|e| Error::Invalid(ValidationError::InvalidQuery(e)))?;
        let status = search
            .status
            .map(|s| s.parse::<MemoryStatus>())
            .transpose()
            .map_err(|e| Error::Invalid(ValidationError::InvalidQuery(e)))?;
        let limit = page_limit(search.limit.map(|raw| raw.parse().unwrap_or(0)), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        // Postgres text cannot hold NUL: refused here, not failed there.
        if [&search.q, &search.repository].into_iter().flatten().any(|v| v.contains('\0')) {
            return Err(ValidationError::InvalidQuery("q and repository must not contain NUL".into()).into());
        }
        let text = search.q.filter(|q| !q.trim().is_empty());
        let query = MemoryQuery { repository_url: search.repository, kind, status, text, limit, session_id: None };
        self.store.search(owner, &query).await
    }

    /// What the runs of one of the owner's sessions produced, newest first.
    pub async fn of_session(&self, owner: &Owner, session_id: Uuid) -> Result<Vec<MemoryEntry>> {
        let query = MemoryQuery { session_id: Some(session_id), limit: MAX_PAGE_SIZE, ..MemoryQuery::default() };
        self.store.search(owner, &query).await
    }

    /// One of the owner's entries.
    pub async fn get(&self, owner: &Owner, memory_id: &str) -> Result<MemoryEntry> {
        let id = parse_id(memory_id)?;
        self.store.get(owner, id).await?.ok_or_else(|| Error::MemoryNotFound(memory_id.to_owned()))
    }

    /// A person's note: accepted at once, since a person wrote it.
    pub async fn add(&self, owner: &Owner, note: MemoryNote) -> Result<MemoryEntry> {
        check_text(&note.text)?;
        let repository_url = self.repositories.resolve(note.repository_url.as_deref())?;
        let fields = match note.fields {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(v @ serde_json::Value::Object(_))
                if v.to_string().len() <= MAX_MEMORY_TEXT_BYTES && !v.to_string().contains("\\u0000") =>
            {
                v
            }
            Some(_) => {
                return Err(invalid(
                    "invalid_memory",
                    "fields must be a JSON object of at most 4000 bytes, without NUL",
                ));
            }
        };
        let entry =
            NewMemory { kind: note.kind.unwrap_or(MemoryKind::Learning), text: note.text, fields, fingerprint: None };
        let source = MemorySource {
            owner: owner.clone(),
            repository_url,
            workflow: None,
            epic_id: None,
            run_id: None,
            session_id: None,
        };
        let id = self.store.record(&source, &entry, MemoryStatus::Accepted).await?;
        self.store.get(owner, id).await?.ok_or_else(|| Error::MemoryNotFound(id.to_string()))
    }

    /// Accepts, retires or edits one of the owner's entries.
    pub async fn change(&self, owner: &Owner, memory_id: &str, change: MemoryChange) -> Result<MemoryEntry> {
        let id = parse_id(memory_id)?;
        if let Some(text) = &change.text {
            check_text(text)?;
        }
        if change.status.is_none() && change.text.is_none() {
            return Err(invalid("invalid_memory", "give a status or a text to change"));
        }
        self.store.update(owner, id, &change).await?.ok_or_else(|| Error::MemoryNotFound(memory_id.to_owned()))
    }

    /// Deletes one of the owner's entries.
    pub async fn delete(&self, owner: &Owner, memory_id: &str) -> Result<()> {
        let id = parse_id(memory_id)?;
        if self.store.delete(owner, id).await? { Ok(()) } else { Err(Error::MemoryNotFound(memory_id.to_owned())) }
    }
}

fn parse_id(memory_id: &str) -> Result<Uuid> {
    Uuid::parse_str(memory_id).map_err(|_| Error::MemoryNotFound(memory_id.to_owned()))
}
