//! `claude_cli_runs`, `claude_cli_sessions` and `claude_cli_epics`: the read model the projector keeps.

use async_trait::async_trait;
use sqlx::PgPool;

use runner_core::domain::epic::Epic;
use runner_core::domain::{Run, Session};
use runner_core::ports::RunProjection;
use runner_core::{Error, Result};

/// Upserts that only ever move a row forward in `version`.
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
                usage, duration_ms, exit_code, attempts, commits, files_changed, insertions, deletions, trace_id
            ) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9::jsonb,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,
                      $22::jsonb,$23,$24,$25,$26,$27,$28,$29,$30)
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
        .bind(run.trace_id.as_ref().map(|t| t.as_str()))
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

    async fn apply_epic(&self, epic: &Epic) -> Result<bool> {
        // Steps as stored: no task token is ever in a step (only the pending approval holds one).
        let steps = serde_json::to_value(&epic.steps).map_err(|e| Error::dependency("encode epic steps", e))?;
        let result = sqlx::query(
            r#"
            INSERT INTO claude_cli_epics (
                epic_id, owner, title, repository_url, branch, status, approval, budget_usd, cost_usd,
                num_turns, duration_ms, fix_rounds, steps, error, rollback, version, created_at, updated_at,
                finished_at
            ) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)
            ON CONFLICT (epic_id) DO UPDATE SET
                status = EXCLUDED.status,
                cost_usd = EXCLUDED.cost_usd,
                num_turns = EXCLUDED.num_turns,
                duration_ms = EXCLUDED.duration_ms,
                fix_rounds = EXCLUDED.fix_rounds,
                steps = EXCLUDED.steps,
                error = EXCLUDED.error,
                rollback = EXCLUDED.rollback,
                version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at,
                finished_at = EXCLUDED.finished_at
            WHERE claude_cli_epics.version < EXCLUDED.version
            "#,
        )
        .bind(epic.epic_id.as_uuid())
        .bind(epic.owner.as_str())
        .bind(&epic.title)
        .bind(&epic.repository_url)
        .bind(&epic.branch)
        .bind(epic.status.as_str())
        .bind(serde_json::to_value(epic.approval).ok().and_then(|v| v.as_str().map(str::to_owned)))
        .bind(epic.budget_usd)
        .bind(epic.totals.cost_usd)
        .bind(epic.totals.num_turns as i32)
        .bind(epic.totals.duration_ms as i64)
        .bind(epic.fix_rounds as i32)
        .bind(steps)
        .bind(epic.error.as_ref().and_then(|e| serde_json::to_value(e).ok()))
        .bind(epic.rollback.as_ref().and_then(|r| serde_json::to_value(r).ok()))
        .bind(epic.version as i64)
        .bind(epic.created_at)
        .bind(epic.updated_at)
        .bind(epic.finished_at)
        .execute(&self.pool)
        .await
        .map_err(|e| Error::dependency("project epic", e))?;
        Ok(result.rows_affected() > 0)
    }
}
