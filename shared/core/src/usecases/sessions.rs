//! The sessions API: reserve an id, list, read (with the conversation), expire.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::runs::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_limit};
use crate::domain::{BranchName, Owner, RepositoryPolicy, Session, ValidationError, WorkflowRegistry, object_keys};
use crate::ports::{ObjectStore, Page, SessionStore};
use crate::{Error, Result};

const DEFAULT_HISTORY_PAGE: usize = 50;
const MAX_HISTORY_PAGE: usize = 200;

/// `POST /agent/claude-code/sessions`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveSession {
    /// The workflow every run of the session uses.
    pub workflow: String,
    /// The branch its runs work on.
    pub branch: String,
    /// The repository (the deployment's default when absent).
    #[serde(default)]
    pub repository_url: Option<String>,
    /// A caller-chosen id for the conversation; one is generated otherwise.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// One message of a conversation, as the transcript holds it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryMessage {
    /// Position in the conversation, from 0.
    pub index: usize,
    /// `user` or `assistant`.
    pub role: String,
    /// When the CLI recorded it.
    pub timestamp: Option<String>,
    /// The text blocks, joined.
    pub text: String,
    /// The tool calls it made (`id`, `name`, `input`).
    pub tool_calls: Vec<serde_json::Value>,
    /// The tool results it carried (`tool_use_id`, `content`, `is_error`).
    pub tool_results: Vec<serde_json::Value>,
    /// The model's token usage for it.
    pub usage: Option<serde_json::Value>,
}

/// The sessions API: reserve, list, read, delete.
pub struct SessionService {
    sessions: Arc<dyn SessionStore>,
    objects: Arc<dyn ObjectStore>,
    workflows: Arc<WorkflowRegistry>,
    repositories: RepositoryPolicy,
    ttl: Duration,
}

impl SessionService {
    /// Sessions over these stores; new ones live `ttl` after their last run.
    pub fn new(
        sessions: Arc<dyn SessionStore>,
        objects: Arc<dyn ObjectStore>,
        workflows: Arc<WorkflowRegistry>,
        repositories: RepositoryPolicy,
        ttl: Duration,
    ) -> Self {
        Self { sessions, objects, workflows, repositories, ttl }
    }

    /// Reserves a session id (given or generated) for later runs of one workflow and repository.
    pub async fn reserve(&self, owner: &Owner, request: ReserveSession) -> Result<Session> {
        if self.workflows.get(&request.workflow).is_none() {
            return Err(Error::UnknownWorkflow(request.workflow));
        }
        let branch = BranchName::parse(&request.branch)?;
        let repository = self.repositories.resolve(request.repository_url.as_deref())?;
        let id = match request.session_id {
            Some(raw) => Uuid::parse_str(&raw).map_err(|_| ValidationError::InvalidSessionId)?,
            None => Uuid::now_v7(),
        };
        let session =
            Session::reserve(id, owner.clone(), &request.workflow, &repository, branch.as_str(), Utc::now(), self.ttl);
        if !self.sessions.create(&session).await? {
            return Err(Error::SessionConflict(format!("session id {id} is already taken")));
        }
        Ok(session)
    }

    /// The owner's live session; anything else is unknown.
    pub async fn get(&self, owner: &Owner, id: &str) -> Result<Session> {
        let parsed = Uuid::parse_str(id).map_err(|_| ValidationError::InvalidSessionId)?;
        match self.sessions.get(parsed).await? {
            Some(s) if &s.owner == owner && !s.is_expired(Utc::now()) => Ok(s),
            _ => Err(Error::UnknownSession(id.to_owned(), "not found")),
        }
    }

