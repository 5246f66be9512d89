//! `claude_runner_memory`: entries per owner and repository, found by trigram similarity and
//! full-text rank, then recency and occurrences.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use runner_core::domain::Owner;
use runner_core::domain::memory::{MemoryHint, MemoryKind, MemoryStatus, NewMemory};
use runner_core::ports::{MemoryChange, MemoryEntry, MemoryQuery, MemorySource, MemoryStore};
use runner_core::{Error, Result};

// Queries built with `format!` splice in only this constant: every value is a bind parameter.
const COLUMNS: &str = "memory_id, repository_url, kind, status, text, fields, workflow, epic_id, run_id, session_id, \
                       occurrences, first_seen, last_seen";

/// How many of a repository's most recent accepted entries a run's lookup considers.
pub const RECALL_WINDOW: i64 = 1_000;

/// The Postgres memory store.
pub struct PgMemoryStore {
    pool: PgPool,
}

impl PgMemoryStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn failed(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::dependency(what, e)
}

fn entry(row: &sqlx::postgres::PgRow) -> Result<MemoryEntry> {
    let decode = |e: sqlx::Error| Error::dependency("decode memory", e);
    let kind: String = row.try_get("kind").map_err(decode)?;
    let status: String = row.try_get("status").map_err(decode)?;
    Ok(MemoryEntry {
        memory_id: row.try_get("memory_id").map_err(decode)?,
        repository_url: row.try_get("repository_url").map_err(decode)?,
        kind: kind.parse().map_err(|e: String| Error::dependency("decode memory", e))?,
        status: status.parse().map_err(|e: String| Error::dependency("decode memory", e))?,
        text: row.try_get("text").map_err(decode)?,
        fields: row.try_get("fields").map_err(decode)?,
        workflow: row.try_get("workflow").map_err(decode)?,
        epic_id: row.try_get("epic_id").map_err(decode)?,
        run_id: row.try_get("run_id").map_err(decode)?,
        session_id: row.try_get("session_id").map_err(decode)?,
        occurrences: row.try_get::<i32, _>("occurrences").map_err(decode)?.max(0) as u32,
        first_seen: row.try_get("first_seen").map_err(decode)?,
        last_seen: row.try_get("last_seen").map_err(decode)?,
    })
}

