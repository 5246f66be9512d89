//! Postgres: the history/query side. Connections are few (Lambdas keep one or two).

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::domain::{Frame, FrameData, Run, RunId, Session};
use crate::ports::{FrameHistory, FrameSink, RunProjection};
use crate::{Error, Result};

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(database_url)
        .await
        .map_err(|e| Error::dependency("postgres connect", e))
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| Error::dependency("postgres migrate", e))
}

pub struct PgRunProjection {
    pool: PgPool,
}

impl PgRunProjection {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl RunProjection for PgRunProjection {
    async fn apply(&self, run: &Run) -> Result<bool> {
        // The WHERE on the update makes replays and out-of-order deliveries no-ops.
        let result = sqlx::query(
            r#"
            INSERT INTO claude_cli_runs (
                run_id, owner, workflow, branch, repository_url, message, max_turns, session_id,
                metadata, status, cancel_requested, version, created_at, updated_at, started_at,
                finished_at, result_summary, error_code, error_message, cost_usd, num_turns,
                usage, duration_ms, exit_code, attempts, commits, files_changed, insertions, deletions
            ) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9::jsonb,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,
                      $22::jsonb,$23,$24,$25,$26,$27,$28,$29)
            ON CONFLICT (run_id) DO UPDATE SET
                status = EXCLUDED.status,
                cancel_requested = EXCLUDED.cancel_requested,
                version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at,
                started_at = EXCLUDED.started_at,
                finished_at = EXCLUDED.finished_at,
                result_summary = EXCLUDED.result_summary,
                error_code = EXCLUDED.error_code,
                error_message = EXCLUDED.error_message,
                cost_usd = EXCLUDED.cost_usd,
                num_turns = EXCLUDED.num_turns,
                session_id = EXCLUDED.session_id,
                usage = EXCLUDED.usage,
                duration_ms = EXCLUDED.duration_ms,
                exit_code = EXCLUDED.exit_code,
                attempts = EXCLUDED.attempts,
                commits = EXCLUDED.commits,
                files_changed = EXCLUDED.files_changed,
                insertions = EXCLUDED.insertions,
                deletions = EXCLUDED.deletions,
                projected_at = now()
            WHERE claude_cli_runs.version < EXCLUDED.version
            "#,
        )
        .bind(run.run_id.as_uuid())
        .bind(run.owner.as_str())
        .bind(&run.workflow)
        .bind(&run.branch)
        .bind(&run.repository_url)
        .bind(&run.message)
        .bind(run.max_turns as i32)
        .bind(run.session_id)
        .bind(run.metadata_json.as_deref())
        .bind(run.status.as_str())
        .bind(run.cancel_requested)
        .bind(run.version as i64)
        .bind(run.created_at)
        .bind(run.updated_at)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.result_summary.as_deref())
        .bind(run.error.as_ref().map(|e| e.code.as_str()))
        .bind(run.error.as_ref().map(|e| e.message.as_str()))
        .bind(run.cost_usd)
        .bind(run.num_turns.map(|n| n as i32))
        .bind(run.usage_json.as_deref())
        .bind(run.duration_ms.map(|d| d as i64))
        .bind(run.exit_code)
        .bind(run.attempts as i32)
        .bind(&run.commits)
        .bind(run.diff_stats.map(|d| d.files_changed as i32))
        .bind(run.diff_stats.map(|d| d.insertions as i32))
        .bind(run.diff_stats.map(|d| d.deletions as i32))
        .execute(&self.pool)
        .await
        .map_err(|e| Error::dependency("postgres upsert run", e))?;
        Ok(result.rows_affected() > 0)
    }

    async fn apply_session(&self, session: &Session) -> Result<bool> {
        let run_ids: Vec<uuid::Uuid> = session.run_ids.iter().map(|r| r.as_uuid()).collect();
        let result = sqlx::query(
            r#"
            INSERT INTO claude_cli_sessions (
                session_id, owner, workflow, repository_url, branch, run_ids, transcript_key, cli_session_id,
                total_turns, total_cost_usd, input_tokens, output_tokens, run_count, version,
                created_at, last_used_at, expires_at
            ) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
            ON CONFLICT (session_id) DO UPDATE SET
                run_ids = EXCLUDED.run_ids,
                transcript_key = EXCLUDED.transcript_key,
                cli_session_id = EXCLUDED.cli_session_id,
                total_turns = EXCLUDED.total_turns,
                total_cost_usd = EXCLUDED.total_cost_usd,
                input_tokens = EXCLUDED.input_tokens,
                output_tokens = EXCLUDED.output_tokens,
                run_count = EXCLUDED.run_count,
                version = EXCLUDED.version,
                last_used_at = EXCLUDED.last_used_at,
                expires_at = EXCLUDED.expires_at
            WHERE claude_cli_sessions.version < EXCLUDED.version
            "#,
        )
        .bind(session.session_id)
        .bind(session.owner.as_str())
        .bind(&session.workflow)
        .bind(&session.repository_url)
        .bind(&session.branch)
        .bind(&run_ids)
        .bind(session.transcript_prefix.as_deref())
        .bind(session.cli_session_id)
        .bind(session.total_turns as i32)
        .bind(session.total_cost_usd)
        .bind(session.input_tokens as i64)
        .bind(session.output_tokens as i64)
        .bind(session.run_ids.len() as i32)
        .bind(session.version as i64)
        .bind(session.created_at)
        .bind(session.last_used_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::dependency("postgres upsert session", e))?;
        Ok(result.rows_affected() > 0)
    }

    async fn remove_session(&self, session_id: uuid::Uuid) -> Result<bool> {
        let result = sqlx::query("DELETE FROM claude_cli_sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::dependency("postgres delete session", e))?;
        Ok(result.rows_affected() > 0)
    }
}