    /// One page of the owner's live sessions (aliases left out).
    pub async fn list(&self, owner: &Owner, limit: Option<usize>, cursor: Option<&str>) -> Result<Page<Session>> {
        let limit = page_limit(limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let mut page = self.sessions.list(owner, limit, cursor).await?;
        let now = Utc::now();
        page.items.retain(|s| !s.is_expired(now) && s.alias_of.is_none());
        Ok(page)
    }

    /// The conversation from the stored transcript, `limit` messages from `offset`.
    pub async fn history(
        &self,
        owner: &Owner,
        id: &str,
        offset: Option<usize>,
        limit: Option<usize>,
    ) -> Result<(Vec<HistoryMessage>, Option<usize>)> {
        let (offset, limit) = (offset.unwrap_or(0), page_limit(limit, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE)?);
        let session = self.get(owner, id).await?;
        let Some(prefix) = &session.transcript_prefix else { return Ok((Vec::new(), None)) };
        let text = self
            .objects
            .get(&object_keys::transcript(prefix))
            .await?
            .ok_or_else(|| Error::UnknownSession(id.to_owned(), "has lost its transcript"))?;
        let messages = parse_transcript(&String::from_utf8_lossy(&text));
        let page: Vec<HistoryMessage> = messages.iter().skip(offset).take(limit).cloned().collect();
        let next = (offset + page.len() < messages.len()).then_some(offset + page.len());
        Ok((page, next))
    }

    /// Expires the session now: its objects go, then its record.
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<()> {
        let session = self.get(owner, id).await?;
        remove_session(self.objects.as_ref(), self.sessions.as_ref(), session.session_id).await
    }
}

/// Deletes a session's objects, then its record: on delete, and by the janitor once it expired.
pub(super) async fn remove_session(objects: &dyn ObjectStore, sessions: &dyn SessionStore, id: Uuid) -> Result<()> {
    for key in objects.list(&object_keys::session_prefix(id)).await? {
        objects.delete(&key).await?;
    }
    sessions.delete(id).await
}

/// User and assistant messages of a CLI transcript (`.jsonl`), in order.
fn parse_transcript(text: &str) -> Vec<HistoryMessage> {
    let mut messages = Vec::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let role = match entry["type"].as_str() {
            Some(role @ ("user" | "assistant")) => role.to_owned(),
            _ => continue,
        };
        let message = &entry["message"];
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        let mut tool_results = Vec::new();
        match &message["content"] {
            serde_json::Value::String(s) => text.push_str(s),
            serde_json::Value::Array(blocks) => {
                for block in blocks {
                    match block["type"].as_str() {
                        Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                        Some("tool_use") => tool_calls.push(serde_json::json!({
                            "id": block["id"], "name": block["name"], "input": block["input"]})),
                        Some("tool_result") => tool_results.push(serde_json::json!({
                            "tool_use_id": block["tool_use_id"], "content": block["content"],
                            "is_error": block["is_error"].as_bool().unwrap_or(false)})),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let usage = message.get("usage").cloned().filter(|u| !u.is_null());
        messages.push(HistoryMessage {
            index: messages.len(),
            role,
            timestamp: entry["timestamp"].as_str().map(str::to_owned),
            text,
            tool_calls,
            tool_results,
            usage,
        });
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_become_ordered_messages_with_tools_and_usage() {
        let lines = [
            r#"{"type":"queue-operation","operation":"enqueue"}"#,
            r#"{"type":"user","timestamp":"t1","message":{"role":"user","content":"Write a file"}}"#,
            r#"{"type":"assistant","timestamp":"t2","message":{"role":"assistant","content":[{"type":"text","text":"OK. "},{"type":"tool_use","id":"t","name":"Write","input":{"file_path":"a"}}],"usage":{"input_tokens":5}}}"#,
            r#"{"type":"user","timestamp":"t3","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"done"}]}}"#,
            "not json",
        ];
        let messages = parse_transcript(&lines.join("\n"));
        assert_eq!(messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "assistant", "user"]);
        assert_eq!(messages[0].text, "Write a file");
        assert_eq!(messages[1].tool_calls[0]["name"], "Write");
        assert_eq!(messages[1].usage.as_ref().unwrap()["input_tokens"], 5);
        assert_eq!(messages[2].tool_results[0]["content"], "done");
        assert_eq!(messages[2].index, 2);
    }
}
