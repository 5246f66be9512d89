//! What outlives a run's workspace: the archive of its checkout, its session transcript, and its
//! share of the session's totals. All best effort: a failure here is logged and does not change
//! the run's outcome.

use chrono::Utc;
use uuid::Uuid;

use super::RunExecutor;
use crate::domain::{DEFAULT_SESSION_TTL_DAYS, Redactor, Run, RunId, RunOutcome, Session, SessionUse, object_keys};
use crate::ports::Workspace;
use crate::usecases::optimistic::{self, Edit};
use crate::{Error, Result};

impl RunExecutor {
    /// Session transcript and workspace archive to the artifact store, the run into its session,
    /// as far as the run's finish budget goes.
    pub(super) async fn keep_artifacts(
        &self,
        run: &Run,
        outcome: &RunOutcome,
        workspace: &Workspace,
        redactor: &Redactor,
        finish_by: tokio::time::Instant,
    ) {
        // The session first (a resume needs it), then the archive, in what is left of the budget.
        if tokio::time::timeout_at(finish_by, self.keep_session(run, outcome, workspace, redactor)).await.is_err() {
            tracing::error!(run_id = %run.run_id, "keeping the session's transcript did not fit the run's finish budget");
        }
        if tokio::time::timeout_at(finish_by, self.keep_archive(run.run_id, workspace)).await.is_err() {
            tracing::error!(run_id = %run.run_id, "the workspace archive did not fit the run's finish budget; left out");
        }
    }

    /// The workspace as an archive in the artifact store.
    async fn keep_archive(&self, run_id: RunId, workspace: &Workspace) {
        match self.ports.workspaces.archive(workspace).await {
            Ok(path) => {
                let key = object_keys::run_archive(run_id);
                if let Err(err) = self.ports.objects.put_file(&key, &path, "application/zstd").await {
                    tracing::error!(%run_id, error = %err, "uploading the workspace archive failed");
                }
            }
            Err(err) => tracing::error!(%run_id, error = %err, "archiving the workspace failed"),
        }
    }

    /// The conversation's transcript, and the run's use of its session.
    async fn keep_session(&self, run: &Run, outcome: &RunOutcome, workspace: &Workspace, redactor: &Redactor) {
        let run_id = run.run_id;
        let (Some(lineage), Some(cli_session)) = (run.session_id, outcome.session_id) else { return };
        let kept = self.ports.transcripts.keep(lineage, cli_session, workspace, redactor).await;
        let usage: serde_json::Value =
            outcome.usage_json.as_deref().and_then(|u| serde_json::from_str(u).ok()).unwrap_or_default();
        let used = SessionUse {
            run_id: Some(run_id),
            cli_session_id: Some(cli_session),
            transcript_prefix: kept.then(|| object_keys::session_prefix(lineage)),
            turns: outcome.num_turns.unwrap_or(0) as u64,
            cost_usd: outcome.cost_usd.unwrap_or(0.0),
            input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
        };
        if let Err(err) = self.record_session_use(run, lineage, &used).await {
            tracing::error!(%run_id, error = %err, "recording the session failed");
        }
    }

    /// Adds the run to its session (creating the session for a run that started one), and links
    /// the id the CLI gave the conversation to the lineage when the two differ.
    async fn record_session_use(&self, run: &Run, lineage: Uuid, used: &SessionUse) -> Result<()> {
        let ttl = chrono::Duration::from_std(self.settings.session_ttl)
            .unwrap_or(chrono::Duration::days(DEFAULT_SESSION_TTL_DAYS));
        let sessions = self.ports.sessions.as_ref();
        let now = Utc::now();
        let mut session = match sessions.get(lineage).await? {
            Some(session) => session,
            None => {
                let mut session = Session::reserve(
                    lineage,
                    run.owner.clone(),
                    &run.workflow,
                    &run.repository_url,
                    &run.branch,
                    now,
                    ttl,
                );
                let _ = session.record(used, now, ttl);
                if sessions.create(&session).await? {
                    return self.link_cli_session(&session, used).await;
                }
                // Created meanwhile by someone else: fold into theirs.
                sessions.get(lineage).await?.ok_or(Error::Conflict)?
            }
        };
        optimistic::update(sessions, &mut session, |next| {
            Ok(if next.record(used, Utc::now(), ttl) { Edit::Write(()) } else { Edit::Keep(()) })
        })
        .await?;
        self.link_cli_session(&session, used).await
    }

    async fn link_cli_session(&self, session: &Session, used: &SessionUse) -> Result<()> {
        match used.cli_session_id {
            Some(cli_id) if cli_id != session.session_id => {
                self.ports.sessions.create(&session.alias(cli_id)).await.map(|_| ())
            }
            _ => Ok(()),
        }
    }
}