/// Frames in `claude_cli_outputs`, one multi-row insert per batch. Replayed batches are ignored
/// by the unique `(run_id, sequence_number)`.
pub struct PgFrameStore {
    pool: PgPool,
}

impl PgFrameStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl FrameSink for PgFrameStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn publish(&self, frames: &[Frame]) -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let mut run_ids = Vec::with_capacity(frames.len());
        let mut seqs = Vec::with_capacity(frames.len());
        let mut kinds = Vec::with_capacity(frames.len());
        let mut subtypes = Vec::with_capacity(frames.len());
        let mut stamps = Vec::with_capacity(frames.len());
        let mut data = Vec::with_capacity(frames.len());
        let mut sizes = Vec::with_capacity(frames.len());
        let mut truncated = Vec::with_capacity(frames.len());
        for frame in frames {
            let mut json = frame.data_json();
            // jsonb has no room for U+0000; such characters become U+2400 (␀) in the copy
            // stored here (the S3 log keeps the line as printed).
            let mut text = json.to_string();
            if text.contains("\\u0000") {
                replace_nul(&mut json);
                text = json.to_string();
            }
            run_ids.push(frame.run_id.as_uuid());
            seqs.push(frame.seq as i64);
            kinds.push(frame.kind.clone());
            subtypes.push(frame.subtype.clone());
            stamps.push(frame.ts);
            sizes.push(text.len() as i32);
            data.push(text);
            truncated.push(frame.is_truncated());
        }
        sqlx::query(
            r#"
            INSERT INTO claude_cli_outputs (run_id, sequence_number, output_type, subtype, ts, data, byte_size, truncated)
            SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]::jsonb[],
                                 $7::int[], $8::bool[])
            ON CONFLICT (run_id, sequence_number) DO NOTHING
            "#,
        )
        .bind(&run_ids)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&subtypes)
        .bind(&stamps)
        .bind(&data)
        .bind(&sizes)
        .bind(&truncated)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::dependency("postgres insert frames", e))?;
        Ok(())
    }
}

#[async_trait]
impl FrameHistory for PgFrameStore {
    async fn frames_after(&self, run_id: RunId, after_seq: u64, limit: usize) -> Result<Vec<Frame>> {
        type Row = (i64, String, Option<String>, chrono::DateTime<chrono::Utc>, serde_json::Value, bool);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT sequence_number, output_type, subtype, ts, data, truncated FROM claude_cli_outputs \
             WHERE run_id = $1 AND sequence_number > $2 ORDER BY sequence_number LIMIT $3",
        )
        .bind(run_id.as_uuid())
        .bind(after_seq as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::dependency("postgres read frames", e))?;
        Ok(rows
            .into_iter()
            .map(|(seq, kind, subtype, ts, data, truncated)| {
                let data = match truncated {
                    true => serde_json::from_value(data.clone()).unwrap_or(FrameData::Json(data)),
                    false => FrameData::Json(data),
                };
                Frame { run_id, seq: seq as u64, ts, kind, subtype, data }
            })
            .collect())
    }

    async fn last_seq(&self, run_id: RunId) -> Result<u64> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence_number) FROM claude_cli_outputs WHERE run_id = $1")
                .bind(run_id.as_uuid())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| Error::dependency("postgres read frames", e))?;
        Ok(last.unwrap_or(0) as u64)
    }
}

fn replace_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{2400}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
        serde_json::Value::Object(map) => {
            // Keys can hold NUL too; rebuild the map only when one does.
            if map.keys().any(|k| k.contains('\0')) {
                let entries: Vec<_> = std::mem::take(map).into_iter().collect();
                for (key, mut v) in entries {
                    replace_nul(&mut v);
                    map.insert(key.replace('\0', "\u{2400}"), v);
                }
            } else {
                map.values_mut().for_each(replace_nul);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_characters_are_replaced_but_escaped_text_is_kept() {
        let mut v = serde_json::json!({"a": "x\u{0}y", "b": ["\\u0000 literal"], "k\u{0}": 1});
        super::replace_nul(&mut v);
        assert_eq!(v["a"], "x\u{2400}y");
        assert_eq!(v["b"][0], "\\u0000 literal", "text that merely spells the escape is untouched");
        assert_eq!(v["k\u{2400}"], 1);
        assert!(!v.to_string().contains("\\u0000\""));
    }
}