#[async_trait]
impl MemoryStore for PgMemoryStore {
    async fn record(&self, source: &MemorySource, memory: &NewMemory, status: MemoryStatus) -> Result<Uuid> {
        let now = Utc::now();
        // A failure seen before counts once more (and is seen again now); anything else is new.
        let row = sqlx::query(
            r#"
            INSERT INTO claude_runner_memory (
                memory_id, owner, repository_url, kind, status, text, fields, workflow, epic_id, run_id,
                session_id, fingerprint, occurrences, first_seen, last_seen, updated_at
            ) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,1,$13,$13,$13)
            ON CONFLICT (owner, repository_url, fingerprint) WHERE fingerprint IS NOT NULL DO UPDATE SET
                occurrences = claude_runner_memory.occurrences + 1,
                last_seen = EXCLUDED.last_seen,
                updated_at = EXCLUDED.updated_at
            RETURNING memory_id
            "#,
        )
        .bind(Uuid::now_v7())
        .bind(source.owner.as_str())
        .bind(&source.repository_url)
        .bind(memory.kind.as_str())
        .bind(status.as_str())
        .bind(&memory.text)
        .bind(&memory.fields)
        .bind(source.workflow.as_deref())
        .bind(source.epic_id)
        .bind(source.run_id)
        .bind(source.session_id)
        .bind(memory.fingerprint.as_deref())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(failed("record memory"))?;
        row.try_get("memory_id").map_err(failed("record memory"))
    }

    async fn relevant(&self, owner: &Owner, repository_url: &str, text: &str, limit: usize) -> Result<Vec<MemoryHint>> {
        // Bounded work whatever the repository's size: only its most recent accepted entries
        // (`RECALL_WINDOW`, walked on the scope index) are considered; among them, those sharing
        // a term with the text, and the newest few, are ranked by shared terms and similar
        // wording first, then recency and occurrences. Older entries stay reachable by search.
        let rows = sqlx::query(
            r#"
            WITH q AS (
                SELECT to_tsquery('english', COALESCE(
                    NULLIF(replace(plainto_tsquery('english', $3)::text, ' & ', ' | '), ''), 'nothing')) AS terms
            ),
            recent AS MATERIALIZED (
                SELECT memory_id, search, last_seen FROM claude_runner_memory
                WHERE owner = $1 AND repository_url = $2 AND status = 'accepted'
                ORDER BY last_seen DESC LIMIT $5
            ),
            candidates AS (
                (SELECT r.memory_id FROM recent r, q WHERE r.search @@ q.terms ORDER BY r.last_seen DESC LIMIT 50)
                UNION
                (SELECT memory_id FROM recent ORDER BY last_seen DESC LIMIT 20)
            )
            SELECT m.memory_id, m.kind, m.text, m.occurrences FROM claude_runner_memory m
            JOIN candidates USING (memory_id), q
            ORDER BY ts_rank(m.search, q.terms)
                     + word_similarity(m.text, $3)
                     + 0.05 * ln(1 + m.occurrences)
                     + 0.1 / (1 + extract(epoch FROM (now() - m.last_seen)) / 2592000) DESC,
                     m.last_seen DESC
            LIMIT $4
            "#,
        )
        .bind(owner.as_str())
        .bind(repository_url)
        .bind(text)
        .bind(limit as i64)
        .bind(RECALL_WINDOW)
        .fetch_all(&self.pool)
        .await
        .map_err(failed("find relevant memory"))?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(failed("decode memory"))?;
                Ok(MemoryHint {
                    id: row.try_get("memory_id").map_err(failed("decode memory"))?,
                    kind: kind.parse::<MemoryKind>().map_err(|e| Error::dependency("decode memory", e))?,
                    text: row.try_get("text").map_err(failed("decode memory"))?,
                    occurrences: row.try_get::<i32, _>("occurrences").map_err(failed("decode memory"))?.max(0) as u32,
                })
            })
            .collect()
    }

    async fn search(&self, owner: &Owner, query: &MemoryQuery) -> Result<Vec<MemoryEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM claude_runner_memory
             WHERE owner = $1 AND ($2::text IS NULL OR repository_url = $2) AND ($3::text IS NULL OR kind = $3)
               AND (($4::text IS NULL AND status <> 'retired') OR status = $4)
               AND ($7::uuid IS NULL OR session_id = $7)
             ORDER BY CASE WHEN $5::text IS NULL THEN 0
                           ELSE word_similarity(text, $5) + ts_rank(search, plainto_tsquery('english', $5)) END DESC,
                      last_seen DESC
             LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(owner.as_str())
            .bind(query.repository_url.as_deref())
            .bind(query.kind.map(MemoryKind::as_str))
            .bind(query.status.map(MemoryStatus::as_str))
            .bind(query.text.as_deref())
            .bind(query.limit as i64)
            .bind(query.session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("search memory"))?;
        rows.iter().map(entry).collect()
    }

    async fn get(&self, owner: &Owner, memory_id: Uuid) -> Result<Option<MemoryEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM claude_runner_memory WHERE owner = $1 AND memory_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(owner.as_str())
            .bind(memory_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("get memory"))?;
        row.as_ref().map(entry).transpose()
    }

    async fn update(&self, owner: &Owner, memory_id: Uuid, change: &MemoryChange) -> Result<Option<MemoryEntry>> {
        let sql = format!(
            "UPDATE claude_runner_memory SET status = COALESCE($3, status), text = COALESCE($4, text), updated_at = now()
             WHERE owner = $1 AND memory_id = $2 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(owner.as_str())
            .bind(memory_id)
            .bind(change.status.map(MemoryStatus::as_str))
            .bind(change.text.as_deref())
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("update memory"))?;
        row.as_ref().map(entry).transpose()
    }

    async fn delete(&self, owner: &Owner, memory_id: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM claude_runner_memory WHERE owner = $1 AND memory_id = $2")
            .bind(owner.as_str())
            .bind(memory_id)
            .execute(&self.pool)
            .await
            .map_err(failed("delete memory"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_stale(
        &self,
        retired_before: DateTime<Utc>,
        proposed_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM claude_runner_memory WHERE memory_id IN (
                SELECT memory_id FROM claude_runner_memory
                WHERE (status = 'retired' AND updated_at < $1) OR (status = 'proposed' AND last_seen < $2)
                LIMIT $3)",
        )
        .bind(retired_before)
        .bind(proposed_before)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(failed("remove stale memory"))?;
        Ok(done.rows_affected())
    }
}
